"""The :class:`Offload` extension."""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
import typing as t
import weakref
from types import FunctionType

from flask import Flask
from flask import has_app_context

from . import compat
from .backends.base import Backend
from .errors import NotRegistered
from .files import swap_uploads
from .files import WithUploads
from .jobs import _cv_job
from .jobs import Job
from .jobs import JobRegistry
from .jobs import JobState
from .jobs import PUBLIC_ATTR
from .signals import job_submitted
from .snapshot import caller_site
from .snapshot import capture
from .snapshot import prepare_app
from .tasks import GENERATOR_FLAGS
from .tasks import refuse_generator
from .tasks import Task
from .tasks import task_name

if t.TYPE_CHECKING:  # pragma: no cover
    from types import FrameType

P = t.ParamSpec("P")
R = t.TypeVar("R")

logger = logging.getLogger("flask_offload")

#: Every config key with its default. Read once by :meth:`Offload.init_app`.
DEFAULTS: dict[str, t.Any] = {
    "OFFLOAD_BACKEND": "thread",
    "OFFLOAD_MAX_WORKERS": None,
    "OFFLOAD_MAX_QUEUE": 10_000,
    "OFFLOAD_QUEUE_FULL": "raise",
    "OFFLOAD_SHUTDOWN_TIMEOUT": 30.0,
    "OFFLOAD_RESULT_TTL": 3600.0,
    "OFFLOAD_MAX_FINISHED": 1000,
    "OFFLOAD_MAX_BODY_SIZE": 16 * 1024 * 1024,
    "OFFLOAD_CARRY_G": "primitives",
    "OFFLOAD_CARRY_CREDENTIALS": False,
    "OFFLOAD_CREDENTIAL_HEADERS": (),
    "OFFLOAD_JOB_TEARDOWN_REQUEST": False,
    "OFFLOAD_PROPAGATE": False,
    "OFFLOAD_STORAGE": None,
    "OFFLOAD_CELERY": None,
    # Above Redis's default visibility timeout (one hour), after which an
    # unacknowledged job is redelivered with the snapshot signed at submit.
    "OFFLOAD_SNAPSHOT_MAX_AGE": 7200.0,
    "OFFLOAD_DASHBOARD": False,
    "OFFLOAD_URL_PREFIX": "/offload",
}


def _whole(key: str, value: t.Any, minimum: int = 0) -> int:
    """``value`` of the config ``key`` as a whole number of at least
    ``minimum`` (a string of digits, as from an environment variable, is
    accepted), or a ``ValueError`` naming the key.
    """
    # bool is an int: True as a size or count is a mistake, not 1.
    if not isinstance(value, bool):
        try:
            number = int(value)
        except (TypeError, ValueError):
            pass
        else:
            if number == value or isinstance(value, str):
                if number >= minimum:
                    return number
    raise ValueError(
        f"{key} must be a whole number of at least {minimum}, not {value!r}."
    )


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _flag(key: str, value: t.Any) -> bool:
    """``value`` of the config ``key`` as a bool, or a ``ValueError`` naming
    the key. ``"false"`` and ``"0"`` (from an environment variable) are
    false: ``bool("false")`` would turn the feature on.
    """
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(
        f"{key} must be True or False (or 'true' or 'false', as from an"
        f" environment variable), not {value!r}."
    )


def _seconds(key: str, value: t.Any, minimum: float = 0.0) -> float:
    """``value`` of the config ``key`` as a number of seconds, at least
    ``minimum``, or a ``ValueError`` naming the key.
    """
    if not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            pass
        else:
            # Not NaN, and not infinite: threading's waits refuse more.
            if minimum <= number <= threading.TIMEOUT_MAX:
                return number
    limit = "more than 0" if minimum else "0 or more"
    raise ValueError(
        f"{key} must be a finite number of seconds, {limit}, like 30 or 0.5,"
        f" not {value!r}."
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """The ``OFFLOAD_*`` config of one app, validated, as read at ``init_app``."""

    backend: str
    max_workers: int
    max_queue: int
    queue_full: str
    shutdown_timeout: float
    result_ttl: float
    max_finished: int
    max_body_size: int
    carry_g: str | tuple[str, ...] | None
    carry_credentials: bool
    credential_headers: tuple[str, ...]
    job_teardown_request: bool
    propagate: bool
    storage: str | None
    celery: t.Any
    snapshot_max_age: float
    dashboard: bool
    url_prefix: str

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> Settings:
        def get(key: str) -> t.Any:
            return config.get(key, DEFAULTS[key])

        def flag(key: str) -> bool:
            return _flag(key, get(key))

        from .backends import BACKENDS

        backend = get("OFFLOAD_BACKEND")
        if backend not in BACKENDS:
            raise ValueError(
                f"OFFLOAD_BACKEND is {backend!r}, which is not a backend. Use one"
                f" of: {', '.join(repr(b) for b in BACKENDS)}."
            )
        workers = get("OFFLOAD_MAX_WORKERS")
        if workers is None:
            workers = min(32, (os.cpu_count() or 1) + 4)
        workers = _whole("OFFLOAD_MAX_WORKERS", workers, 1)
        queue_full = get("OFFLOAD_QUEUE_FULL")
        if queue_full not in ("raise", "block"):
            raise ValueError(
                f"OFFLOAD_QUEUE_FULL must be 'raise' or 'block', not {queue_full!r}."
            )
        carry_g = get("OFFLOAD_CARRY_G")
        if carry_g in (None, False, "", (), []):
            carry_g = None
        elif carry_g != "primitives":
            if (
                isinstance(carry_g, str)
                or not isinstance(carry_g, t.Iterable)
                or not all(isinstance(n, str) for n in carry_g)
            ):
                raise ValueError(
                    "OFFLOAD_CARRY_G must be 'primitives', a list of names of 'g'"
                    f" attributes, or None, not {carry_g!r}."
                )
            carry_g = tuple(carry_g)
        credential_headers = get("OFFLOAD_CREDENTIAL_HEADERS") or ()
        if isinstance(credential_headers, str):
            credential_headers = (credential_headers,)
        if not isinstance(credential_headers, t.Iterable) or not all(
            isinstance(h, str) for h in credential_headers
        ):
            raise ValueError(
                "OFFLOAD_CREDENTIAL_HEADERS must be a list of header names, like"
                f" ['X-Api-Key'], not {credential_headers!r}."
            )
        max_queue = get("OFFLOAD_MAX_QUEUE")
        if max_queue is None:
            max_queue = 0  # no limit, as 0 is
        url_prefix = get("OFFLOAD_URL_PREFIX")
        if not isinstance(url_prefix, str) or not url_prefix.startswith("/"):
            raise ValueError(
                "OFFLOAD_URL_PREFIX must be a string that starts with '/', like"
                f" '/offload', not {url_prefix!r}."
            )
        return cls(
            backend=backend,
            max_workers=workers,
            max_queue=_whole("OFFLOAD_MAX_QUEUE", max_queue),
            queue_full=queue_full,
            shutdown_timeout=_seconds(
                "OFFLOAD_SHUTDOWN_TIMEOUT", get("OFFLOAD_SHUTDOWN_TIMEOUT")
            ),
            result_ttl=_seconds("OFFLOAD_RESULT_TTL", get("OFFLOAD_RESULT_TTL")),
            max_finished=_whole("OFFLOAD_MAX_FINISHED", get("OFFLOAD_MAX_FINISHED")),
            max_body_size=_whole("OFFLOAD_MAX_BODY_SIZE", get("OFFLOAD_MAX_BODY_SIZE")),
            carry_g=carry_g,
            carry_credentials=flag("OFFLOAD_CARRY_CREDENTIALS"),
            credential_headers=tuple(str(h) for h in credential_headers),
            job_teardown_request=flag("OFFLOAD_JOB_TEARDOWN_REQUEST"),
            propagate=flag("OFFLOAD_PROPAGATE"),
            storage=get("OFFLOAD_STORAGE"),
            celery=get("OFFLOAD_CELERY"),
            snapshot_max_age=_seconds(
                "OFFLOAD_SNAPSHOT_MAX_AGE", get("OFFLOAD_SNAPSHOT_MAX_AGE"), 1e-3
            ),
            dashboard=flag("OFFLOAD_DASHBOARD"),
            url_prefix=url_prefix,
        )


class _AppState:
    __slots__ = (
        "settings",
        "registry",
        "backend",
        "app_ref",
        "_inline",
        "__weakref__",
    )

    def __init__(self, settings: Settings, registry: JobRegistry, backend: Backend):
        self.settings = settings
        self.registry = registry
        self.backend = backend
        #: A weak reference to the app, set by init_app: its callback drops
        #: the state from the extension when the app goes.
        self.app_ref: weakref.ref[Flask] | None = None
        self._inline: Backend | None = None

    def current_backend(self, app: Flask) -> Backend:
        """The backend, or an inline one with this app's settings while the
        ``offload_inline`` fixture forces inline runs.
        """
        if not _force_inline:
            return self.backend
        inline = self._inline
        if inline is None:
            from .backends.inline import InlineBackend

            inline = self._inline = InlineBackend(self.settings, app.name)
        return inline


def _warn_misspelt_keys(app: Flask) -> None:
    """Log a warning for each config key that looks like a misspelt
    ``OFFLOAD_*`` setting (``OFFLOAD_MAX_WORKER``): Flask ignores unknown
    keys, and the app would silently run with the default. Keys that are
    close to no setting are the app's own business and pass.
    """
    for key in app.config:
        if key.startswith("OFFLOAD_") and key not in DEFAULTS:
            # Two typing slips at most: a longer key that starts with a
            # setting's name (OFFLOAD_STORAGE_DIR) is the app's own.
            close = [name for name in DEFAULTS if _slips(key, name) <= 2]
            if close:
                logger.warning(
                    "The config key %s is not a Flask-Offload setting and has"
                    " no effect: did you mean %s? See the settings in the"
                    " configuration docs.",
                    key,
                    close[0],
                )


def _slips(a: str, b: str) -> int:
    """The edit distance of ``a`` and ``b``, counting a swap of two
    neighbouring letters as one (``DASHBAORD``).
    """
    if abs(len(a) - len(b)) > 2:
        return 3
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, prev2[j - 2] + 1)
            row.append(cost)
        prev2, prev = prev, row
    return prev[-1]


def _make_backend(settings: Settings, app: Flask, offload: Offload) -> Backend:
    if settings.backend == "inline":
        from .backends.inline import InlineBackend

        return InlineBackend(settings, app.name)
    if settings.backend == "celery":
        try:
            from .backends.celery import CeleryBackend
        except ImportError as e:
            if e.name not in ("celery", "kombu", "cryptography"):
                raise
            raise RuntimeError(
                "OFFLOAD_BACKEND = 'celery' needs Celery, which is not installed."
                " Install it with: pip install 'Flask-Offload[celery]'"
            ) from e
        backend: Backend = CeleryBackend(settings, app, offload)
        return backend
    from .backends.thread import ThreadBackend

    return ThreadBackend(settings, app.name)


# Settings of every app that carry() or a job may run in, including apps that
# use carry() without an Offload instance (defaults then).
_settings: weakref.WeakKeyDictionary[Flask, Settings] = weakref.WeakKeyDictionary()
# Set by the pytest plugin's offload_inline fixture: every app runs its jobs
# inline (with its own settings) while it is true.
_force_inline = False
_live_states: weakref.WeakSet[_AppState] = weakref.WeakSet()


def settings_for(app: Flask) -> Settings:
    """The settings an app runs jobs with; defaults for an app that only uses
    :func:`~flask_offload.carry`.
    """
    settings = _settings.get(app)
    if settings is None:
        settings = Settings.from_config(app.config)
        _register_settings(app, settings)
    return settings


def _register_settings(app: Flask, settings: Settings) -> None:
    """Remember the settings jobs of ``app`` run with, and prepare the app
    (see :func:`~.snapshot.prepare_app`).
    """
    prepare_app(app)
    _settings[app] = settings


class Offload:
    """Run work after the response, with the request it came from.

    .. code-block:: python

        offload = Offload(app)  # or Offload() and later offload.init_app(app)

        @app.post("/orders/export")
        def export():
            job = offload.submit(build_export, request.args["month"])
            return {"job": job.id}, 202

    One instance may serve several apps (the factory pattern); each app has
    its own config, backend and jobs. The app is never stored on the
    extension: calls find it through ``current_app``.

    :param app: The app to initialise now, if any.
    :param celery: An existing Celery app for the ``celery`` backend.
    """

    def __init__(self, app: Flask | None = None, *, celery: t.Any = None) -> None:
        # Keyed by id(app), looked up on every submit (one builtin call; a
        # weakref.ref(app) to look up costs five times as much). An app's
        # entry goes when the app does, by the callback of a weak reference
        # that its state keeps, before the app's id can be reused.
        self._states: dict[int, _AppState] = {}
        if celery is not None and not (
            hasattr(celery, "send_task") and hasattr(celery, "on_after_finalize")
        ):
            raise TypeError(
                f"'Offload(celery=...)' takes a Celery app, not {celery!r}. Pass"
                " the app ('celery = Celery(...)'), or leave it out and set"
                " OFFLOAD_CELERY to a dict of Celery settings, for example"
                " {'broker_url': 'redis://127.0.0.1:6379/0'}."
            )
        self._celery = celery
        self._authorize: t.Callable[[Job], bool] | None = None
        #: Declared tasks by name.
        self.tasks: dict[str, Task[..., t.Any]] = {}
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app``.

        Reads the ``OFFLOAD_*`` config once (see :doc:`/config`), setting each
        missing key to its default. Changing them afterwards has no effect.

        :raises RuntimeError: The app already has an ``Offload`` instance.
        :raises ValueError: A config value is invalid; the message says which.
        """
        if "offload" in app.extensions:
            raise RuntimeError(
                "An 'Offload' instance has already been registered on this Flask"
                " app. Import and use that instance instead."
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        settings = Settings.from_config(app.config)
        _warn_misspelt_keys(app)
        # Everything that can fail comes before the app is touched, so a
        # failed init_app leaves no half-registered extension behind.
        backend = _make_backend(settings, app, self)
        if settings.propagate:
            from .propagation import install

            install()
        if settings.dashboard:
            from .dashboard import create_blueprint

            app.register_blueprint(
                create_blueprint(self), url_prefix=settings.url_prefix
            )
        from .cli import offload_cli

        app.cli.add_command(offload_cli)
        _register_settings(app, settings)
        registry = JobRegistry(settings.result_ttl, settings.max_finished)
        if settings.backend == "thread":
            from .backends.thread import ThreadBackend

            t.cast(ThreadBackend, backend).registry = registry
            registry.tracks_queue = True
        state = _AppState(settings, registry, backend)
        states = self._states
        app_id = id(app)
        state.app_ref = weakref.ref(app, lambda ref: _app_gone(states, app_id))
        states[app_id] = state
        _live_states.add(state)
        app.extensions["offload"] = self
        if settings.backend == "thread":
            _install_sigterm()

    # -- finding the app ---------------------------------------------------

    def _state(self, app: Flask | None = None) -> tuple[Flask, _AppState]:
        if app is None:
            app_ctx = compat.current_app_context()
            if app_ctx is None:
                raise RuntimeError(
                    "Working outside of application context. 'offload.submit' and"
                    " the other job calls need to know the app: call them in a view,"
                    " a CLI command, a job, or inside 'with app.app_context()'."
                )
            app = app_ctx.app
        state = self._states.get(id(app))
        if state is None:
            raise RuntimeError(
                "The current Flask app is not registered with this 'Offload'"
                " instance. Did you forget to call 'init_app', or did you create"
                " several 'Offload' instances?"
            )
        return app, state

    def _states_here(self) -> list[_AppState]:
        """The current app's state, or every app's outside an app context."""
        if has_app_context():
            return [self._state()[1]]
        return list(self._states.values())

    @property
    def celery(self) -> t.Any:
        """The Celery app of the current app (or of the only app registered),
        when ``OFFLOAD_BACKEND`` is ``"celery"``: give it to
        ``celery -A yourapp:celery_app worker``.
        """
        states = self._states_here()
        if len(states) != 1:
            raise RuntimeError(
                "'offload.celery' needs to know the app: use it inside an app"
                " context when one Offload instance serves several apps."
            )
        celery = getattr(states[0].backend, "celery", None)
        if celery is None:
            raise RuntimeError(
                "'offload.celery' is only available with OFFLOAD_BACKEND = 'celery'."
            )
        return celery

    # -- submitting ----------------------------------------------------------

    def submit(
        self, fn: t.Callable[..., t.Any], /, *args: t.Any, **kwargs: t.Any
    ) -> Job:
        """Run ``fn(*args, **kwargs)`` as a job and return its :class:`Job`.

        Inside a request, the job sees a replay of it (``request``, a copy of
        the session, the carried ``g`` values, uploaded files) even after the
        response was sent. Outside a request (CLI, ``app.app_context()``),
        it gets an app context only. Any callable works on the thread and
        inline backends; the Celery backend sends only declared tasks.

        :param fn: The function, or a :class:`Task`.
        :raises QueueFull: The queue is full and ``OFFLOAD_QUEUE_FULL`` is ``"raise"``.
        :raises NotRegistered: The backend is Celery and ``fn`` is not a task.
        :raises TypeError: ``fn`` is not callable, or is a generator function.
        :raises RuntimeError: No app context is active.
        """
        app, state = self._state()
        settings = state.settings
        backend = state.current_backend(app)
        if isinstance(fn, Task):
            name, func = fn.name, fn.fn
        elif not callable(fn):
            raise TypeError(
                f"'offload.submit' needs a function to run, not {fn!r}. Pass the"
                " function itself and its arguments after it:"
                " offload.submit(fn, arg1, key=value)."
            )
        else:
            if backend.name == "celery":
                raise NotRegistered(
                    f"{task_name(fn)} is not a declared task, and the Celery backend"
                    " can only send declared tasks to a worker. Decorate it with"
                    " '@offload.task' and call 'its_name.submit(...)'."
                )
            if type(fn) is FunctionType and fn.__code__.co_flags & GENERATOR_FLAGS:
                refuse_generator(fn)  # raises
            name, func = task_name(fn), fn
        backend.reserve()
        try:
            snapshot = capture(
                carry_g=settings.carry_g,
                max_body_size=settings.max_body_size,
                site=caller_site(sys._getframe(1)),
            )
            job = backend.job_class(name, app, snapshot.site, snapshot)
            # Marked with public_args / public_result: one lookup for both.
            public = getattr(func, PUBLIC_ATTR, 0)
            if public:
                job._make_public(public, args, kwargs)
            data = snapshot.request
            if data is not None and data.files and (args or kwargs):
                swapped = swap_uploads(data, args, kwargs)
                if swapped is not None:
                    if backend.name != "thread":
                        raise TypeError(
                            f"An uploaded file was passed to {name} as an argument,"
                            f" which the {backend.name} backend cannot send. Let"
                            " the job read it from 'request.files' (it gets its"
                            " own copy), or pass the field's name."
                        )
                    # The view's files are closed after the response: the job
                    # gets its own handles on the same uploads instead.
                    args, kwargs = swapped
                    func = WithUploads(func)
            snapshot.acquire()
        except BaseException:
            backend.unreserve()
            raise
        state.registry.add(job)
        if job_submitted.receivers:
            job._send(job_submitted)
        backend.enqueue(app, job, func, args, kwargs)
        return job

    @t.overload
    def task(self, fn: t.Callable[P, R], /) -> Task[P, R]: ...

    @t.overload
    def task(
        self, fn: None = None, /, *, name: str | None = None
    ) -> t.Callable[[t.Callable[P, R]], Task[P, R]]: ...

    def task(
        self, fn: t.Callable[P, R] | None = None, /, *, name: str | None = None
    ) -> Task[P, R] | t.Callable[[t.Callable[P, R]], Task[P, R]]:
        """Declare a task: ``@offload.task`` or ``@offload.task(name="...")``.

        The result is still callable directly (it runs in the caller) and has
        :meth:`Task.submit` and :meth:`Task.delay` to run it as a job.
        """

        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(
                f"A task's name must be a non-empty string, not {name!r}:"
                " '@offload.task(name=\"reports.build\")', or leave 'name' out"
                " to name the task after its function."
            )

        def decorate(f: t.Callable[P, R]) -> Task[P, R]:
            if not callable(f):
                if isinstance(f, str):
                    hint = (
                        f" To name the task, pass the name as a keyword:"
                        f" '@offload.task(name={f!r})'."
                    )
                else:
                    hint = " Use it on a function: '@offload.task' above 'def'."
                raise TypeError(
                    f"'offload.task' declares a function as a task, and was"
                    f" given {f!r}, which is not callable.{hint}"
                )
            refuse_generator(f)
            declared = Task(self, f, name or task_name(f))
            if declared.name in self.tasks:
                raise ValueError(
                    f"A task named {declared.name!r} is already declared. Give one"
                    " of them another name with '@offload.task(name=...)'."
                )
            self.tasks[declared.name] = declared
            return declared

        if fn is not None:
            return decorate(fn)
        return decorate

    def authorize(self, f: t.Callable[[Job], bool]) -> t.Callable[[Job], bool]:
        """Decide who may see and cancel a job on the status URLs and the
        dashboard. Without a callback every request is refused (403).

        .. code-block:: python

            @offload.authorize
            def may_see(job):
                return job.user_id is not None and job.user_id == current_user.get_id()
        """
        self._authorize = f
        return f

    def is_authorized(self, job: Job) -> bool:
        """Whether the current request may see ``job`` (see :meth:`authorize`)."""
        check = self._authorize
        return bool(check is not None and check(job))

    def accepted(self, job: Job) -> t.Any:
        """A ``202 Accepted`` response for ``job`` whose ``Location`` header is
        the job's status URL, the polling pattern given for free. Needs
        ``OFFLOAD_DASHBOARD`` (which registers the status URLs).
        """
        from flask import current_app
        from flask import jsonify
        from flask import url_for

        if "offload.job_status" not in current_app.view_functions:
            raise RuntimeError(
                "'offload.accepted' needs the job status URLs: set"
                " OFFLOAD_DASHBOARD = True before 'init_app'."
            )
        # Other failures (no request and no SERVER_NAME) explain themselves.
        location = url_for("offload.job_status", job_id=job.id)
        response = jsonify(
            {"id": job.id, "state": job.state.value, "status_url": location}
        )
        response.status_code = 202
        response.headers["Location"] = location
        return response

    # -- reading jobs ----------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        """The job with this id, or ``None`` if it is unknown or expired."""
        if not isinstance(job_id, str) or not job_id:
            # An empty or missing id (``request.args.get("id", "")``) is no
            # job's, on every backend: Celery's result backend would raise.
            return None
        states = self._states_here()
        for state in states:
            job = state.registry.get(job_id)
            if job is not None:
                return job
        # Submitted by another process: ask where the backend keeps state.
        for state in states:
            job = state.backend.get_job(job_id)
            if job is not None:
                return job
        return None

    def jobs(self, state: JobState | str | None = None) -> list[Job]:
        """Recent jobs this process knows, newest first.

        :param state: Only jobs in this state (its name in any case:
            ``"failed"``).
        :raises ValueError: ``state`` is not a job state.
        """
        out: list[Job] = []
        for app_state in self._states_here():
            out.extend(app_state.registry.recent(state))
        return out

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every known job is done, including jobs they submit.

        :param timeout: Seconds to wait at most, in all.
        :return: ``False`` if some job was still unfinished at the timeout.
        :raises RuntimeError: Called inside a running job, which would wait
            for itself.
        """
        states = self._states_here()
        running = _cv_job.get(None)
        # Only where the running job is one of those waited for: a Celery
        # task's job is not in its worker's registry, and may wait there for
        # the jobs it sent.
        if running is not None and any(
            running in state.registry._pending for state in states
        ):
            raise RuntimeError(
                f"'offload.join()' was called inside job {running.id}"
                f" ({running.name}): it waits for every job, this one too,"
                " which cannot end while it waits. To wait for the jobs this"
                " one submitted, keep what 'submit' returns and call"
                " 'result()' or 'wait()' on each."
            )
        return join_states(states, timeout)

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop accepting jobs, and with ``wait`` let queued and running jobs
        finish for up to ``timeout`` seconds (``OFFLOAD_SHUTDOWN_TIMEOUT`` by
        default). Every job still unfinished then is abandoned and logged with
        its id; pending ones end ``CANCELLED``.
        """
        _shutdown_states(self._states_here(), wait, timeout)


def join_states(states: t.Iterable[_AppState], timeout: float | None) -> bool:
    """Wait until every job the given apps know is done. ``False`` at the
    timeout (seconds in all; ``None`` waits forever).
    """
    deadline = None if timeout is None else time.monotonic() + timeout

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    for state in states:
        if not state.registry.join(left()):
            return False
        # Jobs sent to other processes (Celery) stay in the registry, their
        # state read from the result backend: wait for those too.
        for job in state.registry.recent():
            if not job.done() and not job.wait(left()):
                return False
    return True


def _shutdown_states(
    states: t.Sequence[_AppState], wait: bool, timeout: float | None
) -> None:
    """Shut down several apps' backends at once: every one stops accepting
    jobs first, then each waits for its jobs up to its own timeout counted
    from now (not after the others'), so a drain takes the longest timeout,
    not their sum.
    """
    for state in states:
        state.backend.close()
    if not wait:
        return
    start = time.monotonic()
    for index, state in enumerate(states):
        limit = state.settings.shutdown_timeout if timeout is None else timeout
        try:
            done = state.registry.join(max(0.0, start + limit - time.monotonic()))
        except BaseException as e:
            # Thrown into the wait: a second Ctrl-C, or eventlet's quick
            # shutdown (sys.exit() in a greenthread). Stop waiting, but say
            # which jobs are lost.
            for left in states[index:]:
                _abandon(left, limit, interrupted=type(e).__name__)
            raise
        if not done:
            _abandon(state, limit)
    for state in states:
        state.backend.stop()


def _abandon(state: _AppState, timeout: float, interrupted: str = "") -> None:
    """Log each job of ``state`` left unfinished by a shutdown; cancel those
    that did not start.

    :param interrupted: The exception that ended the wait early, if one did.
    """
    for job in state.registry.unfinished():
        if job.cancel():
            logger.error(
                "Job %s (%s) submitted from %s was abandoned at shutdown before"
                " it started.",
                job.id,
                job.name,
                job.submitted_from,
            )
        elif interrupted and not job.done():
            logger.error(
                "Job %s (%s) submitted from %s was still running when %s ended"
                " the shutdown's wait; it was abandoned.",
                job.id,
                job.name,
                job.submitted_from,
                interrupted,
            )
        elif not job.done():
            logger.error(
                "Job %s (%s) submitted from %s was still running when shutdown"
                " gave up after %s seconds; it was abandoned.",
                job.id,
                job.name,
                job.submitted_from,
                timeout,
            )


def _app_gone(states: dict[int, _AppState], app_id: int) -> None:
    """Forget the state of an app that was garbage collected, and let its
    worker threads end. No job of it is queued: each queued job holds the app.
    """
    state = states.pop(app_id, None)
    if state is not None:
        state.backend.stop()


def _shutdown_all() -> None:
    try:
        _shutdown_states(list(_live_states), True, None)
    except (SystemExit, KeyboardInterrupt):
        # The process is exiting already: the abandoned jobs were logged,
        # and Python would only print the exception as ignored.
        pass


atexit.register(_shutdown_all)

_sigterm_lock = threading.Lock()
_sigterm_installed = False


def _install_sigterm() -> None:
    """Drain on SIGTERM when nothing else handles it.

    Servers that handle SIGTERM themselves (gunicorn) exit through normal
    interpreter shutdown, where the atexit hook drains. With the default
    action the process would die at once and lose every queued job.
    """
    global _sigterm_installed
    with _sigterm_lock:
        if _sigterm_installed:
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        try:
            signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:
            # Not the main thread. (Asked of Python, not by comparing
            # thread objects: eventlet's patched threading makes a new
            # main-thread object, which the real main thread is not.)
            return
        _sigterm_installed = True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    logger.info("SIGTERM received: draining Flask-Offload jobs before exiting.")
    gevent = sys.modules.get("gevent")
    if gevent is not None and gevent.getcurrent() is gevent.get_hub():
        # Under gevent the handler may run in the hub's loop, where waiting
        # for the jobs is not allowed: drain in a greenlet of its own.
        gevent.spawn(_drain_and_die)
        return
    hubs = sys.modules.get("eventlet.hubs")
    if hubs is not None and _in_eventlet_hub(hubs):
        # The same under eventlet.
        sys.modules["eventlet"].spawn(_drain_and_die)
        return
    _drain_and_die()


def _in_eventlet_hub(hubs: t.Any) -> bool:
    greenlet = sys.modules.get("greenlet")  # eventlet runs on it
    try:
        return greenlet is not None and bool(
            greenlet.getcurrent() is hubs.get_hub().greenlet
        )
    except Exception:  # an eventlet without a hub yet, or another layout
        return False


def _drain_and_die() -> None:
    _shutdown_all()
    # Dying of a signal skips the flushing of normal exit: what the drained
    # jobs printed or logged would be lost in buffers.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    logging.shutdown()
    # Then die of SIGTERM as the process would have, keeping its exit status.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
