"""``python -m bench [NAME ...]``: run the benchmarks, print Markdown tables,
write ``bench/results/latest.json`` and the ratio chart.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
import typing as t

from . import load
from . import machine
from . import markdown
from . import Result
from . import rst_table

#: In the order ``python -m bench`` runs them.
MODULES = [
    "percall",
    "submit",
    "upload",
    "memory",
    "load",
    "pieces",
    "instructions",
    "propagation",
    "celery_throughput",
]
#: Run only when named: ``python -m bench latency``.
EXTRA = ["latency"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results", "latest.json")
CHART = os.path.join(ROOT, "docs", "_static", "bench", "ratios.png")


def targets(results: dict[str, Result]) -> Result | None:
    """Issue 7's targets, checked against this run."""
    rows: list[list[t.Any]] = []

    def check(name: str, value: str, met: bool) -> None:
        rows.append([name, value, "met" if met else "MISSED"])

    if "percall" in results:
        r = results["percall"].data["ratios"]
        check(
            "per-job cost <= 2.0x raw pool",
            f"{r['offload_noop']:.2f}x",
            r["offload_noop"] <= 2.0,
        )
        check(
            "ahead of Flask-Executor",
            f"{r['offload_noop']:.2f}x vs {r['flask_executor']:.2f}x",
            r["offload_noop"] < r["flask_executor"],
        )
        check(
            "ahead of copy_current_request_context",
            f"{r['offload_noop']:.2f}x vs {r['copy_ctx']:.2f}x",
            r["offload_noop"] < r["copy_ctx"],
        )
    if "upload" in results:
        med = results["upload"].data["median_us"]
        small, big = med["offload:1 KiB"], med["offload:256 MiB"]
        check(
            "upload 256 MiB within 3x of 1 KiB", f"{big / small:.2f}x", big / small <= 3
        )
        check("upload hand-off under 1 ms", f"{big:.0f} µs", big < 1000)
    if "memory" in results:
        data = results["memory"].data
        pinned = data["pinned_bytes"]["offload"]
        check("<= 2 KiB pinned per pending job", f"{pinned:,.0f} B", pinned <= 2048)
        zero = data["retained"]["offload_max_finished_0"]
        default = data["retained"]["offload"]
        up = data["uploads"]
        clean = (
            zero["contexts_after"] == zero["contexts_before"]
            and zero["fds_after"] == zero["fds_before"]
            and zero["jobs_after"] == 0
            and up["fds_after"] == up["fds_before"]
            and up["contexts_after"] == up["contexts_before"]
            and zero["retained_kib"] < 64
        )
        check(
            "nothing retained after jobs finish",
            f"{zero['retained_kib']:.1f} KiB with MAX_FINISHED=0;"
            f" {default['retained_kib']:.0f} KiB for the 1000 kept Jobs",
            clean,
        )
    if "load" in results and not results["load"].skipped:
        r = results["load"].data["ratios"]["offload"]
        low, high = r["p50_middle"]
        status = load.verdict(low, high)
        rows.append(
            [
                "offloading view p50 within 10% under load",
                f"{r['p50']:.2f}x (middle half of rounds {low:.2f}-{high:.2f}x)",
                status,
            ]
        )
    if not rows:
        return None
    return Result("targets", "Issue 7 targets", ["target", "this run", "status"], rows)


def chart(result: Result, path: str) -> None:
    """A bar chart of the per-job ratios against the raw pool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .percall import LABELS

    ratios = result.data["ratios"]
    names = list(ratios)
    values = [ratios[n] for n in names]
    colors = ["#4c72b0" if n.startswith("offload") else "#999999" for n in names]
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=100)
    bars = ax.barh([LABELS[n] for n in names], values, color=colors)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.axvline(
        2.0, color="#c44e52", linestyle="--", linewidth=1, label="target: 2.0x raw"
    )
    for bar, value in zip(bars, values, strict=True):
        ax.text(
            bar.get_width() + 0.05,
            bar.get_y() + bar.get_height() / 2,
            f"{value:.2f}x",
            va="center",
            fontsize=9,
        )
    ax.set_xlabel("time per job / raw ThreadPoolExecutor (lower is better)")
    ax.set_title(
        f"Per-job cost: {result.data['n']:,} jobs from one request,"
        f" median of {result.data['rounds']} rounds",
        fontsize=10,
    )
    ax.set_xlim(0, max(values) * 1.2)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Flask-Offload benchmarks."
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: {', '.join(MODULES)}; also:"
        f" {', '.join(EXTRA)})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds, for a smoke test"
    )
    parser.add_argument(
        "--rst", action="store_true", help="also print RST tables for the docs"
    )
    parser.add_argument("--json", default=RESULTS, help="where to write the results")
    parser.add_argument("--chart", default=CHART, help="where to write the ratio chart")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in MODULES + EXTRA]
    if unknown:
        parser.error(
            f"unknown benchmark {', '.join(unknown)}; choose from"
            f" {', '.join(MODULES + EXTRA)}"
        )
    names = args.names or MODULES
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    info = machine()
    print(
        f"# Flask-Offload benchmarks\n\n{info['nproc']} CPUs ({info['cpu']}),"
        f" Python {info['python']}, Flask {info['flask']}, Werkzeug"
        f" {info['werkzeug']}, Flask-Offload {info['flask_offload']}\n",
        flush=True,
    )
    results: dict[str, Result] = {}
    started = time.monotonic()
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        t0 = time.monotonic()
        result: Result = module.run(quick=args.quick)
        results[name] = result
        print(markdown(result), flush=True)
        print(f"({name}: {time.monotonic() - t0:.0f} s)\n", flush=True)
        if name == "pieces":
            print("cProfile, top functions by own time:\n")
            print(result.data["cprofile_top"])
    summary = targets(results)
    if summary is not None:
        print(markdown(summary))
    if args.rst:
        for result in [*results.values(), *([summary] if summary else [])]:
            if not result.skipped:
                print(f"\n{result.title}\n\n{rst_table(result)}\n")
    out = {
        "machine": info,
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "results": {n: r.to_dict() for n, r in results.items()},
        "targets": summary.to_dict() if summary else None,
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        # Merge with the previous file so running one benchmark keeps the others.
        previous: dict[str, t.Any] = {}
        if set(names) != set(MODULES) and os.path.exists(args.json):
            with open(args.json) as f:
                previous = json.load(f).get("results", {})
        out["results"] = {**previous, **out["results"]}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
        print(f"Results written to {os.path.relpath(args.json)}")
    if args.chart and "percall" in results:
        chart(results["percall"], args.chart)
        print(f"Chart written to {os.path.relpath(args.chart)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
