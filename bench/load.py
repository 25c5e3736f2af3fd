"""Under load: the same view with and without ``offload.submit``, served by
gunicorn (2 workers, gthread) on 127.0.0.1 and driven by ``wrk``.

Each round runs ``wrk`` against the plain view, the view handing the same
job to a raw ``ThreadPoolExecutor`` (no context: the floor), then the
offloading one (interleaved, several rounds); the table gives the medians of wrk's
p50/p99 latency and requests/s. Skipped with a message when ``wrk`` or
gunicorn is missing.

With two CPUs or more, gunicorn is pinned to the first and wrk to the
second: unpinned, the two compete for both CPUs and the plain view's own
throughput varied by 50% between rounds, more than the difference measured.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import typing as t

from . import HEADERS
from . import QUERY
from . import Result

NAME = "load"
TITLE = "Under load: gunicorn (2 gthread workers) + wrk, plain view vs offloading view"

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"Unknown wrk latency {text!r}.")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(output: str) -> dict[str, float]:
    """p50/p99 (ms), requests/s and errors from ``wrk --latency`` output."""
    out: dict[str, float] = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", output, re.M)
        if m is None:
            raise ValueError(f"No p{pct} in wrk output:\n{output}")
        out[f"p{pct}_ms"] = _ms(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if m is None:
        raise ValueError(f"No Requests/sec in wrk output:\n{output}")
    out["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)", output)
    if m:
        errors += sum(int(x) for x in m.groups())
    out["errors"] = errors
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with code {proc.returncode}.")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not listen on port {port} in {timeout} s.")


def skipped(reason: str) -> Result:
    return Result(NAME, TITLE, [], [], skipped=reason)


def run(quick: bool = False) -> Result:
    wrk = shutil.which("wrk")
    if wrk is None:
        return skipped(
            "wrk is not installed. Install it (Debian/Ubuntu: 'apt-get install"
            " wrk') to run the load benchmark."
        )
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        return skipped(
            "gunicorn is not installed. Run 'pip install -r bench/requirements.txt'."
        )
    duration = 2 if quick else 3
    rounds = 3 if quick else 5
    port = free_port()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = len(cpus) >= 2

    def pin(cpu: int) -> t.Callable[[], None] | None:
        if not pinned:
            return None
        return lambda: os.sched_setaffinity(0, {cpu})

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers=2",
            "--worker-class=gthread",
            "--threads=4",
            f"--bind=127.0.0.1:{port}",
            "--log-level=warning",
            "bench.loadapp:app",
        ],
        cwd=root,
        start_new_session=True,
        preexec_fn=pin(cpus[0]) if pinned else None,
    )
    header_args: list[str] = []
    for name, value in HEADERS.items():
        header_args += ["-H", f"{name}: {value}"]
    samples: dict[str, list[dict[str, float]]] = {"plain": [], "raw": [], "offload": []}
    outputs: list[str] = []
    try:
        wait_for(port, proc)

        def drive(view: str, seconds: int) -> dict[str, float]:
            cmd = [
                wrk,
                "-t1" if pinned else "-t2",
                "-c16",
                f"-d{seconds}s",
                "--latency",
                *header_args,
                f"http://127.0.0.1:{port}/{view}?{QUERY}",
            ]
            res = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=seconds + 30,
                preexec_fn=pin(cpus[1]) if pinned else None,
            )
            if res.returncode != 0:
                raise RuntimeError(f"wrk failed: {res.stderr or res.stdout}")
            outputs.append(res.stdout)
            return parse_wrk(res.stdout)

        for view in samples:  # warm up both workers and both views
            drive(view, 1)
        for _ in range(rounds):
            for view in samples:
                samples[view].append(drive(view, duration))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    med = {
        view: {
            key: statistics.median(s[key] for s in runs)
            for key in ("p50_ms", "p99_ms", "rps", "errors")
        }
        for view, runs in samples.items()
    }
    rows = []
    for view, label in (
        ("plain", "plain view"),
        ("raw", "view + raw pool.submit (no context)"),
        ("offload", "view + offload.submit"),
    ):
        m = med[view]
        rows.append(
            [
                label,
                m["p50_ms"],
                m["p99_ms"],
                m["rps"],
                m["p50_ms"] / med["plain"]["p50_ms"],
                m["rps"] / med["plain"]["rps"],
                int(sum(s["errors"] for s in samples[view])),
            ]
        )
    return Result(
        NAME,
        TITLE,
        ["view", "p50 ms", "p99 ms", "req/s", "p50 ratio", "req/s ratio", "errors"],
        rows,
        notes=[
            "gunicorn --workers=2 --worker-class=gthread --threads=4;"
            f" wrk {'-t1' if pinned else '-t2'} -c16 -d{duration}s --latency with"
            f" 10 headers; {rounds} interleaved rounds after a 1 s warm-up of each"
            " view, medians. "
            + (
                f"gunicorn pinned to CPU {cpus[0]}, wrk to CPU {cpus[1]}."
                if pinned
                else "wrk shares the CPU with the server."
            ),
            "The job reads request.args and headers from the replayed request.",
        ],
        data={"samples": samples, "medians": med},
    )
