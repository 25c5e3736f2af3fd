"""Jobs: the handle a submit returns, their states, ``current_job`` and the
bounded per-app registry of recent jobs.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import sys
import threading
import time
import typing as t
import weakref
from collections import deque
from contextvars import ContextVar
from datetime import datetime
from datetime import timezone

from werkzeug.local import LocalProxy

from . import signals
from .errors import JobCancelled

if t.TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

    from .snapshot import Snapshot

logger = logging.getLogger("flask_offload")

# No lock is shared by the threads that submit and run jobs. Under the GIL a
# thread preempted while holding one makes the others block on it, and the
# convoy that follows costs more than the jobs (measured: 0.6 to 0.9 context
# switches per job with 4 workers). The hot paths use operations that are
# atomic in CPython instead: list.pop, set.add/remove, dict item assignment,
# deque.append, next() on a C iterator.

# Only waiters take this lock, to install a job's Event once.
_event_lock = threading.Lock()

# Job ids: uuid4 hex strings cut from one hex string of os.urandom output,
# its version and variant bits set for all ids at once, so a submit costs no
# system call and no per-id byte work. Never reused; the buffer is dropped in
# a forked child so parent and child never share ids.
_ID_BUF = 2048
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT_RFC = bytes((b & 0x3F) | 0x80 for b in range(256))
_ids: t.Iterator[str] = iter(())


def _id_batch() -> t.Iterator[str]:
    buf = bytearray(os.urandom(_ID_BUF))
    # Byte 6 of each 16 holds the version, byte 8 the variant (RFC 4122).
    buf[6::16] = buf[6::16].translate(_VERSION_4)
    buf[8::16] = buf[8::16].translate(_VARIANT_RFC)
    # Cut in one C call: the hex digits with a space after every 16 bytes,
    # split (half the cost per id of slicing in a comprehension). next() on
    # a list iterator hands each id to one caller only.
    return iter(buf.hex(" ", -16).split())


def _reset_ids() -> None:
    # In a forked child: never hand out the parent's ids again.
    global _ids, _event_lock
    _ids = iter(())
    _event_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_ids)


def new_job_id() -> str:
    """An unguessable id: 32 hex digits of a random (version 4) UUID."""
    global _ids
    job_id = next(_ids, None)
    while job_id is None:
        # Threads that race here each take a fresh batch; no id repeats.
        _ids = _id_batch()
        job_id = next(_ids, None)
    return job_id


class JobState(str, enum.Enum):
    """The state of a :class:`Job`. A ``str`` enum: ``JobState.FAILED == "FAILED"``."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """Whether the state is final."""
        return self in _FINAL


def parse_state(state: JobState | str) -> JobState:
    """``state`` as a :class:`JobState`, its name in any case accepted
    (``"failed"``), or a :exc:`ValueError` listing the states.

    :param state: A state, or its name.
    """
    if isinstance(state, JobState):
        return state
    if isinstance(state, str):
        try:
            return JobState(state.upper())
        except ValueError:
            pass
    raise ValueError(
        f"{state!r} is not a job state. Use one of:"
        f" {', '.join(s.value for s in JobState)} (in any case)."
    )


_FINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

SubmitSite = tuple[str, int, str]


# Read once per job: module globals are cheaper than enum class attributes.
_PENDING = JobState.PENDING
_RUNNING = JobState.RUNNING
_SUCCEEDED = JobState.SUCCEEDED


def format_site(site: SubmitSite | None) -> str | None:
    """Format a ``(filename, lineno, function)`` submit site as
    ``"path/to/views.py:42 in upload"``, relative to the working directory
    when the file is below it.
    """
    if site is None:
        return None
    filename, lineno, func = site
    try:
        rel = os.path.relpath(filename)
    except ValueError:  # pragma: no cover - another drive on Windows
        rel = filename
    if not rel.startswith(".."):
        filename = rel
    return f"{filename}:{lineno} in {func}"


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


class Job:
    """A unit of work submitted with :meth:`Offload.submit` or a task's
    :meth:`~Task.submit`.

    Jobs are created by the extension; users read them, wait on them and may
    cancel them. All methods are safe to call from any thread.
    """

    __slots__ = (
        "id",
        "name",
        "state",
        "progress",
        "message",
        "_submitted",
        "_started",
        "_finished",
        "cancel_requested",
        "snapshot",
        "user_id",
        "public_args",
        "_public_result",
        "_site",
        "_claim",
        "_done",
        "_event",
        "_result",
        "_exception",
        "_app",
        "_registry",
        "_finished_mono",
        "__weakref__",
    )
    # Set only by _make_public, for jobs of functions marked with
    # public_result: other jobs never pay for it (read with getattr).
    _public_result: bool

    def __init__(
        self,
        name: str,
        app: Flask | None = None,
        site: SubmitSite | None = None,
        snapshot: Snapshot | None = None,
        *,
        id: str | None = None,
    ) -> None:
        #: Unguessable identifier (uuid4 hex).
        self.id: str = id or new_job_id()
        #: ``"module.qualname"`` of the function.
        self.name = name
        #: The current :class:`JobState`.
        self.state = _PENDING
        #: Progress between 0 and 1 reported with :meth:`set_progress`, or ``None``.
        self.progress: float | None = None
        #: The message reported with :meth:`set_progress`, or ``None``.
        self.message: str | None = None
        # Epoch seconds; the public datetimes are made on demand.
        self._submitted = time.time()
        self._started: float | None = None
        self._finished: float | None = None
        #: Set by :meth:`cancel` while the job runs; long jobs should check it.
        self.cancel_requested = False
        #: The captured request the job runs with (``None`` once it is done).
        self.snapshot = snapshot
        #: Who submitted the job: Flask-Login's user id from the session at
        #: submit time (``None`` if nobody was logged in). Kept after the job
        #: ends, for :meth:`Offload.authorize` callbacks.
        self.user_id: str | None = None
        #: A JSON copy of the arguments, kept only for tasks marked with
        #: :func:`flask_offload.dashboard.public_args`; otherwise ``None``.
        self.public_args: dict[str, t.Any] | None = None
        if snapshot is not None and snapshot.session:
            uid = snapshot.session.get("_user_id")
            self.user_id = None if uid is None else str(uid)
        self._site = site
        # Whoever pops this first moves the job out of PENDING: a worker
        # starting it, or cancel(). list.pop is atomic, so no lock is needed.
        self._claim = [True]
        # Most jobs are never waited on: the Event is made only for a waiter.
        self._done = False
        self._event: threading.Event | None = None
        self._result: t.Any = None
        self._exception: BaseException | None = None
        self._app: weakref.ref[Flask] | None = weakref.ref(app) if app else None
        self._registry: JobRegistry | None = None
        self._finished_mono = 0.0  # set by the registry when the job is done

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.name!r} {self.state.value}>"

    @property
    def submitted_at(self) -> datetime:
        """When the job was submitted (aware, UTC)."""
        return _dt(self._submitted)

    @property
    def started_at(self) -> datetime | None:
        """When the job started running (aware, UTC), or ``None``."""
        return None if self._started is None else _dt(self._started)

    @property
    def finished_at(self) -> datetime | None:
        """When the job ended (aware, UTC), or ``None``."""
        return None if self._finished is None else _dt(self._finished)

    @property
    def submitted_from(self) -> str | None:
        """Where the job was submitted: ``"path/to/views.py:42 in upload"``."""
        return format_site(self._site)

    # -- waiting ---------------------------------------------------------

    def done(self) -> bool:
        """Whether the job has finished (succeeded, failed or was cancelled)."""
        return self._done

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job is done, its context torn down.

        :param timeout: Seconds to wait at most; ``None`` waits forever.
        :return: Whether the job is done.
        """
        if self._done:
            return True
        event = self._event
        if event is None:
            with _event_lock:
                event = self._event
                if event is None:
                    event = self._event = threading.Event()
        # _finish sets _done before it reads _event: looking at _done again
        # after installing the event means one side always sees the other.
        if self._done:
            return True
        return event.wait(timeout)

    def result(self, timeout: float | None = None) -> t.Any:
        """Wait for the job and return what it returned.

        :param timeout: Seconds to wait at most; ``None`` waits forever.
        :raises TimeoutError: The job did not finish in time.
        :raises JobCancelled: The job was cancelled.
        :raises Exception: Whatever the job raised, re-raised here.
        """
        if not self.wait(timeout):
            raise TimeoutError(
                f"Job {self.id} ({self.name}) did not finish within {timeout} seconds."
            )
        if self._exception is not None:
            raise self._exception
        if self.state is JobState.CANCELLED:
            raise JobCancelled(f"Job {self.id} ({self.name}) was cancelled.")
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the job and return the exception it raised, or ``None``.

        :param timeout: Seconds to wait at most; ``None`` waits forever.
        :raises TimeoutError: The job did not finish in time.
        """
        if not self.wait(timeout):
            raise TimeoutError(
                f"Job {self.id} ({self.name}) did not finish within {timeout} seconds."
            )
        return self._exception

    # -- control ---------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the job.

        A pending job never runs and ends ``CANCELLED``. A running job cannot
        be stopped from outside: this sets :attr:`cancel_requested`, which the
        job can check (``current_job.cancel_requested``) to stop early, for
        example by raising :exc:`JobCancelled`.

        :return: ``True`` if the job is now cancelled, ``False`` if it is
            running (cancellation requested) or already finished otherwise.
        """
        state = self.state
        if state.finished:
            return state is JobState.CANCELLED
        registry = self._registry
        cancels = (
            registry.queued_cancels
            if registry is not None and registry.tracks_queue
            else None
        )
        if cancels is not None:
            # Counted before the claim, so the worker that takes the job
            # from the queue always finds the count to lower.
            cancels.append(None)
        if self._take():
            self.cancel_requested = True
            self._finish(JobState.CANCELLED)
            return True
        if cancels is not None:
            try:
                cancels.pop()
            except IndexError:
                pass
        # A worker took it first: it is running, or just finished.
        if not self._done:
            self.cancel_requested = True
        return self.state is JobState.CANCELLED

    def set_progress(self, progress: float | None, message: str | None = None) -> None:
        """Report progress, visible at once to other threads (the request that
        polls the job, the dashboard) and sent as :data:`~signals.job_progress`.

        Once the job has ended its progress is final: a call from a thread
        the job left running is checked and then ignored. Receivers of
        :data:`~signals.job_finished` may still set it, while they run.

        :param progress: A fraction between 0 and 1, or ``None`` if unknown.
        :param message: A short text for people, such as ``"parsed 4,000 rows"``,
            or ``None``.
        :raises ValueError: ``progress`` is not between 0 and 1.
        :raises TypeError: ``progress`` is not a number or ``None``, or
            ``message`` is not a string or ``None``.
        """
        if progress is not None:
            try:
                progress = float(progress)
            except (TypeError, ValueError):
                raise TypeError(
                    "Progress must be a number between 0 and 1 or None, not"
                    f" {progress!r}. Pass done / total, for example"
                    " set_progress(0.4), and any text as the message:"
                    ' set_progress(0.4, "40%").'
                ) from None
            if not 0.0 <= progress <= 1.0:
                raise ValueError(
                    f"Progress must be a fraction between 0 and 1, not {progress!r}."
                    " Pass done / total, for example set_progress(0.4)."
                )
        if message is not None and not isinstance(message, str):
            # Shown as text on the status URLs, which must stay valid JSON.
            raise TypeError(
                "The progress message must be a string or None, not"
                f" {type(message).__name__}. Pass text, for example"
                ' set_progress(0.4, f"parsed {rows} rows").'
            )
        if not self._takes_progress():
            return
        self.progress = progress
        self.message = message
        self._send(signals.job_progress)

    def _takes_progress(self) -> bool:
        """Whether progress may still change: until the job has ended, and
        then only in the ``job_finished`` receivers run by the thread that
        ended it. Not after: no progress signal after ``job_finished``, and
        on Celery no PROGRESS record over the final one.
        """
        return not self._done or _cv_finishing.get(None) is self

    def to_dict(self) -> dict[str, t.Any]:
        """A JSON-safe summary, without arguments, headers or results."""
        # First: for a Celery job, reading the state fetches the rest.
        state = self.state
        started, finished = self._started, self._finished
        duration = None
        if started is not None:
            duration = round((finished or time.time()) - started, 6)
        error = None
        if self._exception is not None:
            error = {
                "type": type(self._exception).__name__,
                "message": _error_message(self._exception, self._app),
            }
        return {
            "id": self.id,
            "name": self.name,
            "state": state.value,
            "progress": self.progress,
            "message": self.message,
            "submitted_at": _dt(self._submitted).isoformat(),
            "started_at": None if started is None else _dt(started).isoformat(),
            "finished_at": None if finished is None else _dt(finished).isoformat(),
            "duration": duration,
            "submitted_from": self.submitted_from,
            "error": error,
        }

    # -- transitions used by backends -------------------------------------

    def _take(self) -> bool:
        """Claim the pending job, once: ``False`` if another thread did."""
        try:
            self._claim.pop()
        except IndexError:
            return False
        return True

    def _start(self) -> bool:
        """Move from PENDING to RUNNING. ``False`` if it was cancelled."""
        if not self._take():
            return False
        self._started = time.time()
        self.state = _RUNNING
        if signals.job_started.receivers:
            self._send(signals.job_started)
        return True

    def _finish(
        self, state: JobState, result: t.Any = None, exc: BaseException | None = None
    ) -> None:
        """End the job. Only the thread that started or cancelled it (or, for
        a job that never ran here, the one that handed it off) calls this.
        """
        self._result = result
        self._exception = exc
        self.state = state
        self._finished = time.time()
        # The job owns one reference to its snapshot (taken at submit): drop it
        # now so uploaded files are closed when the last job using them ends.
        snapshot, self.snapshot = self.snapshot, None
        if snapshot is not None:
            snapshot.release()
        # Done first, so job_finished receivers see a finished job (and may
        # call result()); waiters and join() are woken only after the signal,
        # so they see every effect of it. _done is set before _event is read
        # (see wait()).
        self._done = True
        event = self._event
        if signals.job_finished.receivers:
            token = _cv_finishing.set(self)
            try:
                self._send(signals.job_finished)
            finally:
                _cv_finishing.reset(token)
        registry = self._registry
        if registry is not None:
            registry._job_done(self)
        if event is not None:
            event.set()

    def _make_public(
        self, flags: int, args: tuple[t.Any, ...], kwargs: dict[str, t.Any]
    ) -> None:
        """Keep what the marks of the job's function (:data:`PUBLIC_ATTR`)
        let the status URLs show. Called at submit, for marked functions only.
        """
        if flags & PUBLIC_ARGS:
            self.public_args = public_args_copy(args, kwargs)
        if flags & PUBLIC_RESULT:
            self._public_result = True

    def _send(self, signal: t.Any) -> None:
        if not signal.receivers:
            return
        app = self._app() if self._app is not None else None
        try:
            signal.send(app, job=self)
        except Exception:
            logger.exception(
                "A receiver of %s failed for job %s.", signal.name, self.id
            )


#: The attribute that :func:`flask_offload.dashboard.public_args` and
#: :func:`~flask_offload.dashboard.public_result` set on a function: an int
#: of :data:`PUBLIC_ARGS` and :data:`PUBLIC_RESULT` bits. One attribute, so
#: that a submit looks it up once. Read from the function the job is
#: submitted with, never by its name: another function may have the same.
PUBLIC_ATTR = "__offload_public__"
#: The job keeps a copy of its arguments for display.
PUBLIC_ARGS = 1
#: The job's result may be shown.
PUBLIC_RESULT = 2
_MAX_ARGS_JSON = 4096
#: The longest error message the status URLs show: a job's exception can
#: hold a whole response body, sent again at every poll.
_MAX_MESSAGE = 4096


#: Installed packages whose exception messages the status URLs show: their
#: messages are what the app wrote (``abort(404, "...")``, ``JobCancelled``).
#: Standard library modules whose errors carry what the job handled: a
#: command line (subprocess), a URL with its query string or password
#: (urllib, http, xmlrpc), a server's reply (the mail and FTP clients).
_HIDDEN_STDLIB = frozenset(
    {
        "subprocess",
        "urllib",
        "http",
        "xmlrpc",
        "smtplib",
        "ftplib",
        "imaplib",
        "poplib",
    }
)
_SHOWN_PACKAGES = frozenset({"__main__", "flask", "werkzeug", "flask_offload"})


def _installed(module_name: str) -> bool:
    """Whether a module comes from an installed distribution (a library in
    ``site-packages``), not from the project's own code or the standard
    library.
    """
    module = sys.modules.get(module_name)
    parts = set(os.path.normpath(getattr(module, "__file__", None) or "").split(os.sep))
    return bool(parts & {"site-packages", "dist-packages"})


#: Set on an exception rebuilt from a Celery result when the worker, which
#: saw where it was raised, found its message must not be shown: the
#: package it came from.
HIDDEN_MESSAGE_ATTR = "__flask_offload_hidden__"


def _hidden_source(module_name: str, app: Flask | None) -> str | None:
    """The top-level package of ``module_name`` if messages of errors from
    there are not shown (see :func:`_error_message`), else ``None``.
    """
    top = module_name.partition(".")[0]
    if app is not None and top == app.import_name.partition(".")[0]:
        return None
    if top in _HIDDEN_STDLIB or (
        top not in _SHOWN_PACKAGES and _installed(module_name)
    ):
        return top
    return None


def _raised_in(exc: BaseException) -> str:
    """The module whose code raised ``exc`` (the innermost frame of its
    traceback), or ``""``.
    """
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_globals.get("__name__")
    return name if isinstance(name, str) else ""


def hides_message(exc: BaseException, app: Flask | None) -> str | None:
    """Why the status URLs do not show ``exc``'s message: the package its
    class comes from, or the one whose code raised it (``urllib`` raising a
    ``ValueError`` with the URL), if that is a hidden one; else ``None``.
    """
    marked = getattr(exc, HIDDEN_MESSAGE_ATTR, None)
    if marked:
        return str(marked)
    source = _hidden_source(type(exc).__module__, app)
    if source is None:
        raised = _raised_in(exc)
        if raised:
            source = _hidden_source(raised, app)
    return source


def _error_message(exc: BaseException, app_ref: weakref.ref[Flask] | None) -> str:
    """The message the status URLs show for a failed job: ``str(exc)``, at
    most :data:`_MAX_MESSAGE` characters, except for exceptions of installed
    libraries other than Flask and Werkzeug (and the app's own package, if
    installed), and of :data:`_HIDDEN_STDLIB`, or raised by their code:
    their messages can hold what the job handled (SQLAlchemy's SQL
    parameters, a URL with its API key, a command line with a password), so
    the log (the worker's, on Celery) has them instead.
    Never raises (one job's broken ``__str__`` must not break every user's
    job list).
    """
    kind = type(exc)
    top = hides_message(exc, app_ref() if app_ref is not None else None)
    if top is not None:
        return (
            f"(The message of this {top} error is not shown: it may hold data"
            " the job handled. The log of the process that ran the job has it,"
            " with the job's id.)"
        )
    try:
        message = str(exc)
    except Exception:
        return f"<{kind.__qualname__}: str() failed>"
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + " ... (cut)"
    return message


def progress_percent(data: dict[str, t.Any]) -> str:
    """A job's progress as whole percents, from its :meth:`Job.to_dict`, as
    the dashboard and ``flask offload jobs`` show it: 100% once it
    succeeded, never rounded up to 100% before (the page's script does the
    same), with an epsilon that keeps ``0.57 * 100`` (56.99999999999999) at
    57; ``""`` without progress.
    """
    value = 1.0 if data["state"] == JobState.SUCCEEDED.value else data["progress"]
    return "" if value is None else f"{math.floor(value * 100 + 1e-9)}%"


class _TooLarge(Exception):
    pass


def public_args_copy(
    args: tuple[t.Any, ...], kwargs: dict[str, t.Any]
) -> dict[str, t.Any]:
    """A JSON-safe copy of a job's arguments for display: values that are
    not JSON (non-finite floats, keys that are not strings, cycles, other
    types) are shown by their ``repr``, and a copy longer than 4 KiB as
    JSON is cut to a note saying so. Never raises: it runs in the submit.
    """
    import json

    try:
        # The common case, in C. It refuses NaN (not JSON: the page's
        # JSON.parse would fail), keys JSON cannot have, and cycles.
        text = json.dumps(
            {"args": args, "kwargs": kwargs}, default=repr, allow_nan=False
        )
    except Exception:
        try:
            data = {
                "args": _displayable(args, [_MAX_ARGS_JSON], set()),
                "kwargs": _displayable(kwargs, [_MAX_ARGS_JSON], set()),
            }
            text = json.dumps(data, allow_nan=False)
        except _TooLarge:
            return {
                "truncated": f"The arguments are more than {_MAX_ARGS_JSON} bytes"
                " as JSON; not shown."
            }
        except Exception:  # a repr that recurses too deep, say
            return {"truncated": "The arguments cannot be shown as JSON."}
    if len(text) > _MAX_ARGS_JSON:
        return {"truncated": f"The arguments are {len(text)} bytes as JSON; not shown."}
    copy: dict[str, t.Any] = json.loads(text)
    return copy


def _displayable(value: t.Any, budget: list[int], active: set[int]) -> t.Any:
    """``value`` made of JSON types, for :func:`public_args_copy`. Each value
    takes at least one byte of JSON, so more than ``budget[0]`` of them are
    too many to show: stop there rather than walk a huge structure.
    """
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge
    if value is None or isinstance(value, (str, int)):  # bool is an int
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple, dict)):
        if id(value) in active:  # a cycle, shown as repr shows it
            return "{...}" if isinstance(value, dict) else "[...]"
        active.add(id(value))
        try:
            if isinstance(value, dict):
                return {
                    _displayable_key(k): _displayable(v, budget, active)
                    for k, v in value.items()
                }
            return [_displayable(v, budget, active) for v in value]
        finally:
            active.discard(id(value))
    return _safe_repr(value)


def _displayable_key(key: t.Any) -> str:
    # The keys json.dumps accepts, as it writes them; repr for the others.
    if isinstance(key, str):
        return key
    if (
        key is None
        or isinstance(key, int)
        or isinstance(key, float)
        and math.isfinite(key)
    ):
        import json

        return json.dumps(key)
    return _safe_repr(key)


def _safe_repr(value: t.Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__qualname__} object (repr failed)>"


_cv_job: ContextVar[Job] = ContextVar("flask_offload.job")
# The job whose job_finished receivers this context is running.
_cv_finishing: ContextVar[Job] = ContextVar("flask_offload.finishing")

#: The job running in this context. Raises :exc:`RuntimeError` outside a job.
current_job: Job = LocalProxy(  # type: ignore[assignment]
    _cv_job,
    unbound_message=(
        "Working outside of a job. 'current_job' is only available in code run"
        " by Flask-Offload: a function given to 'offload.submit', a task, or a"
        " function wrapped with 'carry' inside a job."
    ),
)


_registries: weakref.WeakSet[JobRegistry] = weakref.WeakSet()


def _reset_registries_after_fork() -> None:
    for registry in list(_registries):
        registry._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_registries_after_fork)


class JobRegistry:
    """The jobs one app knows about: all unfinished ones, and finished ones
    until they are older than ``ttl`` seconds or more than ``max_finished``
    have finished since. Unfinished jobs are never evicted.
    """

    def __init__(self, ttl: float, max_finished: int) -> None:
        self.ttl = ttl
        self.max_finished = max_finished
        #: Whether the app's backend queues jobs in this process (the thread
        #: backend), which then learns of jobs cancelled in its queue from
        #: :attr:`queued_cancels`.
        self.tracks_queue = False
        self._reset()
        _registries.add(self)

    def _reset(self) -> None:
        """Empty: at creation, and in a forked child, which runs none of the
        parent's jobs and must not wait for them.
        """
        self._jobs: dict[str, Job] = {}
        self._finished: deque[Job] = deque()
        # Added and not yet done. A set, so adding and removing are each one
        # atomic operation: submitters and workers share no lock.
        self._pending: set[Job] = set()
        self._joiners = 0
        #: One token per job cancelled while in the backend's queue, until a
        #: worker takes it out (see :meth:`queue_left`).
        self.queued_cancels: list[None] = []
        # Taken by readers, joiners and pruning only. Re-entrant: a SIGTERM
        # handler may drain while the main thread is inside a registry call.
        self._cond = threading.Condition(threading.RLock())

    def after_fork_patch(self) -> None:
        """Make the lock again, in a forked child whose threading module was
        patched after the fork (gevent, eventlet), before its first job.
        """
        self._cond = threading.Condition(threading.RLock())

    def queue_left(self) -> None:
        """A worker took a cancelled job out of the queue without running it."""
        try:
            self.queued_cancels.pop()
        except IndexError:
            pass

    def add(self, job: Job) -> None:
        job._registry = self
        self._pending.add(job)
        jobs = self._jobs
        jobs[job.id] = job
        if self._jobs is not jobs:
            # _prune replaced the dict meanwhile: make sure the job is in the
            # one that stays.
            with self._cond:
                self._jobs[job.id] = job

    def _job_done(self, job: Job) -> None:
        pending = self._pending
        if job not in pending:
            return  # not added here, or already counted
        # The TTL counts from here, also for a job handed off rather than
        # finished here (sent to Celery).
        job._finished_mono = time.monotonic()
        finished = self._finished
        # Counted as finished before it stops being pending: a join() that
        # returns once nothing is pending finds it where pruning does (with
        # OFFLOAD_MAX_FINISHED = 0, jobs() right after join() was not empty).
        finished.append(job)
        pending.discard(job)
        # Evict by count in batches of a sixteenth of the limit, by age now
        # and then; every read prunes exactly. If another thread is pruning,
        # it or the next job's end does it.
        size = len(finished)
        limit = self.max_finished
        if (size > limit + (limit >> 4) or not size & 255) and self._cond.acquire(
            False
        ):
            try:
                self._prune()
            finally:
                self._cond.release()
        # _pending was updated before _joiners is read; a joiner increments
        # _joiners before it checks _pending, under the lock it waits with.
        if self._joiners and not pending:
            with self._cond:
                self._cond.notify_all()

    def _prune(self) -> None:
        """Evict what is too old or too many. Called with the lock held."""
        finished = self._finished
        if not finished:
            return
        jobs = self._jobs
        pop = jobs.pop
        popleft = finished.popleft
        # The oldest first: too many, then too old.
        for _ in range(len(finished) - self.max_finished):
            pop(popleft().id, None)
        limit = time.monotonic() - self.ttl
        while finished and finished[0]._finished_mono < limit:
            pop(popleft().id, None)
        if not jobs:
            # A dict keeps the table of its largest size after deletions: a
            # burst of pending jobs would stay allocated. Start a small one,
            # and keep any job an add() put in the old one meanwhile.
            new: dict[str, Job] = {}
            self._jobs = new
            if jobs:
                new.update(jobs)

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            self._prune()
            return self._jobs.get(job_id)

    def recent(self, state: JobState | str | None = None) -> list[Job]:
        """Known jobs, newest first, optionally only those in ``state``."""
        with self._cond:
            self._prune()
            jobs = list(self._jobs.values())
        jobs.reverse()
        if state is not None:
            state = parse_state(state)
            jobs = [j for j in jobs if j.state is state]
        return jobs

    def pending(self) -> list[Job]:
        """The jobs added here and not done yet, in this process (not those
        handed off to Celery).
        """
        return list(self._pending)

    def unfinished(self) -> list[Job]:
        with self._cond:
            jobs = list(self._jobs.values())
        return [j for j in jobs if not j.done()]

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no known job is unfinished. ``False`` on timeout."""
        with self._cond:
            self._joiners += 1
            try:
                return self._cond.wait_for(lambda: not self._pending, timeout)
            finally:
                self._joiners -= 1
