"""The backend interface and the job runner shared by in-process backends."""

from __future__ import annotations

import inspect
import logging
import typing as t

from ..errors import JobCancelled
from ..jobs import _SUCCEEDED
from ..jobs import Job
from ..jobs import JobState
from ..snapshot import replay
from ..snapshot import Snapshot

if t.TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

    from ..extension import Settings

logger = logging.getLogger("flask_offload")


class Backend:
    """Runs jobs for one app. Subclasses implement :meth:`enqueue`."""

    name = "base"
    #: The class of the jobs :meth:`Offload.submit` makes for this backend.
    job_class: type[Job] = Job

    def __init__(self, settings: Settings, app_name: str) -> None:
        self.settings = settings
        self.app_name = app_name

    def reserve(self) -> None:
        """Take a place for one more job before it is created, or raise
        :exc:`~flask_offload.QueueFull`.
        """

    def unreserve(self) -> None:
        """Give back a place taken by :meth:`reserve` that was not used."""

    def enqueue(
        self,
        app: Flask,
        job: Job,
        fn: t.Callable[..., t.Any],
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
    ) -> None:
        raise NotImplementedError

    def get_job(self, job_id: str) -> Job | None:
        """A job this process does not know, looked up where the backend keeps
        state (Celery's result backend). ``None`` if unknown.
        """
        return None

    def close(self) -> None:
        """Stop accepting jobs."""

    def stop(self) -> None:
        """Release the backend's threads once no job will run any more."""


def run_job(
    app: Flask,
    job: Job,
    snapshot: Snapshot,
    fn: t.Callable[..., t.Any],
    args: tuple[t.Any, ...],
    kwargs: dict[str, t.Any],
    settings: Settings,
) -> None:
    """Run one job to its end: never raises, never loses the outcome.

    A failure is logged before the job is marked done, and the job is done
    only after its context was torn down.
    """
    if not job._start():
        return  # cancelled while pending
    try:
        # Positional arguments: a little cheaper, once per job.
        result = replay(
            app,
            snapshot,
            fn,
            args,
            kwargs,
            job,
            settings.job_teardown_request,
            settings.max_body_size,
        )
    except JobCancelled as e:
        _keep_exception(job, JobState.CANCELLED, e)
    except BaseException as e:
        log_failure(job, e)
        _keep_exception(job, JobState.FAILED, e)
    else:
        # A module global: reading an enum member off its class costs about
        # 1k instructions on Python 3.11, once per job.
        job._finish(_SUCCEEDED, result)


_SUSPENDABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _keep_exception(job: Job, state: JobState, exc: BaseException) -> None:
    """End ``job`` with ``exc``, which it keeps with its traceback (for
    ``result()``) but not the locals of its frames: a failed job must not
    hold a database connection, a large buffer or its arguments until it is
    evicted. They are cleared after ``job_finished``, whose receivers (an
    error tracker) may read them.
    """
    tb = exc.__traceback__
    if tb is not None:
        # run_job's own frame, where it was caught: it holds the job's
        # arguments and snapshot, and it is still running, so it could not
        # be cleared.
        tb = exc.__traceback__ = tb.tb_next
    # Taken now: a waiter re-raising the exception puts its own frames in
    # front of it, which are not the job's to clear.
    job._finish(state, exc=exc)
    while tb is not None:
        frame = tb.tb_frame
        # Not a suspended generator's or coroutine's: clearing it would
        # close it (one that made the exception and is still in use).
        if not frame.f_code.co_flags & _SUSPENDABLE:
            try:
                frame.clear()
            except RuntimeError:  # still running, in some thread
                pass
        tb = tb.tb_next


def log_failure(job: Job, exc: BaseException) -> None:
    """Log a failed job on the ``flask_offload`` logger, with its id, name and
    submit site: a job that raises is never silent.
    """
    logger.error(
        "Job %s (%s) submitted from %s failed.",
        job.id,
        job.name,
        job.submitted_from,
        exc_info=exc,
    )
