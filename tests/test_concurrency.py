"""Many users at once: every job, and every thread a job starts, sees only its
own request; a reused worker thread keeps nothing from the previous job.
"""

from __future__ import annotations

import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from flask import current_app
from flask import Flask
from flask import g
from flask import has_app_context
from flask import has_request_context
from flask import request
from flask import session

from flask_offload import carry
from flask_offload import current_job
from flask_offload import Job
from flask_offload import Offload

WAIT = 10.0
USERS = 40
WORKERS = 8


def observe(item: int | None = None) -> dict[str, t.Any]:
    """What the code running now sees of the request it was handed."""
    return {
        "auth": request.headers.get("Authorization"),
        "n": request.args.get("n"),
        "json": request.get_json(silent=True),
        "user": g.get("user"),
        "uid": g.get("uid"),
        "session": session.get("who"),
        "job": current_job.id,
        "item": item,
    }


class InFlight:
    """Counts jobs waiting at the gate, so the test can see them overlap."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.waiting = 0
        self.peak = 0
        self.gate = threading.Event()

    def hold(self) -> None:
        with self.cond:
            self.waiting += 1
            self.peak = max(self.peak, self.waiting)
            self.cond.notify_all()
        assert self.gate.wait(WAIT), "the test never opened the gate"
        with self.cond:
            self.waiting -= 1

    def wait_until(self, count: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.waiting >= count, WAIT)


@pytest.fixture
def max_workers() -> int:
    """``OFFLOAD_MAX_WORKERS``; a test overrides it with ``parametrize``."""
    return WORKERS


@pytest.fixture
def app(app: Flask, max_workers: int) -> Flask:
    app.config["OFFLOAD_MAX_WORKERS"] = max_workers
    return app


def test_forty_users_jobs_and_grandchildren_see_only_their_request(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    flight = InFlight()
    shared_pool = ThreadPoolExecutor(4, thread_name_prefix="shared")
    jobs: dict[str, Job] = {}
    jobs_lock = threading.Lock()

    @app.before_request
    def identify() -> None:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        g.user = token
        g.uid = int(token.removeprefix("user-"))
        g.connection = object()  # not a primitive: never carried
        session["who"] = token

    def job_work() -> dict[str, t.Any]:
        flight.hold()
        mine = observe()
        mine["connection_carried"] = "connection" in g
        grandchild: list[dict[str, t.Any]] = []

        def in_grandchild() -> None:
            grandchild.append(observe())

        thread = threading.Thread(target=carry(in_grandchild))
        thread.start()
        # The same executor serves every user's job: per call, not per worker.
        mapped = list(shared_pool.map(carry(observe), range(3)))
        thread.join(WAIT)
        return {"job": mine, "grandchild": grandchild, "mapped": mapped}

    @app.post("/work")
    def work() -> dict[str, t.Any]:
        job = offload.submit(job_work)
        with jobs_lock:
            jobs[job.id] = job
        return {"job": job.id, "user": g.user}

    server = serve(app)

    def call(i: int) -> requests.Response:
        return requests.post(
            server.url + "/work",
            params={"n": str(i)},
            json={"n": i, "who": f"user-{i}"},
            headers={"Authorization": f"Bearer user-{i}"},
            timeout=30,
        )

    try:
        with ThreadPoolExecutor(USERS) as clients:
            responses = list(clients.map(call, range(USERS)))
        assert [r.status_code for r in responses] == [200] * USERS
        assert [r.json()["user"] for r in responses] == [
            f"user-{i}" for i in range(USERS)
        ]
        # All the responses are out; a full pool of jobs is waiting at once.
        assert flight.wait_until(WORKERS)
        assert not any(job.done() for job in jobs.values())
        flight.gate.set()

        for i, response in enumerate(responses):
            job_id = response.json()["job"]
            seen = jobs[job_id].result(WAIT)
            expected = {
                "auth": f"Bearer user-{i}",
                "n": str(i),
                "json": {"n": i, "who": f"user-{i}"},
                "user": f"user-{i}",
                "uid": i,
                "session": f"user-{i}",
                "job": job_id,
            }
            assert seen["job"] == {
                **expected,
                "item": None,
                "connection_carried": False,
            }
            assert seen["grandchild"] == [{**expected, "item": None}]
            assert seen["mapped"] == [{**expected, "item": k} for k in range(3)]
        assert flight.peak == WORKERS
    finally:
        flight.gate.set()
        shared_pool.shutdown(wait=True)


@pytest.mark.parametrize("max_workers", [1])
def test_reused_worker_thread_keeps_nothing_between_users(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    jobs: list[Job] = []

    @app.before_request
    def identify() -> None:
        g.user = request.headers["Authorization"].removeprefix("Bearer ")
        if g.user == "alice":
            g.alice_secret = "alice's data"

    def probe() -> dict[str, t.Any]:
        seen: dict[str, t.Any] = {
            "thread": threading.current_thread(),
            "request": has_request_context(),
            "app": has_app_context(),
            "g": dict(vars(g._get_current_object())),
            "auth": request.headers.get("Authorization")
            if has_request_context()
            else None,
        }
        # Try to leave something behind for the next job on this thread.
        g.left_behind = seen["g"].get("user")
        if has_request_context():
            request.environ["left_behind"] = seen["g"].get("user")
        return seen

    @app.get("/probe")
    def probe_view() -> str:
        jobs.append(offload.submit(probe))
        return "accepted"

    server = serve(app)
    server.get("/probe", headers={"Authorization": "Bearer alice"})
    alice = jobs[0].result(WAIT)
    server.get("/probe", headers={"Authorization": "Bearer bob"})
    bob = jobs[1].result(WAIT)
    with app.app_context():
        outside = offload.submit(probe).result(WAIT)

    assert alice["auth"] == "Bearer alice"
    assert alice["g"] == {"user": "alice", "alice_secret": "alice's data"}
    assert bob["thread"] is alice["thread"], "OFFLOAD_MAX_WORKERS=1: one worker"
    assert bob["auth"] == "Bearer bob"
    assert bob["g"] == {"user": "bob"}
    assert outside["thread"] is alice["thread"]
    assert outside["request"] is False
    assert outside["app"] is True
    assert outside["g"] == {}
    assert outside["auth"] is None


def test_one_wrapper_called_by_many_threads_at_once(app: Flask, serve: t.Any) -> None:
    calls = 6
    all_in = threading.Barrier(calls, timeout=WAIT)
    wrappers: list[t.Callable[[int], dict[str, t.Any]]] = []

    def work(i: int) -> dict[str, t.Any]:
        before = dict(vars(g._get_current_object()))
        all_in.wait()  # every call is inside its own context at once
        g.mine = i
        request.environ["mine"] = i
        all_in.wait()
        return {
            "before": before,
            "g_after": g.mine,
            "environ_after": request.environ["mine"],
            "request": id(request._get_current_object()),  # type: ignore[attr-defined]
            "args": request.args.to_dict(),
        }

    @app.get("/wrap")
    def wrap() -> str:
        g.user = "kim"
        wrappers.append(carry(work))
        return "wrapped"

    server = serve(app)
    server.get("/wrap", params={"q": "1"})
    (wrapper,) = wrappers
    # Called after the response, by many threads at once.
    with ThreadPoolExecutor(calls) as pool:
        results = list(pool.map(wrapper, range(calls)))
    assert [r["before"] for r in results] == [{"user": "kim"}] * calls
    assert [r["g_after"] for r in results] == list(range(calls))
    assert [r["environ_after"] for r in results] == list(range(calls))
    assert [r["args"] for r in results] == [{"q": "1"}] * calls
    assert len({r["request"] for r in results}) == calls


def test_grandchild_changes_to_g_stay_in_the_grandchild(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    jobs: list[Job] = []

    def grandchild(out: list[t.Any]) -> None:
        out.append(g.step)
        g.step = "grandchild"
        g.extra = "grandchild only"

    def job_work() -> dict[str, t.Any]:
        g.step = "job"  # set in the job, before carry(): carried
        out: list[t.Any] = []
        thread = threading.Thread(target=carry(grandchild), args=(out,))
        thread.start()
        thread.join(WAIT)
        return {"grandchild_saw": out, "job_after": dict(vars(g._get_current_object()))}

    @app.get("/steps")
    def steps() -> str:
        g.step = "view"
        jobs.append(offload.submit(job_work))
        return "ok"

    server = serve(app)
    server.get("/steps")
    seen = jobs[0].result(WAIT)
    assert seen["grandchild_saw"] == ["job"]
    assert seen["job_after"] == {"step": "job"}


def test_forty_users_with_the_inline_backend(
    app: Flask, offload: Offload, serve: t.Any, offload_inline: None
) -> None:
    @app.before_request
    def identify() -> None:
        g.user = request.headers["Authorization"].removeprefix("Bearer ")
        g.uid = int(g.user.removeprefix("user-"))
        session["who"] = g.user

    def job_work() -> dict[str, t.Any]:
        mine = observe()
        with ThreadPoolExecutor(2) as pool:
            mapped = list(pool.map(carry(observe), range(2)))
        return {"job": mine, "mapped": mapped}

    @app.post("/inline")
    def inline_view() -> dict[str, t.Any]:
        job = offload.submit(job_work)
        assert job.done()  # ran at submit, through the JSON round trip
        return t.cast(dict[str, t.Any], job.result(0))

    server = serve(app)

    def call(i: int) -> dict[str, t.Any]:
        response = requests.post(
            server.url + "/inline",
            params={"n": str(i)},
            json={"n": i},
            headers={"Authorization": f"Bearer user-{i}"},
            timeout=30,
        )
        assert response.status_code == 200
        return t.cast(dict[str, t.Any], response.json())

    with ThreadPoolExecutor(USERS) as clients:
        results = list(clients.map(call, range(USERS)))
    for i, seen in enumerate(results):
        expected = {
            "auth": f"Bearer user-{i}",
            "n": str(i),
            "json": {"n": i},
            "user": f"user-{i}",
            "uid": i,
            "session": f"user-{i}",
        }
        job_id = seen["job"]["job"]
        assert seen["job"] == {**expected, "job": job_id, "item": None}
        assert seen["mapped"] == [
            {**expected, "job": job_id, "item": k} for k in range(2)
        ]


def test_many_jobs_from_one_request_each_get_their_own_request(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    count = 6  # at most WORKERS, so they can all be in flight at once
    all_in = threading.Barrier(count, timeout=WAIT)
    jobs: list[Job] = []

    def job_work(i: int) -> dict[str, t.Any]:
        all_in.wait()
        g.mine = i
        request.environ["mine"] = i
        body = request.get_json()
        all_in.wait()  # every job has written its own values
        return {
            "g": g.mine,
            "environ": request.environ["mine"],
            "body": body,
            "request": request._get_current_object(),  # type: ignore[attr-defined]
        }

    @app.post("/batch")
    def batch() -> str:
        g.batch = "b1"
        for i in range(count):
            jobs.append(offload.submit(job_work, i))
        return "accepted"

    server = serve(app)
    server.post("/batch", json={"rows": [1, 2, 3]})
    results = [job.result(WAIT) for job in jobs]
    assert [r["g"] for r in results] == list(range(count))
    assert [r["environ"] for r in results] == list(range(count))
    assert [r["body"] for r in results] == [{"rows": [1, 2, 3]}] * count
    assert len({id(r["request"]) for r in results}) == count


def test_jobs_submitted_by_jobs_keep_their_users_request(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    children: dict[int, Job] = {}
    lock = threading.Lock()
    parents: list[Job] = []

    @app.before_request
    def identify() -> None:
        g.user = request.headers["Authorization"].removeprefix("Bearer ")

    def child() -> dict[str, t.Any]:
        return {"user": g.user, "auth": request.headers["Authorization"]}

    def parent(i: int) -> None:
        job = offload.submit(child)
        with lock:
            children[i] = job

    @app.get("/nested")
    def nested() -> str:
        with lock:
            parents.append(offload.submit(parent, int(request.args["n"])))
        return "ok"

    server = serve(app)

    def call(i: int) -> int:
        return requests.get(
            server.url + "/nested",
            params={"n": str(i)},
            headers={"Authorization": f"Bearer user-{i}"},
            timeout=30,
        ).status_code

    with ThreadPoolExecutor(10) as clients:
        assert list(clients.map(call, range(10))) == [200] * 10
    with app.app_context():
        assert offload.join(WAIT)  # includes the jobs that jobs submitted
    assert all(job.done() for job in parents)
    for i in range(10):
        assert children[i].result(0) == {
            "user": f"user-{i}",
            "auth": f"Bearer user-{i}",
        }


def _carry_in_job() -> None:
    thread = threading.Thread(target=carry(lambda: None))
    thread.start()
    thread.join(WAIT)


def _submit_in_job() -> None:
    offload: Offload = current_app.extensions["offload"]
    assert offload.submit(lambda: None).wait(WAIT)


@pytest.fixture(params=["thread", "inline"])
def backend(request: pytest.FixtureRequest) -> str:
    """The thread backend, then the inline one (``offload_inline``)."""
    if request.param == "inline":
        request.getfixturevalue("offload_inline")
    return t.cast(str, request.param)


@pytest.mark.parametrize("hand_off", [_carry_in_job, _submit_in_job])
def test_carry_or_submit_inside_a_job_leaves_the_upload_to_later_jobs(
    app: Flask,
    offload: Offload,
    serve: t.Any,
    backend: str,
    hand_off: t.Callable[[], None],
) -> None:
    def read_upload() -> bytes:
        return request.files["doc"].read()

    @app.post("/upload")
    def upload() -> dict[str, t.Any]:
        first = offload.submit(hand_off)
        first.result(WAIT)
        second = offload.submit(read_upload)
        try:
            return {"read": second.result(WAIT).decode()}
        except ValueError as e:
            return {"error": str(e)}

    server = serve(app)
    response = server.post("/upload", files={"doc": ("a.txt", b"hello")})
    assert response.json() == {"read": "hello"}
