"""The programmatic API: collect files, analyse them, apply ``noqa``."""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

from ._analyze import Analyzer
from ._analyze import TooDeepError
from ._model import iter_python_files
from ._model import ModuleInfo
from ._model import Project
from ._model import too_deep

_NOQA = re.compile(
    r"#\s*noqa(?::\s*(?P<codes>[a-z]+[0-9]+(?:[\s,]+[a-z]+[0-9]+)*))?",
    re.IGNORECASE,
)


@dataclass(frozen=True, order=True)
class Finding:
    """One problem found by the checker.

    :param path: The file, as reached from the path given to the checker.
    :param line: 1-based line of the context access (or of the misuse).
    :param col: 1-based column.
    :param code: Rule code, such as ``OFF101``.
    :param message: What is wrong and how to fix it.
    :param via: Qualified names of the functions from the code that starts
        the background work down to the function containing the access.
    """

    path: str
    line: int
    col: int
    code: str
    message: str
    via: tuple[str, ...] = ()

    def format(self) -> str:
        """Render as ``path:line:col: CODE message (via a -> b)``."""
        text = f"{self.path}:{self.line}:{self.col}: {self.code} {self.message}"
        if self.via:
            text += f" (via {' -> '.join(self.via)})"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "code": self.code,
            "message": self.message,
            "via": list(self.via),
        }


@dataclass
class Report:
    """Findings, plus the files that were skipped and why."""

    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    files: int = 0


def _display(path: str) -> str:
    return os.path.normpath(path).replace(os.sep, "/")


def _wanted(code: str, select: Iterable[str] | None, ignore: Iterable[str]) -> bool:
    if any(code.startswith(prefix) for prefix in ignore):
        return False
    return select is None or any(code.startswith(prefix) for prefix in select)


def _suppressed(module: ModuleInfo, line: int, code: str) -> bool:
    lines = module.lines
    if not 0 < line <= len(lines):
        return False
    match = _NOQA.search(lines[line - 1])
    if match is None:
        return False
    codes = match.group("codes")
    if codes is None:
        return True
    return code in {c.upper() for c in re.split(r"[\s,]+", codes) if c}


def check(
    paths: Sequence[str],
    *,
    max_depth: int = 20,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] = (),
) -> Report:
    """Check files and directories (searched recursively for ``*.py``).

    :param paths: Files and directories; all are analysed together, so
        imports between them are followed.
    :param max_depth: How many functions deep to look, counting the one
        run in the background (1: only that one).
    :param select: Only report codes starting with one of these.
    :param ignore: Do not report codes starting with one of these.
    :raises FileNotFoundError: A path does not exist.
    """
    # Building large ASTs triggers many full garbage collections for no
    # benefit (nothing here is garbage until the end); pausing the collector
    # makes loading several times faster.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _check(paths, max_depth, select, ignore)
    finally:
        if enabled:
            gc.enable()


def _check(
    paths: Sequence[str],
    max_depth: int,
    select: Iterable[str] | None,
    ignore: Iterable[str],
) -> Report:
    select = None if select is None else tuple(select)
    ignore = tuple(ignore)
    files: list[tuple[str, str]] = []
    for path in paths:
        if os.path.isdir(path):
            root = os.path.abspath(path)
            files.extend((_display(file), root) for file in iter_python_files(path))
        elif os.path.isfile(path):
            files.append((_display(path), os.path.dirname(os.path.abspath(path))))
        else:
            raise FileNotFoundError(path)
    left_out: list[str] = []
    while True:
        project = Project()
        for file, root in files:
            if file not in left_out:
                project.add_file(file, root)
        try:
            raw = Analyzer(project, max_depth=max_depth).run()
        except TooDeepError as e:
            # Analysing the module may have left the project half updated:
            # start again without it, as if it could not be parsed.
            left_out.append(e.module.path)
            continue
        break
    project.errors.extend(too_deep(path) for path in left_out)
    seen: set[tuple[str, int, int, str]] = set()
    findings = []
    for f in raw:
        key = (f.module.path, f.line, f.col, f.code)
        if key in seen or not _wanted(f.code, select, ignore):
            continue
        seen.add(key)
        if _suppressed(f.module, f.line, f.code):
            continue
        col = f.module.char_col(f.line, f.col)
        findings.append(Finding(f.module.path, f.line, col, f.code, f.message, f.via))
    findings.sort()
    return Report(findings, project.errors, len(project.modules))


def check_paths(paths: Sequence[str], *, max_depth: int = 20) -> list[Finding]:
    """Check files and directories and return the findings, sorted.

    :param paths: Files and directories to analyse together.
    :param max_depth: How many functions deep to look, counting the one
        run in the background (1: only that one).
    :raises FileNotFoundError: A path does not exist.
    """
    return check(paths, max_depth=max_depth).findings
