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
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        # Jobs queued and not yet taken by a worker, bounded by max_queue. A
        # counter under a C lock is several times cheaper than a Semaphore.
        self._queued = 0
        self._queued_lock = threading.Lock()
        self._queue_freed = threading.Condition(self._queued_lock)
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def reserve(self) -> None:
        if self._closed:
            raise RuntimeError(
                "Flask-Offload was shut down for this app and accepts no more jobs."
                " Submit before calling 'offload.shutdown()'."
            )
        limit = self._max_queue
        with self._queued_lock:
            if not limit or self._queued < limit:
                self._queued += 1
                return
            if self._block:
                self._queue_freed.wait_for(lambda: self._queued < limit)
                self._queued += 1
                return
            raise QueueFull(
                f"The job queue is full: {self.settings.max_queue} jobs are waiting"
                f" for {self.settings.max_workers} workers. Raise OFFLOAD_MAX_QUEUE"
                " or OFFLOAD_MAX_WORKERS, or set OFFLOAD_QUEUE_FULL = 'block' to"
                " wait for a free place instead."
            )

    def unreserve(self) -> None:
        with self._queued_lock:
            self._queued -= 1
            if self._block:
                self._queue_freed.notify()

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
        if self._idle.acquire(blocking=False):
            return
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
        settings = self.settings
        while True:
            item = get()
            if item is None:
                self._queue.put(None)  # wake the next worker to stop too
                return
            self.unreserve()
            app, job, fn, args, kwargs = item
            snapshot = job.snapshot
            if snapshot is not None:
                run_job(app, job, snapshot, fn, args, kwargs, settings)
            del item, app, job, fn, args, kwargs, snapshot
            self._idle.release()

    def close(self) -> None:
        self._closed = True

    def stop(self) -> None:
        self._closed = True
        self._queue.put(None)

    @property
    def threads(self) -> list[threading.Thread]:
        """The worker threads started so far."""
        return list(self._threads)
