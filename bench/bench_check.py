"""Time the static checker on a generated 50k-line code base.

Run with ``python bench/bench_check.py [--lines N] [--runs N]``. The code
base has many packages and modules importing each other, classes with
methods calling across modules, thread, executor and pool entry points, and
some context reads at the end of call chains.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

from flask_offload.check import check

FUNCS = 12
CLASSES = 2
METHODS = 5


def _function(rng: random.Random, name: str, targets: list[str], reads: bool) -> str:
    call = rng.choice(targets)
    lines = [
        f"def {name}(value, extra=None):",
        f'    """Compute step {name}."""',
        "    total = value * 2",
        "    for i in range(3):",
        "        total += i",
        "    items = [total + n for n in range(4)]",
        "    if extra:",
        "        total -= len(items)",
    ]
    if reads:
        lines.append('    total += len(request.headers.get("X-Trace", ""))')
    lines += [f"    return {call}(total) if value > 100 else total", "", ""]
    return "\n".join(lines)


def _class(rng: random.Random, name: str, targets: list[str], reads: bool) -> str:
    lines = [
        f"class {name}:",
        "    def __init__(self, size):",
        "        self.size = size",
        "        self.pool = ThreadPoolExecutor(2)",
        "",
    ]
    for m in range(METHODS):
        call = rng.choice(targets)
        lines += [
            f"    def method_{m}(self, value):",
            "        data = {'value': value, 'size': self.size}",
            "        if data['value'] > self.size:",
            f"            return self.method_{(m + 1) % METHODS}(value - 1)",
            f"        return {call}(value)",
            "",
        ]
    body = "g.user" if reads else "self.size"
    lines += [
        "    @staticmethod",
        "    def current():",
        f"        return {body}",
        "",
        "    def start(self, items):",
        "        self.pool.submit(self.method_0, 1)",
        "        list(self.pool.map(self.method_1, items))",
        "        return self.current()",
        "",
        "",
    ]
    return "\n".join(lines)


def _module(rng: random.Random, pkg: int, mod: int, pkgs: int, mods: int) -> str:
    imports = []
    targets = [f"helper_{i}" for i in range(FUNCS)]
    for n in range(4):
        p, m = rng.randrange(pkgs), rng.randrange(mods)
        if (p, m) == (pkg, mod):
            continue
        alias = f"other_{n}"
        imports.append(f"from app_{p} import mod_{m} as {alias}")
        targets.append(f"{alias}.helper_{rng.randrange(FUNCS)}")
    head = [
        f'"""Generated module {pkg}.{mod}."""',
        "",
        "import threading",
        "from concurrent.futures import ThreadPoolExecutor",
        "from multiprocessing.dummy import Pool",
        "",
        "from flask import Flask",
        "from flask import g",
        "from flask import request",
        "",
        *sorted(imports),
        "",
        "app = Flask(__name__)",
        "",
        "",
    ]
    parts = ["\n".join(head)]
    for i in range(FUNCS):
        reads = rng.random() < 0.05
        parts.append(_function(rng, f"helper_{i}", targets, reads))
    for c in range(CLASSES):
        parts.append(_class(rng, f"Service{c}", targets, rng.random() < 0.05))
    for v in range(3):
        target = rng.choice(targets)
        parts.append(
            "\n".join(
                [
                    f'@app.route("/view-{pkg}-{mod}-{v}")',
                    f"def view_{v}():",
                    f"    threading.Thread(target={target}, args=(1,)).start()",
                    "    with Pool(2) as pool:",
                    f"        pool.map(helper_{v}, range(3))",
                    "    Service0(3).start([1, 2])",
                    '    return "ok"',
                    "",
                    "",
                ]
            )
        )
    return "".join(parts).rstrip() + "\n"


def generate(root: str, lines: int, seed: int = 1) -> tuple[int, int]:
    """Write packages of modules until about ``lines`` lines exist."""
    rng = random.Random(seed)
    per_module = len(_module(random.Random(0), 0, 0, 1, 2).splitlines())
    modules = max(2, lines // per_module)
    mods = 25
    pkgs = max(1, -(-modules // mods))
    total = files = 0
    for p in range(pkgs):
        pkg_dir = os.path.join(root, f"app_{p}")
        os.makedirs(pkg_dir)
        with open(os.path.join(pkg_dir, "__init__.py"), "w") as f:
            f.write("")
        for m in range(mods):
            text = _module(rng, p, m, pkgs, mods)
            with open(os.path.join(pkg_dir, f"mod_{m}.py"), "w") as f:
                f.write(text)
            total += text.count("\n")
            files += 1
    return total, files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        lines, files = generate(root, args.lines)
        times = []
        cpu = []
        findings = 0
        for _ in range(args.runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            report = check([root])
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            findings = len(report.findings)
    rows = [
        ("files", f"{files}"),
        ("lines", f"{lines}"),
        ("findings", f"{findings}"),
        ("runs", f"{args.runs}"),
        ("min", f"{min(times):.2f} s"),
        ("median", f"{statistics.median(times):.2f} s"),
        ("max", f"{max(times):.2f} s"),
        ("median cpu", f"{statistics.median(cpu):.2f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"flask_offload.check, python {sys.version.split()[0]}")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
