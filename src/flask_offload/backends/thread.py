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
        self._threads: list[threading.Thread] = []
        # Taken only to start a thread.
        self._lock = threading.Lock()
        # Submitters waiting for room with OFFLOAD_QUEUE_FULL = "block": how
        # many, and the condition workers notify when they take a job.
        self._room = threading.Condition(threading.Lock())
        self._waiting = 0

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                "Flask-Offload was shut down for this app and accepts no more jobs."
                " Submit before calling 'offload.shutdown()'."
            )

    def reserve(self) -> None:
        if self._closed:
            self._check_open()  # raises
        limit = self._max_queue
        # Jobs waiting for a worker. Submitters racing each other may each see
        # the last free place: the bound can be passed by at most one job per
        # concurrently submitting thread, never by an unbounded number.
        if not limit or self._queue.qsize() < limit:
            return
        if not self._block:
            raise QueueFull(
                f"The job queue is full: {self.settings.max_queue} jobs are waiting"
                f" for {self.settings.max_workers} workers. Raise OFFLOAD_MAX_QUEUE"
                " or OFFLOAD_MAX_WORKERS, or set OFFLOAD_QUEUE_FULL = 'block' to"
                " wait for a free place instead."
            )
        with self._room:
            self._waiting += 1
            try:
                # Workers notify after taking a job when someone waits; the
                # timeout only bounds the cost of a wake-up lost to a race.
                while self._queue.qsize() >= limit and not self._closed:
                    self._room.wait(0.05)
            finally:
                self._waiting -= 1
        self._check_open()

    def enqueue(
        self,
        app: Flask,
        job: Job,
        fn: t.Callable[..., t.Any],
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
    ) -> None:
        self._queue.put((app, job, fn, args, kwargs))
        # As ThreadPoolExecutor does: reuse an idle worker, else start one.
        idle = self._idle
        if idle:
            try:
                idle.pop()
            except IndexError:  # another submitter took the last one
                pass
            else:
                return
        if len(self._threads) < self.settings.max_workers:
            with self._lock:
                if len(self._threads) < self.settings.max_workers:
                    thread = threading.Thread(
                        target=self._work,
                        name=f"{self._prefix}_{len(self._threads)}",
                        daemon=True,
                    )
                    thread.start()
                    self._threads.append(thread)

    def _work(self) -> None:
        get = self._queue.get
        idle = self._idle
        settings = self.settings
        workers = settings.max_workers
        room = self._room
        while True:
            item = get()
            if item is None:
                self._queue.put(None)  # wake the next worker to stop too
                return
            if self._waiting:
                with room:
                    room.notify()
            app, job, fn, args, kwargs = item
            snapshot = job.snapshot
            if snapshot is not None:
                run_job(app, job, snapshot, fn, args, kwargs, settings)
            del item, app, job, fn, args, kwargs, snapshot
            # More tokens than workers would mean nothing: don't pile them up.
            if len(idle) < workers:
                idle.append(None)

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
