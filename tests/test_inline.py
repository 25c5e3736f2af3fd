"""The inline backend: the cross-process path (JSON, sign, verify, replay), at once."""

from __future__ import annotations

import hashlib
import os
import threading
import typing as t

import pytest
from flask import Flask
from flask import g
from flask import request
from flask import session

from flask_offload import Offload
from flask_offload import signing
from flask_offload import SnapshotError
from flask_offload import SnapshotTampered

from .conftest import LiveServer


@pytest.fixture
def inline_app(app: Flask) -> Flask:
    app.config["OFFLOAD_BACKEND"] = "inline"
    return app


def test_runs_at_submit_through_json(
    inline_app: Flask, serve: t.Callable[[Flask], LiveServer]
) -> None:
    app = inline_app
    offload = Offload(app)
    marker = object()

    def job() -> dict[str, t.Any]:
        f = request.files["file"]
        return {
            "thread": threading.current_thread().name,
            "args": request.args.to_dict(),
            "auth": request.headers["Authorization"],
            "form": request.form.to_dict(),
            "file": hashlib.sha256(f.read()).hexdigest(),
            "session": dict(session),
            "g": dict(vars(g._get_current_object())),
            "marker": marker,
        }

    @app.post("/in")
    def view() -> dict[str, t.Any]:
        session["n"] = b"bytes survive the tagged JSON"
        g.user_id = 5
        handle = offload.submit(job)
        assert handle.done()  # ran at submit
        result = handle.result()
        assert result["marker"] is marker  # the result object is returned unchanged
        del result["marker"]
        result["view_thread"] = threading.current_thread().name
        result["session"] = {k: repr(v) for k, v in result["session"].items()}
        return result

    server = serve(app)
    payload = os.urandom(700 * 1024)
    r = server.post(
        "/in?a=1",
        data={"k": "v"},
        files={"file": ("f.bin", payload)},
        headers={"Authorization": "Bearer x"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["thread"] == body["view_thread"]
    assert body["args"] == {"a": "1"}
    assert body["auth"] == "Bearer x"
    assert body["form"] == {"k": "v"}
    assert body["file"] == hashlib.sha256(payload).hexdigest()
    assert body["session"] == {"n": repr(b"bytes survive the tagged JSON")}
    assert body["g"] == {"user_id": 5}


def test_non_json_g_fails_at_submit(inline_app: Flask) -> None:
    inline_app.config["OFFLOAD_CARRY_G"] = ["user"]
    offload = Offload(inline_app)

    class User:
        pass

    with inline_app.test_request_context("/"):
        g.user = User()
        with pytest.raises(
            SnapshotError, match="'g.user' \\(User\\) cannot be carried"
        ):
            offload.submit(int)
        (job,) = offload.jobs()
    assert job.state == "FAILED"  # it never stays pending


def test_inline_without_secret_key() -> None:
    app = Flask(__name__)
    app.config["OFFLOAD_BACKEND"] = "inline"
    offload = Offload(app)
    with app.test_request_context("/?x=1"):
        assert offload.submit(lambda: request.args["x"]).result() == "1"


def test_offload_inline_fixture(
    offload_inline: None, app: Flask, offload: Offload
) -> None:
    with app.test_request_context("/?x=2"):
        job = offload.submit(
            lambda: (threading.current_thread().name, request.args["x"])
        )
        assert job.done()
        assert job.result() == (threading.current_thread().name, "2")


def test_signing_rejects_forgery_and_transplant(app: Flask) -> None:
    token = signing.sign(app, {"job": "a", "snap": {}})
    assert signing.verify(app, token, bind={"job": "a"})["job"] == "a"
    with pytest.raises(SnapshotTampered, match="belongs to another job"):
        signing.verify(app, token, bind={"job": "b"})
    with pytest.raises(SnapshotTampered, match="invalid signature"):
        signing.verify(app, token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1])
    other = Flask("other")
    other.config["SECRET_KEY"] = "another key"
    with pytest.raises(SnapshotTampered, match="invalid signature"):
        signing.verify(other, token)
    # Key rotation: the old key as a fallback still verifies.
    other.config["SECRET_KEY_FALLBACKS"] = [app.config["SECRET_KEY"]]
    assert signing.verify(other, token)["job"] == "a"
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        signing.sign(Flask("nokey"), {})


def test_offload_inline_fixture_uses_app_config(
    offload_inline: None, app: Flask
) -> None:
    app.config["OFFLOAD_JOB_TEARDOWN_REQUEST"] = True
    offload = Offload(app)
    threads: list[str] = []
    app.teardown_request(lambda exc: threads.append(threading.current_thread().name))
    with app.test_request_context("/"):
        offload.submit(int).result()
        # The job ran inline (in this thread) and ran teardown_request, as
        # the app's config asks; the test's own context is still pushed.
        assert threads == [threading.current_thread().name]


def test_task_arguments_arrive_as_a_celery_worker_gets_them(
    inline_app: Flask, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """A declared task's arguments go through JSON as on Celery, so a test
    sees what a worker would: tuples as lists, int keys as strings,
    datetimes kept, and a set refused at submit. A plain function, which
    only runs in this process, gets its arguments as they are.
    """
    import datetime

    app = inline_app
    offload = Offload(app)
    when = datetime.datetime(2025, 1, 31, 12, 0)

    @offload.task
    def export(rows: t.Any, index: t.Any, *, since: t.Any) -> list[str]:
        return [type(rows).__name__, repr(index), repr(since)]

    def local(items: t.Any) -> str:
        return type(items).__name__

    @app.post("/export")
    def view() -> dict[str, t.Any]:
        out: dict[str, t.Any] = {
            "task": export.submit((1, 2), {9: "x"}, since=when).result(),
            "plain": offload.submit(local, {1, 2}).result(),
        }
        try:
            export.submit({1, 2}, {}, since=when)
        except SnapshotError as e:
            out["refused"] = str(e)
        out["failed"] = [j.state.value for j in offload.jobs()]
        return out

    r = serve(app).post("/export").json()
    assert r["task"] == ["list", "{'9': 'x'}", repr(when)]
    assert r["plain"] == "set"
    assert "cannot be sent as JSON" in r["refused"]
    assert r["failed"][0] == "FAILED"  # the refused job ended, it was not lost


def test_arguments_without_kombu_match_celerys_json() -> None:
    """Without the celery extra, arguments are normalised to what kombu's
    JSON round trip gives.
    """
    import datetime
    import decimal
    import uuid

    from kombu.utils import json as kombu_json

    values = [
        (1, (2, 3)),
        {9: 1, 1.5: [2], True: "t", None: 0, "s": {"n": (None,)}},
        datetime.datetime(2025, 1, 31, 12, 0, 1),
        datetime.date(2025, 1, 31),
        uuid.UUID("0f3c1e2a-5b7d-4e8f-9a0b-1c2d3e4f5a6b"),
        decimal.Decimal("1.25"),
        b"bytes",
    ]
    for value in values:
        assert signing._sent(value) == kombu_json.loads(kombu_json.dumps(value))
    for bad in ({1, 2}, object(), {(1, 2): 3}):
        with pytest.raises(TypeError):
            signing._sent(bad)
        with pytest.raises(TypeError):
            kombu_json.dumps(bad)


def test_inline_fixture_passes_a_thread_apps_task_arguments_as_they_are(
    app: Flask, offload_inline: None
) -> None:
    """Standing in for the thread backend (``offload_inline`` in an app
    that runs on threads in production), a declared task gets its arguments
    as they are, as it would there: only on Celery do they go through JSON.
    """
    import dataclasses

    @dataclasses.dataclass
    class Order:
        id: int

    offload = Offload(app)

    @offload.task
    def ship(order: Order) -> str:
        return type(order).__name__

    with app.test_request_context("/"):
        assert ship.submit(Order(7)).result() == "Order"
