"""Async views and async job functions (Flask runs them through asgiref)."""

from __future__ import annotations

import asyncio
import logging
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from flask import Flask
from flask import g
from flask import has_request_context
from flask import request

from flask_offload import carry
from flask_offload import current_job
from flask_offload import Job
from flask_offload import JobState
from flask_offload import Offload

WAIT = 10.0


def observe() -> dict[str, t.Any]:
    return {
        "args": request.args.to_dict(),
        "auth": request.headers.get("Authorization"),
        "json": request.get_json(silent=True),
        "path": request.path,
        "g": {k: v for k, v in vars(g._get_current_object()).items()},
    }


def test_async_view_submits_job_that_runs_after_response(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    release = threading.Event()
    jobs: list[Job] = []
    teardowns: list[threading.Thread] = []

    @app.teardown_appcontext
    def record_teardown(exc: BaseException | None) -> None:
        teardowns.append(threading.current_thread())

    def job_work(label: str) -> dict[str, t.Any]:
        assert release.wait(WAIT)
        return {**observe(), "label": label, "thread": threading.current_thread()}

    @app.post("/async")
    async def async_view() -> dict[str, t.Any]:
        await asyncio.sleep(0)
        g.user = request.headers["Authorization"].removeprefix("Bearer ")
        g.tags = ["a", "b"]
        g.handle = object()  # not a primitive: not carried
        jobs.append(offload.submit(job_work, request.json["label"]))
        return {"submitted": True}

    server = serve(app)
    response = server.post(
        "/async",
        params={"page": "2"},
        json={"label": "report"},
        headers={"Authorization": "Bearer dana"},
    )
    assert response.json() == {"submitted": True}
    (job,) = jobs
    assert not job.done()
    release.set()

    seen = job.result(WAIT)
    assert seen["label"] == "report"
    assert seen["args"] == {"page": "2"}
    assert seen["auth"] == "Bearer dana"
    assert seen["json"] == {"label": "report"}
    assert seen["path"] == "/async"
    assert seen["g"] == {"user": "dana", "tags": ["a", "b"]}
    assert seen["thread"] is not threading.current_thread()
    # The log names where the job came from: the async view itself.
    assert job.submitted_from is not None
    assert "test_async.py:" in job.submitted_from
    assert job.submitted_from.endswith(" in async_view")
    # One teardown for the request, one in the job's thread; none elsewhere.
    assert len(teardowns) == 2
    assert teardowns.count(seen["thread"]) == 1


def test_async_job_function_from_sync_view(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    release = threading.Event()
    jobs: list[Job] = []
    teardowns: list[threading.Thread] = []

    @app.teardown_appcontext
    def record_teardown(exc: BaseException | None) -> None:
        teardowns.append(threading.current_thread())

    async def async_job(factor: int) -> dict[str, t.Any]:
        assert release.wait(WAIT)
        await asyncio.sleep(0)
        return {
            **observe(),
            "product": factor * int(request.args["n"]),
            "job": current_job.id,
        }

    @app.get("/sync")
    def sync_view() -> str:
        g.user = "erin"
        jobs.append(offload.submit(async_job, 3))
        return "accepted"

    server = serve(app)
    assert server.get("/sync", params={"n": "7"}).text == "accepted"
    (job,) = jobs
    assert not job.done()
    release.set()

    seen = job.result(WAIT)
    assert seen["product"] == 21
    assert seen["args"] == {"n": "7"}
    assert seen["g"] == {"user": "erin"}
    assert seen["job"] == job.id
    assert len(teardowns) == 2  # the request's and the job's, once each


def test_async_job_that_raises_fails_visibly(
    app: Flask, offload: Offload, serve: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    jobs: list[Job] = []

    async def broken() -> None:
        await asyncio.sleep(0)
        raise LookupError(f"no order {request.args['order']}")

    @app.get("/broken")
    async def broken_view() -> str:
        jobs.append(offload.submit(broken))
        return "accepted"

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="flask_offload"):
        assert server.get("/broken", params={"order": "42"}).text == "accepted"
        (job,) = jobs
        with pytest.raises(LookupError, match="no order 42"):
            job.result(WAIT)
    assert job.state == JobState.FAILED
    assert job.id in caplog.text


def test_carry_in_async_view_for_a_thread(app: Flask, serve: t.Any) -> None:
    release = threading.Event()
    threads: list[threading.Thread] = []
    seen: list[dict[str, t.Any]] = []
    teardowns: list[threading.Thread] = []

    @app.teardown_appcontext
    def record_teardown(exc: BaseException | None) -> None:
        teardowns.append(threading.current_thread())

    def background(label: str) -> None:
        assert release.wait(WAIT)
        seen.append(
            {
                **observe(),
                "label": label,
                "request": has_request_context(),
                "thread": threading.current_thread(),
            }
        )

    @app.get("/async-thread")
    async def async_view() -> str:
        g.user = "finn"
        thread = threading.Thread(target=carry(background), args=("bg",))
        threads.append(thread)
        thread.start()
        return "started"

    server = serve(app)
    assert server.get("/async-thread", params={"q": "x"}).text == "started"
    (thread,) = threads
    assert seen == [], "the thread must still be waiting after the response"
    release.set()
    thread.join(WAIT)
    assert not thread.is_alive()

    (one,) = seen
    assert one["request"] is True
    assert one["label"] == "bg"
    assert one["args"] == {"q": "x"}
    assert one["g"] == {"user": "finn"}
    assert one["thread"] is thread
    # The carried call tore down its own context once, in its own thread.
    assert teardowns.count(thread) == 1


def test_concurrent_async_views_each_job_sees_its_own_request(
    app: Flask, offload: Offload, serve: t.Any
) -> None:
    users = 20
    jobs: dict[str, Job] = {}
    lock = threading.Lock()

    def job_work() -> dict[str, t.Any]:
        return observe()

    async def submit_one(part: str) -> str:
        await asyncio.sleep(0)
        g.part = part  # each gathered task shares the request's g
        job = offload.submit(job_work)
        with lock:
            jobs[job.id] = job
        return job.id

    @app.post("/many")
    async def many() -> dict[str, t.Any]:
        g.user = request.headers["Authorization"].removeprefix("Bearer ")
        ids = await asyncio.gather(submit_one("a"), submit_one("b"))
        return {"jobs": ids}

    server = serve(app)

    def call(i: int) -> list[str]:
        response = requests.post(
            server.url + "/many",
            params={"n": str(i)},
            json={"n": i},
            headers={"Authorization": f"Bearer user-{i}"},
            timeout=30,
        )
        assert response.status_code == 200
        return t.cast(list[str], response.json()["jobs"])

    with ThreadPoolExecutor(users) as clients:
        all_ids = list(clients.map(call, range(users)))
    for i, ids in enumerate(all_ids):
        parts = []
        for job_id in ids:
            seen = jobs[job_id].result(WAIT)
            assert seen["args"] == {"n": str(i)}
            assert seen["auth"] == f"Bearer user-{i}"
            assert seen["json"] == {"n": i}
            assert seen["g"]["user"] == f"user-{i}"
            parts.append(seen["g"]["part"])
        assert parts == ["a", "b"]


def test_carry_with_to_thread_in_async_view(app: Flask, serve: t.Any) -> None:
    def blocking(factor: int) -> dict[str, t.Any]:
        return {**observe(), "product": factor * int(request.args["n"])}

    @app.get("/to-thread")
    async def to_thread_view() -> dict[str, t.Any]:
        g.user = "gail"
        return await asyncio.to_thread(carry(blocking), 5)

    server = serve(app)
    seen = server.get("/to-thread", params={"n": "4"}).json()
    assert seen["product"] == 20
    assert seen["g"] == {"user": "gail"}
    assert seen["path"] == "/to-thread"


@pytest.fixture(params=["thread", "inline"])
def backend(request: pytest.FixtureRequest) -> str:
    """The thread backend, then the inline one (``offload_inline``)."""
    if request.param == "inline":
        request.getfixturevalue("offload_inline")
    return t.cast(str, request.param)


def test_async_job_from_async_view(
    app: Flask, offload: Offload, serve: t.Any, backend: str
) -> None:
    async def async_job(factor: int) -> int:
        await asyncio.sleep(0)
        return factor * int(request.args["n"])

    @app.get("/async-async")
    async def async_view() -> dict[str, t.Any]:
        job = offload.submit(async_job, 2)
        await asyncio.to_thread(job.wait, WAIT)
        try:
            return {"result": job.result(0)}
        except RuntimeError as e:
            return {"error": str(e)}

    server = serve(app)
    assert server.get("/async-async", params={"n": "21"}).json() == {"result": 42}
