"""The default backend: a bounded pool of daemon threads in this process.

Daemon threads never keep the interpreter alive on their own; draining at
exit and on SIGTERM is done explicitly by the extension, for at most
``OFFLOAD_SHUTDOWN_TIMEOUT`` seconds, and every job it abandons is logged.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import typing as t
import weakref

from ..errors import QueueFull
from .base import Backend
from .base import run_job

if t.TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

    from ..extension import Settings
    from ..jobs import Job
    from ..jobs import JobRegistry

_Item = tuple[
    "Flask", "Job", t.Callable[..., t.Any], tuple[t.Any, ...], dict[str, t.Any]
]
_counter = itertools.count()
_backends: weakref.WeakSet[ThreadBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A forked child (gunicorn --preload) has none of the parent's threads:
    # start from an empty pool, or new jobs would wait for dead workers.
    for backend in list(_backends):
        backend._reset()
        # gunicorn's gevent and eventlet workers monkey-patch only after the
        # fork: a queue and locks made now would block the event loop. Make
        # them again at the first submit, from the patched modules; until
        # then an instance attribute stands in for reserve() (no check on
        # every submit).
        backend.reserve = backend._reserve_after_fork  # type: ignore[method-assign]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ThreadBackend(Backend):
    name = "thread"

    def __init__(self, settings: Settings, app_name: str) -> None:
        super().__init__(settings, app_name)
        self._max_queue = settings.max_queue
        self._block = settings.queue_full == "block"
        self._closed = False
        self._prefix = f"flask-offload-{app_name}-{next(_counter)}"
        #: The app's job registry, set by the extension: it counts the
        #: cancelled jobs still in the queue (see :meth:`_waiting_jobs`).
        self.registry: JobRegistry | None = None
        self._reset()
        _backends.add(self)

    def _reset(self) -> None:
        """An empty pool: at creation, and in a forked child, where the
        parent's threads do not exist and its queued jobs are the parent's.
        """
        # Submitters and workers share no lock (see jobs.py): the queue, the
        # idle tokens and the thread list are changed by atomic operations.
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        # One token per worker that finished a job and has not been handed a
        # new one since: ThreadPoolExecutor's idle semaphore, without its lock
        # (list.append and list.pop are atomic).
        self._idle: list[None] = []
        # One token per idle worker a submitter handed a job to, until that
        # worker takes a job from the queue: such jobs are not waiting.
        self._claims: list[None] = []
        self._threads: list[threading.Thread] = []
        # The worker threads' idents: a job submitting from one must not
        # wait for room in the queue its own worker would drain.
        self._idents: set[int] = set()
        # Taken only to start a thread.
        self._lock = threading.Lock()
        # Submitters waiting for room with OFFLOAD_QUEUE_FULL = "block": how
        # many, and the condition workers notify when they take a job.
        self._room = threading.Condition(threading.Lock())
        self._waiting = 0

    def _reserve_after_fork(self) -> None:
        del self.reserve
        self._reset()
        registry = self.registry
        if registry is not None:
            registry.after_fork_patch()
        self.reserve()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                "Flask-Offload was shut down for this app and accepts no more jobs:"
                " the process is exiting (SIGTERM, or the end of the program)"
                " and draining its jobs, or 'offload.shutdown()' was called."
                " Stop the server from taking requests before the drain, or"
                " submit before calling 'offload.shutdown()'."
            )

    def reserve(self) -> None:
        if self._closed:
            self._check_open()  # raises
        limit = self._max_queue
        # Jobs waiting for a worker. Submitters racing each other may each see
        # the last free place: the bound can be passed by at most one job per
        # concurrently submitting thread, never by an unbounded number. The
        # queue's size is an upper bound of that, exact enough when it is
        # below the limit.
        if not limit or self._queue.qsize() < limit or self._waiting_jobs() < limit:
            return
        if not self._block:
            raise QueueFull(
                f"The job queue is full: {self.settings.max_queue} jobs are waiting"
                f" for {self.settings.max_workers} workers. Raise OFFLOAD_MAX_QUEUE"
                " or OFFLOAD_MAX_WORKERS, or set OFFLOAD_QUEUE_FULL = 'block' to"
                " wait for a free place instead."
            )
        if threading.get_ident() in self._idents:
            # A job submitting more jobs: waiting here could leave no worker
            # to make room. The queue goes past its bound instead.
            return
        with self._room:
            self._waiting += 1
            try:
                # Workers notify after taking a job when someone waits; the
                # timeout only bounds the cost of a wake-up lost to a race, and
                # notices jobs cancelled in the queue.
                while self._waiting_jobs() >= limit and not self._closed:
                    self._room.wait(0.05)
            finally:
                self._waiting -= 1
        self._check_open()

    def _waiting_jobs(self) -> int:
        """How many queued jobs wait for a worker: not those handed to an
        idle worker that has not taken them yet, nor those cancelled.
        """
        registry = self.registry
        cancelled = len(registry.queued_cancels) if registry is not None else 0
        return self._queue.qsize() - len(self._claims) - cancelled

    def enqueue(
        self,
        app: Flask,
        job: Job,
        fn: t.Callable[..., t.Any],
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
    ) -> None:
        # As ThreadPoolExecutor does: reuse an idle worker, else start one.
        # Either is claimed before the job is queued, so the worker that
        # takes it always finds the claim to drop.
        idle = self._idle
        if idle:
            try:
                idle.pop()
            except IndexError:  # another submitter took the last one
                pass
            else:
                self._claims.append(None)
                self._queue.put((app, job, fn, args, kwargs))
                return
        self._queue.put((app, job, fn, args, kwargs))
        if len(self._threads) < self.settings.max_workers:
            with self._lock:
                if len(self._threads) < self.settings.max_workers:
                    thread = threading.Thread(
                        target=self._work,
                        name=f"{self._prefix}_{len(self._threads)}",
                        daemon=True,
                    )
                    self._claims.append(None)
                    thread.start()
                    self._threads.append(thread)

    def _work(self) -> None:
        get = self._queue.get
        idle = self._idle
        claims = self._claims
        settings = self.settings
        workers = settings.max_workers
        room = self._room
        ident = threading.get_ident()
        self._idents.add(ident)
        try:
            while True:
                item = get()
                if item is None:
                    self._queue.put(None)  # wake the next worker to stop too
                    return
                if claims:
                    # Whichever job this is, one handed-off job has left the
                    # queue or will be taken next by a busy worker.
                    try:
                        claims.pop()
                    except IndexError:
                        pass
                if self._waiting:
                    with room:
                        room.notify()
                app, job, fn, args, kwargs = item
                snapshot = job.snapshot
                if snapshot is not None:
                    run_job(app, job, snapshot, fn, args, kwargs, settings)
                if job._started is None:
                    # Cancelled in the queue: it no longer takes a place.
                    registry = job._registry
                    if registry is not None:
                        registry.queue_left()
                del item, app, job, fn, args, kwargs, snapshot
                # More tokens than workers would mean nothing: don't pile
                # them up. A token is given back even if a job waits and this
                # worker goes straight on to it (then a submitter may count
                # one job as handed off that waits for this worker): giving
                # none would leave a worker idle without a token, and bursts
                # would be refused while it waits.
                if len(idle) < workers:
                    idle.append(None)
        finally:
            self._idents.discard(ident)

    def close(self) -> None:
        self._closed = True
        with self._room:
            self._room.notify_all()

    def stop(self) -> None:
        self._closed = True
        self._queue.put(None)

    @property
    def threads(self) -> list[threading.Thread]:
        """The worker threads started so far."""
        return list(self._threads)
