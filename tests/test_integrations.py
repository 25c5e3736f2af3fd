"""Flask-Offload with the extensions users combine it with: Flask-Login,
Flask-SQLAlchemy on PostgreSQL, and the classic ``get_db()`` on ``g``.

Every test runs a real threaded werkzeug server; jobs on the thread backend are
held on an event that the test sets once it has the response, so they run
after the request is over, as they do in production.
"""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading
import traceback
import typing as t
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import requests
from flask import Flask
from flask import g
from flask import request
from flask.globals import app_ctx
from flask_login import current_user
from flask_login import login_fresh
from flask_login import login_user
from flask_login import LoginManager
from flask_login import logout_user
from flask_login import UserMixin
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer
from sqlalchemy import select
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_offload import carry
from flask_offload import Job
from flask_offload import JobState
from flask_offload import Offload

try:
    from tests.conftest import require_service
except ImportError:  # tests/ is not a package
    from conftest import require_service  # type: ignore[import-not-found,no-redef]

WAIT = 10.0
PG_URI = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def wait_for(event: threading.Event) -> None:
    assert event.wait(WAIT), "timed out waiting for the test to release the job"


# -- Flask-Login ---------------------------------------------------------------


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


class LoginSetup(SimpleNamespace):
    loads: list[tuple[str, str, threading.Thread]]
    jobs: list[Job]
    view_users: list[t.Any]
    release: threading.Event
    hold: bool  # False with the inline backend, where the job runs at submit


@pytest.fixture
def login(app: Flask, offload: Offload) -> LoginSetup:
    """An app with Flask-Login: ``/login?user=`` logs in through the session,
    ``Authorization: Token <id>`` logs in through the request loader, and
    ``/report`` submits a job that reports who ``current_user`` is.
    """
    manager = LoginManager(app)
    setup = LoginSetup(
        loads=[], jobs=[], view_users=[], release=threading.Event(), hold=True
    )

    @manager.user_loader
    def load_user(user_id: str) -> User:
        setup.loads.append(("session", user_id, threading.current_thread()))
        return User(user_id)

    @manager.request_loader
    def load_from_header(req: t.Any) -> User | None:
        header = req.headers.get("Authorization", "")
        if not header.startswith("Token "):
            return None
        user_id = header[len("Token ") :]
        setup.loads.append(("header", user_id, threading.current_thread()))
        return User(user_id)

    @app.get("/login")
    def do_login() -> str:
        login_user(User(request.args["user"]))
        return "logged in"

    def who_am_i(hold: bool) -> dict[str, t.Any]:
        if hold:
            wait_for(setup.release)
        return {
            "authenticated": current_user.is_authenticated,
            "id": current_user.get_id(),
            "fresh": login_fresh(),
            "user": current_user._get_current_object(),
            "thread": threading.current_thread(),
        }

    @app.get("/report")
    def report() -> dict[str, t.Any]:
        setup.view_users.append(current_user._get_current_object())
        setup.jobs.append(offload.submit(who_am_i, setup.hold))
        return {"view_user": current_user.get_id()}

    @app.post("/login-and-report")
    def login_and_report() -> str:
        login_user(User(request.args["user"]))
        setup.view_users.append(current_user._get_current_object())
        setup.jobs.append(offload.submit(who_am_i, setup.hold))
        return "ok"

    @app.post("/logout-and-report")
    def logout_and_report() -> str:
        logout_user()
        setup.jobs.append(offload.submit(who_am_i, setup.hold))
        return "ok"

    def job_with_grandchild() -> dict[str, t.Any]:
        wait_for(setup.release)
        out: list[dict[str, t.Any]] = []

        def in_grandchild() -> None:
            out.append(who_am_i(False))

        thread = threading.Thread(target=carry(in_grandchild))
        thread.start()
        thread.join(WAIT)
        return {"job": who_am_i(False), "grandchild": out[0]}

    @app.get("/report-deep")
    def report_deep() -> str:
        setup.jobs.append(offload.submit(job_with_grandchild))
        return "ok"

    return setup


@pytest.mark.parametrize("protection", ["basic", "strong"])
def test_login_session_user_reloaded_in_job_thread(
    app: Flask, login: LoginSetup, serve: t.Any, protection: str
) -> None:
    app.config["SESSION_PROTECTION"] = protection
    server = serve(app)
    assert server.get("/login", params={"user": "alice"}).text == "logged in"
    response = server.get("/report")
    assert response.json() == {"view_user": "alice"}
    (job,) = login.jobs
    assert not job.done(), "the job must still be waiting after the response"
    login.release.set()

    seen = job.result(WAIT)
    assert seen["authenticated"] is True
    assert seen["id"] == "alice"
    # Same client address and User-Agent: session protection is satisfied.
    assert seen["fresh"] is True
    # The job's thread is a pool worker, not the thread that served the request.
    assert seen["thread"] is not threading.current_thread()
    # The user was reloaded through user_loader, in the job's own thread.
    job_loads = [load for load in login.loads if load[2] is seen["thread"]]
    assert job_loads == [("session", "alice", seen["thread"])]
    # ... giving the job its own user object, not the view's.
    (view_user,) = login.view_users
    assert view_user.get_id() == "alice"
    assert seen["user"] is not view_user


def test_login_request_loader_header_in_job_thread(
    app: Flask, login: LoginSetup, serve: t.Any
) -> None:
    server = serve(app)
    response = server.get("/report", headers={"Authorization": "Token bob"})
    assert response.json() == {"view_user": "bob"}
    (job,) = login.jobs
    assert not job.done()
    login.release.set()

    seen = job.result(WAIT)
    assert seen["authenticated"] is True
    assert seen["id"] == "bob"
    job_loads = [load for load in login.loads if load[2] is seen["thread"]]
    assert job_loads == [("header", "bob", seen["thread"])]
    assert seen["user"] is not login.view_users[0]


def test_login_from_remember_cookie_in_job_logs_no_session_warning(
    app: Flask,
    offload: Offload,
    serve: t.Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job reading ``current_user`` of a client that only has its
    remember-me cookie: Flask-Login writes its own keys into the job's
    session copy, which is no change of the app's to warn about.
    """
    manager = LoginManager(app)
    manager.user_loader(User)

    @app.get("/login")
    def do_login() -> str:
        login_user(User("7"), remember=True)
        return "ok"

    @app.get("/quiet")
    def quiet() -> dict[str, str]:
        # The view never reads current_user: the job is the first to.
        return {"id": offload.submit(lambda: current_user.get_id()).id}

    server = serve(app)
    server.get("/login")
    remembered = requests.Session()
    remembered.cookies.set("remember_token", server.session.cookies["remember_token"])
    with caplog.at_level("WARNING", logger="flask_offload"):
        r = remembered.get(server.url + "/quiet", timeout=WAIT)
        with app.app_context():
            assert offload.get_job(r.json()["id"]).result(WAIT) == "7"  # type: ignore[union-attr]
    assert "changed the session" not in caplog.text


def test_login_in_the_submitting_view_reaches_the_job(
    app: Flask, login: LoginSetup, serve: t.Any
) -> None:
    server = serve(app)
    server.post("/login-and-report", params={"user": "gina"})
    login.release.set()
    seen = login.jobs[0].result(WAIT)
    assert seen["authenticated"] is True
    assert seen["id"] == "gina"
    assert seen["user"] is not login.view_users[0]


def test_logout_in_the_submitting_view_reaches_the_job(
    app: Flask, login: LoginSetup, serve: t.Any
) -> None:
    server = serve(app)
    server.get("/login", params={"user": "hugo"})
    server.post("/logout-and-report")
    login.release.set()
    seen = login.jobs[0].result(WAIT)
    assert seen["authenticated"] is False
    assert seen["id"] is None


def test_login_user_in_grandchild_thread_of_job(
    app: Flask, login: LoginSetup, serve: t.Any
) -> None:
    server = serve(app)
    server.get("/login", params={"user": "ivan"})
    server.get("/report-deep")
    login.release.set()
    seen = login.jobs[0].result(WAIT)
    job, grandchild = seen["job"], seen["grandchild"]
    assert (job["id"], grandchild["id"]) == ("ivan", "ivan")
    assert grandchild["authenticated"] is True
    assert grandchild["thread"] is not job["thread"]
    assert grandchild["user"] is not job["user"]
    assert ("session", "ivan", grandchild["thread"]) in login.loads


def test_login_anonymous_stays_anonymous_in_job(
    app: Flask, login: LoginSetup, serve: t.Any
) -> None:
    server = serve(app)
    assert server.get("/report").json() == {"view_user": None}
    login.release.set()
    seen = login.jobs[0].result(WAIT)
    assert seen["authenticated"] is False
    assert seen["id"] is None
    assert login.loads == []


def test_login_session_with_inline_backend(
    app: Flask, login: LoginSetup, serve: t.Any, offload_inline: None
) -> None:
    login.hold = False
    server = serve(app)
    server.get("/login", params={"user": "carol"})
    assert server.get("/report").json() == {"view_user": "carol"}
    (job,) = login.jobs
    # Inline: the job already ran at submit, through the JSON round trip.
    assert job.done()
    seen = job.result(0)
    assert seen["authenticated"] is True
    assert seen["id"] == "carol"
    assert seen["user"] is not login.view_users[0]
    # Two loads in the serving thread: the view's, then the job's own.
    assert [load[:2] for load in login.loads] == [
        ("session", "carol"),
        ("session", "carol"),
    ]


# -- Flask-SQLAlchemy on PostgreSQL ------------------------------------------


class PG(SimpleNamespace):
    db: SQLAlchemy
    Item: t.Any
    engine: t.Any


@pytest.fixture
def pg(app: Flask, offload: Offload) -> t.Iterator[PG]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    app.config["SQLALCHEMY_DATABASE_URI"] = PG_URI

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(app, model_class=Base)
    table = f"offload_items_{uuid.uuid4().hex[:12]}"

    class Item(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = table
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        name: Mapped[str] = mapped_column(String(100))

    with app.app_context():
        db.create_all()
        engine = db.engine
    try:
        yield PG(db=db, Item=Item, engine=engine)
    finally:
        with app.app_context():
            assert offload.join(WAIT)
            db.session.remove()
            db.drop_all()
        engine.dispose()


def current_app_ctx() -> t.Any:
    """The active app context object (Flask-SQLAlchemy keys sessions by it)."""
    return t.cast(t.Any, app_ctx)._get_current_object()


def names(pg: PG) -> list[str]:
    return list(pg.db.session.scalars(select(pg.Item.name).order_by(pg.Item.name)))


def test_sqlalchemy_each_job_has_its_own_session(
    app: Flask, offload: Offload, pg: PG, serve: t.Any
) -> None:
    db, Item = pg.db, pg.Item
    both_running = threading.Barrier(2, timeout=WAIT)
    release = threading.Event()
    seen: dict[str, t.Any] = {}
    jobs: list[Job] = []

    def write(name: str) -> dict[str, t.Any]:
        session = db.session()
        wait_for(release)
        both_running.wait()  # the two jobs are in flight at once
        db.session.add(Item(name=name))
        db.session.commit()
        return {"session": session, "ctx": current_app_ctx()}

    @app.post("/write")
    def write_view() -> str:
        seen["view_session"] = db.session()
        seen["view_ctx"] = current_app_ctx()
        jobs.append(offload.submit(write, request.args["a"]))
        jobs.append(offload.submit(write, request.args["b"]))
        return "accepted"

    @app.get("/names")
    def names_view() -> dict[str, t.Any]:
        return {"names": names(pg)}

    server = serve(app)
    assert server.post("/write", params={"a": "ann", "b": "ben"}).text == "accepted"
    release.set()
    first, second = (job.result(WAIT) for job in jobs)

    sessions = [seen["view_session"], first["session"], second["session"]]
    contexts = [seen["view_ctx"], first["ctx"], second["ctx"]]
    for i in range(3):
        for j in range(i + 1, 3):
            assert sessions[i] is not sessions[j]
            assert contexts[i] is not contexts[j]
    # Both commits are visible to a later request.
    assert server.get("/names").json() == {"names": ["ann", "ben"]}


def test_sqlalchemy_failed_jobs_give_their_connections_back(
    app: Flask, offload: Offload, pg: PG, serve: t.Any
) -> None:
    """A job that holds a connection in a local and fails: the job keeps
    its exception, but not the frames' locals, so the pool gets the
    connection back (before, each failed job kept one checked out until it
    was evicted, and a small pool ran dry).
    """
    engine = pg.engine

    def report(n: int) -> None:
        conn = engine.connect()
        conn.execute(select(1))
        raise ValueError(f"report {n} failed while holding {conn!r}")

    def healthy() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(1)).scalar_one())

    @app.post("/reports")
    def reports() -> dict[str, list[str]]:
        return {"ids": [offload.submit(report, n).id for n in range(3)]}

    ids = serve(app).post("/reports").json()["ids"]
    with app.app_context():
        failed = [offload.get_job(i) for i in ids]
        for job in failed:
            assert job is not None and isinstance(job.exception(WAIT), ValueError)
        gc.collect()
        assert engine.pool.checkedout() == 0
        assert offload.submit(healthy).result(WAIT) == 1
        # The traceback is kept (for result() and the log), its locals not.
        exc = failed[0].exception(0)
        frames = traceback.extract_tb(exc.__traceback__)
        assert frames[-1].name == "report"


def test_sqlalchemy_job_commit_visible_uncommitted_rolled_back(
    app: Flask, offload: Offload, pg: PG, serve: t.Any
) -> None:
    db, Item = pg.db, pg.Item
    jobs: list[Job] = []

    def add(name: str, commit: bool) -> None:
        db.session.add(Item(name=name))
        if commit:
            db.session.commit()
        else:
            db.session.flush()  # sent to PostgreSQL, never committed

    @app.post("/add")
    def add_view() -> str:
        jobs.append(offload.submit(add, request.args["name"], commit=True))
        jobs.append(offload.submit(add, "uncommitted", commit=False))
        return "accepted"

    @app.get("/names")
    def names_view() -> dict[str, t.Any]:
        return {"names": names(pg)}

    server = serve(app)
    server.post("/add", params={"name": "dora"})
    for job in jobs:
        job.result(WAIT)
    assert server.get("/names").json() == {"names": ["dora"]}


def test_sqlalchemy_session_removed_at_job_teardown(
    app: Flask,
    offload: Offload,
    pg: PG,
    serve: t.Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = pg.db
    engine = pg.engine
    baseline = engine.pool.checkedout()
    count = 3
    holding = threading.Semaphore(0)
    release = threading.Event()
    jobs: list[Job] = []

    def query(fail: bool) -> int:
        # Opens a transaction: the session holds a pool connection until
        # something returns it. The job never closes the session itself.
        value = db.session.execute(select(1)).scalar_one()
        holding.release()
        wait_for(release)
        if fail:
            raise RuntimeError("the job failed mid-transaction")
        return t.cast(int, value)

    @app.post("/query")
    def query_view() -> str:
        for i in range(count):
            jobs.append(offload.submit(query, fail=i == 0))
        return "accepted"

    server = serve(app)
    server.post("/query")
    for _ in range(count):
        assert holding.acquire(timeout=WAIT)
    assert engine.pool.checkedout() == baseline + count
    with caplog.at_level(logging.CRITICAL, logger="flask_offload"):
        release.set()
        assert [job.wait(WAIT) for job in jobs] == [True] * count
    assert [job.state for job in jobs] == [
        JobState.FAILED,
        JobState.SUCCEEDED,
        JobState.SUCCEEDED,
    ]
    # A job is done only after its teardown: every connection is back, also
    # the failed job's.
    assert engine.pool.checkedout() == baseline


@pytest.fixture(params=["thread", "inline"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test on the thread backend, then with ``offload_inline``, where
    the job runs at submit in the view's own thread.
    """
    if request.param == "inline":
        request.getfixturevalue("offload_inline")
    return t.cast(str, request.param)


def test_sqlalchemy_view_session_untouched_by_job(
    app: Flask, offload: Offload, pg: PG, serve: t.Any, backend: str
) -> None:
    db, Item = pg.db, pg.Item

    def job_work() -> dict[str, t.Any]:
        pending_seen = [obj.name for obj in db.session.new]
        db.session.rollback()
        db.session.add(Item(name="from-job"))
        db.session.commit()
        return {"pending_seen": pending_seen}

    @app.post("/mixed")
    def mixed() -> dict[str, t.Any]:
        session = db.session()
        pending = Item(name="view-pending")
        db.session.add(pending)
        job = offload.submit(job_work)
        job_saw = job.result(WAIT)
        out = {
            "job_saw": job_saw["pending_seen"],
            "same_session": db.session() is session,
            "still_pending": pending in db.session.new,
        }
        db.session.rollback()
        return out

    @app.get("/names")
    def names_view() -> dict[str, t.Any]:
        return {"names": names(pg)}

    server = serve(app)
    assert server.post("/mixed").json() == {
        "job_saw": [],
        "same_session": True,
        "still_pending": True,
    }
    assert server.get("/names").json() == {"names": ["from-job"]}


def test_sqlalchemy_carried_calls_in_a_job_get_their_own_sessions(
    app: Flask, offload: Offload, pg: PG, serve: t.Any
) -> None:
    db, Item = pg.db, pg.Item
    engine = pg.engine
    baseline = engine.pool.checkedout()
    calls = 3
    all_in = threading.Barrier(calls, timeout=WAIT)
    jobs: list[Job] = []

    def insert(i: int) -> t.Any:
        session = db.session()
        db.session.execute(select(1))  # holds a connection until teardown
        all_in.wait()  # every carried call is in flight with its session
        db.session.add(Item(name=f"{request.args['prefix']}-{i}"))
        db.session.commit()
        return session

    def job_work() -> dict[str, t.Any]:
        own = db.session()
        with ThreadPoolExecutor(calls) as pool:
            sessions = list(pool.map(carry(insert), range(calls)))
        return {"own": own, "sessions": sessions}

    @app.post("/fan-out")
    def fan_out() -> str:
        jobs.append(offload.submit(job_work))
        return "accepted"

    @app.get("/names")
    def names_view() -> dict[str, t.Any]:
        return {"names": names(pg)}

    server = serve(app)
    server.post("/fan-out", params={"prefix": "row"})
    seen = jobs[0].result(WAIT)
    everyone = [seen["own"], *seen["sessions"]]
    assert len({id(s) for s in everyone}) == calls + 1
    assert engine.pool.checkedout() == baseline
    assert server.get("/names").json() == {"names": ["row-0", "row-1", "row-2"]}


# -- A resource on g: the classic get_db() -----------------------------------


class RecordingConnection:
    """A sqlite3 connection that records where it is opened and closed.
    sqlite3 itself refuses to be closed from another thread.
    """

    def __init__(self, path: str) -> None:
        self.raw = sqlite3.connect(path)
        self.opened_in = threading.current_thread()
        self.closed_in: list[threading.Thread] = []

    def close(self) -> None:
        self.closed_in.append(threading.current_thread())
        self.raw.close()


def test_g_resource_is_the_jobs_own_and_closed_in_its_thread(
    app: Flask, offload: Offload, serve: t.Any, tmp_path: t.Any
) -> None:
    path = str(tmp_path / "app.sqlite")
    with sqlite3.connect(path) as setup:
        setup.execute("create table notes (body text)")
    setup.close()
    opened: list[RecordingConnection] = []
    teardowns: list[threading.Thread] = []
    release = threading.Event()
    view: dict[str, t.Any] = {}

    def get_db() -> RecordingConnection:
        if "db" not in g:
            g.db = RecordingConnection(path)
            opened.append(g.db)
        return t.cast(RecordingConnection, g.db)

    @app.teardown_appcontext
    def close_db(exc: BaseException | None) -> None:
        teardowns.append(threading.current_thread())
        conn = g.pop("db", None)
        if conn is not None:
            conn.close()

    def job_work() -> dict[str, t.Any]:
        wait_for(release)
        had_db = "db" in g
        conn = get_db()
        conn.raw.execute("insert into notes values (?)", (request.args["note"],))
        conn.raw.commit()
        return {"had_db": had_db, "conn": conn, "thread": threading.current_thread()}

    @app.post("/note")
    def note() -> str:
        conn = get_db()
        conn.raw.execute("insert into notes values ('from-view')")
        conn.raw.commit()
        view["conn"] = conn
        view["thread"] = threading.current_thread()
        view["job"] = offload.submit(job_work)
        return "accepted"

    server = serve(app)
    assert server.post("/note", params={"note": "from-job"}).text == "accepted"
    job = view["job"]
    assert not job.done()
    release.set()
    seen = job.result(WAIT)

    view_conn, job_conn = view["conn"], seen["conn"]
    assert seen["had_db"] is False, "the view's connection leaked into the job's g"
    assert opened == [view_conn, job_conn]
    assert job_conn.opened_in is seen["thread"]
    assert view_conn.closed_in == [view["thread"]]
    assert job_conn.closed_in == [seen["thread"]]
    # teardown_appcontext ran once for the request, once for the job.
    assert len(teardowns) == 2
    assert set(teardowns) == {view["thread"], seen["thread"]}
    with sqlite3.connect(path) as check:
        rows = sorted(r[0] for r in check.execute("select body from notes"))
    check.close()
    assert rows == ["from-job", "from-view"]


def test_teardown_appcontext_gets_the_jobs_exception(
    app: Flask, offload: Offload, serve: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    teardowns: list[tuple[threading.Thread, BaseException | None]] = []
    jobs: list[Job] = []

    @app.teardown_appcontext
    def rollback_on_error(exc: BaseException | None) -> None:
        teardowns.append((threading.current_thread(), exc))

    def broken() -> None:
        raise ValueError(f"bad row {request.args['row']}")

    view_threads: list[threading.Thread] = []

    @app.post("/import")
    def import_view() -> str:
        view_threads.append(threading.current_thread())
        jobs.append(offload.submit(broken))
        return "accepted"

    server = serve(app)
    with caplog.at_level(logging.CRITICAL, logger="flask_offload"):
        server.post("/import", params={"row": "7"})
        (job,) = jobs
        error = job.exception(WAIT)
    assert isinstance(error, ValueError)
    assert str(error) == "bad row 7"
    # The request's teardown saw no error; the job's saw its own, once, in
    # another thread.
    assert len(teardowns) == 2
    by_thread = dict(teardowns)
    assert by_thread[view_threads[0]] is None
    del by_thread[view_threads[0]]
    assert list(by_thread.values()) == [error]
