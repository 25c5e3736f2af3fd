"""Cost of automatic propagation (``OFFLOAD_PROPAGATE``), per task and per
thread start, against the same calls with nothing patched.

Per task: N no-op tasks given to one ``ThreadPoolExecutor`` from inside a
request, submit loop + all done, with the patches removed ("unpatched"),
installed and active (every task replays the request), and installed but
used outside any request (the cost of the patch where it does nothing). The
hand-written equivalent, ``submit(carry(fn))``, is shown for reference.

Per thread start: ``Thread(target=noop).start()`` + ``join()``, the same
three ways. Peers run interleaved in the same process; ratios are against
the unpatched peer of the same round set.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import typing as t

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

NAME = "propagation"
TITLE = "Automatic propagation: cost per task and per thread start"


def noop() -> None:
    pass


def reads_request() -> tuple[str, str]:
    return request.args["month"], request.headers["X-Tenant"]


class Peers:
    def __init__(self, n_tasks: int, n_threads: int) -> None:
        from flask_offload import Offload

        self.n_tasks = n_tasks
        self.n_threads = n_threads
        self.app = Flask("bench_propagation")
        self.app.config.update(SECRET_KEY="bench", OFFLOAD_PROPAGATE=True)
        self.offload = Offload(self.app)
        self.pool = cf.ThreadPoolExecutor(WORKERS)

    def close(self) -> None:
        from flask_offload import propagation

        self.pool.shutdown(wait=True)
        propagation.uninstall()
        with self.app.app_context():
            self.offload.shutdown(wait=True, timeout=60)

    def request(self) -> t.Any:
        return self.app.test_request_context(
            "/orders/export?" + QUERY, method="POST", headers=HEADERS, json=JSON_BODY
        )

    @staticmethod
    def _patched(on: bool) -> None:
        from flask_offload import propagation

        if on:
            propagation.install()
        else:
            propagation.uninstall()

    def _tasks(self, patched: bool, in_request: bool, carried: bool = False) -> float:
        from flask_offload import carry

        self._patched(patched)
        n, submit = self.n_tasks, self.pool.submit
        ctx = self.request() if in_request else _Null()
        with ctx:
            t0 = timer()
            if carried:
                futures = [submit(carry(noop)) for _ in range(n)]
            else:
                futures = [submit(noop) for _ in range(n)]
            cf.wait(futures)
            t1 = timer()
        return (t1 - t0) / n * 1e6

    def _threads(self, patched: bool, in_request: bool) -> float:
        self._patched(patched)
        n = self.n_threads
        ctx = self.request() if in_request else _Null()
        with ctx:
            t0 = timer()
            for _ in range(n):
                th = threading.Thread(target=noop)
                th.start()
                th.join()
            t1 = timer()
        return (t1 - t0) / n * 1e6

    def task_unpatched(self) -> float:
        return self._tasks(False, True)

    def task_propagated(self) -> float:
        return self._tasks(True, True)

    def task_carry(self) -> float:
        return self._tasks(False, True, carried=True)

    def task_outside_unpatched(self) -> float:
        return self._tasks(False, False)

    def task_outside_patched(self) -> float:
        return self._tasks(True, False)

    def thread_unpatched(self) -> float:
        return self._threads(False, True)

    def thread_propagated(self) -> float:
        return self._threads(True, True)

    def thread_outside_unpatched(self) -> float:
        return self._threads(False, False)

    def thread_outside_patched(self) -> float:
        return self._threads(True, False)


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


LABELS = {
    "task_unpatched": "task, in a request, unpatched ThreadPoolExecutor",
    "task_propagated": "task, in a request, propagated (replays the request)",
    "task_carry": "task, in a request, submit(carry(fn)) by hand",
    "task_outside_unpatched": "task, outside any request, unpatched",
    "task_outside_patched": "task, outside any request, patches installed",
    "thread_unpatched": "thread start+join, in a request, unpatched",
    "thread_propagated": "thread start+join, in a request, propagated",
    "thread_outside_unpatched": "thread start+join, outside any request, unpatched",
    "thread_outside_patched": "thread start+join, outside any request, patched",
}
BASES = {
    "task_unpatched": "task_unpatched",
    "task_propagated": "task_unpatched",
    "task_carry": "task_unpatched",
    "task_outside_unpatched": "task_outside_unpatched",
    "task_outside_patched": "task_outside_unpatched",
    "thread_unpatched": "thread_unpatched",
    "thread_propagated": "thread_unpatched",
    "thread_outside_unpatched": "thread_outside_unpatched",
    "thread_outside_patched": "thread_outside_unpatched",
}


def run(quick: bool = False) -> Result:
    n_tasks = 2000 if quick else 5000
    n_threads = 300 if quick else 1000
    rounds = 3 if quick else 7
    peers = Peers(n_tasks, n_threads)
    try:
        samples = interleave({k: getattr(peers, k) for k in LABELS}, rounds=rounds)
        # Check that a propagated task really sees the request.
        peers._patched(True)
        with peers.request():
            seen = peers.pool.submit(reads_request).result(10)
        assert seen == ("2025-01", "acme"), seen
    finally:
        peers.close()
    medians = {k: median(v) for k, v in samples.items()}
    ratios = {k: medians[k] / medians[BASES[k]] for k in medians}
    rows = [
        [LABELS[k], medians[k], medians[k] - medians[BASES[k]], ratios[k]]
        for k in LABELS
    ]
    return Result(
        NAME,
        TITLE,
        ["case", "µs each", "µs added", "ratio vs unpatched"],
        rows,
        notes=[
            f"{n_tasks} no-op tasks per round on a {WORKERS}-thread"
            f" ThreadPoolExecutor (submit loop + all done), {n_threads} thread"
            f" starts per round; {rounds} interleaved rounds (+1 warm-up), medians.",
            "Request: app.test_request_context('/orders/export?" + QUERY + "',"
            " POST, 10 headers, small JSON body), pushed once per round.",
            "Ratio = time / the unpatched case of the same kind, same run.",
        ],
        data={
            "n_tasks": n_tasks,
            "n_threads": n_threads,
            "rounds": rounds,
            "samples_us": samples,
            "medians_us": medians,
            "ratios": ratios,
        },
    )
