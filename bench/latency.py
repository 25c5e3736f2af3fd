"""Latency below saturation: the load benchmark's three views (plain, raw
pool, ``offload.submit``) at a fixed request rate the server keeps up with,
instead of as fast as it answers.

Run it with ``python -m bench latency``; ``make bench`` leaves it out (it
adds about two minutes). The load benchmark keeps 16 connections busy, so
its p50 follows the server's throughput (16 / requests per second): it
measures what a job costs the server's CPU. Here each of 8 connections
waits a random time (uniform, from zero to twice the mean) before each
request, so the server is busy only part of the time and the p50 is the
time one request takes. The means are set from the plain view's own
requests/s, measured first, for about 30% and 60% of it.

Pacing comes from a wrk Lua script (``delay()``): a request that is slow
does delay the next one on its connection, so a stalled server gets fewer
requests than the rate asks for. That matters at a high load; the rates
here stay well below the plain view's maximum.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import typing as t

from . import Result
from .load import middle_half
from .load import missing_tools
from .load import rotated
from .load import Server

NAME = "latency"
TITLE = "Latency below saturation: the load benchmark's views at a fixed request rate"

#: The server's load, as a share of the plain view's requests/s.
LOADS = (0.3, 0.6)
CONNECTIONS = 8
VIEWS = {
    "plain": "plain view",
    "raw": "view + raw pool.submit (no context)",
    "offload": "view + offload.submit",
}

# Each connection waits a uniform random 0 to 2 * mean ms (whole ms: wrk's
# timer unit) before each request, for Poisson-like arrivals without bursts
# in step across connections.
_SCRIPT = """\
local mean = tonumber(os.getenv("BENCH_DELAY_MS"))
math.randomseed(os.time())
function delay()
  return math.random(0, 2 * mean)
end
"""


def delay_ms(
    rps: float, share: float, busy_ms: float = 0.0, connections: int = CONNECTIONS
) -> int:
    """The mean wait (whole ms, at least 1) before each request on each of
    ``connections`` for a total of ``share * rps`` requests/s, when a
    request itself takes ``busy_ms``.
    """
    return max(1, round(connections * 1000 / (share * rps) - busy_ms))


def run(quick: bool = False) -> Result:
    why = missing_tools()
    if why is not None:
        return Result(NAME, TITLE, [], [], skipped=why)
    duration = 3
    rounds = 2 if quick else 8
    rows: list[list[t.Any]] = []
    data: dict[str, t.Any] = {}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_SCRIPT)
    try:
        server = Server()
    except BaseException:
        os.unlink(f.name)
        raise
    try:
        for view in VIEWS:  # warm up both workers and all views
            server.drive(view, 1)
        peak = statistics.median(server.drive("plain", 2)["rps"] for _ in range(3))
        # What one request takes with nothing else running: one connection.
        busy = server.drive("plain", 1, connections=1)["p50_ms"]
        data["plain_peak_rps"] = peak
        data["plain_alone_p50_ms"] = busy
        for share in LOADS:
            mean = delay_ms(peak, share, busy)
            env = {"BENCH_DELAY_MS": str(mean)}
            samples: dict[str, list[dict[str, float]]] = {v: [] for v in VIEWS}
            for view in rotated(list(VIEWS), rounds):
                samples[view].append(
                    server.drive(view, duration, CONNECTIONS, f.name, env)
                )
            plain = samples["plain"]
            data[f"{share:.0%}"] = {"delay_ms": mean, "samples": samples}
            for view, label in VIEWS.items():
                runs = samples[view]
                ratios = [
                    s["p50_ms"] / p["p50_ms"] for s, p in zip(runs, plain, strict=True)
                ]
                low, high = middle_half(ratios)
                rps = statistics.median(s["rps"] for s in runs)
                rows.append(
                    [
                        f"{share:.0%}",
                        label,
                        rps,
                        f"{rps / peak:.0%}",
                        statistics.median(s["p50_ms"] for s in runs) * 1000,
                        statistics.median(s["p99_ms"] for s in runs) * 1000,
                        statistics.median(ratios),
                        f"{low:.2f}-{high:.2f}",
                        statistics.median(s.get("cpu_us", float("nan")) for s in runs),
                        int(sum(s["errors"] for s in runs)),
                    ]
                )
    finally:
        server.stop()
        os.unlink(f.name)
    return Result(
        NAME,
        TITLE,
        [
            "load asked",
            "view",
            "req/s",
            "share of plain peak",
            "p50 µs",
            "p99 µs",
            "p50 ratio",
            "p50 ratio, middle half of rounds",
            "server CPU µs/req",
            "errors",
        ],
        rows,
        notes=[
            f"The plain view's requests/s with 16 busy connections: {peak:,.0f}"
            f" (median of three 2 s runs); one request alone (1 connection):"
            f" {busy * 1000:.0f} µs. Load asked: the share of that peak the"
            " script's mean wait (less the request's own time, in whole ms)"
            " aims at; the share got is in its own column.",
            f"gunicorn --workers=2 --worker-class=gthread --threads=4; wrk"
            f" {server.wrk_threads} -c{CONNECTIONS} -d{duration}s --latency with"
            " 10 headers and a script that waits a random 0 to 2x the mean"
            f" before each request; {rounds} rounds per load, rotated as in the"
            " load benchmark; ratios taken within each round. " + server.placement(),
        ],
        data=data,
    )
