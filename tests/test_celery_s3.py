"""Uploads through S3 storage (``OFFLOAD_STORAGE = "s3://bucket/prefix"``),
against a moto S3 server on 127.0.0.1 and a real Celery worker.
"""

from __future__ import annotations

import hashlib
import os
import socket
import typing as t

import pytest
from flask import Flask

from .celery_support import app as support
from .celery_support.procs import broker_config
from .celery_support.procs import wait_for
from .celery_support.procs import Worker

pytest.importorskip("flask_offload.backends.celery")
boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

BUCKET = "offload-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_env() -> t.Iterator[dict[str, str]]:
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="module")
def config(
    s3_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, t.Any]:
    folder = str(tmp_path_factory.mktemp("celery-s3"))
    return {
        "OFFLOAD_CELERY": broker_config("redis", folder),
        "OFFLOAD_TEST_DIR": folder,
        "OFFLOAD_STORAGE": f"s3://{BUCKET}/uploads",
    }


@pytest.fixture(scope="module")
def worker(config: dict[str, t.Any], s3_env: dict[str, str]) -> t.Iterator[Worker]:
    w = Worker(config, env=s3_env)
    try:
        w.wait_ready()
        yield w
    finally:
        w.kill()


def _keys() -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET)
    return [o["Key"] for o in listed.get("Contents", ())]


def test_upload_through_s3(
    config: dict[str, t.Any], worker: Worker, serve: t.Any
) -> None:
    app: Flask = support.create_app(config)
    data = os.urandom(300 * 1024)
    server = serve(app)
    r = server.post("/submit/s3", files={"doc": ("doc.pdf", data, "application/pdf")})
    job_id = r.json()["id"]
    with app.app_context():
        job = support.offload.get_job(job_id)
        seen = job.result(20)
    assert seen["files"]["doc"] == {
        "filename": "doc.pdf",
        "content_type": "application/pdf",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    # The stored object is deleted when the job ends.
    wait_for(lambda: _keys() == [], what="the upload to be deleted")


def test_s3_sweep_and_missing_objects(s3_env: dict[str, str]) -> None:
    import io

    from flask_offload.storage import S3Storage
    from flask_offload.storage import storage_for

    app = Flask(__name__)
    storage = storage_for(app, f"s3://{BUCKET}/sweep")
    assert isinstance(storage, S3Storage)
    key = "a" * 32 + "/0"
    storage.put(key, io.BytesIO(b"orphan"))
    with storage.open(key) as f:
        assert f.read() == b"orphan"
    # Other data in the bucket, under the prefix or not, is never swept.
    client = storage.client
    for other in ("sweep/invoices/2024.pdf", "backups/db.dump", "sweep/x/0"):
        client.put_object(Bucket=BUCKET, Key=other, Body=b"not ours")
    assert storage.sweep(3600) == 0  # too recent
    assert storage.sweep(-60) == 1  # everything is "older" than the future
    with pytest.raises(FileNotFoundError):
        storage.open(key)
    left = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {"sweep/invoices/2024.pdf", "backups/db.dump", "sweep/x/0"} <= left
