"""Memory: what pending jobs pin, and what stays behind once jobs finish.

1. Pinned per pending job (``tracemalloc``): in one request (10 headers,
   small JSON body), submit K jobs that block on an :class:`threading.Event`
   (the workers block on the first ones, the rest wait in the queue); the
   growth of traced memory divided by K; then the event is set.
2. Retained after 10,000 finished jobs (1,000 requests x 10 jobs), after
   ``gc.collect()``: traced memory, live Flask contexts
   (``flask.ctx.AppContext``/``RequestContext`` found by ``gc``), live
   :class:`~flask_offload.Job` objects, and open descriptors
   (``/proc/self/fd``), before and after. Flask-Offload keeps the last
   ``OFFLOAD_MAX_FINISHED`` (1,000) finished jobs on purpose, so it is run
   with the default and with ``OFFLOAD_MAX_FINISHED = 0``.
3. Uploads: 100 requests with a 600 KiB upload (spooled to disk by
   werkzeug), 2 jobs each reading it: descriptors and contexts after.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import io
import os
import threading
import tracemalloc
import typing as t

import flask.ctx
from flask import copy_current_request_context
from flask import Flask
from flask import request

from . import HEADERS
from . import JSON_BODY
from . import QUERY
from . import Result
from . import WORKERS

NAME = "memory"
TITLE = "Memory: pinned per pending job, retained after jobs finish"


def block(event: threading.Event) -> None:
    event.wait(60)


def noop() -> None:
    pass


def read_upload() -> int:
    f = request.files["file"]
    return len(f.read())


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - no procfs
        return -1


def live_contexts() -> int:
    gc.collect()
    kinds = tuple(
        k
        for k in (
            getattr(flask.ctx, "AppContext", None),
            getattr(flask.ctx, "RequestContext", None),
        )
        if k is not None
    )
    return sum(1 for o in gc.get_objects() if isinstance(o, kinds))


def live_jobs() -> int:
    from flask_offload import Job

    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Job)


def request_ctx(app: Flask, **kw: t.Any) -> t.Any:
    if "data" not in kw:
        kw.setdefault("json", JSON_BODY)
    return app.test_request_context(
        "/orders/export?" + QUERY, method="POST", headers=HEADERS, **kw
    )


class Peer:
    """One way to run jobs: ``submit(fn, *args)`` inside a request, ``wait()``."""

    def __init__(self, kind: str, **config: t.Any) -> None:
        self.kind = kind
        self.app = Flask(f"bench_mem_{kind}")
        self.app.config.update(
            SECRET_KEY="bench",
            OFFLOAD_MAX_WORKERS=WORKERS,
            EXECUTOR_MAX_WORKERS=WORKERS,
            **config,
        )
        self.futures: list[t.Any] = []
        if kind in ("raw", "copy_ctx"):
            self.pool = cf.ThreadPoolExecutor(WORKERS)
        elif kind == "flask_executor":
            from flask_executor import Executor

            self.executor = Executor(self.app)
        else:
            from flask_offload import Offload

            self.offload = Offload(self.app)

    def submit(self, fn: t.Callable[..., t.Any], *args: t.Any) -> None:
        if self.kind == "raw":
            self.futures.append(self.pool.submit(fn, *args))
        elif self.kind == "copy_ctx":
            self.futures.append(
                self.pool.submit(copy_current_request_context(fn), *args)
            )
        elif self.kind == "flask_executor":
            self.futures.append(self.executor.submit(fn, *args))
        else:
            self.offload.submit(fn, *args)

    def wait(self) -> None:
        if self.kind == "offload":
            with self.app.app_context():
                assert self.offload.join(120)
        else:
            for f in self.futures:
                f.result(120)
            self.futures.clear()

    def close(self) -> None:
        self.wait()
        if self.kind in ("raw", "copy_ctx"):
            self.pool.shutdown(wait=True)
        elif self.kind == "flask_executor":
            self.executor._self.shutdown(wait=True)
        else:
            with self.app.app_context():
                self.offload.shutdown(wait=True, timeout=60)


def pinned_per_job(kind: str, k: int) -> float:
    peer = Peer(kind)
    try:
        with request_ctx(peer.app):  # start the worker threads
            for _ in range(WORKERS * 2):
                peer.submit(noop)
        peer.wait()
        event = threading.Event()
        gc.collect()
        tracemalloc.start()
        try:
            with request_ctx(peer.app):
                before = tracemalloc.get_traced_memory()[0]
                for _ in range(k):
                    peer.submit(block, event)
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
            event.set()
        peer.wait()
    finally:
        peer.close()
    return (after - before) / k


def retained(
    kind: str, requests: int, per_request: int, **config: t.Any
) -> dict[str, float]:
    peer = Peer(kind, **config)
    try:
        with request_ctx(peer.app):
            for _ in range(WORKERS * 2):
                peer.submit(noop)
        peer.wait()
        gc.collect()
        ctx0, fds0 = live_contexts(), open_fds()
        jobs0 = live_jobs()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(requests):
                with request_ctx(peer.app):
                    for _ in range(per_request):
                        peer.submit(noop)
            peer.wait()
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        out = {
            "retained_kib": (after - before) / 1024,
            "contexts_before": ctx0,
            "contexts_after": live_contexts(),
            "fds_before": fds0,
            "fds_after": open_fds(),
            "jobs_before": jobs0,
            "jobs_after": live_jobs(),
        }
    finally:
        peer.close()
    return out


def uploads(requests: int) -> dict[str, int]:
    peer = Peer("offload")
    payload = os.urandom(600 * 1024)
    try:
        gc.collect()
        ctx0, fds0 = live_contexts(), open_fds()
        for _ in range(requests):
            data = {"file": (io.BytesIO(payload), "data.bin")}
            with request_ctx(peer.app, data=data):
                request.files["file"]  # parsed (spooled to disk) by the view
                peer.submit(read_upload)
                peer.submit(read_upload)
        peer.wait()
        gc.collect()
        return {
            "contexts_before": ctx0,
            "contexts_after": live_contexts(),
            "fds_before": fds0,
            "fds_after": open_fds(),
        }
    finally:
        peer.close()


LABELS = {
    "raw": "raw ThreadPoolExecutor",
    "copy_ctx": "copy_current_request_context + pool",
    "flask_executor": "Flask-Executor 1.0",
    "offload": "Flask-Offload",
}


def run(quick: bool = False) -> Result:
    k = 500 if quick else 1000
    n_req = 200 if quick else 1000
    pinned = {kind: pinned_per_job(kind, k) for kind in LABELS}
    kept: dict[str, dict[str, float]] = {}
    for kind in LABELS:
        kept[kind] = retained(kind, n_req, 10)
    kept["offload_max_finished_0"] = retained(
        "offload", n_req, 10, OFFLOAD_MAX_FINISHED=0
    )
    up = uploads(20 if quick else 100)
    rows = []
    labels = dict(
        LABELS, offload_max_finished_0="Flask-Offload, OFFLOAD_MAX_FINISHED=0"
    )
    for kind, label in labels.items():
        r = kept[kind]
        rows.append(
            [
                label,
                pinned[kind] if kind in pinned else float("nan"),
                r["retained_kib"],
                f"{r['contexts_before']} → {r['contexts_after']}",
                f"{r['fds_before']} → {r['fds_after']}",
                f"{r['jobs_before']} → {r['jobs_after']}"
                if kind.startswith("offload")
                else "",
            ]
        )
    rows.append(
        [
            f"Flask-Offload, {20 if quick else 100} x 600 KiB uploads, 2 jobs each",
            float("nan"),
            float("nan"),
            f"{up['contexts_before']} → {up['contexts_after']}",
            f"{up['fds_before']} → {up['fds_after']}",
            "",
        ]
    )
    return Result(
        NAME,
        TITLE,
        [
            "peer",
            "bytes pinned / pending job",
            f"KiB retained after {n_req * 10:,} jobs",
            "live contexts",
            "open fds",
            "live Job objects",
        ],
        rows,
        notes=[
            f"Pinned: {k} jobs blocked on an Event, submitted from one"
            " test_request_context (10 headers, small JSON body), traced with"
            " tracemalloc; includes the one capture of the request.",
            f"Retained: {n_req} requests x 10 no-op jobs, after gc.collect();"
            " Flask-Offload keeps the last OFFLOAD_MAX_FINISHED (default 1000)"
            " finished Job objects for get_job() by design; their snapshots"
            " are released when each job ends.",
        ],
        data={"pinned_bytes": pinned, "retained": kept, "uploads": up},
    )
