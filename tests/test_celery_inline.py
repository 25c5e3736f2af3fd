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


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("redis://127.0.0.1:6379/0", "a URL: it takes Celery's settings"),
        ("no_such_module.settings", "could not be imported"),
        ("", "OFFLOAD_CELERY is empty"),
        (5, "not Celery's settings"),
        (["broker_url"], "not Celery's settings"),
    ],
)
def test_celery_settings_that_are_not_settings(value: t.Any, match: str) -> None:
    """``OFFLOAD_CELERY`` given a broker URL (``from_prefixed_env`` makes
    one easily), an import path that does not import, or a number or list:
    refused at ``init_app``, naming the key and showing the dict it takes.
    """
    from flask_offload import Offload

    app = Flask("bad_celery")
    app.config.update(SECRET_KEY="x", OFFLOAD_BACKEND="celery", OFFLOAD_CELERY=value)
    ext = Offload()
    with pytest.raises(ValueError, match=match) as info:
        ext.init_app(app)
    assert "OFFLOAD_CELERY" in str(info.value)
    assert "{'broker_url': 'redis://" in str(info.value)
    assert "offload" not in app.extensions


def test_celery_settings_as_an_object_or_import_path() -> None:
    from flask_offload import Offload

    class Settings:
        broker_url = "memory://"
        task_default_queue = "from-object"

    for value in (Settings, f"{__name__}:CELERY_SETTINGS"):
        app = Flask("object_celery")
        app.config.update(
            SECRET_KEY="x", OFFLOAD_BACKEND="celery", OFFLOAD_CELERY=value
        )
        ext = Offload(app)
        with app.app_context():
            assert ext.celery.conf.broker_url == "memory://"
        expected = "from-object" if value is Settings else "from-path"
        assert ext.celery.conf.task_default_queue == expected


class CELERY_SETTINGS:  # noqa: N801 - a settings object, as users name them
    broker_url = "memory://"
    task_default_queue = "from-path"


def test_celery_argument_must_be_a_celery_app() -> None:
    from flask_offload import Offload

    with pytest.raises(TypeError, match=r"takes a Celery app, not 'redis://"):
        Offload(celery="redis://127.0.0.1:6379/0")
