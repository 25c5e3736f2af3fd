"""Users' own tests of an app on the Celery backend, without a broker: the
``offload_inline`` fixture runs declared tasks at submit through the real
serialise, sign, verify and replay path (not Celery's task_always_eager).
"""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask

from flask_offload import JobState
from flask_offload import NotRegistered

from .celery_support import app as support

celery_backend = pytest.importorskip("flask_offload.backends.celery")


@pytest.fixture
def capp(tmp_path: t.Any) -> Flask:
    # An unreachable broker: nothing may be sent to it.
    return support.create_app(
        {
            "OFFLOAD_CELERY": {"broker_url": "redis://127.0.0.1:1/0"},
            "OFFLOAD_TEST_DIR": str(tmp_path),
        }
    )


def test_declared_tasks_run_inline(capp: Flask, offload_inline: None) -> None:
    client = capp.test_client()
    client.get("/login/1")
    r = client.post("/submit/inline?n=2", json={"a": 1}, headers={"X-Custom": "yes"})
    with capp.app_context():
        job = support.offload.get_job(r.json["id"])
        assert job.state is JobState.SUCCEEDED  # done when submit returned
        seen = job.result(0)
    assert seen["label"] == "inline" and seen["n"] == 2
    assert seen["json"] == {"a": 1}
    assert seen["headers"]["X-Custom"] == "yes"
    assert seen["user"] == "alice"
    assert seen["g"] == {"tenant": "acme", "request_id": None}


def test_failures_and_progress_inline(capp: Flask, offload_inline: None) -> None:
    with capp.app_context():
        job = support.fail.submit("inline boom")
        assert job.state is JobState.FAILED
        with pytest.raises(ValueError, match="inline boom"):
            job.result(0)


def test_without_the_fixture_plain_functions_are_refused(capp: Flask) -> None:
    with capp.app_context():
        with pytest.raises(NotRegistered):
            support.offload.submit(len, "abc")


def test_an_existing_celery_app() -> None:
    from celery import Celery

    from flask_offload import Offload

    celery = Celery("mine", broker="memory://")
    app = Flask("existing")
    app.config.update(SECRET_KEY="x", OFFLOAD_BACKEND="celery")
    ext = Offload(app, celery=celery)

    @ext.task
    def double(n: int) -> int:
        return n * 2

    with app.app_context():
        assert ext.celery is celery
        backend = celery_backend._by_app[app]
        task = backend.celery_task(double.name)
        assert celery.tasks[double.name] is task
        assert task.run(4) == 8
