"""Submit latency inside a view: p50 and p99 of one submit call.

Each peer has a view that times exactly one submit call (``perf_counter``)
of a no-op job. Requests go through the Flask test client (the full WSGI
app: routing, request and app context, the view), POST with ~10 headers
and a small JSON body, one peer after the other (A B C D A B C D ...). For
Flask-Offload this is the first submit of the request, so it includes
capturing the request (environ, parsed body). Worker threads run the jobs
while later requests are served, as in production.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import time
import typing as t

from flask import copy_current_request_context
from flask import Flask

from . import HEADERS
from . import JSON_BODY
from . import percentile
from . import QUERY
from . import Result
from . import WORKERS

NAME = "submit"
TITLE = "Submit latency inside a view (one submit call, µs)"


def noop() -> None:
    pass


def build() -> tuple[Flask, dict[str, list[float]], t.Callable[[], None]]:
    from flask_executor import Executor

    from flask_offload import Offload

    app = Flask("bench_submit")
    app.config.update(
        SECRET_KEY="bench", OFFLOAD_MAX_WORKERS=WORKERS, EXECUTOR_MAX_WORKERS=WORKERS
    )
    pool = cf.ThreadPoolExecutor(WORKERS)
    executor = Executor(app)
    offload = Offload(app)
    times: dict[str, list[float]] = {
        "raw": [],
        "copy_ctx": [],
        "flask_executor": [],
        "offload": [],
    }
    perf = time.perf_counter

    @app.post("/raw")
    def raw() -> str:
        t0 = perf()
        pool.submit(noop)
        times["raw"].append(perf() - t0)
        return ""

    @app.post("/copy_ctx")
    def copy_ctx() -> str:
        t0 = perf()
        pool.submit(copy_current_request_context(noop))
        times["copy_ctx"].append(perf() - t0)
        return ""

    @app.post("/flask_executor")
    def flask_executor() -> str:
        t0 = perf()
        executor.submit(noop)
        times["flask_executor"].append(perf() - t0)
        return ""

    @app.post("/offload")
    def offload_view() -> str:
        t0 = perf()
        offload.submit(noop)
        times["offload"].append(perf() - t0)
        return ""

    def close() -> None:
        pool.shutdown(wait=True)
        executor._self.shutdown(wait=True)
        with app.app_context():
            offload.join(60)
            offload.shutdown(wait=True, timeout=60)

    return app, times, close


LABELS = {
    "raw": "raw ThreadPoolExecutor.submit",
    "copy_ctx": "copy_current_request_context + submit",
    "flask_executor": "Flask-Executor submit",
    "offload": "offload.submit (incl. request capture)",
}


def run(quick: bool = False) -> Result:
    requests = 400 if quick else 2000
    app, times, close = build()
    client = app.test_client()
    try:
        for warm in (True, False):
            for _ in range(50 if warm else requests):
                for name in times:
                    client.post(f"/{name}?{QUERY}", headers=HEADERS, json=JSON_BODY)
            if warm:
                for v in times.values():
                    v.clear()
                gc.collect()
    finally:
        close()
    base50 = percentile(times["raw"], 50)
    rows = []
    for name, values in times.items():
        us = [v * 1e6 for v in values]
        p50, p99 = percentile(us, 50), percentile(us, 99)
        rows.append([LABELS[name], p50, p99, p50 / (base50 * 1e6)])
    return Result(
        NAME,
        TITLE,
        ["peer", "p50 µs", "p99 µs", "p50 ratio"],
        rows,
        notes=[
            f"{requests} requests per peer through the Flask test client,"
            " interleaved; POST with 10 headers and a small JSON body;"
            f" {WORKERS} worker threads per pool.",
        ],
        data={
            "requests": requests,
            "p50_us": {n: percentile(v, 50) * 1e6 for n, v in times.items()},
            "p99_us": {n: percentile(v, 99) * 1e6 for n, v in times.items()},
        },
    )
