"""The Celery backend against a real worker subprocess: Redis when it answers
(else the filesystem transport), one worker for the module.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import typing as t

import pytest
from flask import Flask
from itsdangerous import URLSafeTimedSerializer

from flask_offload import JobCancelled
from flask_offload import JobState
from flask_offload import NotRegistered
from flask_offload import signing
from flask_offload import SnapshotError
from flask_offload import SnapshotTampered

from .celery_support import app as support
from .celery_support.procs import broker_config
from .celery_support.procs import reachable
from .celery_support.procs import ROOT
from .celery_support.procs import transport
from .celery_support.procs import wait_for
from .celery_support.procs import Worker

celery_backend = pytest.importorskip("flask_offload.backends.celery")

NAME = "tests.celery_support.app."
AUTH = "Bearer sekrit-token-123"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("celery"))


@pytest.fixture(scope="module")
def config(folder: str) -> dict[str, t.Any]:
    return {
        "OFFLOAD_CELERY": broker_config("redis", folder),
        "OFFLOAD_TEST_DIR": folder,
    }


@pytest.fixture(scope="module")
def worker(config: dict[str, t.Any]) -> t.Iterator[Worker]:
    w = Worker(config, pool="threads", concurrency=4)
    try:
        w.wait_ready()
        yield w
    finally:
        w.kill()


@pytest.fixture(scope="module")
def capp(config: dict[str, t.Any]) -> Flask:
    return support.create_app(config)


@pytest.fixture
def other_app(config: dict[str, t.Any]) -> Flask:
    """Another app with the same config: knows nothing of the jobs in memory,
    as in another process, so it reads the result backend.
    """
    return support.create_app(config)


def backend_of(app: Flask) -> t.Any:
    return celery_backend._by_app[app]


def fetch(app: Flask, job_id: str, timeout: float = 20) -> t.Any:
    with app.app_context():
        job = wait_for(lambda: support.offload.get_job(job_id), what=f"job {job_id}")
        assert job.wait(timeout), job
        return job


def uploads_left(config: dict[str, t.Any]) -> list[str]:
    root = os.path.join(config["OFFLOAD_TEST_DIR"], "offload-uploads")
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]


def test_request_replayed_in_worker(
    capp: Flask, other_app: Flask, worker: Worker, serve: t.Any
) -> None:
    server = serve(capp)
    assert server.get("/login/1").status_code == 200
    r = server.post(
        "/submit/hello?n=3",
        json={"order": 42},
        headers={
            "Authorization": AUTH,
            "X-Api-Key": "key-123",
            "X-Request-Id": "req-1",
            "X-Custom": "kept",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "shop.example.com",
            "X-Forwarded-For": "203.0.113.9",
        },
    )
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    with capp.app_context():
        job = support.offload.get_job(job_id)
        seen = job.result(20)
    assert seen["pid"] != os.getpid()
    assert seen["job"] == job_id
    assert seen["args"] == {"n": "3"}
    assert seen["n"] == 3
    assert seen["json"] == {"order": 42}
    assert seen["path"] == "/submit/hello"
    headers = seen["headers"]
    assert headers["X-Custom"] == "kept"
    assert headers["X-Request-Id"] == "req-1"
    for name in ("Authorization", "X-Api-Key", "Cookie"):
        assert name not in headers
    # Forwarded headers as the view saw them, and what the app resolved
    # from them behind the proxy (ProxyFix runs once, in the web process).
    assert headers["X-Forwarded-For"] == "203.0.113.9"
    assert headers["X-Forwarded-Host"] == "shop.example.com"
    assert seen["remote_addr"] == "203.0.113.9"
    assert seen["url"] == "https://shop.example.com/where"
    assert seen["session"] == {"cart": ["apple"]}
    assert seen["user"] == "alice"  # reloaded by user_loader in the worker
    assert seen["g"] == {"tenant": "acme", "request_id": "req-1"}
    # teardown_appcontext ran once, for this job, in the worker.
    with open(os.path.join(capp.config["OFFLOAD_TEST_DIR"], "teardown.jsonl")) as f:
        assert [json.loads(line) for line in f].count(job_id) == 1
    # Another process sees the finished job through the result backend.
    other = fetch(other_app, job_id)
    assert other.state is JobState.SUCCEEDED
    assert other.result(0)["label"] == "hello"
    assert other.name == NAME + "observe"
    assert other.submitted_from.endswith("in submit")
    assert other.user_id == "1"
    assert other.started_at is not None and other.finished_at is not None


def test_outside_request_only_app_context(capp: Flask, worker: Worker) -> None:
    with capp.app_context():
        job = support.app_only.submit()
        assert job.result(20) == {"request": False, "app": capp.name}


def test_upload_through_storage(
    capp: Flask, config: dict[str, t.Any], worker: Worker, serve: t.Any
) -> None:
    big = os.urandom(700 * 1024)  # larger than what is kept in memory
    small = b"order_id,customer\n1,acme\n"
    server = serve(capp)
    r = server.post(
        "/submit/upload",
        data={"note": "hi"},
        files={
            "big": ("big.bin", big, "application/octet-stream"),
            "small": ("orders.csv", small, "text/csv"),
        },
    )
    job = fetch(capp, r.json()["id"])
    seen = job.result(0)
    assert seen["form"] == {"note": "hi"}
    assert seen["files"]["big"] == {
        "filename": "big.bin",
        "content_type": "application/octet-stream",
        "size": len(big),
        "sha256": hashlib.sha256(big).hexdigest(),
    }
    assert seen["files"]["small"]["sha256"] == hashlib.sha256(small).hexdigest()
    assert seen["files"]["small"]["content_type"] == "text/csv"
    assert uploads_left(config) == []  # deleted when the job ended


def test_large_body_goes_to_storage(
    capp: Flask, config: dict[str, t.Any], worker: Worker, serve: t.Any
) -> None:
    server = serve(capp)
    body = {"rows": ["x" * 100] * 500}  # ~50 KB: too large for a header
    r = server.post("/submit/body", json=body)
    seen = fetch(capp, r.json()["id"]).result(0)
    assert seen["json"] == body
    assert uploads_left(config) == []


def test_snapshot_over_16_kib_is_refused_at_submit(capp: Flask) -> None:
    with capp.test_request_context("/", headers={"X-Big": os.urandom(15_000).hex()}):
        with pytest.raises(SnapshotError, match="16 KiB"):
            support.observe.submit("big")


def test_plain_function_is_not_registered(capp: Flask) -> None:
    with capp.app_context():
        with pytest.raises(NotRegistered, match="@offload.task"):
            support.offload.submit(print, "hi")


def test_progress_and_state_from_another_process(
    capp: Flask, other_app: Flask, worker: Worker
) -> None:
    folder = capp.config["OFFLOAD_TEST_DIR"]
    with capp.app_context():
        job = support.progress_then_wait.submit("prog")
    wait_for(lambda: os.path.exists(os.path.join(folder, "prog.started")))
    with other_app.app_context():
        seen = support.offload.get_job(job.id)
        assert seen.state is JobState.RUNNING
        assert (seen.progress, seen.message) == (0.5, "half way")
        assert seen.to_dict()["state"] == "RUNNING"
    assert job.state is JobState.RUNNING
    open(os.path.join(folder, "prog.go"), "w").close()
    assert job.result(20) == "done"
    finished = fetch(other_app, job.id)
    assert finished.state is JobState.SUCCEEDED
    assert (finished.progress, finished.message) == (0.5, "half way")


def test_progress_after_the_job_failed_keeps_it_failed(
    capp: Flask, other_app: Flask, worker: Worker
) -> None:
    """A thread the job left running reports progress after the job failed:
    the job's record stays FAILED with its error, not turned back into a
    running job that pollers would wait on forever. (A SUCCESS record is
    never written over by Celery's key-value result backends.)
    """
    folder = capp.config["OFFLOAD_TEST_DIR"]
    name = "late"
    final = JobState.FAILED
    with capp.app_context():
        job = support.progress_after_return.submit(name, True)
        assert job.wait(20)
    assert fetch(other_app, job.id).state is final
    open(os.path.join(folder, name + ".go"), "w").close()
    reported = os.path.join(folder, name + ".reported")
    wait_for(lambda: os.path.exists(reported), what="the late report")
    with open(reported) as f:
        assert f.read() == "returned"
    with other_app.app_context():
        seen = support.offload.get_job(job.id)
        assert seen is not None
        assert (seen.state, seen.progress, seen.message) == (final, None, None)
        assert seen.to_dict()["error"]["type"] == "ValueError"


def test_join_inside_a_task(capp: Flask, worker: Worker) -> None:
    """``offload.join()`` in a Celery task waits for the jobs it sent: the
    task's own job is not one the worker's join waits for, so it is not
    refused as a thread backend's job is.
    """
    with capp.app_context():
        job = support.join_children.submit()
        assert job.result(30) == [True, [0, 2, 4]]


def test_celery_api_outside_an_app_context_with_two_apps(
    capp: Flask, other_app: Flask, worker: Worker
) -> None:
    """Celery's own API with no app context (a script, beat) where two apps
    declare the task (one extension, ``create_app()`` called twice): the
    task's own app signs it, and the job runs. It was sent without a
    snapshot and failed in the worker as tampered.
    """
    task = backend_of(capp).celery_task(NAME + "double")
    result = task.delay(21)
    assert result.get(timeout=20) == 42
    job = fetch(capp, result.id)
    assert (job.state, job.result(0)) == (JobState.SUCCEEDED, 42)


def test_failure_visible_everywhere(
    capp: Flask, other_app: Flask, worker: Worker
) -> None:
    with capp.app_context():
        job = support.fail.submit("boom")
        with pytest.raises(ValueError, match="boom"):
            job.result(20)
    assert job.state is JobState.FAILED
    other = fetch(other_app, job.id)
    assert other.state is JobState.FAILED
    assert other.to_dict()["error"] == {"type": "ValueError", "message": "boom"}
    assert "failed" in worker.wait_output(f"Job {job.id} ({NAME}fail)")


def test_get_job_with_an_empty_or_missing_id(capp: Flask) -> None:
    """A status view's ``get_job(request.args.get("id", ""))`` with a real
    result backend: no job, not Celery's error for an empty task id.
    """
    with capp.app_context():
        for bad in ("", None, 42):
            assert support.offload.get_job(bad) is None  # type: ignore[arg-type]


def test_unknown_job_is_none(capp: Flask) -> None:
    with capp.app_context():
        assert support.offload.get_job("0" * 32) is None


def test_get_job_in_another_process(
    capp: Flask, config: dict[str, t.Any], worker: Worker
) -> None:
    with capp.test_request_context("/from-a-test"):
        job = support.observe.submit("subprocess")
    code = (
        "import json, sys\n"
        "from tests.celery_support import app as s\n"
        "with s.app.app_context():\n"
        "    job = s.offload.get_job(sys.argv[1])\n"
        "    print(json.dumps([job.result(20)['label'], job.state.value]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, job.id],
        cwd=ROOT,
        env={**os.environ, "OFFLOAD_TEST_CONFIG": json.dumps(config)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["subprocess", "SUCCEEDED"]


def test_nested_submit_carries_the_request(
    capp: Flask, worker: Worker, serve: t.Any
) -> None:
    server = serve(capp)
    server.get("/login/2")
    r = server.post("/submit-task/nested", json=["outer"])
    child_id = fetch(capp, r.json()["id"]).result(0)
    child = fetch(capp, child_id).result(0)
    assert child["label"] == "outer-child"
    assert child["user"] == "bob"
    assert child["path"] == "/submit-task/nested"


def test_retry_carries_a_resigned_snapshot(
    capp: Flask, worker: Worker, serve: t.Any
) -> None:
    server = serve(capp)
    server.get("/login/1")
    r = server.post("/submit-task/retry_once", json=["again"])
    job = fetch(capp, r.json()["id"])
    assert job.result(0) == {"retries": 1, "user": "alice"}


def test_chain_and_celery_api_in_a_view(
    capp: Flask, worker: Worker, serve: t.Any
) -> None:
    server = serve(capp)
    server.get("/login/2")
    last = server.post("/chain").json()["id"]
    seen = fetch(capp, last).result(0)
    assert seen["previous"] == {"request": True, "app": capp.name}
    assert seen["user"] == "bob"
    assert seen["path"] == "/chain"
    job = fetch(capp, server.post("/celery-delay").json()["id"])
    delayed = job.result(0)
    assert delayed["label"] == "delay"
    assert delayed["user"] == "bob"
    # Where the view called delay(), not inside Celery.
    assert "celery_support/app.py" in job.submitted_from
    assert "celery_delay" in job.submitted_from


PHISH = "Your account is locked. Sign in again at https://evil.example/login"


def _send(capp: Flask, args: tuple[t.Any, ...], token: str) -> str:
    """Publish ``touch`` with a chosen header, as a broker writer could."""
    import uuid

    task = backend_of(capp).celery_task(NAME + "touch")
    task_id = uuid.uuid4().hex
    task.apply_async(args, task_id=task_id, headers={celery_backend.HEADER: token})
    return task_id


def _token(
    capp: Flask, task_id: str, args: tuple[t.Any, ...], delay: float = 0.0
) -> str:
    backend = backend_of(capp)
    return str(
        backend.make_token(
            capp, {"v": 1, "g": {}}, task_id, NAME + "touch", args, {}, delay
        )
    )


@pytest.mark.parametrize(
    "attack",
    [
        "forged",
        "other_key",
        "transplanted",
        "edited_args",
        "expired",
        "missing",
        "error_text",
        "error_not_text",
        "error_transplanted",
    ],
)
def test_tampered_snapshot_is_rejected(
    capp: Flask, other_app: Flask, worker: Worker, attack: str
) -> None:
    import uuid

    folder = capp.config["OFFLOAD_TEST_DIR"]
    mark = f"touched-{attack}"
    args = (mark,)
    if attack == "forged":
        token = _token(capp, "x", args)[:-4] + "AAAA"
        job_id = _send(capp, args, token)
    elif attack == "other_key":
        token = URLSafeTimedSerializer("wrong", salt="flask-offload.snapshot.v1").dumps(
            {"v": 1}
        )
        job_id = _send(capp, args, token)
    elif attack == "transplanted":
        job_id = _send(capp, args, _token(capp, uuid.uuid4().hex, args))
    elif attack == "edited_args":
        with capp.app_context():
            # A valid token for ("harmless",) on a message with other args.
            task_id = uuid.uuid4().hex
            token = _token(capp, task_id, ("harmless",))
            task = backend_of(capp).celery_task(NAME + "touch")
            task.apply_async(
                args, task_id=task_id, headers={celery_backend.HEADER: token}
            )
            job_id = task_id
    elif attack == "expired":
        import time

        from flask_offload import signing

        # Signed correctly, but its expiry time has passed.
        task_id = uuid.uuid4().hex
        task = backend_of(capp).celery_task(NAME + "touch")
        token = signing.sign(
            capp,
            {
                "v": celery_backend.TOKEN_VERSION,
                "tid": task_id,
                "task": NAME + "touch",
                "ad": signing.args_digest(list(args), {}),
                "ed": signing.embed_digest(None),
                "iat": time.time() - 3700,
                "exp": time.time() - 100,
                "snap": {"v": 1, "g": {}},
            },
        )
        task.apply_async(args, task_id=task_id, headers={celery_backend.HEADER: token})
        job_id = task_id
    elif attack.startswith("error_"):
        from flask_offload import signing

        # No snapshot, and a reason of the attacker's (a phishing text) in
        # the header a sender uses to explain why it could attach none.
        task_id = uuid.uuid4().hex
        reason: t.Any = [PHISH] if attack == "error_not_text" else PHISH
        if attack == "error_transplanted":  # a real one, of another job
            reason = signing.sign(
                capp,
                {
                    "kind": "send-error",
                    "tid": uuid.uuid4().hex,
                    "task": NAME + "touch",
                    "reason": PHISH,
                },
            )
        task = backend_of(capp).celery_task(NAME + "touch")
        task.apply_async(
            args,
            task_id=task_id,
            headers={celery_backend.HEADER: "", celery_backend.ERROR_HEADER: reason},
        )
        job_id = task_id
    else:
        job_id = _send(capp, args, "")
    job = fetch(other_app, job_id)
    assert job.state is JobState.FAILED
    assert isinstance(job.exception(0), SnapshotTampered)
    assert job.to_dict()["error"]["type"] == "SnapshotTampered"
    assert "evil.example" not in job.to_dict()["error"]["message"]
    assert job.name == NAME + "touch"
    out = worker.wait_output(f"rejected the snapshot of job {job_id}")
    assert "Security" in out
    assert not os.path.exists(os.path.join(folder, mark))  # the body never ran


def test_tampered_upload_is_rejected(
    capp: Flask,
    config: dict[str, t.Any],
    worker: Worker,
    serve: t.Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = backend_of(capp).storage
    put = storage.put

    def put_then_change(key: str, stream: t.IO[bytes]) -> None:
        put(key, stream)
        with open(storage._path(key), "ab") as f:
            f.write(b"evil")

    monkeypatch.setattr(storage, "put", put_then_change)
    server = serve(capp)
    r = server.post("/submit/up", files={"f": ("a.txt", b"hello", "text/plain")})
    job = fetch(capp, r.json()["id"])
    assert job.state is JobState.FAILED
    assert isinstance(job.exception(0), SnapshotTampered)
    worker.wait_output(f"rejected an upload of job {job.id}")


def _raw_messages(config: dict[str, t.Any], queue: str) -> list[bytes]:
    celery_conf = config["OFFLOAD_CELERY"]
    if transport(celery_conf) == "redis":
        import redis

        client = redis.Redis.from_url(celery_conf["broker_url"])
        try:
            return list(client.lrange(queue, 0, -1))
        finally:
            client.close()
    folder = celery_conf["broker_transport_options"]["data_folder_in"]
    out = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(f".{queue}.msg"):
            with open(os.path.join(folder, name), "rb") as f:
                out.append(f.read())
    return out


def _move_to(config: dict[str, t.Any], src: str, dst: str) -> None:
    celery_conf = config["OFFLOAD_CELERY"]
    if transport(celery_conf) == "redis":
        import redis

        client = redis.Redis.from_url(celery_conf["broker_url"])
        try:
            client.lmove(src, dst, "RIGHT", "LEFT")
        finally:
            client.close()
        return
    folder = celery_conf["broker_transport_options"]["data_folder_in"]
    for name in os.listdir(folder):
        if name.endswith(f".{src}.msg"):
            new = name[: -len(f".{src}.msg")] + f".{dst}.msg"
            os.rename(os.path.join(folder, name), os.path.join(folder, new))


@pytest.mark.parametrize("carry", [False, True])
def test_credentials_never_in_the_broker_in_clear(
    config: dict[str, t.Any], worker: Worker, serve: t.Any, carry: bool
) -> None:
    hold = f"{config['OFFLOAD_CELERY']['task_default_queue']}-hold-{int(carry)}"
    held = support.create_app(
        {
            **config,
            "OFFLOAD_CELERY": {**config["OFFLOAD_CELERY"], "task_default_queue": hold},
            "OFFLOAD_CARRY_CREDENTIALS": carry,
            "OFFLOAD_CREDENTIAL_HEADERS": ["X-Tenant-Token"],
        }
    )
    server = serve(held)
    server.get("/login/1")
    job_id = server.post(
        "/submit/creds?reset_token=sekrit-query",
        headers={"Authorization": AUTH, "X-Tenant-Token": "sekrit-tenant"},
        data={"password": "sekrit-form"},
    ).json()["id"]
    raw = _raw_messages(config, hold)
    assert len(raw) == 1
    message = json.loads(raw[0])
    header = message["headers"][celery_backend.HEADER]
    # No credential, form field, query token or session value in clear
    # text: in the message, its body decoded, and (below) in what the
    # header decodes to. The header's own base64 text is left out, where
    # any short word can occur by chance.
    clear = json.loads(raw[0])
    del clear["headers"][celery_backend.HEADER]
    body = clear.pop("body")
    if clear["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body).decode()
    text = json.dumps(clear) + body
    assert "sekrit" not in text
    assert "alice" not in text and "_user_id" not in text
    assert len(header) < 16 * 1024
    payload = URLSafeTimedSerializer("x").loads_unsafe(header)[1]
    # What the header decodes to (its base64 text can hold any word by
    # chance): the encrypted snapshot and what binds it, no plain snapshot
    # and no arguments (only their digest).
    assert set(payload) == {"v", "tid", "task", "ad", "ed", "iat", "exp", "enc"}
    # Credentials are also dropped before encryption unless asked for.
    wire = json.loads(signing.decrypt(held, payload["enc"]))
    environ = wire["request"]["environ"]
    assert ("HTTP_AUTHORIZATION" in environ) is carry
    assert ("HTTP_X_TENANT_TOKEN" in environ) is carry
    # Hand the message to the running worker: it decrypts and replays.
    _move_to(config, hold, config["OFFLOAD_CELERY"]["task_default_queue"])
    seen = fetch(held, job_id).result(0)
    assert seen["headers"].get("Authorization") == (AUTH if carry else None)
    assert seen["headers"].get("X-Tenant-Token") == ("sekrit-tenant" if carry else None)
    assert seen["user"] == "alice"


def test_header_size_for_a_typical_request(capp: Flask) -> None:
    from bench import HEADERS
    from bench import JSON_BODY

    backend = backend_of(capp)
    with capp.test_request_context(
        "/orders?month=2025-01", method="POST", json=JSON_BODY, headers=HEADERS
    ):
        from flask_offload.snapshot import capture

        snap = capture(carry_g="primitives", max_body_size=1 << 20)
        snap.acquire()
        try:
            wire = backend.wire_snapshot(capp, snap, "a" * 32, [])
        finally:
            snap.release()
    token = backend.make_token(capp, wire, "a" * 32, NAME + "observe", (1,), {})
    assert len(token) < 4096


def test_sweep_removes_old_orphans_and_nothing_else(tmp_path: t.Any) -> None:
    """The sweep removes old objects of jobs, and leaves alone whatever else
    the folder holds (it may be a shared volume), however old.
    """
    from flask_offload.storage import LocalStorage

    root = str(tmp_path)
    storage = LocalStorage(root)
    old_job, new_job = "a" * 32, "0f3c1e2a-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
    for key in (f"{old_job}/0", f"{old_job}/body", f"{new_job}/0"):
        with open(__file__, "rb") as f:
            storage.put(key, f)
    foreign = [
        os.path.join(root, "customer-export.csv"),
        os.path.join(root, "reports", "2024", "q1.pdf"),
        os.path.join(root, "b" * 32, "notes.txt"),  # a job-like folder, not our name
    ]
    for path in foreign:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as out:
            out.write("not Flask-Offload's")
    for path in [*foreign, *(os.path.join(root, old_job, n) for n in ("0", "body"))]:
        os.utime(path, (0, 0))
    assert storage.sweep(3600) == 2
    assert not os.path.exists(os.path.join(root, old_job))
    assert all(os.path.exists(path) for path in foreign)
    with storage.open(f"{new_job}/0") as f:
        assert f.read(3)
    with pytest.raises(ValueError):
        storage.open("../etc/passwd")


def test_storage_never_follows_a_linked_job_folder(tmp_path: t.Any) -> None:
    """Someone who can write to the storage folder links a job-named folder
    to data elsewhere: the sweep, a delete and a put never reach it.
    """
    from flask_offload.storage import LocalStorage

    root, outside = tmp_path / "storage", tmp_path / "app-data"
    root.mkdir()
    outside.mkdir()
    for name in ("0", "body"):
        (outside / name).write_text("the app's own data")
        os.utime(outside / name, (0, 0))
    job_id = "c" * 32
    os.symlink(outside, root / job_id)
    storage = LocalStorage(str(root))
    assert storage.sweep(3600) == 0
    with pytest.raises(OSError, match="is a symbolic link"):
        storage.delete(f"{job_id}/0")
    with pytest.raises(OSError, match="is a symbolic link"):
        storage.put(f"{job_id}/1", io.BytesIO(b"x"))
    assert sorted(os.listdir(outside)) == ["0", "body"]
    assert (outside / "0").read_text() == "the app's own data"


def test_redis_is_used_when_reachable(config: dict[str, t.Any]) -> None:
    kind = transport(config["OFFLOAD_CELERY"])
    assert kind == ("redis" if reachable("127.0.0.1", 6379) else "filesystem")


def test_join_waits_for_jobs_sent_to_workers(
    capp: Flask, worker: Worker, serve: t.Any
) -> None:
    """offload.join() waits for Celery jobs this process sent, even when the
    view that submitted them kept no handle.
    """
    folder = capp.config["OFFLOAD_TEST_DIR"]
    server = serve(capp)
    job_id = server.post("/submit-task/slow", json=["joined"]).json()["id"]
    wait_for(lambda: os.path.exists(os.path.join(folder, "joined.jsonl")))
    with capp.app_context():
        assert support.offload.join(0.2) is False  # held by the test
        open(os.path.join(folder, "joined.go"), "w").close()
        assert support.offload.join(20) is True
        job = support.offload.get_job(job_id)
        assert job is not None and job.state is JobState.SUCCEEDED


def test_cancel_a_running_job_from_another_process(
    capp: Flask, other_app: Flask, worker: Worker
) -> None:
    """The dashboard's cancel: a process that did not submit the job asks the
    running job to stop; the job sees current_job.cancel_requested.
    """
    folder = capp.config["OFFLOAD_TEST_DIR"]
    with capp.app_context():
        job = support.stoppable.submit("stop-me")
    wait_for(lambda: os.path.exists(os.path.join(folder, "stop-me.started")))
    with other_app.app_context():
        running = support.offload.get_job(job.id)
        assert running is not None and running.state is JobState.RUNNING
        assert running.cancel() is False  # running: a request, not a revoke
        assert running.cancel_requested
    with pytest.raises(JobCancelled, match="stop-me stopped on request"):
        job.result(20)
    assert fetch(other_app, job.id).state is JobState.CANCELLED
    # Stopping on request is not an error in the worker's log either.
    output = worker.wait_output(f"{NAME}stoppable[{job.id}] raised")
    assert f"{NAME}stoppable[{job.id}] raised expected: JobCancelled" in output
    assert f"{NAME}stoppable[{job.id}] raised unexpected" not in output


# Celery's Redis result backend stores REVOKED with redis-py's deprecated setex.
@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
def test_cancel_a_pending_job(
    config: dict[str, t.Any], other_app: Flask, worker: Worker
) -> None:
    hold = f"{config['OFFLOAD_CELERY']['task_default_queue']}-cancel"
    held = support.create_app(
        {
            **config,
            "OFFLOAD_CELERY": {**config["OFFLOAD_CELERY"], "task_default_queue": hold},
        }
    )
    with held.app_context():
        job = support.touch.submit("never-touched")
        assert job.state is JobState.PENDING
        assert job.cancel() is True
        assert job.state is JobState.CANCELLED
    seen = fetch(other_app, job.id)
    assert seen.state is JobState.CANCELLED
    # Nothing was raised, as on the thread backend; result() says why.
    assert seen.to_dict()["error"] is None and job.to_dict()["error"] is None
    with pytest.raises(JobCancelled, match="was cancelled"):
        seen.result(0)
    # A worker that receives it later skips it.
    _move_to(config, hold, config["OFFLOAD_CELERY"]["task_default_queue"])
    worker.wait_output(f"Discarding revoked task: {NAME}touch[{job.id}]")
    folder = other_app.config["OFFLOAD_TEST_DIR"]
    assert not os.path.exists(os.path.join(folder, "never-touched"))


def _held_app(config: dict[str, t.Any], suffix: str, **extra: t.Any) -> Flask:
    """An app whose jobs wait in a queue of their own, with no worker."""
    hold = f"{config['OFFLOAD_CELERY']['task_default_queue']}-{suffix}"
    return support.create_app(
        {
            **config,
            "OFFLOAD_CELERY": {**config["OFFLOAD_CELERY"], "task_default_queue": hold},
            **extra,
        }
    )


def _edit_held(
    config: dict[str, t.Any], queue: str, edit: t.Callable[[dict[str, t.Any]], None]
) -> None:
    """Change the one message waiting in ``queue``, as someone who can write
    to the broker (but has no SECRET_KEY) could.
    """
    import base64

    def change(raw: bytes) -> bytes:
        message = json.loads(raw)
        encoded = message["properties"].get("body_encoding") == "base64"
        body = base64.b64decode(message["body"]) if encoded else message["body"]
        decoded = json.loads(body)
        edit(decoded)
        body = json.dumps(decoded)
        message["body"] = base64.b64encode(body.encode()).decode() if encoded else body
        return json.dumps(message).encode()

    celery_conf = config["OFFLOAD_CELERY"]
    if transport(celery_conf) == "redis":
        import redis

        client = redis.Redis.from_url(celery_conf["broker_url"])
        try:
            [raw] = client.lrange(queue, 0, -1)
            client.lset(queue, 0, change(raw))
        finally:
            client.close()
        return
    folder = celery_conf["broker_transport_options"]["data_folder_in"]
    [name] = [n for n in os.listdir(folder) if n.endswith(f".{queue}.msg")]
    path = os.path.join(folder, name)
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(change(raw))


@pytest.mark.parametrize("part", ["chain", "callbacks"])
def test_task_added_to_a_message_in_the_broker_never_runs_as_the_user(
    config: dict[str, t.Any], other_app: Flask, worker: Worker, serve: t.Any, part: str
) -> None:
    """Someone who can write to the broker adds a chain step or a link
    callback to alice's valid message. Neither the job nor the added task
    runs with her snapshot.
    """
    import uuid

    held = _held_app(config, f"inject-{part}")
    hold = held.config["OFFLOAD_CELERY"]["task_default_queue"]
    server = serve(held)
    server.get("/login/1")
    job_id = server.post(f"/submit/victim-{part}").json()["id"]
    injected = uuid.uuid4().hex
    step = {
        "task": NAME + "observe",
        "args": ["injected"],
        "kwargs": {},
        "options": {"task_id": injected},
        "subtask_type": None,
        "immutable": True,
    }

    def add_step(body: list[t.Any]) -> None:
        args, kwargs, embed = body
        assert args == [f"victim-{part}"]  # the arguments stay as signed
        embed[part] = [step]

    _edit_held(config, hold, add_step)
    _move_to(config, hold, config["OFFLOAD_CELERY"]["task_default_queue"])
    job = fetch(other_app, job_id)
    assert job.state is JobState.FAILED
    assert isinstance(job.exception(0), SnapshotTampered)
    assert "callbacks, chain or chord" in str(job.exception(0))
    worker.wait_output(f"rejected the snapshot of job {job_id}")
    # The worker sends chains and callbacks before it stores the job's end:
    # the added step would have been sent by now. It never ran (Celery
    # fails the rest of a chain with the job's error).
    with other_app.app_context():
        added = support.offload.get_job(injected)
    if added is not None:
        assert added.state is JobState.FAILED
        assert isinstance(added.exception(0), SnapshotTampered)
    teardowns = os.path.join(config["OFFLOAD_TEST_DIR"], "teardown.jsonl")
    if os.path.exists(teardowns):
        with open(teardowns) as f:
            assert json.dumps(injected) not in f.read().split()


def test_link_callback_and_group_in_a_view(
    capp: Flask, worker: Worker, serve: t.Any
) -> None:
    server = serve(capp)
    server.get("/login/2")
    ids = server.post("/canvas").json()
    seen = fetch(capp, ids["callback"]).result(0)
    assert seen["previous"] == {"request": True, "app": capp.name}
    assert seen["user"] == "bob"
    assert seen["path"] == "/canvas"
    for label, job_id in zip(("g1", "g2"), ids["group"], strict=True):
        member = fetch(capp, job_id).result(0)
        assert (member["label"], member["user"]) == (label, "bob")


def test_chord_in_a_view(
    capp: Flask, config: dict[str, t.Any], worker: Worker, serve: t.Any
) -> None:
    if transport(config["OFFLOAD_CELERY"]) != "redis":
        pytest.skip(
            "A chord's callback is sent by the last task of its header with a"
            " Redis result backend; the filesystem backend sends it from"
            " Celery's chord_unlock task, outside any job."
        )
    server = serve(capp)
    server.get("/login/1")
    seen = fetch(capp, server.post("/chord").json()["id"]).result(0)
    assert seen["previous"] == [{"request": True, "app": capp.name}] * 2
    assert seen["user"] == "alice"
    assert seen["path"] == "/chord"


def test_dict_with_int_keys_as_an_argument(capp: Flask, worker: Worker) -> None:
    """Celery's JSON makes the keys strings: the worker still accepts the
    snapshot (9 < 10, but "10" < "9").
    """
    with capp.test_request_context("/orders"):
        job = support.observe.submit({9: 1, 10: 2}, n={100: 1, 20: 2, "x": 3})
    seen = job.result(20)
    assert seen["label"] == {"9": 1, "10": 2}
    assert seen["n"] == {"100": 1, "20": 2, "x": 3}


def test_arguments_that_are_not_json_are_refused_at_submit(
    config: dict[str, t.Any],
) -> None:
    """With the pickle serializer an object would reach the worker, but it
    cannot be bound to the snapshot reliably: refused, nothing is sent.
    """
    from fractions import Fraction

    hold = config["OFFLOAD_CELERY"]["task_default_queue"] + "-pickle"
    held = support.create_app(
        {
            **config,
            "OFFLOAD_CELERY": {
                **config["OFFLOAD_CELERY"],
                "task_default_queue": hold,
                "task_serializer": "pickle",
                "accept_content": ["pickle", "json"],
            },
        }
    )
    with held.test_request_context("/"):
        with pytest.raises(SnapshotError, match="JSON serializer") as info:
            support.observe.submit(Fraction(1, 3))
    assert "Fraction" in str(info.value) and "Pass an id" in str(info.value)
    assert _raw_messages(config, hold) == []


def test_body_over_512_kib_reaches_the_job(
    capp: Flask, config: dict[str, t.Any], worker: Worker, serve: t.Any
) -> None:
    server = serve(capp)
    body = {"rows": ["x" * 1000] * 600}  # ~600 KB
    r = server.post("/submit/bigbody", json=body)
    seen = fetch(capp, r.json()["id"]).result(0)
    assert seen["json"] == body
    assert seen["data_len"] == len(json.dumps(body).encode())
    assert uploads_left(config) == []


def test_forwarded_for_keeps_flask_login_session_protection(
    capp: Flask, worker: Worker, serve: t.Any
) -> None:
    """Flask-Login's session identifier hashes X-Forwarded-For: the job sees
    the header as the view did, so the login stays fresh ("basic"
    protection; "strong" would log the user out).
    """
    server = serve(capp)
    proxy = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
    server.get("/login/1", headers=proxy)
    r = server.post("/submit/behind-proxy", headers=proxy)
    seen = fetch(capp, r.json()["id"]).result(0)
    assert seen["headers"]["X-Forwarded-For"] == proxy["X-Forwarded-For"]
    assert seen["remote_addr"] == "203.0.113.9"  # ProxyFix, in the view
    assert (seen["user"], seen["fresh"]) == ("alice", True)


def test_celery_delay_without_a_snapshot_fails_with_the_reason(
    capp: Flask, other_app: Flask, worker: Worker, serve: t.Any
) -> None:
    """celery_task.delay() in a view whose snapshot cannot be made: Celery
    sends the task anyway; the job fails with the reason, not as tampering.
    """
    server = serve(capp)
    r = server.post("/celery-delay", headers={"X-Big": os.urandom(9000).hex()})
    job = fetch(other_app, r.json()["id"])
    assert job.state is JobState.FAILED
    error = job.to_dict()["error"]
    assert error["type"] == "SnapshotError"
    assert "16 KiB" in error["message"] and "Pass large values" in error["message"]
    out = worker.wait_output(f"Job {job.id} ({NAME}observe) did not run.")
    assert f"rejected the snapshot of job {job.id}" not in out


def test_without_a_result_backend_state_reads_name_the_fix(
    config: dict[str, t.Any], worker: Worker
) -> None:
    """Broker only: jobs run (fire-and-forget), and reading their state
    explains what to configure.
    """
    celery_conf = dict(config["OFFLOAD_CELERY"])
    del celery_conf["result_backend"]
    app = support.create_app({**config, "OFFLOAD_CELERY": celery_conf})
    folder = config["OFFLOAD_TEST_DIR"]
    with app.app_context():
        job = support.touch.submit("fire-and-forget")
        wait_for(lambda: os.path.exists(os.path.join(folder, "fire-and-forget")))
        for read in (
            lambda: job.state,
            job.done,
            job.to_dict,
            lambda: support.offload.join(1),
        ):
            with pytest.raises(RuntimeError, match="no result backend.*result_backend"):
                read()
    # Another process, which knows the job only by its id.
    with support.create_app(app.config).app_context():
        with pytest.raises(RuntimeError, match="no result backend"):
            support.offload.get_job(job.id)


@pytest.mark.parametrize(
    ("options", "max_age", "warned"),
    [
        ({}, None, False),  # the defaults: one hour, and two for the snapshot
        ({}, 3600, True),  # as long as Redis's default visibility timeout
        ({"visibility_timeout": 4 * 3600}, None, True),
        ({"visibility_timeout": 7200}, 3600, True),
        ({"visibility_timeout": 1800}, None, False),
        ({}, 4 * 3600, False),
    ],
)
def test_warning_when_redis_redelivers_after_the_snapshot_expired(
    tmp_path: t.Any,
    caplog: pytest.LogCaptureFixture,
    options: dict[str, t.Any],
    max_age: int | None,
    warned: bool,
) -> None:
    config: dict[str, t.Any] = {
        "OFFLOAD_CELERY": {
            "broker_url": "redis://127.0.0.1:1/0",  # never connected to
            "broker_transport_options": options,
        },
        "OFFLOAD_TEST_DIR": str(tmp_path),
    }
    if max_age is not None:
        config["OFFLOAD_SNAPSHOT_MAX_AGE"] = max_age
    with caplog.at_level("WARNING", logger="flask_offload"):
        support.create_app(config)
    messages = [
        r.getMessage() for r in caplog.records if "visibility" in r.getMessage()
    ]
    assert bool(messages) is warned
    if warned:
        assert (
            "Set OFFLOAD_SNAPSHOT_MAX_AGE above the visibility timeout" in (messages[0])
        )


def test_task_sent_by_a_celery_task_that_is_not_a_job_does_not_run(
    capp: Flask, other_app: Flask, worker: Worker
) -> None:
    """A message for one of Celery's own tasks, with a job as its link
    callback, needs no SECRET_KEY to write. The worker sends the callback;
    it gets no snapshot of its own making, so it does not run.
    """
    import uuid

    tasks = backend_of(capp).celery.tasks
    callback = tasks[NAME + "app_only"].si().set(task_id=uuid.uuid4().hex)
    with capp.app_context():
        tasks["celery.accumulate"].apply_async((1,), link=callback)
    job = fetch(other_app, callback.id)
    assert job.state is JobState.FAILED
    error = job.to_dict()["error"]
    assert error["type"] == "SnapshotError"
    assert "celery.accumulate, which is not a Flask-Offload job" in error["message"]


def test_chain_step_after_a_job_with_an_upload_reads_it(
    capp: Flask, config: dict[str, t.Any], worker: Worker, serve: t.Any
) -> None:
    """Celery sends a chain's next step after the first one returns: the
    stored upload and body are still there for it to copy, and both are
    deleted once every step has ended.
    """
    data = os.urandom(700 * 1024)
    note = "n" * 5000  # a body over the inline size: stored too
    r = serve(capp).post(
        "/chain-upload", data={"note": note}, files={"f": ("f.bin", data)}
    )
    last = fetch(capp, r.json()["id"], timeout=30)
    digest = hashlib.sha256(data).hexdigest()
    assert last.result(0) == {
        "previous": {"previous": None, "sha256": digest, "note": note},
        "sha256": digest,
        "note": note,
    }
    wait_for(lambda: uploads_left(config) == [], what="the uploads to be deleted")


def test_stored_body_is_encrypted(
    config: dict[str, t.Any], other_app: Flask, worker: Worker, serve: t.Any
) -> None:
    """A body too large for the message (a webhook's JSON) goes to storage
    encrypted, as the snapshot is: its password is not in the storage in
    clear text.
    """
    held = _held_app(config, "stored-body")
    password = "hunter2-BODY-PASSWORD"
    r = serve(held).post(
        "/submit-task/observe_body",
        json={"password": password, "padding": "p" * 6000},
    )
    assert r.status_code == 200, r.text
    stored = uploads_left(config)
    assert stored, "the body was not stored"
    for path in stored:
        with open(path, "rb") as f:
            content = f.read()
        assert password.encode() not in content and b"padding" not in content
    _move_to(
        config,
        held.config["OFFLOAD_CELERY"]["task_default_queue"],
        config["OFFLOAD_CELERY"]["task_default_queue"],
    )
    job = fetch(other_app, r.json()["id"])
    assert job.result(0) == {"password": password, "padding": 6000}
    wait_for(lambda: uploads_left(config) == [], what="the body to be deleted")


def test_celery_api_with_the_broker_down_leaves_nothing_behind(
    config: dict[str, t.Any], serve: t.Any
) -> None:
    """``celery_task.delay()`` in a view while the broker is down: the view
    fails as it would without Flask-Offload, and neither the request's
    stored upload nor a job that reads PENDING for ever is left behind.
    """
    import uuid

    down = support.create_app(
        {
            **config,
            "OFFLOAD_CELERY": {
                **config["OFFLOAD_CELERY"],
                "broker_url": "redis://127.0.0.1:1/0",  # nothing listens there
                "task_publish_retry": False,
                "broker_connection_timeout": 0.5,
                "broker_connection_max_retries": 0,
                "broker_transport_options": {"max_retries": 0},
            },
        }
    )
    task_id = uuid.uuid4().hex
    r = serve(down).post(
        f"/celery-delay?task_id={task_id}", files={"f": ("a.txt", b"hello")}
    )
    assert r.status_code == 500
    assert uploads_left(config) == []
    with down.app_context():
        assert support.offload.get_job(task_id) is None


def test_a_large_form_reaches_the_worker(
    capp: Flask, other_app: Flask, worker: Worker, serve: t.Any, config: t.Any
) -> None:
    """A 12 KB text field (more than the message header holds, parsed):
    the job reads the form as sent, and its stored body is deleted after.
    """
    r = serve(capp).post(
        "/submit-task/observe_form", data={"password": "hunter2", "note": "n" * 12000}
    )
    assert r.status_code == 200, r.text
    job = fetch(other_app, r.json()["id"])
    # As on the thread backend: the fields, and then the bytes too.
    assert job.result(0) == {"password": "hunter2", "note": 12000, "stream": 12022}
    wait_for(lambda: uploads_left(config) == [], what="the body to be deleted")


def test_a_stored_body_is_read_no_further_than_its_signed_size(
    config: dict[str, t.Any], other_app: Flask, worker: Worker, serve: t.Any
) -> None:
    """Someone who can write to the storage replaces a job's stored body
    with an endless stream (a pipe here; a link to /dev/zero, or a huge
    file): the worker stops reading just past the size the signed snapshot
    records and refuses the job, instead of filling its memory.
    """
    held = _held_app(config, "endless-body")
    r = serve(held).post(
        "/submit-task/observe_body", json={"password": "p", "padding": "p" * 6000}
    )
    assert r.status_code == 200, r.text
    [path] = uploads_left(config)
    signed_size = os.path.getsize(path)
    os.unlink(path)
    os.mkfifo(path)
    written = 0
    stop = threading.Event()

    def endless() -> None:
        nonlocal written
        chunk = b"\0" * 65536
        with open(path, "wb") as pipe:  # waits for the worker to open it
            try:
                while not stop.is_set():
                    pipe.write(chunk)
                    written += len(chunk)
            except BrokenPipeError:  # the worker stopped reading
                pass

    writer = threading.Thread(target=endless, daemon=True)
    writer.start()
    try:
        _move_to(
            config,
            held.config["OFFLOAD_CELERY"]["task_default_queue"],
            config["OFFLOAD_CELERY"]["task_default_queue"],
        )
        job = fetch(other_app, r.json()["id"])
        assert isinstance(job.exception(0), SnapshotTampered)
        writer.join(10)
        assert not writer.is_alive()
        # What the worker read, plus what the pipe and the writer buffer.
        assert written < signed_size + (4 << 20)
    finally:
        stop.set()
        if writer.is_alive():
            os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # unblock its open
        writer.join(10)
    wait_for(lambda: uploads_left(config) == [], what="the pipe to be deleted")


def test_cancel_while_no_worker_runs(
    config: dict[str, t.Any], other_app: Flask
) -> None:
    """A job cancelled while no worker is running (a deploy): the revoke
    reaches nobody, but the worker that takes the job later skips it.
    """
    celery_conf = config["OFFLOAD_CELERY"]
    queue = f"{celery_conf['task_default_queue']}-no-worker"
    held_config = {
        **config,
        "OFFLOAD_CELERY": {**celery_conf, "task_default_queue": queue},
    }
    held = support.create_app(held_config)
    with held.app_context():
        job = support.touch.submit("cancelled-while-down")
        assert job.cancel() is True
    late = Worker(held_config, pool="solo")
    try:
        late.wait_ready()
        late.wait_output(f"Job {job.id} ({NAME}touch) was cancelled before it started.")
        late.wait_output(f"Task {NAME}touch[{job.id}] ignored")
    finally:
        late.kill()
    assert fetch(other_app, job.id).state is JobState.CANCELLED
    folder = other_app.config["OFFLOAD_TEST_DIR"]
    assert not os.path.exists(os.path.join(folder, "cancelled-while-down"))


@pytest.mark.parametrize(
    ("how", "error"), [("die", "WorkerLostError"), ("overrun", "TimeLimitExceeded")]
)
def test_a_job_whose_pool_process_dies_leaves_no_stored_upload(
    config: dict[str, t.Any], serve: t.Any, how: str, error: str
) -> None:
    """A prefork pool process killed mid-job (by the OOM killer, or at the
    hard time limit): the job ends FAILED, and its stored upload is deleted
    then, not a day later by the sweep, though no task_postrun ran. Its
    status keeps when it started and its last progress.
    """
    celery_conf = config["OFFLOAD_CELERY"]
    queue = f"{celery_conf['task_default_queue']}-{how}"
    held_config = {
        **config,
        "OFFLOAD_CELERY": {
            **celery_conf,
            "task_default_queue": queue,
            # Only where it is the cause: it would race a lost process.
            "task_time_limit": 1 if how == "overrun" else None,
        },
    }
    held = support.create_app(held_config)
    r = serve(held).post(f"/submit-task/{how}", files={"f": ("a.txt", b"hello")})
    assert r.status_code == 200, r.text
    assert uploads_left(config)
    prefork = Worker(held_config, pool="prefork")
    try:
        prefork.wait_ready()
        job = fetch(held, r.json()["id"], timeout=60)
        assert job.state is JobState.FAILED
        assert job.to_dict()["error"]["type"] == error
        wait_for(lambda: uploads_left(config) == [], what="the upload to be deleted")
        seen = fetch(support.create_app(held_config), job.id).to_dict()
        assert seen["started_at"] is not None and seen["duration"] is not None
        assert (seen["progress"], seen["message"]) == (0.25, "a quarter")
    finally:
        prefork.kill()


def test_the_first_failed_status_has_the_error(capp: Flask, worker: Worker) -> None:
    """Polling a job's status: the summary that first says FAILED has the
    error and the end time, as a page that stops polling then needs.
    """
    with capp.app_context():
        job = support.fail.submit("no such order")
        seen = wait_for(
            lambda: (d := job.to_dict())["state"] == "FAILED" and d,
            what="the job to fail",
        )
    assert seen["error"] == {"type": "ValueError", "message": "no such order"}
    assert seen["finished_at"] is not None


def test_a_builtin_error_raised_by_library_code_is_hidden_everywhere(
    capp: Flask, other_app: Flask, worker: Worker
) -> None:
    """Only the worker sees where an error was raised: it marks a message
    the status URLs must not show, for the process that submitted the job
    and any other, which get the exception without its traceback.
    """
    with capp.app_context():
        job = support.relative_url.submit()
        assert isinstance(job.exception(20), ValueError)
        mine = job.to_dict()["error"]
    theirs = fetch(other_app, job.id).to_dict()["error"]
    for error in (mine, theirs):
        assert error["type"] == "ValueError"
        assert "S3cret" not in error["message"]
        assert "this urllib error is not shown" in error["message"]
    with capp.app_context():
        shown = support.fail.submit("order 42 is out of stock")
        assert shown.exception(20) is not None
        assert shown.to_dict()["error"]["message"] == "order 42 is out of stock"


def test_a_task_name_taken_by_another_celery_task_is_refused(capp: Flask) -> None:
    """A Celery task already registered under a declared task's name would
    run instead of it: submit refuses, naming the fix.
    """
    celery_app = backend_of(capp).celery

    @celery_app.task(name="tests.celery_support.app.clash", lazy=False)
    def other() -> str:
        return "the other one"

    def clash() -> str:
        return "declared"

    declared = support.offload.task(name="tests.celery_support.app.clash")(clash)
    try:
        from celery.exceptions import DuplicateTaskNameWarning

        with capp.app_context(), pytest.warns(DuplicateTaskNameWarning):
            with pytest.raises(NotRegistered, match="another name"):
                declared.submit()
    finally:
        del support.offload.tasks["tests.celery_support.app.clash"]


def test_a_job_replaced_with_celerys_task_replace(
    capp: Flask, config: dict[str, t.Any], worker: Worker, serve: t.Any
) -> None:
    """``task.replace()`` in a job: the replacement runs with the request and
    its upload, and the replaced job is not logged as failed.
    """
    data = os.urandom(700 * 1024)
    r = serve(capp).post(
        "/replace-upload", data={"note": "n"}, files={"f": ("f.bin", data)}
    )
    job = fetch(capp, r.json()["id"], timeout=30)
    assert job.result(0) == {
        "previous": None,
        "sha256": hashlib.sha256(data).hexdigest(),
        "note": "n",
    }
    assert f"Job {job.id} ({NAME}replaced)" not in worker.output
    wait_for(lambda: uploads_left(config) == [], what="the uploads to be deleted")


def test_a_cancel_request_outlives_a_retry(capp: Flask, worker: Worker) -> None:
    """A job asked to stop, which then retries: the next attempt does not
    run, and the job ends cancelled.
    """
    with capp.app_context():
        job = support.retried_after_cancel.submit()
        wait_for(lambda: job.state is JobState.RUNNING, what="the job to start")
        assert job.cancel() is False  # running: asked to stop
        with pytest.raises(JobCancelled, match="was cancelled"):
            job.result(30)
        assert job.state is JobState.CANCELLED


def test_a_snapshot_with_an_encrypted_stored_body_is_version_3(capp: Flask) -> None:
    """A worker of an earlier Flask-Offload would take an encrypted stored
    body for the body itself: such snapshots carry a version it rejects
    (loudly, as SnapshotTampered); others keep version 2.
    """
    backend = backend_of(capp)
    plain = {"request": {"environ": {}, "body": "e30=", "body_ref": None}}
    stored = {
        "request": {
            "environ": {},
            "body": None,
            "body_ref": {
                "key": "a" * 32 + "/body",
                "size": 1,
                "sha256": "0" * 64,
                "encrypted": True,
            },
        }
    }
    versions = []
    for wire in (plain, stored):
        token = backend.make_token(capp, wire, "a" * 32, NAME + "observe", (), {})
        versions.append(signing.verify(capp, token)["v"])
    assert versions == [celery_backend.TOKEN_VERSION, 3]
    assert 3 in celery_backend.TOKEN_VERSIONS  # this version's workers take both


def test_apps_sharing_one_celery_app_submit_the_same_task() -> None:
    """The factory pattern with one Celery app for every Flask app (a
    ``create_app`` per test): each app's submit sends the declared task, no
    clash is reported.
    """
    from celery import Celery

    from flask_offload import Offload

    celery_app = Celery("shared", broker="memory://", backend="cache+memory://")
    offload = Offload(celery=celery_app)

    @offload.task
    def export(month: str) -> str:
        return month

    sent = []
    for n in range(2):
        app = Flask(f"factory_{n}")
        app.config.update(SECRET_KEY="s", OFFLOAD_BACKEND="celery")
        offload.init_app(app)
        with app.test_request_context("/"):
            sent.append(export.submit("2025-01").name)
    assert sent == [export.name, export.name]


@pytest.mark.parametrize("size", [1000, 12000])
def test_a_form_travels_once(capp: Flask, size: int) -> None:
    """A form's raw bytes are kept for the thread and inline backends; to
    Celery a form travels once: parsed in the message if small, else as its
    raw body in storage (encrypted), parsed again in the worker, so that a
    12 KB text field does not pass the message header's limit.
    """
    backend = backend_of(capp)
    with capp.test_request_context(
        "/", method="POST", data={"note": "n" * size, "password": "hunter2"}
    ):
        from flask_offload.snapshot import capture

        snap = capture(carry_g="primitives", max_body_size=1 << 20)
        assert snap.request is not None and snap.request.body is not None
        snap.acquire()
        keys: list[str] = []
        try:
            wire = backend.wire_snapshot(capp, snap, "a" * 32, keys)
            token = backend.make_token(capp, wire, "a" * 32, NAME + "touch", [], {})
            assert len(token) <= celery_backend.MAX_HEADER_SIZE
        finally:
            snap.release()
            for key in keys:
                backend.storage.delete(key)
    req = wire["request"]
    if size < celery_backend.INLINE_BODY_SIZE:
        assert keys == [] and req["body"] is None and "body_ref" not in req
        assert ["password", "hunter2"] in req["form"]
    else:
        assert keys == ["a" * 32 + "/body"] and req["form"] is None
        assert req["body_ref"]["encrypted"] is True


def test_cancel_request_is_seen_from_every_process(
    capp: Flask,
    other_app: Flask,
    config: dict[str, t.Any],
    worker: Worker,
    serve: t.Any,
) -> None:
    """A cancel asked from one process (the dashboard in one gunicorn
    worker) shows in the others while the job runs: in the process that
    submitted it and in one that reads it from the result backend.
    """
    folder = capp.config["OFFLOAD_TEST_DIR"]
    with capp.app_context():
        job = support.progress_then_wait.submit("cancel-flag")  # ignores cancels
    wait_for(lambda: os.path.exists(os.path.join(folder, "cancel-flag.started")))
    with other_app.app_context():
        running = support.offload.get_job(job.id)
        assert running is not None and running.cancel() is False
    third = support.create_app({**config, "OFFLOAD_DASHBOARD": True})
    with third.app_context():
        seen = support.offload.get_job(job.id)
        assert seen is not None and seen.state is JobState.RUNNING
        assert seen.cancel_requested
    status = serve(third).get(f"/offload/jobs/{job.id}").json()
    assert (status["state"], status["cancel_requested"]) == ("RUNNING", True)
    with capp.app_context():
        assert wait_for(lambda: job.cancel_requested, what="the cancel request")
    open(os.path.join(folder, "cancel-flag.go"), "w").close()
    assert job.result(20) == "done"
