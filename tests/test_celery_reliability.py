"""Workers that die or are stopped mid-job: acks_late redelivery after
SIGKILL (RabbitMQ, and Redis with a short visibility_timeout), and a warm
shutdown on SIGTERM that finishes the current job first.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import typing as t

import pytest
from flask import Flask

from .celery_support import app as support
from .celery_support.procs import broker_config
from .celery_support.procs import transport
from .celery_support.procs import wait_for
from .celery_support.procs import Worker

pytest.importorskip("flask_offload.backends.celery")


def _config(kind: str, folder: str) -> dict[str, t.Any]:
    celery = broker_config(kind, folder)
    if transport(celery) == "redis":
        # Redelivery of unacknowledged messages after 1 s instead of an hour,
        # with keys of its own so no other Redis user's messages are touched.
        celery["broker_transport_options"] = {
            "visibility_timeout": 1,
            "unacked_restore_interval": 0.2,
            "unacked_restore_throttle": 1,
            "global_keyprefix": f"{celery['task_default_queue']}:",
        }
    return {"OFFLOAD_CELERY": celery, "OFFLOAD_TEST_DIR": folder}


def _skip_without_acks(config: dict[str, t.Any]) -> None:
    if transport(config["OFFLOAD_CELERY"]) == "filesystem":
        pytest.skip(
            "The filesystem transport has no acknowledgements, so nothing is"
            " redelivered; this needs Redis or RabbitMQ."
        )


def _starts(folder: str, name: str) -> list[dict[str, t.Any]]:
    path = os.path.join(folder, f"{name}.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("kind", ["amqp", "redis"])
def test_sigkill_mid_job_is_redelivered(
    kind: str, tmp_path: t.Any, request: pytest.FixtureRequest
) -> None:
    folder = str(tmp_path)
    config = _config(kind, folder)
    _skip_without_acks(config)
    app: Flask = support.create_app(config)
    # The first worker through the Flask CLI, the second through Celery's.
    first = Worker(config, cli="flask")
    request.addfinalizer(first.kill)
    first.wait_ready()
    with app.app_context():
        job = support.slow.submit("kill")
    started = wait_for(lambda: _starts(folder, "kill"), what="the job to start")
    assert started[0]["job"] == job.id
    first.kill()  # SIGKILL: no chance to acknowledge or requeue
    assert first.proc.returncode == -signal.SIGKILL

    second = Worker(config)
    request.addfinalizer(second.kill)
    second.wait_ready()
    again = wait_for(
        lambda: _starts(folder, "kill")[1:], what="the job to be redelivered"
    )
    assert again[0]["job"] == job.id
    assert again[0]["pid"] != started[0]["pid"]
    open(os.path.join(folder, "kill.go"), "w").close()
    assert job.result(30) == f"kill finished by {again[0]['pid']}"


@pytest.mark.parametrize("kind", ["amqp", "redis"])
def test_cold_shutdown_keeps_the_uploads_for_the_redelivered_job(
    kind: str, tmp_path: t.Any, request: pytest.FixtureRequest
) -> None:
    """SIGQUIT (a second Ctrl-C, the end of a soft shutdown) stops the job
    in the pool process with SystemExit. The message goes back to the
    broker; the job's stored upload must still be there for the next run.
    """
    folder = str(tmp_path)
    config = _config(kind, folder)
    _skip_without_acks(config)
    app: Flask = support.create_app(config)
    first = Worker(config, pool="prefork", concurrency=1)
    request.addfinalizer(first.kill)
    first.wait_ready()
    data = os.urandom(100_000)
    with app.test_request_context(
        "/upload", method="POST", data={"f": (io.BytesIO(data), "a.bin")}
    ):
        job = support.slow_upload.submit("cold")
    wait_for(lambda: _starts(folder, "cold"), what="the job to start")
    first.signal(signal.SIGQUIT, group=False)
    first.proc.wait(30)

    second = Worker(config)
    request.addfinalizer(second.kill)
    second.wait_ready()
    wait_for(lambda: _starts(folder, "cold")[1:], what="the job to be redelivered")
    open(os.path.join(folder, "cold.go"), "w").close()
    assert job.result(30) == hashlib.sha256(data).hexdigest()


def test_sigterm_finishes_the_current_job(
    tmp_path: t.Any, request: pytest.FixtureRequest
) -> None:
    folder = str(tmp_path)
    config = _config("redis", folder)
    app: Flask = support.create_app(config)
    worker = Worker(config, pool="prefork", concurrency=1)
    request.addfinalizer(worker.kill)
    worker.wait_ready()
    with app.app_context():
        job = support.slow.submit("term")
    wait_for(lambda: _starts(folder, "term"), what="the job to start")
    # To the main process only: a SIGTERM to every process of the group kills
    # the pool's children too (use KillMode=mixed with systemd).
    worker.signal(signal.SIGTERM, group=False)
    worker.wait_output("Warm shutdown")
    # Only now may the job finish: the worker must have waited for it.
    open(os.path.join(folder, "term.go"), "w").close()
    assert worker.proc.wait(30) == 0
    pid = _starts(folder, "term")[0]["pid"]
    assert job.result(10) == f"term finished by {pid}"
