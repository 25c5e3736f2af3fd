"""The benchmark's own arithmetic: how ``python -m bench`` reads wrk and
judges the load target. The measurements themselves run with ``make bench``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
from bench import load
from bench import Result
from bench.__main__ import targets

from flask_offload import jobs as offload_jobs

# What `wrk -t1 -c4 -d1s --latency` printed on this project's machine.
WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:8765/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.51ms    1.46ms  10.41ms   68.55%
    Req/Sec     0.87k    57.50     0.97k    70.00%
  Latency Distribution
     50%    4.42ms
     75%    5.38ms
     90%    6.43ms
     99%    8.51ms
  866 requests in 1.00s, 754.37KB read
Requests/sec:    865.46
Transfer/sec:    753.90KB
"""


def test_parse_wrk() -> None:
    assert load.parse_wrk(WRK_OUTPUT) == {
        "p50_ms": 4.42,
        "p99_ms": 8.51,
        "requests": 866.0,
        "rps": 865.46,
        "errors": 0,
    }


def test_parse_wrk_counts_errors_and_units() -> None:
    out = WRK_OUTPUT.replace("4.42ms", "950.00us").replace("8.51ms", "1.20s")
    out = out.replace(
        "Requests/sec:",
        "  Socket errors: connect 0, read 2, write 1, timeout 3\n"
        "  Non-2xx or 3xx responses: 4\nRequests/sec:",
    )
    parsed = load.parse_wrk(out)
    assert parsed["p50_ms"] == pytest.approx(0.95)
    assert parsed["p99_ms"] == pytest.approx(1200.0)
    assert parsed["errors"] == 10


def test_parse_wrk_without_latency_says_so() -> None:
    with pytest.raises(ValueError, match="No p50"):
        load.parse_wrk("Requests/sec: 10.0\n")


def test_middle_half() -> None:
    ratios = [1.30, 0.95, 1.05, 1.10, 1.00, 1.20, 1.15]
    assert load.middle_half(ratios) == pytest.approx((1.025, 1.175))
    assert load.middle_half([1.2]) == (1.2, 1.2)
    low, high = load.middle_half([])
    assert math.isnan(low) and math.isnan(high)


@pytest.mark.parametrize(
    ("low", "high", "status"),
    [
        (1.00, 1.09, "met"),
        (1.00, 1.10, "met"),
        (1.12, 1.14, "MISSED"),
        (1.05, 1.20, "INCONCLUSIVE"),
        (1.10, 1.20, "INCONCLUSIVE"),
    ],
)
def test_verdict(low: float, high: float, status: str) -> None:
    assert load.verdict(low, high).startswith(status)


def test_targets_report_the_load_verdict() -> None:
    result = Result(
        load.NAME,
        load.TITLE,
        [],
        [],
        data={"ratios": {"offload": {"p50": 1.13, "p50_middle": (1.12, 1.14)}}},
    )
    report = targets({"load": result})
    assert report is not None
    assert report.rows == [
        [
            "offloading view p50 within 10% under load",
            "1.13x (middle half of rounds 1.12-1.14x)",
            "MISSED",
        ]
    ]


def test_targets_skip_a_skipped_load_run() -> None:
    skipped = load.skipped("wrk is not installed.")
    assert targets({"load": skipped}) is None


def test_pieces_all_run() -> None:
    """The pieces benchmark times private functions of the package: when
    one changes, its row must not quietly turn into "n/a" (it shows the
    exception's name instead of a time).
    """
    from bench import pieces

    result = pieces.run(quick=True)
    failed = [row[1] for row in result.rows if not math.isfinite(row[2])]
    assert not failed, f"Pieces that raised: {failed}"


def test_instructions_harness_runs_every_view() -> None:
    """The instructions benchmark's loop (run under valgrind by ``make
    bench``) reaches into the thread backend: it must still run each view
    and its job.
    """
    from bench import instructions
    from bench import loadapp

    for view in instructions.VIEWS:
        with loadapp.app.app_context():
            before = len(loadapp.offload.jobs())
        instructions.child(view, 2)
        with loadapp.app.app_context():
            jobs = loadapp.offload.jobs()
        assert all(job.done() for job in jobs)
        if view.startswith("offload"):
            assert len(jobs) > before
    # Job ids stay random outside the counted process: seeded ones would
    # repeat across tests (and did: stale Celery results were read back).
    ids = {offload_jobs.new_job_id() for _ in range(300)}
    assert len(ids) == 300
    assert offload_jobs.os is os


def test_seeded_job_ids_repeat_in_the_counted_process() -> None:
    """What ``python -m bench.instructions`` counts repeats exactly: its job
    ids come from a seeded generator.
    """
    code = (
        "from bench import instructions; instructions.seed_job_ids();"
        " from flask_offload.jobs import new_job_id; print(new_job_id())"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(runs) == 1


def test_latency_delay_aims_at_the_share_of_the_peak() -> None:
    from bench import latency

    # 8 connections at 2,000 req/s x 0.5: 125 req/s each, one per 8 ms.
    assert latency.delay_ms(2000, 0.5) == 8
    assert latency.delay_ms(2000, 0.5, connections=4) == 4
    # Less the time each request takes: 8 ms per request, 0.6 of it busy.
    assert latency.delay_ms(2000, 0.5, busy_ms=0.6) == 7
    # Never zero: wrk's delay() is in whole ms and 0 means no pacing.
    assert latency.delay_ms(1_000_000, 0.9) == 1


def test_rounds_rotate_the_views() -> None:
    order = list(load.rotated(["a", "b", "c"], 4))
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
