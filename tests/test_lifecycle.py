"""Teardown runs once per context, in the right thread; nothing stays pushed."""

from __future__ import annotations

import threading
import typing as t
from collections import Counter

import pytest
from flask import Flask
from flask import g
from flask import has_request_context
from flask import request

from flask_offload import carry
from flask_offload import compat
from flask_offload import Offload

from .conftest import LiveServer


class Recorder:
    def __init__(self, app: Flask) -> None:
        self.calls: list[tuple[str, str]] = []
        app.teardown_request(self.request)
        app.teardown_appcontext(self.appcontext)
        self.before = 0
        app.before_request(self.before_request)

    def request(self, exc: BaseException | None) -> None:
        self.calls.append(("teardown_request", threading.current_thread().name))

    def appcontext(self, exc: BaseException | None) -> None:
        self.calls.append(("teardown_appcontext", threading.current_thread().name))

    def before_request(self) -> None:
        self.before += 1

    def counts(self) -> Counter[tuple[str, str]]:
        return Counter(self.calls)


@pytest.mark.parametrize("teardown_request", [False, True])
def test_teardown_once_per_context(
    app: Flask, serve: t.Callable[[Flask], LiveServer], teardown_request: bool
) -> None:
    app.config["OFFLOAD_JOB_TEARDOWN_REQUEST"] = teardown_request
    offload = Offload(app)
    rec = Recorder(app)
    names: dict[str, str] = {}
    hold = threading.Event()
    carried_done = threading.Event()

    def job() -> None:
        assert hold.wait(10)
        names["job"] = threading.current_thread().name

        def grandchild() -> None:
            names["grandchild"] = threading.current_thread().name

        th = threading.Thread(target=carry(grandchild), name="grandchild")
        th.start()
        th.join()
        carried_done.set()

    @app.get("/life")
    def life() -> str:
        names["view"] = threading.current_thread().name
        offload.submit(job)
        return "ok"

    server = serve(app)
    assert server.get("/life").ok
    hold.set()
    with app.app_context():
        assert offload.join(10)
    rec.calls = [c for c in rec.calls if c[1] != threading.current_thread().name]
    expected = Counter(
        {
            ("teardown_request", names["view"]): 1,
            ("teardown_appcontext", names["view"]): 1,
            ("teardown_appcontext", names["job"]): 1,
            ("teardown_appcontext", "grandchild"): 1,
        }
    )
    if teardown_request:
        expected[("teardown_request", names["job"])] = 1
        expected[("teardown_request", "grandchild")] = 1
    assert rec.counts() == expected
    assert rec.before == 1  # before_request never runs for a job
    with app.app_context():
        offload.shutdown()


def test_job_failure_reaches_teardown(app: Flask, offload: Offload) -> None:
    seen: list[BaseException | None] = []
    app.teardown_appcontext(seen.append)

    def boom() -> None:
        raise KeyError("x")

    with app.app_context():
        job = offload.submit(boom)
        assert isinstance(job.exception(10), KeyError)
    # The job's teardown saw the job's error; the test's own context saw None.
    assert [type(e) for e in seen] == [KeyError, type(None)]


def test_no_context_left_on_worker_between_jobs(
    app: Flask, serve: t.Callable[[Flask], LiveServer]
) -> None:
    app.config["OFFLOAD_MAX_WORKERS"] = 1
    offload = Offload(app)
    seen: list[t.Any] = []

    def report() -> None:
        seen.append(
            (
                threading.current_thread().name,
                request.headers.get("X-User"),
                g.get("user"),
            )
        )

    @app.get("/u")
    def u() -> str:
        g.user = request.headers["X-User"]
        offload.submit(report)
        return "ok"

    server = serve(app)
    for user in ("alice", "bob", "alice"):
        assert server.get("/u", headers={"X-User": user}).ok
        with app.app_context():
            assert offload.join(10)

    def outside() -> tuple[str, bool, bool]:
        return (threading.current_thread().name, has_request_context(), "user" in g)

    # The same worker thread, after alice's job: a job submitted outside any
    # request sees no request and an empty g.
    with app.app_context():
        worker, has_req, has_user = offload.submit(outside).result(10)
        offload.shutdown()
    assert (worker, has_req, has_user) == (seen[0][0], False, False)
    assert [s[1:] for s in seen] == [
        ("alice", "alice"),
        ("bob", "bob"),
        ("alice", "alice"),
    ]
    assert len({s[0] for s in seen}) == 1  # one reused worker thread


def test_copy_current_request_context_inside_a_job(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """Code a job calls may use Flask's own copy_current_request_context
    (a library doing so, say): the copy sees the job's request and session.
    """
    from flask import copy_current_request_context
    from flask import session

    hold = threading.Event()

    def job() -> tuple[str | None, str | None, object]:
        assert hold.wait(10)
        out: list[tuple[str | None, str | None, object]] = []

        @copy_current_request_context
        def in_thread() -> None:
            out.append(
                (request.args.get("q"), request.headers.get("X-User"), session.get("n"))
            )

        th = threading.Thread(target=in_thread)
        th.start()
        th.join()
        return out[0]

    @app.get("/copy")
    def copy_view() -> dict[str, str]:
        session["n"] = 5
        return {"id": offload.submit(job).id}

    server = serve(app)
    r = server.get("/copy?q=x", headers={"X-User": "ann"})
    hold.set()
    with app.app_context():
        assert offload.get_job(r.json()["id"]).result(10) == ("x", "ann", 5)  # type: ignore[union-attr]


def test_job_that_never_touches_the_request(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """A job using only its arguments, g and current_app runs in a request
    context all the same: the request is there the moment it is read.
    """
    from flask import current_app

    def job(n: int) -> tuple[int, str, bool, str | None]:
        from flask import has_request_context

        first = (n * 2, current_app.name, has_request_context())
        return (*first, request.args.get("late"))

    @app.get("/lazy")
    def lazy() -> dict[str, str]:
        return {"id": offload.submit(job, 21).id}

    server = serve(app)
    r = server.get("/lazy?late=yes")
    with app.app_context():
        result = offload.get_job(r.json()["id"]).result(10)  # type: ignore[union-attr]
    assert result == (42, app.name, True, "yes")


def test_app_context_signals_once_per_job(
    app: Flask, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """A job's app context sends ``appcontext_pushed`` and
    ``appcontext_popped`` once each, in the job's thread, with the app as
    sender, as a Flask app context does.
    """
    from flask.signals import appcontext_popped
    from flask.signals import appcontext_pushed

    offload = Offload(app)
    sent: list[tuple[str, str, bool]] = []
    job_thread: list[str] = []

    def record(name: str) -> t.Callable[..., None]:
        def receiver(sender: Flask, **extra: t.Any) -> None:
            sent.append((name, threading.current_thread().name, sender is app))

        return receiver

    def job() -> str:
        job_thread.append(threading.current_thread().name)
        return str(request.args["month"])

    @app.get("/export")
    def export() -> str:
        return offload.submit(job).id

    pushed, popped = record("pushed"), record("popped")
    server = serve(app)
    with appcontext_pushed.connected_to(pushed), appcontext_popped.connected_to(popped):
        job_id = server.get("/export?month=2025-01").text
        with app.app_context():
            assert offload.get_job(job_id).result(10) == "2025-01"  # type: ignore[union-attr]
    [name] = job_thread
    in_job = [s for s in sent if s[1] == name]
    assert in_job == [("pushed", name, True), ("popped", name, True)]
    with app.app_context():
        offload.shutdown()


def test_request_pushed_inside_a_job_runs_its_teardown(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """A job's own context skips ``teardown_request``, but a request context
    the job pushes itself (a test request, a library's) is torn down as
    usual; a nested ``with`` block on the job's own contexts neither tears
    them down early nor loses the job's request.
    """
    from flask.globals import _cv_app

    rec = Recorder(app)

    def job() -> tuple[str | None, str | None, str | None]:
        with app.test_request_context("/inner?q=inner"):
            inner = request.args.get("q")
        own_app_ctx = _cv_app.get()
        with own_app_ctx:
            nested = request.args.get("q")
        return inner, nested, request.args.get("q")

    @app.get("/outer")
    def outer() -> str:
        return offload.submit(job).id

    server = serve(app)
    job_id = server.get("/outer?q=outer").text
    with app.app_context():
        job_ = offload.get_job(job_id)
        assert job_ is not None
        assert job_.result(10) == ("inner", "outer", "outer")
    server.wait_idle()
    job_thread = next(
        name for kind, name in rec.calls if name.startswith("flask-offload")
    )
    counts = rec.counts()
    # The inner request's teardown in the job's thread, and the job's own app
    # context teardown once the job ended. On Flask 3.1 the inner request
    # shares the job's app context (as it would any active one of its app);
    # on 3.2 it is a context of its own, torn down too.
    assert counts[("teardown_request", job_thread)] == 1
    assert counts[("teardown_appcontext", job_thread)] == (
        2 if compat.MERGED_CONTEXT else 1
    )


def test_copy_current_request_context_in_a_job_runs_teardown_request(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """A job that hands work to a thread with Flask's own
    ``copy_current_request_context``: the copy runs ``teardown_request`` in
    its thread, as Flask documents (on Flask 3.2 too, where a job's context
    skips it).
    """
    from flask import copy_current_request_context

    torn_down: list[str] = []

    @app.teardown_request
    def record(exc: BaseException | None) -> None:
        torn_down.append(threading.current_thread().name)

    def job() -> str:
        @copy_current_request_context
        def inner() -> None:
            seen.append(request.path)

        seen: list[str] = []
        thread = threading.Thread(target=inner, name="copy-thread")
        thread.start()
        thread.join(10)
        return seen[0]

    @app.get("/report")
    def report() -> dict[str, str]:
        return {"id": offload.submit(job).id}

    server = serve(app)
    r = server.get("/report")
    with app.app_context():
        assert offload.get_job(r.json()["id"]).result(10) == "/report"  # type: ignore[union-attr]
    assert "copy-thread" in torn_down
