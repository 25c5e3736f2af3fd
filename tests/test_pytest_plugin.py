"""The pytest plugin, as a user's test suite sees it."""

from __future__ import annotations

import pytest

APP = """
import threading
import pytest
from flask import Flask, request
from flask_offload import Offload

app = Flask("user_app")
offload = Offload(app)
"""


def test_fixtures_in_a_users_suite(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(APP)
    pytester.makepyfile(
        """
        import threading
        from flask import request
        from conftest import app, offload

        def where_and_x():
            return threading.current_thread(), request.args["x"]

        def test_inline(offload_inline):
            with app.test_request_context("/?x=1"):
                here = threading.current_thread()
                job = offload.submit(where_and_x)
                assert job.done()
                assert job.result() == (here, "1")

        def test_join(offload_join):
            with app.test_request_context("/?x=2"):
                job = offload.submit(lambda: request.args["x"])
            assert offload_join(5)
            assert job.result(0) == "2"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_leak_check_reports_running_job(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(APP)
    pytester.makepyfile(
        """
        import threading
        from conftest import app, offload

        gate = threading.Event()

        def test_leaves_a_job_running(offload_leak_check):
            with app.app_context():
                offload.submit(gate.wait, 60)

        def test_release():
            gate.set()
            offload.join(5)
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-o", "console_output_style=classic"
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*Flask-Offload leak check: jobs still unfinished*"])


def test_leak_check_reports_pushed_context(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(APP)
    pytester.makepyfile(
        """
        from conftest import app

        def test_forgets_to_pop(offload_leak_check):
            app.app_context().push()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*a Flask context is still pushed*"])


def test_context_pushed_by_a_fixture_is_not_a_leak(pytester: pytest.Pytester) -> None:
    """``with app.app_context(): yield app`` in a fixture is common (to
    create tables): the context it keeps pushed is not the test's leak.
    """
    pytester.makeconftest(
        APP
        + """
@pytest.fixture
def pushed_app():
    with app.app_context():
        yield app
"""
    )
    pytester.makepyfile(
        """
        from conftest import offload

        def test_inline(pushed_app, offload_inline):
            assert offload.submit(int, "1").result() == 1

        def test_join(pushed_app, offload_join):
            offload.submit(int)
            assert offload_join(5)

        def test_check(pushed_app, offload_leak_check):
            pass

        def test_leak_on_top(pushed_app, offload_leak_check):
            pushed_app.app_context().push()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_leak_on_top*", "*a Flask context is still pushed*"]
    )


def test_plugin_defines_only_offload_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    names = {
        line.split()[0]
        for line in result.stdout.lines
        if line.endswith(".py:" + line.rsplit(":", 1)[-1])
        and "pytest_plugin.py" in line
        and "flask_offload" in line
    }
    assert names == {"offload_inline", "offload_join", "offload_leak_check"}
