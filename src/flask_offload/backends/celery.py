"""The Celery backend: jobs run in Celery workers, on this machine or others,
with the same request replay as on the thread backend.

What crosses the wire for one job:

- the Celery message, whose arguments are the job's own arguments and
  nothing else;
- one custom message header, :data:`HEADER`: an itsdangerous token, signed
  with ``SECRET_KEY`` (and accepted with ``SECRET_KEY_FALLBACKS``) under its
  own salt, that holds the JSON snapshot and binds it to the task id, the
  task name, a digest of the arguments and a digest of the tasks the
  message makes the worker send after the job (callbacks, errbacks, the
  rest of a chain, a chord), with an expiry time. The snapshot inside is
  always encrypted; credential headers are left out of it unless
  ``OFFLOAD_CARRY_CREDENTIALS``;
- uploaded files (and bodies too large for a header), in storage
  (:mod:`flask_offload.storage`), referenced by key and SHA-256.

The worker verifies the header before the job's body runs. A message whose
header is missing, forged, moved onto another task, other arguments or other
callbacks, or expired fails with :exc:`~flask_offload.SnapshotTampered`,
logged on the ``flask_offload.security`` logger with the job id.

Job state lives in Celery's result backend: ``STARTED`` and ``PROGRESS``
states (with ``current_job.set_progress``), the result or the error, plus a
small record per job (name, submit site, times) in key-value result backends
(Redis, the filesystem, memcached ...), read by :meth:`Offload.get_job` in any
process.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import io
import itertools
import json
import logging
import os
import tempfile
import threading
import time
import typing as t
import weakref
from datetime import datetime
from datetime import timezone

import celery
from celery import Celery
from celery import signals
from celery import Task as CeleryTask
from celery._state import get_current_worker_task
from celery.backends.base import BaseKeyValueStoreBackend
from celery.backends.base import DisabledBackend
from celery.exceptions import Ignore
from celery.exceptions import Reject
from celery.exceptions import Retry
from flask import current_app
from flask import Flask
from flask import has_app_context

from .. import signing
from ..errors import JobCancelled
from ..errors import NotRegistered
from ..errors import SnapshotError
from ..errors import SnapshotTampered
from ..files import UploadedFile
from ..jobs import HIDDEN_MESSAGE_ATTR
from ..jobs import hides_message
from ..jobs import Job
from ..jobs import JobState
from ..snapshot import caller_site
from ..snapshot import capture
from ..snapshot import replay
from ..snapshot import Snapshot
from ..storage import HashingReader
from ..storage import Storage
from ..storage import storage_for
from .base import Backend
from .base import log_failure

if t.TYPE_CHECKING:  # pragma: no cover
    from ..extension import Offload
    from ..extension import Settings

logger = logging.getLogger("flask_offload")
#: Rejected snapshots are logged here, with the job id.
security_logger = logging.getLogger("flask_offload.security")

#: The custom Celery message header that carries the signed snapshot.
HEADER = "flask_offload"
#: The largest header accepted, in bytes of the token.
MAX_HEADER_SIZE = 16 * 1024
#: Set instead of :data:`HEADER` on a task sent with Celery's own API
#: (``celery_task.delay()``) when no snapshot could be attached: why, so the
#: worker fails the job with that reason instead of reporting tampering.
ERROR_HEADER = "flask_offload_error"
#: The snapshot format. Version 3 is sent when the request body is stored
#: encrypted (its reference says so): a worker of an earlier Flask-Offload
#: would read the ciphertext as the body, so it must reject the job, as it
#: rejects versions it does not know. Other snapshots are still version 2.
TOKEN_VERSION = 2
ENCRYPTED_BODY_VERSION = 3
#: The versions a worker accepts.
TOKEN_VERSIONS = frozenset({TOKEN_VERSION, ENCRYPTED_BODY_VERSION})
#: Request headers never sent to workers unless ``OFFLOAD_CARRY_CREDENTIALS``.
CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key")
#: Request bodies larger than this (base64 bytes) go to storage, not the header.
INLINE_BODY_SIZE = 4096
#: Below this size a downloaded upload is kept in memory, above in a temp file.
_MEMORY_FILE_SIZE = 512 * 1024
#: The Celery settings Flask-Offload starts from; ``OFFLOAD_CELERY`` overrides.
CELERY_DEFAULTS: dict[str, t.Any] = {
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "task_acks_late": True,
    "worker_prefetch_multiplier": 1,
    "result_extended": False,
    "broker_connection_retry_on_startup": True,
}
#: Where Celery's own modules live: a submit site is never inside them.
_CELERY_DIRS = (os.path.dirname(os.path.abspath(celery.__file__)),)

#: Transports that redeliver an unacknowledged message after a visibility
#: timeout, with kombu's default timeout in seconds.
_VISIBILITY_TIMEOUTS = {
    "redis": 3600.0,
    "rediss": 3600.0,
    "redis+socket": 3600.0,
    "sentinel": 3600.0,
    "sqs": 1800.0,
}
_INFO_PREFIX = "flask-offload-job-"
_SWEEP_EVERY = 3600.0

_backends: weakref.WeakSet[CeleryBackend] = weakref.WeakSet()
_by_app: weakref.WeakKeyDictionary[Flask, CeleryBackend] = weakref.WeakKeyDictionary()
#: The ``kind`` of a signed reason for a job sent without a snapshot.
_SEND_ERROR = "send-error"
#: What the publish hook stored for the messages an ``apply_async`` call is
#: sending: (backend, task id, storage keys, whether a record was written).
_sending: contextvars.ContextVar[
    list[tuple[CeleryBackend, str, list[str], bool]] | None
] = contextvars.ContextVar("flask_offload_sending", default=None)
#: The backend of the declared task whose ``apply_async`` is sending: the
#: publish hook signs for it even where several apps declare the name.
_sending_backend: contextvars.ContextVar[CeleryBackend | None] = contextvars.ContextVar(
    "flask_offload.celery.sending_backend", default=None
)
# Set while enqueue publishes: the header is already in the message.
_publishing: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "flask_offload.celery.publishing", default=False
)
# In a worker thread running a job: (backend, task id, verified snapshot), so
# retries and tasks sent from the job (chains, callbacks) carry it re-signed.
_worker = threading.local()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: t.Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def _environ_name(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def _config_dict(value: t.Any) -> dict[str, t.Any]:
    """The Celery settings ``OFFLOAD_CELERY`` gives: a mapping, an import
    path, or an object with the settings as attributes.

    :raises ValueError: It is none of these (a broker URL, a number, a list).
    """
    if value is None:
        return {}
    if isinstance(value, t.Mapping):
        return dict(value)
    example = (
        " Set it to a dict of Celery settings, for example"
        " OFFLOAD_CELERY = {'broker_url': 'redis://127.0.0.1:6379/0'}."
    )
    if isinstance(value, str):
        if not value.strip():
            # An empty environment variable, read by from_prefixed_env.
            raise ValueError(f"OFFLOAD_CELERY is empty.{example}")
        if "://" in value:
            raise ValueError(
                f"OFFLOAD_CELERY is {value!r}, a URL: it takes Celery's"
                f" settings, not the broker's URL.{example}"
            )
        from werkzeug.utils import import_string
        from werkzeug.utils import ImportStringError

        try:
            value = import_string(value)
        except ImportStringError as e:
            raise ValueError(
                f"OFFLOAD_CELERY is {value!r}, which could not be imported as"
                f" the object holding Celery's settings ({e.exception}).{example}"
            ) from e
    elif isinstance(value, (int, float, complex, bytes, list, tuple, set, frozenset)):
        raise ValueError(
            f"OFFLOAD_CELERY is {value!r}, not Celery's settings.{example}"
        )
    return {k: getattr(value, k) for k in dir(value) if k.islower() and k[0] != "_"}


def _send_error(app: Flask, header: str, job_id: str, name: str) -> str | None:
    """The reason a sender gave for sending a job without a snapshot, if its
    header is signed by the app and bound to this job; else ``None``, and the
    job is refused as having no snapshot.
    """
    if len(header) > MAX_HEADER_SIZE:
        return None
    try:
        payload = signing.verify(
            app, header, bind={"kind": _SEND_ERROR, "tid": job_id, "task": name}
        )
    except Exception:
        return None
    reason = payload.get("reason")
    return reason if isinstance(reason, str) else None


class CeleryBackend(Backend):
    """Sends declared tasks to Celery workers with a signed snapshot."""

    name = "celery"

    def __init__(self, settings: Settings, app: Flask, offload: Offload) -> None:
        super().__init__(settings, app.name)
        self._app = weakref.ref(app)
        self.offload = offload
        celery = getattr(offload, "_celery", None)
        if celery is None:
            celery = Celery(app.import_name)
            celery.config_from_object(
                {**CELERY_DEFAULTS, **_config_dict(settings.celery)}
            )
        #: The Celery app.
        self.celery: t.Any = celery
        #: Where uploads and large bodies go (``OFFLOAD_STORAGE``).
        self.storage: Storage = storage_for(app, settings.storage)
        extra = settings.credential_headers
        #: Environ keys left out of every snapshot sent to a worker. Forwarded
        #: headers (X-Forwarded-For ...) are kept, as the view saw them:
        #: replaying them resolves nothing again (ProxyFix already ran), and
        #: Flask-Login's session protection hashes X-Forwarded-For.
        self.drop_environ: frozenset[str] = frozenset()
        if not settings.carry_credentials:
            self.drop_environ = frozenset(
                _environ_name(h) for h in (*CREDENTIAL_HEADERS, *extra)
            )
        #: Orphaned uploads older than this are removed by :meth:`sweep`.
        self.upload_ttl = max(86400.0, 2 * settings.snapshot_max_age)
        self._next_sweep = 0.0
        self._task_base = type(
            "OffloadTask", (_OffloadTask,), {"_offload_backend": self}
        )
        self._sync_lock = threading.Lock()
        _backends.add(self)
        _by_app[app] = self
        celery.on_after_finalize.connect(self._on_finalize, weak=True)
        if celery.finalized:
            self.sync_tasks()
        self._check_redelivery()

    def _check_redelivery(self) -> None:
        """Warn when a job redelivered after its worker died would always be
        rejected: brokers with a visibility timeout (Redis, SQS) redeliver
        only that long after the delivery, and the snapshot must still be
        valid then.
        """
        conf = self.celery.conf
        url = conf.broker_url or ""
        if isinstance(url, (list, tuple)):
            url = url[0] if url else ""
        scheme = str(url).split(";", 1)[0].split("://", 1)[0].lower()
        default = _VISIBILITY_TIMEOUTS.get(scheme)
        if default is None:
            return
        options = conf.broker_transport_options or {}
        try:
            timeout = float(options.get("visibility_timeout") or default)
        except (TypeError, ValueError):
            return
        max_age = self.settings.snapshot_max_age
        if timeout >= max_age:
            logger.warning(
                "The %s broker redelivers a job whose worker died only after its"
                " visibility timeout, broker_transport_options"
                "['visibility_timeout'] (%g seconds), but the job's snapshot"
                " expires OFFLOAD_SNAPSHOT_MAX_AGE (%g seconds) after it was"
                " sent: such a job would be rejected as expired instead of run"
                " again. Set OFFLOAD_SNAPSHOT_MAX_AGE above the visibility"
                " timeout (plus the longest time a job waits in the queue).",
                scheme,
                timeout,
                max_age,
            )

    # -- tasks -----------------------------------------------------------

    @property
    def app(self) -> Flask:
        app = self._app()
        if app is None:  # pragma: no cover - the app owns the backend
            raise RuntimeError("The Flask app of this Celery backend is gone.")
        return app

    def _on_finalize(self, *args: t.Any, **kwargs: t.Any) -> None:
        self.sync_tasks()

    def sync_tasks(self) -> None:
        """Register every ``@offload.task`` declared so far as a Celery task of
        the same name (done at enqueue and when a worker starts).
        """
        registry = self.celery._tasks
        with self._sync_lock:
            for name, declared in list(self.offload.tasks.items()):
                existing = registry.get(name)
                if existing is not None and isinstance(existing, self._task_base):
                    continue
                self.celery.task(
                    name=name,
                    base=self._task_base,
                    lazy=False,
                    shared=False,
                    typing=False,
                )(declared.fn)

    def celery_task(self, name: str) -> t.Any:
        """The Celery task of the declared task ``name``."""
        task = self.celery._tasks.get(name)
        if task is None or not isinstance(task, self._task_base):
            self.sync_tasks()
            task = self.celery._tasks.get(name)
        if task is None:
            raise NotRegistered(
                f"{name} is not a declared task. Decorate it with '@offload.task'."
            )
        declared = self.offload.tasks.get(name)
        # An Offload task of another app sharing this Celery app is the same
        # task (the factory pattern); only another function is a clash.
        if not isinstance(task, _OffloadTask) or (
            declared is not None and task.run is not declared.fn
        ):
            raise NotRegistered(
                f"The Celery app already has a task named {name!r} that is not"
                " this '@offload.task', and it would run instead. Give one of"
                " them another name, with '@offload.task(name=...)'."
            )
        return task

    # -- sending ---------------------------------------------------------

    def enqueue(
        self,
        app: Flask,
        job: Job,
        fn: t.Callable[..., t.Any],
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
    ) -> None:
        snapshot = job.snapshot
        assert snapshot is not None
        keys: list[str] = []
        try:
            task = self.celery_task(job.name)
            wire = self.wire_snapshot(app, snapshot, job.id, keys)
            wire["submitted_at"] = _iso(job.submitted_at)
            token = self.make_token(app, wire, job.id, job.name, args, kwargs)
            self._write_info(
                job.id,
                {
                    "name": job.name,
                    "submitted_at": _iso(job.submitted_at),
                    "site": list(snapshot.site) if snapshot.site else None,
                    "user_id": job.user_id,
                },
            )
            mark = _publishing.set(True)
            try:
                task.apply_async(args, kwargs, task_id=job.id, headers={HEADER: token})
            finally:
                _publishing.reset(mark)
        except BaseException as e:
            self._forget(job.id, keys, record=True)
            # The job must end, never stay pending; the caller sees the error.
            job._finish(JobState.FAILED, exc=e)
            raise
        # From now on the job lives in the result backend: this process keeps
        # a handle that reads its state from there, and waits for nothing.
        snapshot, job.snapshot = job.snapshot, None
        if snapshot is not None:
            snapshot.release()
        registry, job._registry = job._registry, None
        if isinstance(job, CeleryJob):
            job._sent = True
        if registry is not None:
            registry._job_done(job)

    def wire_snapshot(
        self, app: Flask, snapshot: Snapshot, job_id: str, keys: list[str]
    ) -> dict[str, t.Any]:
        """The JSON form of ``snapshot`` for a worker: files stored under the
        job's id (their keys appended to ``keys``), credentials dropped.
        """
        counter = itertools.count()

        def file_ref(f: UploadedFile) -> dict[str, t.Any]:
            key = f"{job_id}/{next(counter)}"
            storage = f.open()
            try:
                reader = HashingReader(storage.stream)
                self.storage.put(key, t.cast(t.IO[bytes], reader))
            finally:
                storage.close()
            keys.append(key)
            return {
                "key": key,
                "field": f.field,
                "filename": f.filename,
                "content_type": f.content_type,
                "headers": [list(h) for h in f.headers],
                "size": reader.size,
                "sha256": reader.hexdigest(),
            }

        data = snapshot.to_dict(app, file_ref=file_ref, drop_headers=self.drop_environ)
        req = data.get("request")
        if req and req.get("form") is not None:
            if req.get("body") and len(req["body"]) > INLINE_BODY_SIZE:
                # A large urlencoded form travels as its raw bytes, stored
                # encrypted below, and is parsed again in the worker: parsed,
                # it could pass the header's limit.
                req["form"] = None
            else:
                # A small one travels parsed: its raw bytes too would double
                # its size in the header.
                req["body"] = None
        body = req.get("body") if req else None
        if req and body and len(body) > INLINE_BODY_SIZE:
            # Encrypted like the snapshot: a form's password or a JSON
            # body's token must not sit in the storage in clear text.
            raw = signing.encrypt(app, base64.b64decode(body)).encode("ascii")
            key = f"{job_id}/body"
            self.storage.put(key, io.BytesIO(raw))
            keys.append(key)
            req["body"] = None
            req["body_ref"] = {
                "key": key,
                "size": len(raw),
                "sha256": hashlib.sha256(raw).hexdigest(),
                "encrypted": True,
            }
        return data

    def make_token(
        self,
        app: Flask,
        wire: dict[str, t.Any],
        task_id: str,
        name: str,
        args: t.Any,
        kwargs: t.Any,
        delay: float = 0.0,
        *,
        embed: t.Mapping[str, t.Any] | None = None,
    ) -> str:
        """Encrypt and sign a snapshot for one message, bound to its task id,
        name, arguments and embed. Always encrypted: besides headers it holds
        form fields (a password), the query string (a reset token) and the
        session, which must not sit in the broker in clear text.

        :param delay: Seconds before the task may run (countdown, eta),
            added to ``OFFLOAD_SNAPSHOT_MAX_AGE`` for the expiry.
        :param embed: The message body's callbacks, errbacks, chain and
            chord, as published. Bound so that nobody can add a task the
            worker would send after the job, with the job's snapshot.
        :raises SnapshotError: The token is larger than :data:`MAX_HEADER_SIZE`,
            or the arguments or embed are not JSON.
        """
        now = time.time()
        body_ref = (wire.get("request") or {}).get("body_ref") or {}
        payload: dict[str, t.Any] = {
            "v": ENCRYPTED_BODY_VERSION if body_ref.get("encrypted") else TOKEN_VERSION,
            "tid": task_id,
            "task": name,
            "ad": signing.args_digest(list(args or ()), dict(kwargs or {})),
            "ed": signing.embed_digest(embed),
            "iat": now,
            "exp": now + self.settings.snapshot_max_age + max(0.0, delay),
        }
        raw = json.dumps(wire, separators=(",", ":")).encode()
        payload["enc"] = signing.encrypt(app, raw)
        token = signing.sign(app, payload)
        if len(token) > MAX_HEADER_SIZE:
            raise SnapshotError(
                f"The job's snapshot is {len(token):,} bytes, more than the"
                f" {MAX_HEADER_SIZE // 1024} KiB a Celery message header may carry."
                " It holds the request's headers, form fields, session and carried"
                " 'g' values. Pass large values as the job's arguments, keep"
                " fewer 'g' values (OFFLOAD_CARRY_G), or store large form data"
                " yourself and pass its id."
            )
        return token

    def capture_wire(
        self, app: Flask, task_id: str, keys: list[str]
    ) -> dict[str, t.Any]:
        """A wire snapshot of the current context (used when a task is sent
        with Celery's own API, ``celery_task.delay``, instead of ``submit``).
        """
        settings = self.settings
        snapshot = capture(
            carry_g=settings.carry_g,
            max_body_size=settings.max_body_size,
            # Past Celery's delay(), apply_async() and signal dispatch: the
            # view's line.
            site=caller_site(skip=_CELERY_DIRS),
        )
        snapshot.acquire()
        try:
            wire = self.wire_snapshot(app, snapshot, task_id, keys)
            wire["submitted_at"] = _iso(_now())
            return wire
        finally:
            snapshot.release()

    def copy_uploads(self, wire: dict[str, t.Any], task_id: str) -> dict[str, t.Any]:
        """A copy of a verified wire snapshot for another task, with its own
        copies of the stored files (each job deletes its files when it ends).
        """
        req = wire.get("request")
        if not req or not (req.get("files") or req.get("body_ref")):
            return wire
        req = dict(req)
        files = []
        for n, ref in enumerate(req.get("files") or ()):
            key = f"{task_id}/{n}"
            self._copy_object(ref["key"], key)
            files.append({**ref, "key": key})
        req["files"] = files
        if req.get("body_ref"):
            key = f"{task_id}/body"
            self._copy_object(req["body_ref"]["key"], key)
            req["body_ref"] = {**req["body_ref"], "key": key}
        return {**wire, "request": req}

    def _copy_object(self, src: str, dst: str) -> None:
        stream = self.storage.open(src)
        try:
            self.storage.put(dst, stream)
        finally:
            stream.close()

    # -- running in the worker --------------------------------------------

    def open_token(
        self,
        app: Flask,
        token: t.Any,
        task_id: str,
        name: str,
        args: t.Any,
        kwargs: t.Any,
        embed: t.Mapping[str, t.Any] | None = None,
    ) -> dict[str, t.Any]:
        """Verify a message's header and return its wire snapshot.

        :param embed: The callbacks, errbacks, chain and chord the worker
            received with the message.
        :raises SnapshotTampered: Missing, forged, bound to another task,
            other arguments or other callbacks, or expired.
        """
        if not token or not isinstance(token, str):
            raise SnapshotTampered(
                f"The message has no '{HEADER}' header: it was not sent through"
                " Flask-Offload (or through a process that loaded the Flask app)."
            )
        if len(token) > MAX_HEADER_SIZE:
            raise SnapshotTampered("The job's snapshot header is too large.")
        payload = signing.verify(app, token)
        if payload.get("v") not in TOKEN_VERSIONS:
            raise SnapshotTampered(
                f"Unknown snapshot version {payload.get('v')!r}: the worker runs"
                " another version of Flask-Offload than the sender."
            )
        try:
            bind = {
                "tid": task_id,
                "task": name,
                "ad": signing.args_digest(list(args or ()), dict(kwargs or {})),
                "ed": signing.embed_digest(embed),
            }
        except SnapshotError as e:
            # The sender digested them, so they were changed on the way.
            raise SnapshotTampered(str(e)) from None
        signing.check_bound(payload, bind)
        exp = payload.get("exp")
        if not isinstance(exp, (int, float)) or exp < time.time():
            raise SnapshotTampered(
                "The job's snapshot expired before a worker started the job. Raise"
                " OFFLOAD_SNAPSHOT_MAX_AGE if jobs wait in the queue longer than"
                f" {self.settings.snapshot_max_age:g} seconds."
            )
        if "enc" in payload:
            wire = json.loads(signing.decrypt(app, str(payload["enc"])))
        else:
            wire = payload.get("snap")
        if not isinstance(wire, dict):
            raise SnapshotTampered("The job's snapshot is not a mapping.")
        return wire

    def execute(
        self, task: t.Any, args: tuple[t.Any, ...], kwargs: dict[str, t.Any]
    ) -> t.Any:
        """Run one job in the worker: verify, replay, report, clean up."""
        request = task.request
        if not request.called_directly:
            return self._execute(task, request, args, kwargs)
        # Called as a function (Celery calls some errbacks in the failed
        # task's process): no task_postrun follows to reset _worker.
        outer = getattr(_worker, "current", None)
        try:
            return self._execute(task, request, args, kwargs)
        finally:
            _worker.current = outer

    def _execute(
        self,
        task: t.Any,
        request: t.Any,
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
    ) -> t.Any:
        app = self.app
        job_id: str = request.id
        name: str = task.name
        headers = request.headers if isinstance(request.headers, dict) else {}
        token = headers.get(HEADER) or getattr(request, HEADER, None)
        embed = {key: getattr(request, key, None) for key in signing.EMBED_KEYS}
        # Until the task ends (task_postrun), tasks it sends get no snapshot,
        # unless verified below: a rejected job's errbacks must not get one.
        _worker.current = (self, job_id, None)
        reason = headers.get(ERROR_HEADER) or getattr(request, ERROR_HEADER, None)
        # Only a reason the sender signed counts; anything else (not even a
        # string) is a missing snapshot, refused below as tampering.
        if not token and isinstance(reason, str):
            reason = _send_error(app, reason, job_id, name)
        else:
            reason = None
        if not token and reason is not None:
            # The sender's own failure (celery_task.delay() in a view whose
            # snapshot could not be made), not tampering.
            error = SnapshotError(
                "No request snapshot could be attached to this job when it was"
                f" sent, so it did not run: {reason}"
            )
            logger.error("Job %s (%s) did not run. %s", job_id, name, error)
            self._write_info(job_id, {"name": name, "finished_at": _iso(_now())})
            raise error
        try:
            wire = self.open_token(app, token, job_id, name, args, kwargs, embed)
        except SnapshotTampered as e:
            security_logger.error(
                "Security: rejected the snapshot of job %s (%s); the job did not"
                " run. %s",
                job_id,
                name,
                e,
            )
            self._write_info(job_id, {"name": name, "finished_at": _iso(_now())})
            raise
        _worker.current = (self, job_id, wire)
        # A cancel made while the job waited, which a revoke may not have
        # reached (no worker was running then): looked for before STARTED is
        # written, and again after, as CeleryJob.cancel() records its request
        # before it reads the state: one of the two always sees the other.
        self._stop_if_cancelled(request, job_id, name, wire)
        task.update_state(task_id=job_id, state="STARTED", meta={})
        self._stop_if_cancelled(request, job_id, name, wire)
        final = True
        job: WorkerJob | None = None
        info: dict[str, t.Any] = {"name": name}
        try:
            try:
                snapshot = self._rebuild(app, wire)
            except SnapshotTampered as e:
                security_logger.error(
                    "Security: rejected an upload of job %s (%s); the job did not"
                    " run. %s",
                    job_id,
                    name,
                    e,
                )
                raise
            declared = self.offload.tasks.get(name)
            fn = declared.fn if declared is not None else task.run
            job = WorkerJob(
                name, app=app, site=snapshot.site, snapshot=snapshot, id=job_id
            )
            snapshot.acquire()
            job._task = task
            submitted = _parse_time(wire.get("submitted_at"))
            if submitted is not None:
                job._submitted = submitted.timestamp()
            info.update(
                submitted_at=_iso(job.submitted_at),
                site=list(snapshot.site) if snapshot.site else None,
                user_id=job.user_id,
            )
            job._start()
            task.update_state(task_id=job_id, state="STARTED", meta=job.meta())
            try:
                result = replay(
                    app,
                    snapshot,
                    fn,
                    args,
                    kwargs,
                    job=job,
                    teardown_request=self.settings.job_teardown_request,
                    max_body_size=self.settings.max_body_size,
                )
            except (Retry, Reject, Ignore):
                # Retried, rejected, or replaced (task.replace raises Ignore):
                # not the end of the job, nor a failure.
                final = False
                job._release()
                raise
            except JobCancelled as e:
                job._finish(JobState.CANCELLED, exc=e)
                raise
            except (SystemExit, KeyboardInterrupt):
                # The worker is going away (its cold shutdown raises
                # SystemExit in the pool process): the message is not
                # acknowledged, the broker hands it out again, and that run
                # needs the stored uploads. A pool process that really died
                # is cleaned up by OffloadRequest in the worker's main process.
                final = False
                job._release()
                raise
            except BaseException as e:
                log_failure(job, e)
                hidden = hides_message(e, app)
                if hidden is not None:
                    # Only here is it known where it was raised: the
                    # submitting process gets the exception rebuilt, without
                    # its traceback.
                    info["error_hidden"] = hidden
                job._finish(JobState.FAILED, exc=e)
                raise
            job._finish(JobState.SUCCEEDED, result)
            return result
        finally:
            if job is not None:
                info.update(
                    started_at=_iso(job.started_at),
                    progress=job.progress,
                    message=job.message,
                )
            if final:
                info["finished_at"] = _iso(_now())
                self._delete_after(request, _storage_keys(wire))
            elif (self._read_info(job_id) or {}).get("cancel_requested"):
                info["cancel_requested"] = True  # the next attempt sees it
            self._write_info(job_id, info)

    def _stop_if_cancelled(
        self, request: t.Any, job_id: str, name: str, wire: dict[str, t.Any]
    ) -> None:
        """If someone asked to cancel the job before it started, end it
        ``REVOKED`` without running it. Looked at before STARTED is written
        too, so that a job cancelled long before does not show as running.

        :raises celery.exceptions.Ignore: The job was cancelled.
        """
        if not (self._read_info(job_id) or {}).get("cancel_requested"):
            return
        self._write_info(job_id, {"name": name, "finished_at": _iso(_now())})
        self._delete_after(request, _storage_keys(wire))
        self.celery.backend.mark_as_revoked(job_id, "cancelled", request=request)
        logger.info("Job %s (%s) was cancelled before it started.", job_id, name)
        raise Ignore()

    def _delete_after(self, request: t.Any, keys: list[str]) -> None:
        """Delete the job's stored objects once the task is over: Celery
        sends its callbacks, the rest of its chain and its chord's callback
        after the body returns, and they copy them (see :meth:`copy_uploads`).
        At once for a task called as a function, which no task_postrun ends.
        """
        if request.called_directly:
            for key in keys:
                self._delete_quietly(key)
        else:
            _worker.cleanup = (self, request.id, keys)

    def _rebuild(self, app: Flask, wire: dict[str, t.Any]) -> Snapshot:
        opened: list[UploadedFile] = []
        req = wire.get("request")
        body: bytes | None = None
        if req and req.get("body_ref"):
            # In memory whatever its size, as in the web process that read it
            # (OFFLOAD_MAX_BODY_SIZE bounds it): the job parses it from bytes.
            ref = req["body_ref"]
            body = self._download(ref, "the request body", spool=False)
            if ref.get("encrypted"):
                body = signing.decrypt(app, body.decode("ascii"))
            wire = {**wire, "request": {**req, "body": None, "body_ref": None}}

        def open_file(ref: dict[str, t.Any]) -> UploadedFile:
            content = self._download(ref, repr(ref.get("filename")))
            headers = [(str(k), str(v)) for k, v in ref.get("headers") or ()]
            args = (ref.get("field", ""), ref.get("filename"), ref.get("content_type"))
            if isinstance(content, int):
                f = UploadedFile(*args, headers, fd=content, size=int(ref["size"]))
            else:
                f = UploadedFile(*args, headers, data=content, size=len(content))
            opened.append(f)
            return f

        try:
            snapshot = Snapshot.from_dict(app, wire, open_file=open_file)
        except BaseException:
            for f in opened:
                f.close()
            raise
        if body is not None and snapshot.request is not None:
            snapshot.request.body = body  # not through base64 and back
            snapshot.request.parse_form_body()
        return snapshot

    @t.overload
    def _download(
        self, ref: dict[str, t.Any], what: str, *, spool: t.Literal[False]
    ) -> bytes: ...

    @t.overload
    def _download(
        self, ref: dict[str, t.Any], what: str, *, spool: bool = True
    ) -> bytes | int: ...

    def _download(
        self, ref: dict[str, t.Any], what: str, *, spool: bool = True
    ) -> bytes | int:
        """Read a stored object, checking its size and SHA-256: bytes for a
        small one (or any with ``spool=False``), else a descriptor of an
        unlinked temporary file.
        """
        key = str(ref["key"])
        try:
            stream = self.storage.open(key)
        except FileNotFoundError:
            raise SnapshotError(
                f"The upload {what} of this job is missing from {self.storage!r}:"
                " it was already deleted (the job ended, or the sweep removed it),"
                " or the worker's OFFLOAD_STORAGE is not the web process's."
            ) from None
        digest = hashlib.sha256()
        size = 0
        expected = ref.get("size")
        # Never more than the signed size (plus one byte, to see that there
        # is more): a replaced object, or a link to /dev/zero, must not fill
        # the worker's memory or disk before the check refuses it.
        limit = expected + 1 if isinstance(expected, int) and expected >= 0 else 0
        tmp: t.IO[bytes] = tempfile.TemporaryFile() if spool else io.BytesIO()
        try:
            try:
                while size < limit and (
                    chunk := stream.read(min(1 << 20, limit - size))
                ):
                    digest.update(chunk)
                    size += len(chunk)
                    tmp.write(chunk)
            finally:
                stream.close()
            if size != expected or digest.hexdigest() != ref.get("sha256"):
                raise SnapshotTampered(
                    f"The stored upload {what} does not match the size and SHA-256"
                    " recorded in the job's signed snapshot: it was changed in"
                    " storage."
                )
            if isinstance(tmp, io.BytesIO):
                return tmp.getvalue()
            if size <= _MEMORY_FILE_SIZE:
                tmp.seek(0)
                return tmp.read()
            tmp.flush()
            return os.dup(tmp.fileno())
        finally:
            tmp.close()

    def delete_stored(self, job_id: str) -> None:
        """Delete every object stored for a job (its uploads ``<n>``, numbered
        from 0, and its ``body``), for a job that failed where no
        ``task_postrun`` ran: its pool child was lost or killed.
        """
        self._delete_quietly(f"{job_id}/body")
        for n in itertools.count():
            key = f"{job_id}/{n}"
            try:
                self.storage.open(key).close()
            except FileNotFoundError:
                return
            except Exception:
                logger.exception("Could not look for %r in %r.", key, self.storage)
                return
            self._delete_quietly(key)

    def _forget(self, job_id: str, keys: list[str], record: bool) -> None:
        """Undo what was stored for a job whose message was not sent: its
        stored objects, and (``record``) the record written for it.
        """
        for key in keys:
            self._delete_quietly(key)
        kv = self._kv() if record else None
        if kv is not None:
            try:
                kv.delete((_INFO_PREFIX + job_id).encode())
            except Exception:
                logger.exception("Could not remove the record of job %s.", job_id)

    def _delete_quietly(self, key: str) -> None:
        try:
            self.storage.delete(key)
        except Exception:
            logger.exception("Could not delete %r from %r.", key, self.storage)

    def sweep(self) -> int:
        """Delete stored uploads older than :attr:`upload_ttl` (orphans of jobs
        that never ended). Workers run it at start and then hourly.
        """
        self._next_sweep = time.monotonic() + _SWEEP_EVERY
        try:
            return self.storage.sweep(self.upload_ttl)
        except Exception:
            logger.exception("Sweeping old uploads from %r failed.", self.storage)
            return 0

    def maybe_sweep(self) -> None:
        if time.monotonic() >= self._next_sweep:
            self.sweep()

    # -- job state ---------------------------------------------------------

    def _kv(self) -> t.Any:
        backend = self.celery.backend
        return backend if isinstance(backend, BaseKeyValueStoreBackend) else None

    def _write_info(self, job_id: str, info: dict[str, t.Any]) -> None:
        kv = self._kv()
        if kv is None:
            return
        key = (_INFO_PREFIX + job_id).encode()
        if "submitted_at" not in info:  # merge with what the sender wrote
            old = self._read_info(job_id) or {}
            info = {**old, **info}
        try:
            _kv_set(kv, key, json.dumps(info))
        except Exception:
            logger.exception("Could not store the state of job %s.", job_id)

    def _read_info(self, job_id: str) -> dict[str, t.Any] | None:
        kv = self._kv()
        if kv is None:
            return None
        raw = kv.get((_INFO_PREFIX + job_id).encode())
        if not raw:
            return None
        try:
            info = json.loads(raw)
        except ValueError:
            return None
        return info if isinstance(info, dict) else None

    def task_meta(self, job_id: str) -> dict[str, t.Any]:
        """The job's state in the result backend.

        :raises RuntimeError: The Celery app has no result backend.
        """
        backend = self.celery.backend
        if isinstance(backend, DisabledBackend):
            raise RuntimeError(
                f"The state of job {job_id} is unknown: the Celery app has no"
                " result backend, so jobs are fire-and-forget and their state,"
                " progress and result are kept nowhere. Set 'result_backend' in"
                " OFFLOAD_CELERY (for example the Redis URL of the broker) to"
                " read them, wait for jobs or use offload.join()."
            )
        meta: dict[str, t.Any] = backend.get_task_meta(job_id)
        return meta

    def get_job(self, job_id: str) -> Job | None:
        info = self._read_info(job_id)
        meta = self.task_meta(job_id)
        if info is None and meta.get("status", "PENDING") == "PENDING":
            return None
        info = info or {}
        job = CeleryJob(
            str(info.get("name") or meta.get("name") or "unknown"),
            app=self.app,
            id=job_id,
        )
        job._sent = True
        job.user_id = info.get("user_id")
        submitted = _parse_time(info.get("submitted_at"))
        if submitted is not None:
            job._submitted = submitted.timestamp()
        site = info.get("site")
        if isinstance(site, list) and len(site) == 3:
            job._site = (str(site[0]), int(site[1]), str(site[2]))
        _apply_meta(self, job, meta, info)
        return job


def _kv_set(kv: t.Any, key: bytes, value: str) -> None:
    client = getattr(kv, "client", None)
    if client is not None and type(kv).__module__.startswith("celery.backends.redis"):
        # Straight to redis-py: the backend's own path uses the deprecated setex.
        expires = kv.expires
        client.set(key, value, ex=int(expires) if expires else None)
    else:
        kv.set(key, value)


def _storage_keys(wire: dict[str, t.Any]) -> list[str]:
    req = wire.get("request") or {}
    keys = [str(f["key"]) for f in req.get("files") or () if "key" in f]
    if req.get("body_ref"):
        keys.append(str(req["body_ref"]["key"]))
    return keys


class _OffloadTask(CeleryTask):  # type: ignore[misc]
    """The Celery task class of declared tasks: runs the job in a replayed
    context after verifying its snapshot.
    """

    typing = False
    # A job that stops on request ends CANCELLED: expected, so Celery's
    # worker logs it at INFO, without "raised unexpected" and a traceback.
    throws = (JobCancelled,)
    # Its failures seen by the worker's main process (a pool child lost or
    # killed at the hard time limit) delete the job's stored objects too.
    Request = "flask_offload.backends._celery_request:OffloadRequest"
    _offload_backend: CeleryBackend

    def __call__(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        return self._offload_backend.execute(self, args, kwargs)

    def apply_async(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        # Celery's own API (celery_task.delay() in a view): the publish hook
        # stores the request's files and writes the job's record before the
        # message goes. If it is not sent (the broker is down), undo both:
        # no orphan in storage, no job that reads PENDING for ever.
        sending: list[tuple[CeleryBackend, str, list[str], bool]] = []
        mark = _sending.set(sending)
        own = _sending_backend.set(self._offload_backend)
        try:
            return super().apply_async(*args, **kwargs)
        except BaseException:
            for backend, task_id, keys, wrote_record in sending:
                backend._forget(task_id, keys, wrote_record)
            raise
        finally:
            _sending_backend.reset(own)
            _sending.reset(mark)


# -- jobs ----------------------------------------------------------------------

_STATE = t.cast(t.Any, Job.__dict__["state"])
_CANCEL = t.cast(t.Any, Job.__dict__["cancel_requested"])
#: How often a running job looks for a cancel request, at most.
CANCEL_CHECK_INTERVAL = 0.25
_apply_lock = threading.Lock()


def _asked_to_cancel(job: t.Any, backend: CeleryBackend) -> bool:
    """Whether the job's record asks it to stop, read at most every
    :data:`CANCEL_CHECK_INTERVAL` seconds; remembered on the job once it does.
    """
    now = time.monotonic()
    if now < getattr(job, "_next_cancel_check", 0.0):
        return False
    job._next_cancel_check = now + CANCEL_CHECK_INTERVAL
    info = backend._read_info(job.id)
    if info and info.get("cancel_requested"):
        _CANCEL.__set__(job, True)
        return True
    return False


class WorkerJob(Job):
    """The job as the worker runs it: progress goes to the result backend,
    and a cancel request made in any process is read from there.
    """

    __slots__ = ("_task", "_next_cancel_check")
    _task: t.Any

    @property
    def cancel_requested(self) -> bool:
        """Whether someone asked the job to stop, in this or another process
        (looked up at most every :data:`CANCEL_CHECK_INTERVAL` seconds).
        """
        if _CANCEL.__get__(self, Job):
            return True
        task = getattr(self, "_task", None)
        return task is not None and _asked_to_cancel(self, task._offload_backend)

    @cancel_requested.setter
    def cancel_requested(self, value: bool) -> None:
        _CANCEL.__set__(self, value)

    def meta(self) -> dict[str, t.Any]:
        return {
            "started_at": _iso(self.started_at),
            "progress": self.progress,
            "message": self.message,
        }

    def set_progress(self, progress: float | None, message: str | None = None) -> None:
        super().set_progress(progress, message)
        if self._takes_progress():
            self._task.update_state(task_id=self.id, state="PROGRESS", meta=self.meta())

    def _release(self) -> None:
        snapshot, self.snapshot = self.snapshot, None
        if snapshot is not None:
            snapshot.release()


class CeleryJob(Job):
    """A job for Celery, as seen from any process but the worker's: once sent,
    its state, progress, result and error are read from the result backend
    on access.
    """

    __slots__ = ("_sent", "_next_cancel_check")

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        self._sent = False
        super().__init__(*args, **kwargs)

    @property
    def cancel_requested(self) -> bool:
        """Whether someone asked the job to stop, in this or another process
        (looked up at most every :data:`CANCEL_CHECK_INTERVAL` seconds while
        the job is not finished).
        """
        if _CANCEL.__get__(self, Job):
            return True
        if not self._sent or self._done:
            return False
        backend = self._backend()
        return backend is not None and _asked_to_cancel(self, backend)

    @cancel_requested.setter
    def cancel_requested(self, value: bool) -> None:
        _CANCEL.__set__(self, value)

    @property
    def state(self) -> JobState:
        state: JobState = _STATE.__get__(self, Job)
        if self._sent and not state.finished:
            self.refresh()
            state = _STATE.__get__(self, Job)
        return state

    @state.setter
    def state(self, value: JobState) -> None:
        _STATE.__set__(self, value)

    def _backend(self) -> CeleryBackend | None:
        app = self._app() if self._app is not None else None
        return _by_app.get(app) if app is not None else None

    def refresh(self) -> None:
        """Read the job's state from the result backend."""
        if self._done or not self._sent:
            return
        backend = self._backend()
        if backend is not None:
            _apply_meta(backend, self, backend.task_meta(self.id), None)

    def done(self) -> bool:
        return self.state.finished

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.02
        while True:
            if self.state.finished:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            time.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 1.5, 0.25)

    def result(self, timeout: float | None = None) -> t.Any:
        if not self.wait(timeout):
            self._raise_unfinished(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.wait(timeout):
            self._raise_unfinished(timeout)
        return super().exception(0)

    def _raise_unfinished(self, timeout: float | None) -> t.NoReturn:
        raise TimeoutError(
            f"Job {self.id} ({self.name}) did not finish within {timeout} seconds."
        )

    def cancel(self) -> bool:
        """Revoke the job if no worker started it yet (workers running now
        skip it). For a running job, record a cancel request the worker sees
        as ``current_job.cancel_requested``, and return ``False``.
        """
        state = self.state
        if state.finished:
            return state is JobState.CANCELLED
        if state is JobState.RUNNING:
            self.cancel_requested = True
            backend = self._backend()
            if backend is not None:
                backend._write_info(self.id, {"cancel_requested": True})
            return False
        backend = self._backend()
        if backend is None:
            return False
        # Recorded before the state is read again: a worker that took the
        # message meanwhile, or starts later without having heard the
        # revoke, sees it before it runs the job (CeleryBackend._execute).
        backend._write_info(self.id, {"cancel_requested": True})
        self.cancel_requested = True
        self.refresh()
        state = _STATE.__get__(self, Job)
        if state.finished:
            return state is JobState.CANCELLED
        if state is JobState.RUNNING:
            return False  # started first: it sees the request as it runs
        backend.celery.control.revoke(self.id)
        backend.celery.backend.mark_as_revoked(self.id, "cancelled")
        self.refresh()
        return True


CeleryBackend.job_class = CeleryJob


def _set_started(job: Job, value: t.Any) -> None:
    started = _parse_time(value)
    if started is not None:
        job._started = started.timestamp()


def _apply_meta(
    backend: CeleryBackend,
    job: Job,
    meta: dict[str, t.Any],
    info: dict[str, t.Any] | None,
) -> None:
    status = meta.get("status", "PENDING")
    value = meta.get("result")
    if status in ("STARTED", "PROGRESS"):
        _STATE.__set__(job, JobState.RUNNING)
        if isinstance(value, dict):
            _set_started(job, value.get("started_at"))
            job.progress = value.get("progress")
            job.message = value.get("message")
        return
    if status not in ("SUCCESS", "FAILURE", "REVOKED"):
        _STATE.__set__(job, JobState.PENDING)
        return
    if info is None:
        info = backend._read_info(job.id) or {}
    with _apply_lock:
        if job._done:
            return
        _set_started(job, info.get("started_at"))
        job.progress = info.get("progress", job.progress)
        job.message = info.get("message", job.message)
        if status == "SUCCESS":
            job._finish(JobState.SUCCEEDED, value)
        else:
            exc = value if isinstance(value, BaseException) else None
            if exc is not None and info.get("error_hidden"):
                try:
                    setattr(exc, HIDDEN_MESSAGE_ATTR, str(info["error_hidden"]))
                except (AttributeError, TypeError):  # no instance attributes
                    exc = SnapshotError(f"The job failed with {type(exc).__name__}.")
            if status == "REVOKED":
                # Cancelled before it ran (or killed with Celery's own
                # revoke(terminate=True)): nothing of the job's was raised,
                # as on the thread backend, not Celery's TaskRevokedError;
                # result() raises JobCancelled.
                exc = None
            elif exc is None:
                exc = SnapshotError(f"The job ended {status}: {value!r}")
            cancelled = status == "REVOKED" or isinstance(exc, JobCancelled)
            job._finish(JobState.CANCELLED if cancelled else JobState.FAILED, exc=exc)
        done = _parse_time(meta.get("date_done")) or _parse_time(
            info.get("finished_at")
        )
        if done is not None:
            job._finished = done.timestamp()


# -- signals -------------------------------------------------------------------


def _publish_backend(name: str) -> CeleryBackend | None:
    own = _sending_backend.get()
    if own is not None and name in own.offload.tasks:
        return own
    if has_app_context():
        backend = _by_app.get(current_app._get_current_object())  # type: ignore[attr-defined]
        if backend is not None and name in backend.offload.tasks:
            return backend
    found = [b for b in list(_backends) if name in b.offload.tasks]
    return found[0] if len(found) == 1 else None


def _delay_of(headers: dict[str, t.Any]) -> float:
    eta = _parse_time(headers.get("eta"))
    if eta is None:
        return 0.0
    return max(0.0, (eta - _now()).total_seconds())


def _on_publish(
    sender: t.Any = None,
    body: t.Any = None,
    headers: dict[str, t.Any] | None = None,
    **kwargs: t.Any,
) -> None:
    """Attach a signed snapshot to declared tasks sent with Celery's own API:
    retries, chains and callbacks sent from a job (its snapshot, re-signed),
    ``celery_task.delay()`` in a view (a capture of the request). Nothing
    for tasks sent from a rejected job or from a Celery task that is not a
    job: the worker will not run them.
    """
    if headers is None or _publishing.get():
        return
    name = headers.get("task") or sender
    task_id = headers.get("id")
    if not isinstance(name, str) or not isinstance(task_id, str):
        return
    if not isinstance(body, (tuple, list)) or len(body) < 2:
        return
    args, kw = body[0], body[1]
    # What the worker will send after this task: bound to the snapshot so
    # that a task added to the message in the broker never gets one.
    embed = body[2] if len(body) > 2 and isinstance(body[2], dict) else None
    current = getattr(_worker, "current", None)
    backend: CeleryBackend | None = None
    keys: list[str] = []
    wrote_record = False
    try:
        if current is not None and name in current[0].offload.tasks:
            backend, current_id, wire = current
            if wire is None:
                return  # sent by a job whose snapshot was rejected
            if task_id != current_id:
                wire = backend.copy_uploads(wire, task_id)
                keys = _storage_keys(wire)
        else:
            if HEADER in headers:
                return  # set by the caller: the worker decides
            backend = _publish_backend(name)
            if backend is None:
                return
            outer = get_current_worker_task()
            if outer is not None and (current is None or current[2] is None):
                # Sent by Celery for a task that is not a verified job (its
                # builtins: celery.group, chord_unlock ...), whose message
                # nobody signed: signing here would run what the broker asks.
                raise SnapshotError(
                    f"{name} was sent with Celery's API from the Celery task"
                    f" {outer.name}, which is not a Flask-Offload job, so there"
                    " is no verified request to carry. Send jobs from plain"
                    " Celery tasks with 'submit()' in an app context, and use a"
                    " Redis result backend for chords of jobs."
                )
            wire = backend.capture_wire(backend.app, task_id, keys)
            # As submit does: the web process knows the job's name and
            # where it was sent from before a worker starts it.
            wrote_record = True
            backend._write_info(
                task_id,
                {
                    "name": name,
                    "submitted_at": wire["submitted_at"],
                    "site": wire.get("site"),
                },
            )
        headers[HEADER] = backend.make_token(
            backend.app,
            wire,
            task_id,
            name,
            args,
            kw,
            _delay_of(headers),
            embed=embed,
        )
        headers.pop(ERROR_HEADER, None)  # a retry copies its job's headers
        sending = _sending.get()
        if sending is not None and (keys or wrote_record):
            # Undone by _OffloadTask.apply_async if the message is not sent.
            sending.append((backend, task_id, keys, wrote_record))
    except Exception as e:
        # Celery ignores exceptions raised here and sends the task anyway:
        # say why in the message, so the worker fails the job with it.
        headers.pop(HEADER, None)
        headers.pop(ERROR_HEADER, None)
        if backend is not None:
            try:
                # Signed and bound to the task: a broker writer cannot make
                # a worker show a text of theirs as the job's error.
                headers[ERROR_HEADER] = signing.sign(
                    backend.app,
                    {
                        "kind": _SEND_ERROR,
                        "tid": task_id,
                        "task": name,
                        "reason": (str(e) or type(e).__name__)[:2000],
                    },
                )
            except Exception:
                pass  # no SECRET_KEY: the worker refuses the job as unsigned
        logger.exception(
            "Could not attach a snapshot to task %s (%s); a worker will fail it.",
            task_id,
            name,
        )
        if backend is not None:
            backend._forget(task_id, keys, record=False)


def _on_postrun(
    task_id: str | None = None, task: t.Any = None, **kwargs: t.Any
) -> None:
    cleanup = getattr(_worker, "cleanup", None)
    if cleanup is not None and cleanup[1] == task_id:
        _worker.cleanup = None
        for key in cleanup[2]:
            cleanup[0]._delete_quietly(key)
    current = getattr(_worker, "current", None)
    if current is not None and current[1] == task_id:
        _worker.current = None
        current[0].maybe_sweep()


def _on_worker_init(sender: t.Any = None, **kwargs: t.Any) -> None:
    app = getattr(sender, "app", None)
    for backend in list(_backends):
        if app is None or backend.celery is app:
            backend.sync_tasks()


def _on_worker_ready(sender: t.Any = None, **kwargs: t.Any) -> None:
    app = getattr(sender, "app", None)
    for backend in list(_backends):
        if app is None or backend.celery is app:
            backend.sweep()


signals.before_task_publish.connect(_on_publish)
signals.task_postrun.connect(_on_postrun)
signals.worker_init.connect(_on_worker_init)
signals.worker_ready.connect(_on_worker_ready)


def run_worker(app: Flask, args: list[str]) -> None:
    """Run ``celery worker`` for ``app`` (``flask offload worker``)."""
    backend = _by_app.get(app)
    if backend is None:
        raise RuntimeError(
            "This app has no Celery backend: set OFFLOAD_BACKEND = 'celery' before"
            " 'init_app'."
        )
    backend.sync_tasks()
    code = backend.celery.worker_main(["worker", *args])
    if code:
        raise SystemExit(code)
