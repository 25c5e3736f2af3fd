from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flask_offload.check import check
from flask_offload.check import check_paths
from flask_offload.check import Finding
from flask_offload.check import main
from flask_offload.check import RULES

PROJECTS = Path(__file__).parent / "projects"
DOCS = Path(__file__).parents[2] / "docs" / "checker.rst"
_EXPECT = re.compile(r"#\s*expect:\s*(?P<codes>OFF\d+(?:\s*,\s*OFF\d+)*)")


def expected(name: str) -> set[tuple[str, int, str]]:
    """Findings a fixture project announces with ``# expect: CODE`` comments."""
    root = PROJECTS / name
    found = set()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = _EXPECT.search(line)
            if match:
                for code in match.group("codes").split(","):
                    found.add((rel, number, code.strip()))
    return found


def actual(name: str, **kwargs: int) -> set[tuple[str, int, str]]:
    root = PROJECTS / name
    return {
        (Path(os.path.relpath(f.path, root)).as_posix(), f.line, f.code)
        for f in check_paths([str(root)], **kwargs)
    }


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask_offload.check", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize(
    "name",
    [
        "seed",
        "entries",
        "follow",
        "safe",
        "appctx",
        "misuse",
        "misc",
        "regress",
        "aliases",
        "loops",
        "ctors",
        "decorators",
        "names",
        "celery",
        "celery_appctx",
        "defaults",
        "mail",
        "kept",
        "celery_stack",
        "propagating",
        "celery_alias",
        "celery_deep",
        "celery_named",
        "spawn_args",
    ],
)
def test_project_findings(name: str) -> None:
    assert actual(name) == expected(name)


def test_negative_projects_are_clean() -> None:
    assert actual("safe") == set()
    assert actual("clean") == set()


def test_seed_chain_across_modules() -> None:
    root = PROJECTS / "seed"
    (finding,) = check_paths([str(root)])
    assert os.path.relpath(finding.path, root) == os.path.join("libs", "passport.py")
    assert (finding.line, finding.col, finding.code) == (11, 17, "OFF101")
    assert finding.via == (
        "app.create_order",
        "app._record",
        "services.order_service.save_operation_log",
        "libs.passport.PassportService.current_user_id",
    )


def test_seed_text_output() -> None:
    result = run_cli(".", cwd=PROJECTS / "seed")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "libs/passport.py:11:17: OFF101 'request.headers' is read in code run by"
        " a background thread, where no request context exists. Read it in the"
        " view and pass the value, or wrap the target with flask_offload.carry()."
        " (via app.create_order -> app._record ->"
        " services.order_service.save_operation_log ->"
        " libs.passport.PassportService.current_user_id)"
    ]
    assert result.stderr == ""


def test_lambda_target_reported_on_thread_line() -> None:
    root = PROJECTS / "entries"
    findings = check_paths([str(root / "threads.py")])
    lambdas = [f for f in findings if f.via[-1].endswith("<lambda>")]
    assert [(f.line, f.col) for f in lambdas] == [(40, 5)]
    assert lambdas[0].via == ("threads.start", "threads.start.<lambda>")


def test_app_context_message_mentions_missing_request_context() -> None:
    findings = check_paths([str(PROJECTS / "appctx")])
    (request_read,) = [f for f in findings if f.code == "OFF101"]
    assert "gives it an application context but no request context" in (
        request_read.message
    )


def test_max_depth_limits_the_walk() -> None:
    assert ("deep.py", 47, "OFF101") in actual("follow")
    assert ("deep.py", 47, "OFF101") not in actual("follow", max_depth=5)


def test_noqa() -> None:
    result = run_cli("app.py", cwd=PROJECTS / "noqa")
    assert result.returncode == 1
    lines = [line.split(" ", 2)[:2] for line in result.stdout.splitlines()]
    # OFF101 on line 11 and everything on line 12 are suppressed; "noqa: E501"
    # suppresses nothing here, "noqa: OFF102" only the g read.
    assert lines == [["app.py:13:11:", "OFF101"], ["app.py:14:16:", "OFF101"]]


@pytest.mark.parametrize("separator", ["\x0c", "\u2028", "\x1c"])
def test_noqa_lines_are_numbered_as_python_numbers_them(
    tmp_path: Path, separator: str
) -> None:
    """A form feed (or another character ``str.splitlines`` splits at) is
    not a line break for Python: a ``noqa`` applies to its own line, and
    to no other.
    """
    (tmp_path / "app.py").write_text(
        "from threading import Thread\n"
        "from flask import g, request\n"
        f"# page break {separator} here\n"
        "def work():\n"
        "    a = g.user  # noqa: OFF102\n"
        "    return request.args\n"
        "Thread(target=work).start()\n",
        encoding="utf-8",
    )
    findings = check_paths([str(tmp_path)])
    assert [(f.line, f.code) for f in findings] == [(6, "OFF101")]


def test_columns_count_characters_not_bytes(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        "from threading import Thread\n"
        "from flask import request\n"
        "def work():\n"
        "    label = 'größe'; return request.args\n"
        "Thread(target=work).start()\n",
        encoding="utf-8",
    )
    (finding,) = check_paths([str(tmp_path)])
    assert (finding.line, finding.col) == (4, 29)


def test_process_messages_do_not_suggest_carry() -> None:
    findings = {f.line: f.message for f in check_paths([str(PROJECTS / "spawn_args")])}
    for line in (52, 56, 76):
        assert "carry()" not in findings[line].replace("carry() cannot", "")
        assert "_get_current_object" not in findings[line]
    assert "run it with offload.submit() instead" in findings[52]
    assert "a process pool worker" in findings[56]


def test_cli_clean_exit_zero() -> None:
    result = run_cli(str(PROJECTS / "clean"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_cli_json() -> None:
    result = run_cli("--format", "json", "app.py", cwd=PROJECTS / "misc")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert [(d["line"], d["col"], d["code"]) for d in data] == [
        (19, 21, "OFF101"),
        (23, 12, "OFF102"),
        (27, 11, "OFF101"),
        (43, 15, "OFF104"),
        (43, 24, "OFF104"),
    ]
    assert set(data[0]) == {"path", "line", "col", "code", "message", "via"}
    assert data[0]["path"] == "app.py"
    assert data[0]["via"] == ["app.index", "app.partial_target"]


def test_cli_json_clean_is_empty_list() -> None:
    result = run_cli("--format=json", str(PROJECTS / "clean"))
    assert result.returncode == 0
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize(
    "args",
    [
        ["does-not-exist"],
        ["--format", "xml", "."],
        ["--bogus", "."],
        [],
        ["--max-depth", "0", "."],
        ["--select", "E501", "."],
        # A typo or an unknown code would otherwise turn every check off.
        ["--select", "OFF10l", "."],
        ["--select", "OFF999", "."],
        ["--select", "", "."],
        ["--ignore", "OFF9", "."],
    ],
)
def test_cli_usage_errors(args: list[str]) -> None:
    result = run_cli(*args, cwd=PROJECTS / "clean")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "error" in result.stderr


def test_cli_select_and_ignore() -> None:
    root = str(PROJECTS / "misc")
    selected = run_cli("--select", "OFF104", root)
    assert {line.split()[1] for line in selected.stdout.splitlines()} == {"OFF104"}
    by_prefix = run_cli("--select", "off10", root)  # prefixes, any case
    assert "OFF104" in {line.split()[1] for line in by_prefix.stdout.splitlines()}
    ignored = run_cli("--ignore", "OFF101,OFF102,OFF104", root)
    assert (ignored.returncode, ignored.stdout) == (0, "")


def test_main_in_process_with_prog(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(PROJECTS / "clean")], prog="flask offload check") == 0
    assert main(["nope"], prog="flask offload check") == 2
    err = capsys.readouterr().err
    assert "usage: flask offload check" in err
    assert "no such file or directory: nope" in err
    assert main([str(PROJECTS / "seed")]) == 1


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for code in RULES:
        assert code in out


def test_unparsable_file_is_skipped_with_warning(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def (:\n")
    (tmp_path / "escapes.py").write_text('PATTERN = "\\d+"\n')
    report = check([str(tmp_path)])
    assert report.findings == []
    assert report.files == 1
    assert len(report.errors) == 1 and "broken.py" in report.errors[0]
    result = run_cli(str(tmp_path))
    assert result.returncode == 0
    assert "broken.py" in result.stderr


def test_long_elif_chain_is_analysed(tmp_path: Path) -> None:
    # Each elif is nested in the previous branch's orelse: 600 of them must
    # not exhaust the recursion limit.
    branches = "".join(
        f"    elif code == {i}:\n        return {i}\n" for i in range(1, 600)
    )
    source = (
        "import threading\n"
        "from flask import request\n"
        "def dispatch(code):\n"
        "    if code == 0:\n"
        "        return 0\n"
        f"{branches}"
        "    else:\n"
        "        return request.path\n"
        "def view():\n"
        "    threading.Thread(target=dispatch, args=(1,)).start()\n"
    )
    (tmp_path / "dispatch.py").write_text(source)
    line = source.splitlines().index("        return request.path") + 1
    report = check([str(tmp_path)])
    assert report.errors == []
    assert [(f.line, f.code) for f in report.findings] == [(line, "OFF101")]


def test_file_nested_too_deeply_is_skipped_with_warning(tmp_path: Path) -> None:
    (tmp_path / "views.py").write_text(
        "import threading\n"
        "from flask import request\n"
        "def work():\n"
        "    print(request.args)\n"
        "def view():\n"
        "    threading.Thread(target=work).start()\n"
    )
    # Python parses it, but it is deeper than the recursion limit.
    (tmp_path / "deep.py").write_text(f"VALUE = {'-' * 1200}1\n")
    report = check([str(tmp_path)])
    assert [(f.path, f.line) for f in report.findings] == [
        ((tmp_path / "views.py").as_posix(), 4)
    ]
    assert report.files == 1
    assert len(report.errors) == 1 and "deep.py" in report.errors[0]
    result = run_cli(str(tmp_path))
    assert result.returncode == 1
    assert "views.py:4:11: OFF101" in result.stdout
    assert "warning: " in result.stderr and "deep.py" in result.stderr


def test_global_statement_outside_functions(tmp_path: Path) -> None:
    # Python accepts (and ignores) ``global`` in a module or class body.
    (tmp_path / "views.py").write_text(
        "import threading\n"
        "from flask import request\n"
        "global request\n"
        "class Config:\n"
        "    global request\n"
        "def work():\n"
        "    print(request.args)\n"
        "def view():\n"
        "    threading.Thread(target=work).start()\n"
    )
    report = check([str(tmp_path)])
    assert [(f.line, f.code) for f in report.findings] == [(7, "OFF101")]


def test_finding_format() -> None:
    finding = Finding("a.py", 3, 5, "OFF101", "Bad.", ("a.view", "a.work"))
    assert finding.format() == "a.py:3:5: OFF101 Bad. (via a.view -> a.work)"
    assert Finding("a.py", 1, 1, "OFF111", "Bad.").format() == "a.py:1:1: OFF111 Bad."


def test_messages_are_sentences_with_a_fix() -> None:
    for name in ("entries", "misuse", "misc", "appctx", "celery", "celery_appctx"):
        for finding in check_paths([str(PROJECTS / name)]):
            assert finding.message.endswith(".")
            assert any(
                word in finding.message
                for word in ("carry()", "in the view", "Pass the", "instead")
            )


def test_every_rule_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for code in RULES:
        assert code in text


def test_current_user_message_says_it_is_none() -> None:
    findings = check_paths([str(PROJECTS / "entries" / "pools.py")])
    (finding,) = [f for f in findings if "current_user" in f.message]
    assert "current_user is None there" in finding.message


def test_decorator_wrapper_is_in_the_chain() -> None:
    findings = check_paths([str(PROJECTS / "decorators")])
    vias = {f.line: f.via for f in findings if f.path.endswith("app.py")}
    # The wrapper of @async_task starts the decorated function in a thread.
    assert vias[37] == ("decorators.async_task.wrapper", "app.send_receipt")
    assert vias[22] == (
        "app.index",
        "app.work",
        "decorators.passthrough.wrapper",
        "app.plain",
    )


def test_shared_wrapper_in_loop_message() -> None:
    findings = check_paths([str(PROJECTS / "loops")])
    (first, *_) = findings
    assert (first.line, first.code) == (21, "OFF112")
    assert "'wrapped'" in first.message
    assert "executor.submit() on every pass" in first.message


def test_celery_messages_suggest_an_offload_task() -> None:
    findings = check_paths([str(PROJECTS / "celery")])
    plain = next(f for f in findings if f.via == ("app.plain",))
    assert "a Celery worker, where no request context exists" in plain.message
    assert "@offload.task" in plain.message and "carry()" not in plain.message
    (appctx,) = [
        f for f in check_paths([str(PROJECTS / "celery_appctx")]) if f.code == "OFF101"
    ]
    assert "its task class gives it an application context but no request" in (
        appctx.message
    )
