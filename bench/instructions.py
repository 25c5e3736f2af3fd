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
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import os
import re
import shutil
import subprocess
import sys
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
    plain = per["plain"]
    raw_added = per["raw"] - plain
    rows = [
        [
            label,
            per[view] / 1000,
            (per[view] - plain) / 1000,
            per[view] / plain,
            (per[view] - plain) / raw_added if raw_added > 0 else float("nan"),
        ]
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
            "Not counted: the server (gunicorn, sockets) and waking a worker"
            " thread, which the load benchmark includes.",
            "The last view hands the raw pool's job and arguments to"
            " offload.submit: its job never reads the request, which (on"
            " Flask 3.1) is then never built, so what it adds is Offload's"
            " capture, job record and replayed context alone.",
        ],
        data={"per_request": per},
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
