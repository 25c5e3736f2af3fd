"""Upload hand-off: what it costs a view to give an uploaded file to a job.

A real threaded werkzeug server on 127.0.0.1 receives multipart uploads of
1 KiB, 1 MiB, 64 MiB and 256 MiB (streamed from a file by ``requests``).
Every view first touches ``request.files`` (werkzeug parses the body and
spools files over 500 KiB to disk; this parse time is the same for all and
reported separately), then times only the hand-off:

- Flask-Offload: ``offload.submit(job)``; the job reads ``request.files``
  and ``request.args["sha"]`` after the response;
- copy into memory: ``data = file.read()`` + ``pool.submit(job, data)``;
- copy to a temp file: ``shutil.copyfileobj`` + ``pool.submit(job, path)``.

Every job computes the sha256 of what it received; the client waits for it
and checks it against the sha256 of what it sent.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import os
import shutil
import statistics
import tempfile
import threading
import time
import typing as t

from flask import Flask
from flask import request

from . import Result
from . import WORKERS

NAME = "upload"
TITLE = "Upload hand-off in a view (µs to hand the file to a job)"

KIB = 1024
MIB = 1024 * KIB
SIZES = [("1 KiB", KIB), ("1 MiB", MIB), ("64 MiB", 64 * MIB), ("256 MiB", 256 * MIB)]
BOUNDARY = "benchboundary7MA4YWxkTrZu0gW"


def sha256_stream(stream: t.IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


# Every peer's job waits for its view to open a gate after the view took its
# timing: the numbers are the hand-off alone, not the start of a job hashing
# 256 MiB that competes with the view for the GIL.


def offload_job(gate: threading.Event) -> bool:
    gate.wait()
    f = request.files["file"]
    try:
        return sha256_stream(f.stream) == request.args["sha"]
    finally:
        f.close()


def bytes_job(gate: threading.Event, data: bytes, sha: str) -> bool:
    gate.wait()
    return hashlib.sha256(data).hexdigest() == sha


def path_job(gate: threading.Event, path: str, sha: str) -> bool:
    gate.wait()
    try:
        with open(path, "rb") as f:
            return sha256_stream(f) == sha
    finally:
        os.unlink(path)


def make_body(directory: str, size: int) -> tuple[str, str]:
    """Write a multipart body with one file field; return (path, sha256)."""
    block = os.urandom(min(size, MIB))
    h = hashlib.sha256()
    path = os.path.join(directory, f"body-{size}")
    with open(path, "wb") as out:
        out.write(
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file";'
                ' filename="data.bin"\r\nContent-Type: application/octet-stream'
                "\r\n\r\n"
            ).encode()
        )
        left = size
        while left:
            chunk = block[: min(left, len(block))]
            out.write(chunk)
            h.update(chunk)
            left -= len(chunk)
        out.write(f"\r\n--{BOUNDARY}--\r\n".encode())
    return path, h.hexdigest()


class Bench:
    def __init__(self) -> None:
        from flask_offload import Offload

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.app = app = Flask("bench_upload")
        app.config.update(SECRET_KEY="bench", OFFLOAD_MAX_WORKERS=WORKERS)
        self.offload = offload = Offload(app)
        self.pool = pool = cf.ThreadPoolExecutor(WORKERS)
        self.handoff: dict[str, list[float]] = {}
        self.parse: list[float] = []
        self.pending: list[t.Any] = []
        perf = time.perf_counter

        def parse() -> t.Any:
            t0 = perf()
            f = request.files["file"]
            self.parse.append(perf() - t0)
            return f

        @app.post("/offload")
        def offload_view() -> str:
            parse()
            gate = threading.Event()
            t0 = perf()
            job = offload.submit(offload_job, gate)
            self._record("offload", perf() - t0)
            gate.set()
            self.pending.append(job.result)
            return ""

        @app.post("/copy_mem")
        def copy_mem() -> str:
            f = parse()
            gate = threading.Event()
            t0 = perf()
            data = f.read()
            future = pool.submit(bytes_job, gate, data, request.args["sha"])
            self._record("copy_mem", perf() - t0)
            gate.set()
            self.pending.append(future.result)
            return ""

        @app.post("/copy_tmp")
        def copy_tmp() -> str:
            f = parse()
            gate = threading.Event()
            t0 = perf()
            with tempfile.NamedTemporaryFile(delete=False) as tmp:
                shutil.copyfileobj(f.stream, tmp, 1 << 20)
            future = pool.submit(path_job, gate, tmp.name, request.args["sha"])
            self._record("copy_tmp", perf() - t0)
            gate.set()
            self.pending.append(future.result)
            return ""

        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.key = ""

    def _record(self, peer: str, seconds: float) -> None:
        self.handoff.setdefault(f"{peer}:{self.key}", []).append(seconds * 1e6)

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.server.server_close()
        self.pool.shutdown(wait=True)
        with self.app.app_context():
            self.offload.join(60)
            self.offload.shutdown(wait=True, timeout=60)


PEERS = ("offload", "copy_mem", "copy_tmp")
LABELS = {
    "offload": "Flask-Offload submit",
    "copy_mem": "read into memory + pool.submit",
    "copy_tmp": "copy to temp file + pool.submit",
}


def run(quick: bool = False) -> Result:
    import requests

    bench = Bench()
    session = requests.Session()
    parse_by_size: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="offload-bench-") as tmp:
            for label, size in SIZES:
                if quick:
                    rounds = 5 if size <= MIB else 1
                else:
                    rounds = 15 if size <= MIB else (5 if size <= 64 * MIB else 3)
                path, sha = make_body(tmp, size)
                bench.key = label
                bench.parse.clear()
                for r in range(rounds + 1):  # the first round warms up
                    for peer in PEERS:
                        with open(path, "rb") as body:
                            resp = session.post(
                                f"{bench.url}/{peer}",
                                params={"sha": sha},
                                data=body,
                                headers={
                                    "Content-Type": "multipart/form-data;"
                                    f" boundary={BOUNDARY}"
                                },
                                timeout=300,
                            )
                        resp.raise_for_status()
                        ok = bench.pending.pop()(timeout=300)
                        if not ok:
                            raise AssertionError(
                                f"{peer}: the job saw another sha256 for {label}."
                            )
                        if r == 0:
                            bench.handoff[f"{peer}:{label}"].clear()
                parse_by_size[label] = statistics.median(bench.parse) * 1e6
                os.unlink(path)
    finally:
        session.close()
        bench.close()
    med = {k: statistics.median(v) for k, v in bench.handoff.items()}
    rows = []
    for label, _ in SIZES:
        rows.append(
            [
                label,
                med[f"offload:{label}"],
                med[f"copy_mem:{label}"],
                med[f"copy_tmp:{label}"],
                med[f"offload:{label}"] / med[f"offload:{SIZES[0][0]}"],
                parse_by_size[label] / 1000,
            ]
        )
    return Result(
        NAME,
        TITLE,
        [
            "upload",
            "Flask-Offload submit µs",
            "read into memory µs",
            "copy to temp file µs",
            "Offload vs 1 KiB",
            "werkzeug parse ms (all)",
        ],
        rows,
        notes=[
            "Real werkzeug server (threaded) on 127.0.0.1; medians of 15 rounds"
            " (1 KiB, 1 MiB), 5 (64 MiB), 3 (256 MiB), peers interleaved; every"
            " job's sha256 checked.",
            "Files up to 500 KiB are held in memory by werkzeug and copied by"
            " Flask-Offload; larger ones are spooled to disk and handed off by"
            " duplicating the descriptor (no copy, no read); each job opens its"
            " own handle. Jobs wait until the view has taken its timing.",
        ],
        data={"median_us": med, "parse_us": parse_by_size},
    )
