"""Celery throughput: an ``@offload.task`` against a plain ``@shared_task``.

Both no-op tasks live in one Celery app on the same Redis (broker and
result backend), served by one real worker subprocess (``-P solo``, so the
number is the per-task cost of the whole path: publish, broker, worker,
result). Each round sends N tasks of one kind and waits for all their
results, alternating kinds (A B A B ...). The offload task is submitted
inside a typical request (10 headers, a small JSON body, a query string),
so its cost includes capturing, signing and verifying the snapshot header,
the replayed request context and the job's state records.

Also reports the size of the snapshot header for that request.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import typing as t
import uuid

from . import HEADERS
from . import JSON_BODY
from . import median
from . import QUERY
from . import Result

NAME = "celery_throughput"
TITLE = "Celery throughput: offload task vs plain shared_task (same Redis)"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BENCH_CELERY_QUEUE") or f"offload-bench-{uuid.uuid4().hex[:8]}"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def create_app() -> t.Any:
    from celery import shared_task
    from flask import Flask

    from flask_offload import Offload

    app = Flask("bench_celery")
    app.config.update(
        SECRET_KEY="bench",
        OFFLOAD_BACKEND="celery",
        OFFLOAD_CELERY={
            "broker_url": REDIS_URL,
            "result_backend": REDIS_URL,
            "task_default_queue": QUEUE,
        },
    )
    offload = Offload(app)

    @offload.task(name="bench.offload_noop")
    def offload_noop(n: int) -> int:
        return n

    @shared_task(name="bench.plain_noop")
    def plain_noop(n: int) -> int:
        return n

    with app.app_context():
        celery = offload.celery
    celery.set_default()
    return app, offload, offload_noop, celery


def _redis_reachable() -> bool:
    host_port = REDIS_URL.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port or 6379)), 1).close()
    except (OSError, ValueError):
        return False
    return True


def header_sizes() -> dict[str, int]:
    """Bytes of the snapshot header for a typical request, as sent (always
    encrypted): credentials dropped, and with OFFLOAD_CARRY_CREDENTIALS.
    """
    from flask import Flask

    from flask_offload import Offload
    from flask_offload.backends.celery import _by_app
    from flask_offload.snapshot import capture

    sizes = {}
    for carry in (False, True):
        app = Flask("bench_header")
        app.config.update(
            SECRET_KEY="bench",
            OFFLOAD_BACKEND="celery",
            OFFLOAD_CARRY_CREDENTIALS=carry,
            OFFLOAD_CELERY={"broker_url": REDIS_URL},
        )
        Offload(app)
        backend = _by_app[app]
        with app.test_request_context(
            f"/orders/export?{QUERY}", method="POST", headers=HEADERS, json=JSON_BODY
        ):
            snapshot = capture(carry_g="primitives", max_body_size=1 << 20)
            snapshot.acquire()
            try:
                wire = backend.wire_snapshot(app, snapshot, "0" * 32, [])
            finally:
                snapshot.release()
        token = backend.make_token(app, wire, "0" * 32, "bench.offload_noop", [1], {})
        sizes["with credentials" if carry else "default"] = len(token)
    return sizes


def _start_worker() -> tuple[subprocess.Popen[str], list[str]]:
    env = {**os.environ, "BENCH_CELERY_QUEUE": QUEUE, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.celery_throughput:celery_app",
            "worker",
            "-P",
            "solo",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
            "-n",
            f"bench-{QUEUE}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return proc, lines


def run(quick: bool = False) -> Result:
    if not _redis_reachable():
        return Result(
            NAME, TITLE, [], [], skipped=f"Redis is not reachable at {REDIS_URL}."
        )
    app, offload, offload_noop, celery = create_app()
    plain = celery.tasks["bench.plain_noop"]
    n = 100 if quick else 500
    rounds = 2 if quick else 4
    proc, lines = _start_worker()
    times: dict[str, list[float]] = {"offload": [], "plain": []}
    try:
        # Warm up (and wait for the worker): one of each until both answer.
        deadline = time.monotonic() + 60
        while True:
            try:
                plain.delay(0).get(timeout=2)
                break
            except Exception as e:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(
                        "The worker did not start:\n" + "".join(lines)
                    ) from e

        def offload_round() -> None:
            with app.test_request_context(
                f"/orders/export?{QUERY}",
                method="POST",
                headers=HEADERS,
                json=JSON_BODY,
            ):
                jobs = [offload_noop.submit(i) for i in range(n)]
            for job in jobs:
                celery.AsyncResult(job.id).get(timeout=60)

        def plain_round() -> None:
            results = [plain.delay(i) for i in range(n)]
            for result in results:
                result.get(timeout=60)

        offload_round()
        plain_round()
        for _ in range(rounds):
            for name, fn in (("offload", offload_round), ("plain", plain_round)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)
    sizes = header_sizes()
    rate = {k: n / median(v) for k, v in times.items()}
    ratio = rate["offload"] / rate["plain"]
    rows = [
        ["plain @shared_task", rate["plain"], 1.0],
        ["@offload.task (in a request)", rate["offload"], ratio],
    ]
    return Result(
        NAME,
        TITLE,
        ["task", "jobs/s", "vs plain"],
        rows,
        notes=[
            f"{n} tasks per round, {rounds} rounds per kind, interleaved; median"
            " round. One worker, -P solo, Redis broker and result backend.",
            f"Snapshot header for the request (encrypted): {sizes['default']}"
            f" bytes, {sizes['with credentials']} bytes with"
            " OFFLOAD_CARRY_CREDENTIALS.",
        ],
        data={
            "tasks_per_round": n,
            "jobs_per_s": rate,
            "ratio": ratio,
            "header_bytes": sizes,
        },
    )


if os.environ.get("BENCH_CELERY_QUEUE"):
    # Imported by the worker subprocess: ``-A bench.celery_throughput:celery_app``.
    _app, _offload, _task, celery_app = create_app()
