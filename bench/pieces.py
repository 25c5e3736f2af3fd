"""Where Flask-Offload's per-job time goes: each piece of the submit and
replay paths timed on its own, single-threaded, in a loop (median of
several repeats), plus a cProfile of the whole path.

This reaches into private functions of ``flask_offload`` on purpose (it is a
profile, not an API test); a piece that no longer exists is reported as
``n/a`` instead of failing the run.
"""

from __future__ import annotations

import contextvars
import cProfile
import io
import pstats
import statistics
import time
import typing as t

from flask import copy_current_request_context
from flask import Flask
from flask import g
from flask import request

from . import HEADERS
from . import JSON_BODY
from . import QUERY
from . import Result

NAME = "pieces"
TITLE = "Profile: cost of each piece of Flask-Offload's submit and replay paths"


def noop() -> None:
    pass


def reads_request() -> tuple[str, str]:
    return request.args["month"], request.headers["X-Tenant"]


def per_call(fn: t.Callable[[], t.Any], n: int, repeats: int = 5) -> float:
    """Median µs per call of ``fn`` over ``repeats`` loops of ``n`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


class _NullBackend:
    """Stands in for the thread backend so ``submit`` is timed without the
    queue hand-off and without worker threads competing for the GIL.
    """

    name = "thread"

    def __init__(self) -> None:
        from flask_offload import Job

        self.job_class = Job
        self.items: list[t.Any] = []

    def reserve(self) -> None:
        pass

    def unreserve(self) -> None:
        pass

    def enqueue(self, app: t.Any, job: t.Any, fn: t.Any, args: t.Any, kw: t.Any):  # type: ignore[no-untyped-def]
        self.items.append((app, job, fn, args, kw))


def measure(n: int) -> tuple[list[list[t.Any]], dict[str, float]]:
    from flask_offload import extension
    from flask_offload import Offload
    from flask_offload import snapshot as snap
    from flask_offload.backends.base import run_job
    from flask_offload.jobs import Job
    from flask_offload.jobs import JobRegistry
    from flask_offload.jobs import new_job_id
    from flask_offload.tasks import task_name

    app = Flask("bench_pieces")
    app.config.update(SECRET_KEY="bench", OFFLOAD_MAX_WORKERS=4)

    @app.post("/orders/export")
    def export() -> str:
        return ""

    offload = Offload(app)
    state = offload._state(app)[1]
    settings = state.settings
    null = _NullBackend()
    real_backend = state.backend
    state.backend = null  # type: ignore[assignment]
    rows: list[list[t.Any]] = []
    us: dict[str, float] = {}

    def piece(path: str, label: str, fn: t.Callable[[], t.Any], k: int = n) -> None:
        try:
            value = per_call(fn, k)
        except Exception as e:  # a private piece renamed by the core owner
            value = float("nan")
            label += f" ({type(e).__name__})"
        us[label] = value
        rows.append([path, label, value])

    def ctx() -> t.Any:
        return app.test_request_context(
            "/orders/export?" + QUERY, method="POST", headers=HEADERS, json=JSON_BODY
        )

    registry = JobRegistry(3600.0, 1000)
    try:
        with ctx():
            g.user_id = 7
            g.tenant = "acme"
            offload.submit(noop)  # captures the request part once
            null.items.clear()

            def submit() -> None:
                offload.submit(noop)

            piece("submit", "offload.submit, whole (no queue, no workers)", submit)
            null.items.clear()
            # Snapshot held by the jobs above: release them.
            registry_jobs = list(state.registry._jobs.values())
            for job in registry_jobs:
                job._finish(extension.JobState.SUCCEEDED)
            piece("submit", "  _state(): find app + state", offload._state)
            piece("submit", "  task_name(fn)", lambda: task_name(noop))
            piece("submit", "  caller_site(): frame walk", snap.caller_site)
            site = snap.caller_site()

            def cap() -> t.Any:
                return snap.capture(
                    carry_g=settings.carry_g,
                    max_body_size=settings.max_body_size,
                    site=site,
                )

            piece("submit", "  capture() (request part cached; session + g copy)", cap)
            piece(
                "submit",
                "    capture: g copy (2 primitives)",
                lambda: snap._carried_g("primitives", vars(g)),
            )
            piece(
                "submit", "  Job(...), whole", lambda: Job("m.noop", app=app, site=site)
            )
            piece("submit", "    Job: new_job_id()", new_job_id)
            jobs = [Job("m.noop", app=app, site=site) for _ in range(n * 5)]
            it = iter(jobs)
            piece("submit", "  registry.add(job)", lambda: registry.add(next(it)))
            piece(
                "submit", "  raw pool.submit (for scale)", lambda: None
            )  # replaced below
            rows.pop()
            snapshot = cap()
            snapshot.acquire()

        # First capture in a request: the request part (environ, body).
        def first_capture() -> None:
            with ctx():
                cap()

        piece(
            "submit",
            "capture, first in a request (+ test ctx push/pop)",
            first_capture,
            n // 4,
        )
        piece(
            "submit",
            "  test_request_context push/pop alone (subtract)",
            lambda: ctx().__enter__().pop(),
            n // 4,
        )  # type: ignore[func-returns-value]

        # Replay side, run in this thread.
        data = snapshot.request
        assert data is not None
        piece(
            "replay",
            "replay(noop), whole: Context + Request + ctx push/pop",
            lambda: snap.replay(app, snapshot, noop, (), {}),
        )
        piece(
            "replay",
            "replay(reads request.args + headers), whole",
            lambda: snap.replay(app, snapshot, reads_request, (), {}),
        )
        piece(
            "replay",
            "  contextvars.Context().run(noop)",
            lambda: contextvars.Context().run(noop),
        )
        piece(
            "replay",
            "  make_request(): Request construction",
            lambda: data.make_request(app, settings.max_body_size),
        )
        piece(
            "replay",
            "  _make_session(): session copy",
            lambda: snap._make_session(app, {}),
        )
        from flask_offload import compat

        max_body = settings.max_body_size

        class _Uncached:
            """The same request data with routing never cached."""

            routing: list[t.Any] = [None]

            def make_request(
                self, app: Flask, max_body_size: int, match: t.Any = None
            ) -> t.Any:
                self.routing[0] = None
                return data.make_request(app, max_body_size, match)

        uncached = _Uncached()

        def enter(source: t.Any) -> None:
            # enter_job_context needs a Context of its own, dropped after.
            contextvars.Context().run(
                compat.enter_job_context,
                app,
                source,
                max_body,
                snap._make_session,
                {},
                False,
            )

        piece(
            "replay",
            "  Context + job context entered, routing cached (as replay makes it)",
            lambda: enter(data),
        )

        def routing_computed() -> None:
            uncached.routing[0] = None
            enter(uncached)

        piece(
            "replay",
            "  Context + job context entered, routing computed (bind + match)",
            routing_computed,
        )

        def enter_leave_in_job(touch: bool) -> None:
            c = compat.enter_job_context(
                app, data, max_body, snap._make_session, {}, False
            )
            if touch:
                request.args  # noqa: B018 - builds the request, as a job reading it
            c.leave(None)

        def enter_leave(touch: bool) -> None:
            contextvars.Context().run(enter_leave_in_job, touch)

        piece(
            "replay",
            "  Context + context enter + leave, request never touched (3.1: lazy)",
            lambda: enter_leave(False),
        )
        piece(
            "replay",
            "  Context + context enter + leave, request read (built)",
            lambda: enter_leave(True),
        )
        piece(
            "replay",
            "  app.app_context() push+pop alone",
            lambda: app.app_context().__enter__().pop(),
        )  # type: ignore[func-returns-value]
        adapter = app.create_url_adapter(data.make_request(app, max_body))
        assert adapter is not None
        piece(
            "replay",
            "  url_adapter.match() (route match)",
            lambda: adapter.match(return_rule=True),
        )

        def args_fresh() -> None:
            r = data.make_request(app, 0)
            r.args["month"]

        def headers_fresh() -> None:
            r = data.make_request(app, 0)
            r.headers["X-Tenant"]

        base_req = per_call(lambda: data.make_request(app, 0), n)
        try:
            piece(
                "job",
                "  request.args parse on a fresh Request (minus construction)",
                args_fresh,
            )
            us_args = us.pop(rows[-1][1])
            rows[-1][2] = max(0.0, us_args - base_req)
            piece(
                "job",
                "  request.headers[...] on a fresh Request (minus construction)",
                headers_fresh,
            )
            rows[-1][2] = max(0.0, us.pop(rows[-1][1]) - base_req)
        except Exception:  # pragma: no cover - reported as n/a above
            pass

        def job_cycle() -> None:
            job = Job("m.noop", app=app, site=site)
            registry.add(job)
            job._start()
            job._finish(extension.JobState.SUCCEEDED)

        piece("replay", "  Job create+add+_start+_finish (registry prune)", job_cycle)
        snapshot.release()

        def full_run() -> None:
            job = Job("m.noop", app=app, site=site, snapshot=snapshot)
            snapshot.acquire()
            registry.add(job)
            run_job(app, job, snapshot, noop, (), {}, settings)

        snapshot.acquire()
        piece("replay", "run_job(noop), whole (as a worker runs it)", full_run)
        snapshot.release()

        # Peers, for scale.
        with ctx():
            piece(
                "peer",
                "copy_current_request_context(fn) (wrap)",
                lambda: copy_current_request_context(noop),
            )
            wrapped = None

            def copy_and_call() -> None:
                copy_current_request_context(noop)()

            piece("peer", "copy_current_request_context: wrap + call", copy_and_call)
            del wrapped
    finally:
        state.backend = real_backend
        with app.app_context():
            offload.shutdown(wait=True, timeout=10)
    return rows, us


def profile(n: int) -> str:
    """cProfile of submit + run_job for ``n`` jobs, run in one thread."""
    from flask_offload import Offload
    from flask_offload.backends.base import run_job

    app = Flask("bench_profile")
    app.config.update(SECRET_KEY="bench")

    @app.post("/orders/export")
    def export() -> str:
        return ""

    offload = Offload(app)
    state = offload._state(app)[1]
    null = _NullBackend()
    real = state.backend
    state.backend = null  # type: ignore[assignment]
    prof = cProfile.Profile()
    try:
        with app.test_request_context(
            "/orders/export?" + QUERY, method="POST", headers=HEADERS, json=JSON_BODY
        ):
            prof.enable()
            for _ in range(n):
                offload.submit(reads_request)
            for app_, job, fn, args, kw in null.items:
                run_job(app_, job, job.snapshot, fn, args, kw, state.settings)
            prof.disable()
    finally:
        state.backend = real
        with app.app_context():
            offload.shutdown(wait=True, timeout=10)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


def run(quick: bool = False) -> Result:
    n = 2000 if quick else 5000
    rows, us = measure(n)
    prof = profile(n)
    return Result(
        NAME,
        TITLE,
        ["path", "piece", "µs/call"],
        rows,
        notes=[
            f"Single thread, no worker threads running; median of 5 loops of {n}"
            " calls (1/4 of that for the request-level rows). Indented rows are"
            " parts of the row above them.",
            "The request: test_request_context, POST, 10 headers, small JSON body,"
            " a matched route, 2 primitive g values.",
        ],
        data={"us": us, "cprofile_top": prof},
    )
