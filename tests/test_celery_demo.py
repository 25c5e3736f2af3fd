"""The demo on Celery: ``celery -A examples.app:celery_app worker`` imports
an uploaded orders file, as the caller, with the caller's Authorization
header carried encrypted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import typing as t
from pathlib import Path

import pytest
from examples.app import create_app
from examples.app import SAMPLE_PATH
from examples.extensions import offload
from examples.libs.passport import USERS

from .celery_support.procs import broker_config
from .celery_support.procs import Worker

pytest.importorskip("flask_offload.backends.celery")


def test_demo_import_on_a_celery_worker(
    tmp_path: Path, serve: t.Any, request: pytest.FixtureRequest
) -> None:
    celery = broker_config("redis", str(tmp_path))
    env = {
        "DEMO_DATA_DIR": str(tmp_path),
        "DEMO_SLOWDOWN": "0",
        "DEMO_CELERY": json.dumps(celery),
    }
    worker = Worker({}, env=env, target="examples.app:celery_app")
    request.addfinalizer(worker.kill)
    app = create_app(
        {
            "DEMO_DATA_DIR": str(tmp_path),
            "DEMO_SLOWDOWN": 0,
            "OFFLOAD_BACKEND": "celery",
            "OFFLOAD_CELERY": celery,
            "OFFLOAD_CARRY_CREDENTIALS": True,
            "OFFLOAD_STORAGE": str(tmp_path / "offload-uploads"),
        }
    )
    worker.wait_ready()
    server = serve(app)
    bob = next(u for u in USERS if u.name == "bob")
    with open(SAMPLE_PATH, "rb") as f:
        response = server.post(
            "/orders/import",
            files={"file": ("orders.csv", f, "text/csv")},
            headers={"Authorization": f"Bearer {bob.token}"},
        )
    assert response.status_code == 202, response.text
    body = response.json()
    with app.app_context():
        job = offload.get_job(body["id"])
        result = job.result(60)
    assert result["rows"] == 45_000
    status = server.get(body["status_url"]).json()
    assert status["state"] == "SUCCEEDED"
    assert status["progress"] == 1.0
    assert (tmp_path / "exports" / result["export"]).exists()
    with sqlite3.connect(tmp_path / "demo.sqlite3") as db:
        rows = db.execute("SELECT user_id FROM operation_log").fetchall()
    assert rows == [(bob.id,)]  # read from bob's header, in the worker
    assert os.listdir(tmp_path / "offload-uploads") == []
