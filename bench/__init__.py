"""Benchmarks for Flask-Offload against its peers.

Run them all with ``python -m bench`` from the repository root, or one with
``python -m bench percall`` (see ``python -m bench --help``). Each benchmark
runs its peers in the same process, interleaved (A B C A B C ...) over
several rounds, and reports medians and ratios: the machine is noisy, so
absolute times mean less than the ratios.

Every benchmark module has ``NAME``, ``TITLE`` and ``run(quick) -> Result``.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import platform
import statistics
import time
import typing as t

#: ~10 request headers, as a browser or API client sends them.
HEADERS: dict[str, str] = {
    "Accept": "application/json",
    "Accept-Encoding": "gzip, deflate, br",
    "Accept-Language": "en-GB,en;q=0.9",
    "Authorization": "Bearer 0123456789abcdef0123456789abcdef",
    "Cache-Control": "no-cache",
    "Origin": "https://shop.example.com",
    "Referer": "https://shop.example.com/orders",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
    "X-Request-Id": "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b",
    "X-Tenant": "acme",
}
#: A small JSON body.
JSON_BODY: dict[str, t.Any] = {
    "order_id": 42,
    "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
    "note": "leave at the door",
}
#: The query string of the benchmark requests.
QUERY = "month=2025-01&format=csv"
#: Worker threads for every pool, so peers compete on equal terms.
WORKERS = 4


@dataclasses.dataclass
class Result:
    """The outcome of one benchmark: a table plus notes."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[t.Any]]
    notes: list[str] = dataclasses.field(default_factory=list)
    data: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    skipped: str | None = None

    def to_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


def interleave(
    peers: t.Mapping[str, t.Callable[[], float]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Call each peer once per round, in turn (A B C A B C ...), after
    ``warmup`` untimed rounds. Each call returns the value it measured.
    """
    for _ in range(warmup):
        for fn in peers.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(rounds):
        for name, fn in peers.items():
            gc.collect()
            samples[name].append(fn())
    return samples


def median(values: t.Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: t.Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def timer() -> float:
    return time.perf_counter()


def fmt(value: t.Any) -> str:
    """Format a table cell."""
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(result: Result) -> str:
    """One result as a Markdown section."""
    lines = [f"### {result.title}", ""]
    if result.skipped:
        lines += [f"Skipped: {result.skipped}", ""]
        return "\n".join(lines)
    lines.append("| " + " | ".join(result.columns) + " |")
    lines.append("|" + "|".join("---" for _ in result.columns) + "|")
    for row in result.rows:
        lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
    lines.append("")
    for note in result.notes:
        lines.append(f"- {note}")
    if result.notes:
        lines.append("")
    return "\n".join(lines)


def rst_table(result: Result) -> str:
    """One result as an RST ``list-table`` (for docs/benchmarks.rst)."""
    lines = [".. list-table::", "    :header-rows: 1", ""]
    for i, row in enumerate([result.columns, *result.rows]):
        cells = row if i == 0 else [fmt(c) for c in row]
        for j, cell in enumerate(cells):
            prefix = "    * - " if j == 0 else "      - "
            lines.append(prefix + (str(cell).replace("*", r"\*") or r"\ "))
    return "\n".join(lines)


def machine() -> dict[str, t.Any]:
    """What the numbers were measured on."""
    import flask
    import werkzeug

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        offload_version = version("Flask-Offload")
    except Exception:
        offload_version = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "flask": version_of(flask, "flask"),
        "werkzeug": version_of(werkzeug, "werkzeug"),
        "flask_offload": offload_version,
    }


def version_of(module: t.Any, dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return str(getattr(module, "__version__", "unknown"))
