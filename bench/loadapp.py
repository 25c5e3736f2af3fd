"""The app that ``bench.load`` serves with gunicorn: the same view with and
without offloading a job.
"""

from __future__ import annotations

import concurrent.futures as cf

from flask import Flask
from flask import request

from flask_offload import Offload

app = Flask("bench_load")
app.config.update(SECRET_KEY="bench", OFFLOAD_MAX_WORKERS=4)
offload = Offload(app)
pool = cf.ThreadPoolExecutor(4)


def record_export(month: str) -> str:
    """The job: reads the replayed request, as real jobs do."""
    return f"{request.headers.get('X-Tenant')}:{month}:{request.args.get('format')}"


def answer() -> dict[str, str | None]:
    return {
        "month": request.args.get("month"),
        "tenant": request.headers.get("X-Tenant"),
    }


@app.get("/plain")
def plain() -> dict[str, str | None]:
    return answer()


@app.get("/offload")
def offloaded() -> dict[str, str | None]:
    offload.submit(record_export, request.args.get("month", ""))
    return answer()


def raw_export(month: str, tenant: str | None, fmt: str | None) -> str:
    """The same job for the raw pool, given the values as arguments."""
    return f"{tenant}:{month}:{fmt}"


def raw_args() -> tuple[str, str | None, str | None]:
    """What the raw pool's job is given: the values ``record_export`` reads."""
    return (
        request.args.get("month", ""),
        request.headers.get("X-Tenant"),
        request.args.get("format"),
    )


@app.get("/raw")
def raw() -> dict[str, str | None]:
    pool.submit(raw_export, *raw_args())
    return answer()


@app.get("/offload-args")
def offloaded_args() -> dict[str, str | None]:
    """The raw pool view's job and arguments, through ``offload.submit``:
    what Offload's machinery costs when the job never reads the request.
    """
    offload.submit(raw_export, *raw_args())
    return answer()
