"""The demo that ``make demo`` serves (``examples/``), run end to end on a
real server: upload the sample orders file, follow the job, check what it
produced.
"""

from __future__ import annotations

import csv
import email
import email.policy
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import typing as t
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from examples.app import create_app
from examples.app import SAMPLE_PATH
from examples.extensions import offload
from examples.libs.passport import USERS
from examples.make_sample import write_sample
from flask import Flask

from flask_offload import Job
from flask_offload import JobState
from flask_offload.signals import job_progress

ROOT = Path(__file__).resolve().parent.parent
USER = {user.name: user for user in USERS}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {USER[name].token}"}


def expected_totals(path: str | Path) -> dict[str, tuple[str, str, str]]:
    """Per-customer totals of an orders file, computed here, independently."""
    orders: dict[str, int] = {}
    units: dict[str, int] = {}
    revenue: dict[str, Decimal] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = row["customer"]
            quantity = int(row["quantity"])
            orders[name] = orders.get(name, 0) + 1
            units[name] = units.get(name, 0) + quantity
            revenue[name] = revenue.get(name, Decimal(0)) + quantity * Decimal(
                row["unit_price"]
            )
    return {
        name: (str(orders[name]), str(units[name]), f"{revenue[name]:.2f}")
        for name in orders
    }


def read_export(text: str) -> dict[str, tuple[str, str, str]]:
    rows = list(csv.reader(text.splitlines()))
    assert rows[0] == ["customer", "orders", "units", "revenue"]
    return {customer: (o, u, r) for customer, o, u, r in rows[1:]}


@pytest.fixture
def demo_app(tmp_path: Path) -> t.Iterator[Flask]:
    app = create_app(
        {"TESTING": True, "DEMO_DATA_DIR": str(tmp_path), "DEMO_SLOWDOWN": 0}
    )
    yield app
    with app.app_context():
        assert offload.join(30), "demo jobs still running after the test"
        offload.shutdown(wait=True, timeout=10)


def upload(server: t.Any, user: str | None, path: str | Path) -> requests.Response:
    headers = bearer(user) if user else {}
    with open(path, "rb") as f:
        response: requests.Response = server.post(
            "/orders/import",
            files={"file": (os.path.basename(path), f, "text/csv")},
            headers=headers,
        )
    return response


def wait_for(app: Flask, job_id: str) -> Job:
    with app.app_context():
        job = offload.get_job(job_id)
    assert job is not None
    assert job.wait(60), f"{job} did not finish"
    return job


def test_sample_is_reproducible(tmp_path: Path) -> None:
    """The committed sample is what make_sample.py writes, and is spooled to
    disk when uploaded (more than Werkzeug's 500 KiB in-memory limit).
    """
    path = tmp_path / "sample.csv"
    write_sample(str(path))
    assert path.read_bytes() == Path(SAMPLE_PATH).read_bytes()
    assert 2_000_000 < path.stat().st_size < 3_000_000


def test_page_has_form_users_and_sample(demo_app: Flask, serve: t.Any) -> None:
    server = serve(demo_app)
    page = server.get("/")
    assert page.status_code == 200
    html = page.text
    assert 'enctype="multipart/form-data"' in html
    assert 'type="file"' in html and 'name="file"' in html
    assert "<progress" in html
    for user in USERS:
        assert f'value="{user.token}"' in html and user.name in html
    assert 'href="/sample_orders.csv"' in html
    sample = server.get("/sample_orders.csv")
    assert sample.status_code == 200
    assert sample.content == Path(SAMPLE_PATH).read_bytes()


def test_import_as_bob(demo_app: Flask, serve: t.Any, tmp_path: Path) -> None:
    server = serve(demo_app)
    progress: list[tuple[float | None, str | None]] = []

    def on_progress(sender: Flask, job: Job) -> None:
        progress.append((job.progress, job.message))

    with job_progress.connected_to(on_progress, sender=demo_app):
        response = upload(server, "bob", SAMPLE_PATH)
        assert response.status_code == 202
        body = response.json()
        assert body["status_url"] == f"/offload/jobs/{body['id']}"
        assert response.headers["Location"] == body["status_url"]
        job = wait_for(demo_app, body["id"])

    status = server.get(body["status_url"]).json()
    assert status["state"] == "SUCCEEDED", status["error"]
    assert status["progress"] == 1.0
    assert status["message"] == "parsed 45,000 of 45,000 rows"
    assert status["submitted_from"].endswith("in import_orders_view")
    # Progress was reported along the way, never going back.
    values = [p for p, _ in progress if p is not None]
    assert len(values) == len(progress)
    assert len(values) > 10
    assert values == sorted(values) and values[0] == 0.0 and values[-1] == 1.0
    assert "parsed 20,000 of 45,000 rows" in [m for _, m in progress]

    # The export: right totals per customer, downloadable by its link.
    export = status["result"]["export"]
    assert status["result"]["export_url"] == f"/exports/{export}"
    assert status["result_links"] == [{"label": "export", "url": f"/exports/{export}"}]
    assert status["result"]["rows"] == 45_000
    download = server.get(status["result"]["export_url"])
    assert download.status_code == 200
    assert "attachment" in download.headers["Content-Disposition"]
    expected = expected_totals(SAMPLE_PATH)
    assert read_export(download.text) == expected
    assert status["result"]["customers"] == len(expected)

    # The operation log names bob, as read from his Authorization header by
    # PassportService, in the job.
    with sqlite3.connect(tmp_path / "demo.sqlite3") as db:
        rows = db.execute(
            "SELECT user_id, action, detail FROM operation_log"
        ).fetchall()
    assert rows == [(USER["bob"].id, "import_orders", rows[0][2])]
    assert export in rows[0][2] and "45000 orders" in rows[0][2]

    # The "email" went to bob, with an absolute link to the export.
    message_path = tmp_path / "outbox" / (export.removesuffix(".csv") + ".eml")
    message = email.message_from_bytes(
        message_path.read_bytes(), policy=email.policy.default
    )
    assert message["To"] == USER["bob"].email
    assert export in message["Subject"]
    text = message.get_content()
    assert f"{server.url}/exports/{export}" in text
    assert job.result(0) == status["result"]


def test_concurrent_imports_keep_their_users(
    demo_app: Flask, serve: t.Any, tmp_path: Path
) -> None:
    """Two users' jobs run at the same time; each sees its own request."""
    server = serve(demo_app)
    small = tmp_path / "small.csv"
    write_sample(str(small), rows=3000, seed=7)
    ids = {
        name: upload(server, name, small).json()["id"] for name in ("alice", "carol")
    }
    for name, job_id in ids.items():
        job = wait_for(demo_app, job_id)
        assert job.state is JobState.SUCCEEDED
        export = job.result(0)["export"]
        assert read_export(server.get(f"/exports/{export}").text) == expected_totals(
            small
        )
        eml = tmp_path / "outbox" / (export.removesuffix(".csv") + ".eml")
        assert f"To: {USER[name].email}" in eml.read_text()
    with sqlite3.connect(tmp_path / "demo.sqlite3") as db:
        logged = dict(db.execute("SELECT detail, user_id FROM operation_log"))
    assert sorted(logged.values()) == [USER["alice"].id, USER["carol"].id]
    for name, job_id in ids.items():
        (detail,) = [d for d, uid in logged.items() if uid == USER[name].id]
        assert job_id in detail


def test_bad_file_fails_the_job(demo_app: Flask, serve: t.Any, tmp_path: Path) -> None:
    server = serve(demo_app)
    bad = tmp_path / "bad.csv"
    bad.write_text("order_id,customer,quantity\nORD-1,Acme,3\n")
    response = upload(server, "bob", bad)
    assert response.status_code == 202
    wait_for(demo_app, response.json()["id"])
    status = server.get(response.json()["status_url"]).json()
    assert status["state"] == "FAILED"
    assert status["error"]["type"] == "InvalidOrders"
    assert "'unit_price'" in status["error"]["message"]
    assert "result" not in status
    assert os.listdir(tmp_path / "outbox") == []
    assert os.listdir(tmp_path / "exports") == []


def test_upload_needs_user_and_file(demo_app: Flask, serve: t.Any) -> None:
    server = serve(demo_app)
    anonymous = upload(server, None, SAMPLE_PATH)
    assert anonymous.status_code == 401
    assert "Authorization" in anonymous.json()["message"]
    wrong = server.post(
        "/orders/import",
        files={"file": ("a.csv", b"x", "text/csv")},
        headers={"Authorization": "Bearer nobody"},
    )
    assert wrong.status_code == 401
    no_file = server.post("/orders/import", headers=bearer("bob"))
    assert no_file.status_code == 400
    assert "'file'" in no_file.json()["message"]
    with demo_app.app_context():
        assert offload.jobs() == []


def test_unknown_job_and_export_names(demo_app: Flask, serve: t.Any) -> None:
    server = serve(demo_app)
    assert server.get("/offload/jobs/0123abcd").status_code == 404
    assert server.get("/exports/nope.csv").status_code == 404
    # Names that would leave the exports folder are refused.
    assert server.get("/exports/..%2Fdemo.sqlite3").status_code == 404
    assert server.get("/exports/%2E%2E/demo.sqlite3").status_code == 404


def test_data_dir_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_DATA_DIR", str(tmp_path / "data"))
    app = create_app()
    assert app.config["DATABASE"] == str(tmp_path / "data" / "demo.sqlite3")
    assert (tmp_path / "data" / "exports").is_dir()
    assert (tmp_path / "data" / "outbox").is_dir()
    assert (tmp_path / "data" / "demo.sqlite3").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_make_demo_command_serves(tmp_path: Path) -> None:
    """The command ``make demo`` runs starts a server that shows the page."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    env["DEMO_DATA_DIR"] = str(tmp_path)
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "examples.app", "run"]
            + ["--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        page = None
        deadline = time.monotonic() + 60
        while page is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"The demo exited early:\n{log_path.read_text()}")
            try:
                page = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
            except requests.ConnectionError:
                time.sleep(0.1)  # not listening yet: an external process
        assert page is not None, f"The demo never answered:\n{log_path.read_text()}"
        assert page.status_code == 200
        assert '<form id="import-form"' in page.text
        assert 'type="file"' in page.text
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert (tmp_path / "demo.sqlite3").is_file()


def csrf_token(server: t.Any) -> str:
    page = server.get("/offload/")
    assert page.status_code == 200
    match = re.search(r'<meta name="offload-csrf-token" content="([^"]+)">', page.text)
    assert match is not None
    return match.group(1)


def test_dashboard_shows_each_user_their_own_imports(
    demo_app: Flask, serve: t.Any, tmp_path: Path
) -> None:
    small = tmp_path / "small.csv"
    write_sample(str(small), rows=2500, seed=3)
    alice, carol = serve(demo_app), serve(demo_app)
    # The page signs the chosen user in; uploads do too.
    signed_in = carol.post("/login", headers=bearer("carol"))
    assert signed_in.json() == {"id": USER["carol"].id, "name": "carol"}
    assert "Signed in as carol." in carol.get("/").text
    assert alice.post("/login").status_code == 401

    job_id = upload(alice, "alice", small).json()["id"]
    wait_for(demo_app, job_id)
    page = alice.get("/offload/")
    assert f'data-job-id="{job_id}" data-state="SUCCEEDED"' in page.text
    status = alice.get(f"/offload/jobs/{job_id}").json()
    link = status["result"]["export_url"]
    assert f'<a data-role="result-link" href="{link}">export</a>' in page.text
    assert "rows: 2500" in page.text
    assert alice.get(link).status_code == 200

    assert carol.get(f"/offload/jobs/{job_id}").status_code == 403
    assert job_id not in carol.get("/offload/").text
    assert carol.get("/offload/jobs").json()["jobs"] == []
    anonymous = requests.get(f"{alice.url}/offload/jobs/{job_id}", timeout=10)
    assert anonymous.status_code == 403


def test_cancel_an_import_from_the_dashboard(
    demo_app: Flask, serve: t.Any, tmp_path: Path
) -> None:
    """A running import stops at its next batch once cancelled: no export,
    no email, no operation log row.
    """
    server = serve(demo_app)
    reached, release = threading.Event(), threading.Event()

    def hold(sender: Flask, job: Job) -> None:
        if job.progress and job.progress > 0.1 and not reached.is_set():
            reached.set()
            assert release.wait(30)

    with job_progress.connected_to(hold, sender=demo_app):
        response = upload(server, "bob", SAMPLE_PATH)
        job_id = response.json()["id"]
        try:
            assert reached.wait(30)
            cancel = server.post(
                f"/offload/jobs/{job_id}/cancel",
                headers={"X-CSRF-Token": csrf_token(server)},
            )
            assert cancel.status_code == 200
            assert cancel.json()["cancel_requested"] is True
        finally:
            release.set()
        job = wait_for(demo_app, job_id)
    assert job.state is JobState.CANCELLED
    status = server.get(f"/offload/jobs/{job_id}").json()
    assert status["state"] == "CANCELLED"
    assert status["error"]["type"] == "JobCancelled"
    assert "nothing was exported" in status["error"]["message"]
    assert os.listdir(tmp_path / "exports") == []
    assert os.listdir(tmp_path / "outbox") == []
    with sqlite3.connect(tmp_path / "demo.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM operation_log").fetchone() == (0,)
