"""Command line interface: ``python -m flask_offload.check PATH...``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ._core import check
from ._rules import RULES


def _codes(value: str) -> list[str]:
    codes = [c.strip().upper() for c in value.split(",") if c.strip()]
    if not codes:
        raise argparse.ArgumentTypeError(
            "no rule code given; pass codes or prefixes like OFF101,OFF11"
        )
    for code in codes:
        # A prefix no rule has (a typo) would silently turn every check off.
        if not any(rule.startswith(code) for rule in RULES):
            raise argparse.ArgumentTypeError(
                f"not a rule code or prefix: {code!r} (the rules are listed by --help)"
            )
    return codes


def _depth(value: str) -> int:
    try:
        depth = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if depth < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return depth


def _parser(prog: str | None) -> argparse.ArgumentParser:
    rules = "\n".join(f"  {code}  {text}" for code, text in RULES.items())
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Find Flask context bugs in code run by threads, executors,"
        " pools and greenlets, without importing or running it.",
        epilog=f"rules:\n{rules}\n\nexit status: 0 clean, 1 findings, 2 usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format"
    )
    parser.add_argument(
        "--select",
        type=_codes,
        default=None,
        metavar="CODES",
        help="only report these codes (comma separated prefixes)",
    )
    parser.add_argument(
        "--ignore",
        type=_codes,
        default=[],
        metavar="CODES",
        help="do not report these codes (comma separated prefixes)",
    )
    parser.add_argument(
        "--max-depth",
        type=_depth,
        default=20,
        metavar="N",
        help=(
            "how many functions deep to look, counting the one run in the"
            " background (1: only that one; default 20)"
        ),
    )
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run the checker and return the exit status.

    :param argv: Arguments without the program name; ``sys.argv[1:]`` if
        not given.
    :param prog: Program name shown in usage and errors, such as
        ``"flask offload check"``; defaults to ``python -m flask_offload.check``.
    :return: 0 if nothing was found, 1 if something was, 2 on usage errors.
    """
    parser = _parser(prog or "python -m flask_offload.check")
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    try:
        report = check(
            args.paths, max_depth=args.max_depth, select=args.select, ignore=args.ignore
        )
    except FileNotFoundError as e:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: no such file or directory: {e}", file=sys.stderr)
        return 2
    for error in report.errors:
        print(f"warning: {error}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps([f.to_dict() for f in report.findings], indent=2))
    else:
        for finding in report.findings:
            print(finding.format())
    return 1 if report.findings else 0
