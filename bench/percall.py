"""Per-job cost: N no-op jobs submitted from inside one request, end to end.

The request is ``app.test_request_context`` (a real ``RequestContext`` built
from a WSGI environ: POST with ~10 headers, a query string and a small JSON
body), pushed once per round; each peer then submits N jobs in a loop and
waits until all are done. The time runs from the first submit to the last
job done. Every pool has the same number of worker threads.
"""

from __future__ import annotations

import concurrent.futures as cf
import typing as t

from flask import copy_current_request_context
from flask import Flask
from flask import request

from . import HEADERS
from . import interleave
from . import JSON_BODY
from . import median
from . import QUERY
from . import Result
from . import timer
from . import WORKERS

NAME = "percall"
TITLE = "Per-job cost (N no-op jobs from one request, submit + all done)"


def noop() -> None:
    pass


def reads_request() -> tuple[str, str]:
    return request.args["month"], request.headers["X-Tenant"]


def make_app(name: str) -> Flask:
    app = Flask(name)
    app.config.update(SECRET_KEY="bench", OFFLOAD_MAX_WORKERS=WORKERS)
    return app


def request_context(app: Flask) -> t.Any:
    return app.test_request_context(
        "/orders/export?" + QUERY, method="POST", headers=HEADERS, json=JSON_BODY
    )


class Peers:
    """The apps and pools of every peer, created once and reused by rounds."""

    def __init__(self, n: int) -> None:
        from flask_executor import Executor

        from flask_offload import Offload

        self.n = n
        self.plain_app = make_app("bench_plain")
        self.pool = cf.ThreadPoolExecutor(WORKERS)
        self.fe_app = make_app("bench_fe")
        self.fe_app.config["EXECUTOR_MAX_WORKERS"] = WORKERS
        self.executor = Executor(self.fe_app)
        self.off_app = make_app("bench_offload")
        self.offload = Offload(self.off_app)
        #: Submit-loop times, by peer, alongside the end-to-end ones.
        self.submit_times: dict[str, list[float]] = {}

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.executor._self.shutdown(wait=True)
        with self.off_app.app_context():
            self.offload.join(60)
            self.offload.shutdown(wait=True, timeout=60)

    def _record(self, name: str, t0: float, t1: float, t2: float) -> float:
        self.submit_times.setdefault(name, []).append((t1 - t0) / self.n * 1e6)
        return (t2 - t0) / self.n * 1e6  # µs per job

    def raw(self) -> float:
        n, submit = self.n, self.pool.submit
        with request_context(self.plain_app):
            t0 = timer()
            futures = [submit(noop) for _ in range(n)]
            t1 = timer()
            cf.wait(futures)
            t2 = timer()
        return self._record("raw", t0, t1, t2)

    def copy_ctx(self) -> float:
        n, submit = self.n, self.pool.submit
        with request_context(self.plain_app):
            t0 = timer()
            futures = [submit(copy_current_request_context(noop)) for _ in range(n)]
            t1 = timer()
            cf.wait(futures)
            t2 = timer()
        return self._record("copy_ctx", t0, t1, t2)

    def flask_executor(self) -> float:
        n, submit = self.n, self.executor.submit
        with request_context(self.fe_app):
            t0 = timer()
            futures = [submit(noop) for _ in range(n)]
            t1 = timer()
            cf.wait(futures)
            t2 = timer()
        return self._record("flask_executor", t0, t1, t2)

    def _offload(self, name: str, fn: t.Callable[[], t.Any]) -> float:
        n, submit = self.n, self.offload.submit
        with request_context(self.off_app):
            t0 = timer()
            for _ in range(n):
                submit(fn)
            t1 = timer()
            self.offload.join()
            t2 = timer()
        return self._record(name, t0, t1, t2)

    def offload_noop(self) -> float:
        return self._offload("offload_noop", noop)

    def offload_reads(self) -> float:
        return self._offload("offload_reads", reads_request)


LABELS = {
    "raw": "raw ThreadPoolExecutor",
    "copy_ctx": "copy_current_request_context + pool",
    "flask_executor": "Flask-Executor 1.0",
    "offload_noop": "Flask-Offload (no-op job)",
    "offload_reads": "Flask-Offload (job reads request.args + headers)",
}


def run(quick: bool = False) -> Result:
    n = 2000 if quick else 5000
    rounds = 3 if quick else 7
    peers = Peers(n)
    try:
        samples = interleave(
            {
                "raw": peers.raw,
                "copy_ctx": peers.copy_ctx,
                "flask_executor": peers.flask_executor,
                "offload_noop": peers.offload_noop,
                "offload_reads": peers.offload_reads,
            },
            rounds=rounds,
        )
        # Check that the reading job really sees the request.
        with request_context(peers.off_app):
            job = peers.offload.submit(reads_request)
        assert job.result(10) == ("2025-01", "acme"), job.result(10)
    finally:
        peers.close()
    base = median(samples["raw"])
    submit_base = median(peers.submit_times["raw"][-rounds:])
    rows = []
    ratios = {}
    for key, values in samples.items():
        med = median(values)
        sub = median(peers.submit_times[key][-rounds:])
        ratios[key] = med / base
        rows.append(
            [
                LABELS[key],
                med,
                1e6 / med,
                med / base,
                sub,
                sub / submit_base,
            ]
        )
    return Result(
        NAME,
        TITLE,
        [
            "peer",
            "µs/job e2e",
            "jobs/s",
            "ratio e2e",
            "µs/job submit loop",
            "ratio submit",
        ],
        rows,
        notes=[
            f"N={n} jobs per round, {rounds} interleaved rounds (+1 warm-up),"
            f" medians; {WORKERS} worker threads in every pool.",
            "Request: app.test_request_context('/orders/export?" + QUERY + "',"
            " POST, 10 headers, small JSON body), pushed once per round.",
            "Ratio = time / raw ThreadPoolExecutor time (higher is slower).",
        ],
        data={
            "n": n,
            "rounds": rounds,
            "samples_us": samples,
            "ratios": ratios,
            "submit_us": {k: v[-rounds:] for k, v in peers.submit_times.items()},
        },
    )
