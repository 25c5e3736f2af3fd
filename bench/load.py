"""Under load: the same view with and without ``offload.submit``, served by
gunicorn (2 workers, gthread) on 127.0.0.1 and driven by ``wrk``.

Each round runs ``wrk`` against the plain view, the view handing the same
job to a raw ``ThreadPoolExecutor`` (no context: the floor), and the
offloading one, back to back, in an order that rotates from round to round
(so no view always runs first, or always after the same other view). The
table gives the medians over the rounds of wrk's p50/p99 latency and
requests/s, and of the ratios taken within each round, with the middle half
of those ratios: on a noisy host it shows how far one round can be trusted.
Skipped with a message when ``wrk`` or gunicorn is missing.

With two CPUs or more, gunicorn is pinned to the first and wrk to the
second: unpinned, the two compete for both CPUs and the plain view's own
throughput varied by 50% between rounds, more than the difference measured.
"""

from __future__ import annotations

import operator
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
    m = re.search(r"(\d+) requests in", output)
    if m is not None:
        out["requests"] = float(m.group(1))
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


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU time of these processes so far, from procfs
    (``None`` where there is none).
    """
    total = 0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                # Fields after the command name, which may contain spaces.
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def settle(pids: list[int], timeout: float = 10.0) -> float | None:
    """Wait until the workers are idle, their CPU time unchanged over 0.1 s,
    and return it: jobs still queued when wrk stopped are part of the run
    that submitted them, and must not slow the next one.
    """
    last = cpu_seconds(pids)
    deadline = time.monotonic() + timeout
    while last is not None and time.monotonic() < deadline:
        time.sleep(0.1)
        now = cpu_seconds(pids)
        if now == last:
            break
        last = now
    return last


def worker_pids(parent: int) -> list[int]:
    """gunicorn's worker processes: the children of the arbiter."""
    try:
        with open(f"/proc/{parent}/task/{parent}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def middle_half(values: list[float]) -> tuple[float, float]:
    """The first and third quartiles of ``values`` (both the value itself
    for a single one).
    """
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


#: The target: the offloading view's p50 within 10% of the plain view's.
TARGET = 1.10


def verdict(low: float, high: float) -> str:
    """The target's status from the middle half (``low``, ``high``) of the
    per-round p50 ratios. Judged on the middle half, not the median alone:
    on a noisy host the median can land on either side of the line by
    chance, and the run then says so instead of giving a verdict.
    """
    if high <= TARGET:
        return "met"
    if low > TARGET:
        return "MISSED"
    return (
        f"INCONCLUSIVE (the rounds fall on both sides of {TARGET:.2f}x;"
        " run again on a quieter machine)"
    )


def skipped(reason: str) -> Result:
    return Result(NAME, TITLE, [], [], skipped=reason)


def missing_tools() -> str | None:
    """Why the load benchmarks cannot run here, or ``None``."""
    if shutil.which("wrk") is None:
        return (
            "wrk is not installed. Install it (Debian/Ubuntu: 'apt-get install"
            " wrk') to run the load benchmark."
        )
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        return "gunicorn is not installed. Run 'pip install -r bench/requirements.txt'."
    return None


class Server:
    """gunicorn serving ``bench.loadapp`` (2 gthread workers, 4 threads
    each), pinned to the first CPU when there are two, and a way to drive
    it with ``wrk`` (pinned to the second).
    """

    def __init__(self) -> None:
        wrk = shutil.which("wrk")
        if wrk is None:
            raise RuntimeError(t.cast(str, missing_tools()))
        self.wrk = wrk
        self.header_args: list[str] = []
        for name, value in HEADERS.items():
            self.header_args += ["-H", f"{name}: {value}"]
        self.port = free_port()
        cpus = (
            sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        )
        self.cpus = cpus
        self.pinned = len(cpus) >= 2
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers=2",
                "--worker-class=gthread",
                "--threads=4",
                f"--bind=127.0.0.1:{self.port}",
                "--log-level=warning",
                "bench.loadapp:app",
            ],
            cwd=root,
            start_new_session=True,
            preexec_fn=self._pin(0),
        )
        try:
            wait_for(self.port, self.proc)
        except BaseException:
            self.stop()
            raise

    def _pin(self, index: int) -> t.Callable[[], None] | None:
        if not self.pinned:
            return None
        cpu = self.cpus[index]
        return lambda: os.sched_setaffinity(0, {cpu})

    @property
    def wrk_threads(self) -> str:
        return "-t1" if self.pinned else "-t2"

    def drive(
        self,
        view: str,
        seconds: int,
        connections: int = 16,
        script: str | None = None,
        env: dict[str, str] | None = None,
    ) -> dict[str, float]:
        """Run ``wrk`` against ``/view`` with the benchmark's query string
        and headers; return :func:`parse_wrk`'s numbers and the server CPU
        time per request (``cpu_us``), counted until the workers are idle.

        :param script: A wrk Lua script, for example one that paces requests.
        :param env: Extra environment for ``wrk`` (read by the script).
        """
        cmd = [
            self.wrk,
            self.wrk_threads,
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            *(["-s", script] if script else []),
            *self.header_args,
            f"http://127.0.0.1:{self.port}/{view}?{QUERY}",
        ]
        pids = worker_pids(self.proc.pid)
        before = cpu_seconds(pids)
        res = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            env={**os.environ, **(env or {})},
            preexec_fn=self._pin(1),
        )
        after = settle(pids)
        if res.returncode != 0:
            raise RuntimeError(f"wrk failed: {res.stderr or res.stdout}")
        out = parse_wrk(res.stdout)
        # Server CPU per request: what the job costs the server, less
        # noisy than latency (it does not depend on queueing).
        if before is not None and after is not None and out.get("requests"):
            out["cpu_us"] = (after - before) * 1e6 / out["requests"]
        return out

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def placement(self) -> str:
        if self.pinned:
            return f"gunicorn pinned to CPU {self.cpus[0]}, wrk to CPU {self.cpus[1]}."
        return "wrk shares the CPU with the server."


def rotated(views: list[str], rounds: int) -> t.Iterator[str]:
    """``views`` once per round, in an order that rotates from round to
    round: a, b, c; then b, c, a; then c, a, b; ...
    """
    for i in range(rounds):
        shift = i % len(views)
        yield from views[shift:] + views[:shift]


def run(quick: bool = False) -> Result:
    why = missing_tools()
    if why is not None:
        return skipped(why)
    duration = 2
    rounds = 3 if quick else 11
    samples: dict[str, list[dict[str, float]]] = {"plain": [], "raw": [], "offload": []}
    server = Server()
    try:
        for view in samples:  # warm up both workers and both views
            server.drive(view, 1)
        for view in rotated(list(samples), rounds):
            samples[view].append(server.drive(view, duration))
    finally:
        server.stop()
    med = {
        view: {
            key: statistics.median(s.get(key, float("nan")) for s in runs)
            for key in ("p50_ms", "p99_ms", "rps", "errors", "cpu_us")
        }
        for view, runs in samples.items()
    }
    # Ratios per round (the three views run back to back), then the median
    # over rounds: the host's drift over a run cancels within a round.
    plain_runs = samples["plain"]

    def per_round(
        view: str, key: str, op: t.Callable[[float, float], float]
    ) -> list[float]:
        nan = float("nan")
        return [
            op(s.get(key, nan), p.get(key, nan))
            for s, p in zip(samples[view], plain_runs, strict=True)
        ]

    ratios = {
        view: {
            "p50": per_round(view, "p50_ms", operator.truediv),
            "rps": per_round(view, "rps", operator.truediv),
            "cpu_added": per_round(view, "cpu_us", operator.sub),
        }
        for view in samples
    }
    med_ratio: dict[str, dict[str, t.Any]] = {
        view: {key: statistics.median(vals) for key, vals in r.items()}
        for view, r in ratios.items()
    }
    for view, r in ratios.items():
        # The middle half of the per-round p50 ratios (first to third
        # quartile): how much the host's noise moves one round's ratio.
        med_ratio[view]["p50_middle"] = middle_half(r["p50"])
    rows = []
    for view, label in (
        ("plain", "plain view"),
        ("raw", "view + raw pool.submit (no context)"),
        ("offload", "view + offload.submit"),
    ):
        m = med[view]
        low, high = med_ratio[view]["p50_middle"]
        rows.append(
            [
                label,
                m["p50_ms"],
                m["p99_ms"],
                m["rps"],
                med_ratio[view]["p50"],
                f"{low:.2f}-{high:.2f}",
                f"{min(ratios[view]['p50']):.2f}-{max(ratios[view]['p50']):.2f}",
                med_ratio[view]["rps"],
                m["cpu_us"],
                med_ratio[view]["cpu_added"],
                int(sum(s["errors"] for s in samples[view])),
            ]
        )
    return Result(
        NAME,
        TITLE,
        [
            "view",
            "p50 ms",
            "p99 ms",
            "req/s",
            "p50 ratio",
            "p50 ratio, middle half of rounds",
            "p50 ratio, all rounds",
            "req/s ratio",
            "server CPU µs/req",
            "added CPU µs/req",
            "errors",
        ],
        rows,
        notes=[
            "gunicorn --workers=2 --worker-class=gthread --threads=4;"
            f" wrk {server.wrk_threads} -c16 -d{duration}s --latency with"
            f" 10 headers; {rounds} rounds after a 1 s warm-up of each view. A"
            " round runs the three views back to back, in an order that rotates"
            " from round to round; ratios are taken within each round, and the"
            " table gives their medians over the rounds (the host's speed"
            " drifts between rounds more than within one) and their middle"
            " half (first to third quartile). " + server.placement(),
            "The job reads request.args and headers from the replayed request.",
            "Server CPU: user + system time of the gunicorn workers during a"
            " run and until they are idle again (procfs), divided by the"
            " requests wrk completed; the jobs run on the same CPU, so their"
            " cost is included, also for jobs still queued when wrk stopped."
            " The next run starts once the workers are idle, so no run pays"
            " for the jobs of the one before it.",
        ],
        data={"samples": samples, "medians": med, "ratios": med_ratio},
    )
