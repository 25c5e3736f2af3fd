"""Instructions per request, counted by callgrind: the plain view, the view
handing a job to a raw ``ThreadPoolExecutor`` and the offloading views of
``bench.loadapp`` (its job reading the replayed request, or given the raw
pool's arguments), each job run right after its request.

Timings on a shared machine move by more than the differences measured
here (see the load benchmark); instruction counts do not: the same
interpreter, code and ``PYTHONHASHSEED`` count the same instructions,
whatever else the machine does. The app is called as a WSGI callable in one
thread, so this counts the Python work per request, not the server's or the
cost of waking a worker thread.

Each view runs in its own process under ``valgrind --tool=callgrind``,
twice, with a short and a long loop after the same warm-up; the difference
divided by the extra requests leaves out start-up and warm-up. Skipped with
a message when valgrind is missing.

The same views are then counted where the load benchmark runs them: a
gunicorn worker (gthread, 4 threads) under callgrind, sent requests one
after another on one keep-alive connection, twice with a different number
of requests after the same warm-up. This counts everything the worker does
per request (its HTTP parsing and sockets, waking a job's thread, the
registry at its steady size), so the ratio is the one the load benchmark's
server CPU and latency follow, without their noise.
"""

from __future__ import annotations

import concurrent.futures as cf
import http.client
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing as t

from . import HEADERS
from . import QUERY
from . import Result

NAME = "instructions"
TITLE = "Instructions per request (callgrind, one thread, job run after each request)"
VIEWS = {
    "plain": "plain view",
    "raw": "view + raw pool.submit (no context)",
    "offload": "view + offload.submit",
    "offload-args": "view + offload.submit, job given the raw pool's arguments",
}
WARMUP = 100


def _early_hints(headers: list[tuple[str, str]]) -> None:
    return None


def _environ(path: str) -> dict[str, t.Any]:
    """A GET as gunicorn 27 passes it (the same keys, and values of the same
    types): the query string, wrk's ``Host`` header and 10 more headers.
    """
    env: dict[str, t.Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": QUERY,
        "RAW_URI": f"{path}?{QUERY}",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "gunicorn/27.0.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": io.BytesIO,
        "wsgi.input_terminated": True,
        "wsgi.early_hints": _early_hints,
        "gunicorn.socket": None,
        "HTTP_HOST": "127.0.0.1:8000",
    }
    for name, value in HEADERS.items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


class _SeededOS:
    """``os`` for the jobs module, with ``urandom`` from a seeded generator."""

    def __init__(self, rng: t.Any) -> None:
        self.rng = rng

    def __getattr__(self, name: str) -> t.Any:
        return getattr(os, name)

    def urandom(self, n: int) -> bytes:
        data: bytes = self.rng.randbytes(n)
        return data


def child(view: str, n: int) -> None:
    """Serve ``WARMUP + n`` requests to ``/view``, each followed by its job.

    This reaches into the thread backend and the raw pool on purpose (it is
    a measurement, not an API test): both are given placeholder threads, so
    neither starts one, and their queues are drained here, each job run as
    their worker loops run it, returning the idle token or semaphore count
    a worker returns, so that the next submit finds an idle worker.
    """
    from flask_offload.backends.base import run_job
    from flask_offload.backends.thread import ThreadBackend

    from . import loadapp

    app = loadapp.app
    backend = t.cast(ThreadBackend, loadapp.offload._state(app)[1].current_backend(app))
    workers = backend.settings.max_workers
    backend._threads.extend([t.cast(t.Any, None)] * workers)
    offload_queue = backend._queue
    idle = backend._idle
    settings = backend.settings
    pool = loadapp.pool
    pool._threads.update(t.cast(t.Any, object()) for _ in range(pool._max_workers))
    pool_queue = pool._work_queue

    def start_response(*args: t.Any) -> t.Any:
        return None

    def one() -> None:
        body = app(_environ(f"/{view}"), t.cast(t.Any, start_response))
        b"".join(body)
        getattr(body, "close", lambda: None)()
        while not offload_queue.empty():  # as ThreadBackend._work
            item = offload_queue.get_nowait()
            if item is not None:
                job_app, job, fn, args, kwargs = item
                if job.snapshot is not None:
                    run_job(job_app, job, job.snapshot, fn, args, kwargs, settings)
                if len(idle) < workers:
                    idle.append(None)
        while not pool_queue.empty():  # as concurrent.futures.thread._worker
            work_item = pool_queue.get_nowait()
            if work_item is not None:
                work_item.run()
                pool._idle_semaphore.release()

    for _ in range(WARMUP + n):
        one()


def _count(valgrind: str, view: str, n: int) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run(
        [
            valgrind,
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.instructions",
            view,
            str(n),
        ],
        cwd=root,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    m = re.search(r"Collected : (\d+)", res.stderr) or re.search(
        r"refs:\s+([\d,]+)", res.stderr
    )
    if res.returncode != 0 or m is None:
        raise RuntimeError(
            f"callgrind failed for /{view} (exit {res.returncode}):\n"
            + res.stderr[-2000:]
        )
    return int(m.group(1).replace(",", ""))


#: Requests before counting in the server: more than OFFLOAD_MAX_FINISHED
#: (1000), so the registry evicts a job for each one it adds, as it does
#: under load.
SERVER_WARMUP = 1200


def _server_count(valgrind: str, view: str, n: int) -> int:
    """Instructions of one gunicorn worker under callgrind serving
    ``SERVER_WARMUP + n`` requests to ``/view``, from start to exit.
    """
    from .load import free_port
    from .load import wait_for
    from .load import worker_pids

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    port = free_port()
    # A file, not a pipe: nothing reads valgrind's output until the end.
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [
            valgrind,
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "gunicorn",
            "--workers=1",
            "--worker-class=gthread",
            "--threads=4",
            f"--bind=127.0.0.1:{port}",
            "--keep-alive=300",
            "--timeout=600",
            "--log-level=warning",
            "bench.loadapp:app",
        ],
        cwd=root,
        env={**os.environ, "PYTHONHASHSEED": "0", "BENCH_SEEDED_JOB_IDS": "1"},
        start_new_session=True,
        stderr=log,
    )
    try:
        wait_for(port, proc, timeout=300)
        workers = worker_pids(proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        for _ in range(SERVER_WARMUP + n):
            conn.request("GET", f"/{view}?{QUERY}", headers=HEADERS)
            res = conn.getresponse()
            res.read()
            if res.status != 200:
                raise RuntimeError(f"/{view} answered {res.status}.")
        conn.close()
        # Let the last job run (threads run one at a time under valgrind).
        time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(300)
        log.seek(0)
        err = log.read()
        log.close()
    counts = dict(re.findall(r"==(\d+)== Collected : (\d+)", err))
    if len(workers) != 1 or str(workers[0]) not in counts:
        raise RuntimeError(
            f"callgrind gave no count for gunicorn's worker:\n{err[-2000:]}"
        )
    return int(counts[str(workers[0])])


def run(quick: bool = False) -> Result:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return Result(
            NAME,
            TITLE,
            [],
            [],
            skipped="valgrind is not installed. Install it (Debian/Ubuntu:"
            " 'apt-get install valgrind') to count instructions per request.",
        )
    short, long = (50, 150) if quick else (100, 400)
    jobs = [(view, n) for view in VIEWS for n in (short, long)]
    # Counting does not depend on what else runs: use every CPU.
    with cf.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        counts = dict(
            zip(jobs, pool.map(lambda vn: _count(valgrind, *vn), jobs), strict=True)
        )
    per = {
        view: (counts[(view, long)] - counts[(view, short)]) / (long - short)
        for view in VIEWS
    }
    short_s, long_s = (50, 150) if quick else (200, 700)
    server_jobs = [(view, n) for view in VIEWS for n in (short_s, long_s)]
    with cf.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        server_counts = dict(
            zip(
                server_jobs,
                pool.map(lambda vn: _server_count(valgrind, *vn), server_jobs),
                strict=True,
            )
        )
    server = {
        view: (server_counts[(view, long_s)] - server_counts[(view, short_s)])
        / (long_s - short_s)
        for view in VIEWS
    }

    def row(label: str, counts: dict[str, float], view: str) -> list[t.Any]:
        plain = counts["plain"]
        raw_added = counts["raw"] - plain
        return [
            label,
            counts[view] / 1000,
            (counts[view] - plain) / 1000,
            counts[view] / plain,
            (counts[view] - plain) / raw_added if raw_added > 0 else float("nan"),
        ]

    rows = [row(label, per, view) for view, label in VIEWS.items()] + [
        row(f"{label}, in a gunicorn worker", server, view)
        for view, label in VIEWS.items()
    ]
    return Result(
        NAME,
        TITLE,
        [
            "view",
            "k instructions/request",
            "added k instructions",
            "ratio",
            "added, x raw pool's",
        ],
        rows,
        notes=[
            f"bench.loadapp called as a WSGI app in one thread, {WARMUP} warm-up"
            f" requests, then {short} and {long} requests in two processes;"
            " per request = difference / extra requests. PYTHONHASHSEED=0.",
            "Each queued job runs right after its request, in the same thread,"
            " as the thread backend's or ThreadPoolExecutor's worker loop runs"
            " it (no thread is started).",
            "Not counted in the first four rows: the server (gunicorn,"
            " sockets) and waking a worker thread, which the load benchmark"
            " includes.",
            "The rows 'in a gunicorn worker': one worker (gthread, 4 threads)"
            " under callgrind, sent one request after another on a keep-alive"
            f" connection, {SERVER_WARMUP} warm-up requests (the registry then"
            " evicts a job for each it adds), then"
            f" {short_s} and {long_s} requests in two servers; per request ="
            " difference / extra requests, everything the worker process ran"
            " (its threads included).",
            "The last view hands the raw pool's job and arguments to"
            " offload.submit: its job never reads the request, which (on"
            " Flask 3.1) is then never built, so what it adds is Offload's"
            " capture, job record and replayed context alone.",
        ],
        data={"per_request": per, "server_per_request": server},
    )


def seed_job_ids() -> None:
    """Make job ids from seeded random bytes instead of ``os.urandom``'s
    (the same code otherwise): ids that differ from run to run hash
    differently and moved the counts by about 2k. Only in the process
    callgrind counts: ids that repeat would mix up jobs anywhere else.
    """
    import random

    from flask_offload import jobs

    jobs.os = t.cast(t.Any, _SeededOS(random.Random(0)))


if __name__ == "__main__":
    seed_job_ids()
    child(sys.argv[1], int(sys.argv[2]))
