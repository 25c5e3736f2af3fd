"""Uploaded files stay readable by jobs after the response, without copies,
and no descriptor or temporary file outlives the jobs using it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import typing as t

import pytest
from flask import Flask
from flask import request

from flask_offload import carry
from flask_offload import compat
from flask_offload import Offload

from .conftest import LiveServer

SMALL = 10 * 1024  # Werkzeug keeps it in memory
LARGE = 2 * 1024 * 1024 + 123  # Werkzeug spools it to a temporary file


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def deleted_files() -> set[str]:
    """Unlinked temporary files this process holds open (pytest holds some
    for output capture: compare with a baseline).
    """
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):
            out.add(target)
    return out


def read_upload() -> str:
    f = request.files["file"]
    return hashlib.sha256(f.read()).hexdigest() + f"|{f.filename}|{f.mimetype}"


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["10KiB-memory", "2MiB-spooled"])
@pytest.mark.parametrize(
    "touch", [True, False], ids=["view-read-files", "view-untouched"]
)
def test_job_reads_upload_after_response(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    size: int,
    touch: bool,
) -> None:
    hold = threading.Event()

    def job() -> str:
        assert hold.wait(10)
        return read_upload()

    @app.post("/upload")
    def upload() -> dict[str, str]:
        if touch:
            request.files["file"].read(100)  # the view moves its own handle
        return {"id": offload.submit(job).id}

    server = serve(app)
    payload = os.urandom(size)
    fds_before = open_fds()
    temp_before = deleted_files()
    r = server.post("/upload", files={"file": ("orders.csv", payload, "text/csv")})
    assert r.status_code == 200
    hold.set()  # the response is out: now the job reads
    with app.app_context():
        result = offload.get_job(r.json()["id"]).result(10)  # type: ignore[union-attr]
    assert result == f"{hashlib.sha256(payload).hexdigest()}|orders.csv|text/csv"
    server.wait_idle()
    assert_nothing_left(fds_before, temp_before)


def assert_nothing_left(fds_before: set[str], temp_before: set[str]) -> None:
    """No temporary file and no descriptor opened since the baselines is
    still open.
    """
    assert deleted_files() - temp_before == set()
    # The client's socket may linger a moment; only our own files matter.
    leaked = {fd: _target(fd) for fd in open_fds() - fds_before if not _is_socket(fd)}
    assert leaked == {}


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "closed"


def _is_socket(fd: str) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    except OSError:
        return True  # already closed


def test_view_file_passed_as_argument_is_the_jobs_own(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """``offload.submit(save, request.files["a"])``: the view's FileStorage is
    closed after the response, so the job gets its own handle on the same
    upload, from the start, as positional or keyword argument.
    """
    hold = threading.Event()

    def save(first: t.Any, label: str, *, other: t.Any) -> list[str]:
        assert hold.wait(10)
        return [
            f"{label}:{f.filename}:{hashlib.sha256(f.read()).hexdigest()}"
            for f in (first, other)
        ]

    @app.post("/upload")
    def upload() -> dict[str, str]:
        request.files["a"].read(10)  # the view moves its own handle
        job = offload.submit(save, request.files["a"], "x", other=request.files["b"])
        return {"id": job.id}

    server = serve(app)
    a, b = os.urandom(LARGE), os.urandom(SMALL)
    fds_before = open_fds()
    temp_before = deleted_files()
    r = server.post("/upload", files={"a": ("a.bin", a), "b": ("b.bin", b)})
    hold.set()
    with app.app_context():
        result = offload.get_job(r.json()["id"]).result(10)  # type: ignore[union-attr]
    assert result == [
        f"x:a.bin:{hashlib.sha256(a).hexdigest()}",
        f"x:b.bin:{hashlib.sha256(b).hexdigest()}",
    ]
    server.wait_idle()
    assert_nothing_left(fds_before, temp_before)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["10KiB-memory", "2MiB-spooled"])
def test_upload_closed_by_the_view_before_submit(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    caplog: pytest.LogCaptureFixture,
    size: int,
) -> None:
    """A view that read its upload through a wrapper that closed it can
    still submit: the job gets the rest of the request, and a warning names
    the file it does not get.
    """

    def job(rows: int) -> tuple[str, int, list[str]]:
        return request.args["who"], rows, list(request.files)

    @app.post("/import")
    def import_rows() -> dict[str, t.Any]:
        text = io.TextIOWrapper(request.files["f"], encoding="utf-8")
        rows = sum(1 for _ in text)
        text.close()  # as collecting the wrapper would: closes the upload
        return {"id": offload.submit(job, rows).id}

    server = serve(app)
    body = b"a,b\n" * (size // 4)
    with caplog.at_level("WARNING", logger="flask_offload"):
        r = server.post("/import?who=ann", files={"f": ("o.csv", body), "g": b"1"})
        assert r.status_code == 200
        with app.app_context():
            result = offload.get_job(r.json()["id"]).result(10)  # type: ignore[union-attr]
    assert result == ("ann", size // 4, ["g"])
    assert "'o.csv' (field 'f') was closed in the view" in caplog.text


def test_file_arguments_after_the_view_closed_another_upload(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """Each job gets the file it was passed, also when the view closed an
    earlier upload between two submits (the request is captured once, at
    the first submit).
    """

    def read(f: t.Any) -> tuple[str, str]:
        return f.filename, f.read().decode()

    @app.post("/loop")
    def loop() -> dict[str, t.Any]:
        ids = []
        for f in request.files.getlist("docs"):
            text = io.TextIOWrapper(f.stream, encoding="utf-8")
            text.readline()  # peek at the header
            ids.append(offload.submit(read, f).id)
            text.close()  # closes the upload, as collecting the wrapper would
        return {"ids": ids}

    server = serve(app)
    files = [("docs", (f"{n}.csv", f"h-{n}\nrow\n".encode())) for n in ("a", "b", "c")]
    ids = server.post("/loop", files=files).json()["ids"]
    with app.app_context():
        got = [offload.get_job(i).result(10) for i in ids]  # type: ignore[union-attr]
    assert got == [(f"{n}.csv", f"h-{n}\nrow\n") for n in ("a", "b", "c")]


def test_view_file_passed_to_inline_backend_is_refused(
    app: Flask, serve: t.Callable[[Flask], LiveServer]
) -> None:
    app.config["OFFLOAD_BACKEND"] = "inline"
    offload = Offload(app)

    @app.post("/upload")
    def upload() -> str:
        try:
            offload.submit(len, request.files["a"])
        except TypeError as e:
            return str(e)
        return "accepted"

    server = serve(app)
    text = server.post("/upload", files={"a": ("a.bin", b"data")}).text
    assert "read it from 'request.files'" in text


def test_several_jobs_and_carry_read_same_upload(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    hold = threading.Event()
    carried_results: list[str] = []

    def job() -> str:
        assert hold.wait(10)
        return read_upload()

    def job_with_grandchildren() -> str:
        assert hold.wait(10)
        threads = [
            threading.Thread(
                target=carry(lambda: carried_results.append(read_upload()))
            )
            for _ in range(3)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return read_upload()

    @app.post("/multi")
    def multi() -> dict[str, list[str]]:
        ids = [offload.submit(job).id for _ in range(3)]
        ids.append(offload.submit(job_with_grandchildren).id)
        return {"ids": ids}

    server = serve(app)
    payload = os.urandom(LARGE)
    expected = f"{hashlib.sha256(payload).hexdigest()}|a.bin|application/octet-stream"
    temp_before = deleted_files()
    r = server.post(
        "/multi", files={"file": ("a.bin", payload, "application/octet-stream")}
    )
    hold.set()
    with app.app_context():
        results = [offload.get_job(i).result(10) for i in r.json()["ids"]]  # type: ignore[union-attr]
    assert results == [expected] * 4
    assert carried_results == [expected] * 3
    assert deleted_files() - temp_before == set()


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["memory", "spooled"])
def test_job_finishing_first_never_closes_view_file(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer], size: int
) -> None:
    """copy_current_request_context closes the view's file here (flask#5399)."""

    @app.post("/first")
    def first() -> dict[str, str]:
        f = request.files["file"]
        job = offload.submit(read_upload)
        job.result(10)  # the job has finished and torn down its context
        return {"view": hashlib.sha256(f.read()).hexdigest(), "job": job.result()}

    server = serve(app)
    payload = os.urandom(size)
    r = server.post("/first", files={"file": ("a.bin", payload)})
    assert r.status_code == 200
    digest = hashlib.sha256(payload).hexdigest()
    assert r.json()["view"] == digest
    assert r.json()["job"].startswith(digest)


def test_spooled_upload_is_not_copied(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """The job's handle is on the very inode Werkzeug spooled to: no copy."""
    inodes: dict[str, int] = {}
    hold = threading.Event()

    def job() -> None:
        assert hold.wait(10)
        inodes["job"] = os.fstat(request.files["file"].stream.fileno()).st_ino

    @app.post("/inode")
    def inode() -> dict[str, str]:
        stream = request.files["file"].stream
        inodes["view"] = os.fstat(stream.fileno()).st_ino
        return {"id": offload.submit(job).id}

    server = serve(app)
    r = server.post("/inode", files={"file": ("a.bin", os.urandom(LARGE))})
    hold.set()
    with app.app_context():
        offload.get_job(r.json()["id"]).result(10)  # type: ignore[union-attr]
    assert inodes["job"] == inodes["view"]


def test_cancelled_job_releases_upload(
    app: Flask, serve: t.Callable[[Flask], LiveServer]
) -> None:
    app.config["OFFLOAD_MAX_WORKERS"] = 1
    offload = Offload(app)
    gate = threading.Event()

    @app.post("/cancel")
    def cancel() -> dict[str, str]:
        pending = offload.submit(read_upload)  # waits behind the blocker
        assert pending.cancel()
        return {"pending": pending.id, "state": pending.state}

    server = serve(app)
    with app.app_context():
        blocker = offload.submit(gate.wait, 10)  # occupies the only worker
    try:
        temp_before = deleted_files()
        r = server.post("/cancel", files={"file": ("a.bin", os.urandom(LARGE))})
        assert r.json()["state"] == "CANCELLED"
        # The request is over and its only job was cancelled: nothing holds
        # the spooled file any more, though the worker is still busy.
        assert deleted_files() - temp_before == set()
        assert not blocker.done()
    finally:
        gate.set()
        with app.app_context():
            offload.join(10)
            offload.shutdown()


@pytest.mark.parametrize("procfs", [True, False], ids=["procfs", "no-procfs"])
def test_jobs_reading_in_lockstep_keep_their_own_offsets(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    monkeypatch: pytest.MonkeyPatch,
    procfs: bool,
) -> None:
    """Two jobs read one upload chunk by chunk, alternating: neither moves the
    other's position, with procfs (Linux) or with the portable fallback.
    """
    monkeypatch.setattr(compat, "HAS_PROC_FD", procfs)
    turn = threading.Barrier(2, timeout=10)
    hold = threading.Event()

    def job() -> str:
        assert hold.wait(10)
        f = request.files["file"]
        digest = hashlib.sha256()
        for _ in range(LARGE // 65536 + 1):
            turn.wait()  # the other job reads between two of our reads
            digest.update(f.read(65536))
        return digest.hexdigest()

    @app.post("/lockstep")
    def lockstep() -> dict[str, list[str]]:
        request.files["file"].read(1000)  # and the view moved its own handle
        return {"ids": [offload.submit(job).id, offload.submit(job).id]}

    server = serve(app)
    payload = os.urandom(LARGE)
    temp_before = deleted_files()
    fds_before = open_fds()
    r = server.post("/lockstep", files={"file": ("a.bin", payload)})
    hold.set()
    with app.app_context():
        results = [offload.get_job(i).result(20) for i in r.json()["ids"]]  # type: ignore[union-attr]
    assert results == [hashlib.sha256(payload).hexdigest()] * 2
    server.wait_idle()
    assert_nothing_left(fds_before, temp_before)


def test_capture_out_of_descriptors_leaves_nothing_open(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """The process runs out of descriptors halfway through handing off a
    request's spooled uploads: the submit fails, and the files already
    handed off are closed, not held until the process ends.
    """
    import resource

    errors: list[OSError] = []

    @app.post("/many")
    def many() -> str:
        count = len(request.files.getlist("f"))  # parsed: one descriptor each
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Room for a few more descriptors only: the hand-off runs out.
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(open_fds()) + 5, hard))
        try:
            offload.submit(lambda: None)
        except OSError as e:
            errors.append(e)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        return str(count)

    server = serve(app)
    fds_before = open_fds()
    temp_before = deleted_files()
    files = [("f", (f"part{i}.bin", b"x" * 600_000)) for i in range(20)]
    r = server.post("/many", files=files)
    assert r.text == "20"
    assert len(errors) == 1 and errors[0].errno == 24  # EMFILE
    server.wait_idle()
    assert_nothing_left(fds_before, temp_before)


def test_job_passes_its_own_upload_to_a_follow_up_job(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """A job hands ``request.files[...]`` to a job of its own: the
    follow-up job gets its own handle too, readable after the first job
    ended and closed its files.
    """
    from flask_offload import current_job

    follow_ups: list[str] = []

    def scan(first: t.Any, *, other: t.Any) -> list[str]:
        return [
            f"{f.filename}:{hashlib.sha256(f.read()).hexdigest()}"
            for f in (first, other)
        ]

    def triage() -> str:
        job = offload.submit(scan, request.files["a"], other=request.files["b"])
        follow_ups.append(job.id)
        return current_job.id

    @app.post("/upload")
    def upload() -> dict[str, str]:
        return {"id": offload.submit(triage).id}

    server = serve(app)
    a, b = os.urandom(LARGE), os.urandom(SMALL)
    fds_before = open_fds()
    temp_before = deleted_files()
    r = server.post("/upload", files={"a": ("a.bin", a), "b": ("b.bin", b)})
    with app.app_context():
        offload.get_job(r.json()["id"]).result(10)  # type: ignore[union-attr]
        result = offload.get_job(follow_ups[0]).result(10)  # type: ignore[union-attr]
    assert result == [
        f"a.bin:{hashlib.sha256(a).hexdigest()}",
        f"b.bin:{hashlib.sha256(b).hexdigest()}",
    ]
    server.wait_idle()
    assert_nothing_left(fds_before, temp_before)


def test_a_submit_while_streaming_says_why_it_has_no_uploads(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Flask 3.1 closes a request's uploads when the view returns: a job
    submitted later from a ``stream_with_context`` generator gets the rest
    of the request, and the log says why not the uploads, and what to do
    (the view's own job gets them). Flask 3.2 keeps the request open until
    the stream ends: that job gets them too.
    """
    from flask import stream_with_context

    jobs = []

    def sizes() -> dict[str, int]:
        return {k: len(f.read()) for k, f in request.files.items()}

    @app.post("/stream")
    def stream() -> t.Any:
        jobs.append(offload.submit(sizes))

        def body() -> t.Iterator[str]:
            yield "started\n"
            jobs.append(offload.submit(lambda: (sizes(), request.form["note"])))
            yield "done\n"

        return app.response_class(stream_with_context(body()))

    server = serve(app)
    with caplog.at_level("WARNING", logger="flask_offload"):
        r = server.post(
            "/stream", data={"note": "hi"}, files={"up": ("a.bin", b"x" * 700_000)}
        )
        assert r.text == "started\ndone\n"
        in_view, while_streaming = (job.result(10) for job in jobs)
    assert in_view == {"up": 700_000}
    if compat.MERGED_CONTEXT:
        assert while_streaming == ({"up": 700_000}, "hi")
        assert "was closed" not in caplog.text
    else:
        assert while_streaming == ({}, "hi")
        assert "'a.bin' (field 'up') was closed when the view returned" in (caplog.text)
        assert "Submit the jobs that read uploads in the view" in caplog.text


@pytest.mark.parametrize("touched", [True, False])
def test_streamed_submit_without_a_job_in_the_view(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    caplog: pytest.LogCaptureFixture,
    touched: bool,
) -> None:
    """The same without a job submitted in the view. A view that read the
    uploads had them closed when it returned (Flask 3.1): the streamed job
    does not get them, and the log says it was the return, not the view,
    that closed them. A view that never read them leaves the body unread:
    the streamed job parses it and gets them.
    """
    from flask import stream_with_context

    jobs = []

    def sizes() -> dict[str, int]:
        return {k: len(f.read()) for k, f in request.files.items()}

    @app.post("/stream")
    def stream() -> t.Any:
        if touched:
            assert "up" in request.files

        def body() -> t.Iterator[str]:
            yield "started\n"
            jobs.append(offload.submit(sizes))
            yield "done\n"

        return app.response_class(stream_with_context(body()))

    server = serve(app)
    with caplog.at_level("WARNING", logger="flask_offload"):
        r = server.post("/stream", files={"up": ("a.bin", b"x" * 700_000)})
        assert r.text == "started\ndone\n"
        seen = jobs[0].result(10)
    if touched and not compat.MERGED_CONTEXT:
        assert seen == {}
        assert "'a.bin' (field 'up') was closed when the view returned" in (caplog.text)
        assert "closed in the view" not in caplog.text
    else:
        assert seen == {"up": 700_000}
        assert "was closed" not in caplog.text


def test_uploads_of_a_body_without_a_length(app: Flask, offload: Offload) -> None:
    """A multipart body the server gives without ``CONTENT_LENGTH`` (an
    HTTP/2 server's environ, ``wsgi.input_terminated``): the request keeps
    its reference to the uploads, so a second job submitted after the first
    ended still reads them. Called as the WSGI app, as such a server calls
    it (none of the servers here omits the length).
    """
    import hashlib

    from werkzeug.test import EnvironBuilder

    def digest() -> str:
        return hashlib.sha256(request.files["file"].read()).hexdigest()

    @app.post("/two")
    def two() -> dict[str, str]:
        first = offload.submit(digest).result(10)
        return {"first": first, "second": offload.submit(digest).result(10)}

    payload = os.urandom(700_000)
    builder = EnvironBuilder(
        path="/two", method="POST", data={"file": (io.BytesIO(payload), "a.bin")}
    )
    environ = builder.get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    statuses: list[str] = []
    response = app(environ, lambda status, headers, *_: statuses.append(status))
    try:
        body = b"".join(response)
    finally:
        getattr(response, "close", lambda: None)()
        builder.close()
        environ["wsgi.input"].close()
    want = hashlib.sha256(payload).hexdigest()
    assert statuses == ["200 OK"]
    assert json.loads(body) == {"first": want, "second": want}
