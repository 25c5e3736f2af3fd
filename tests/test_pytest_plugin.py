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


def test_a_client_fixture_that_keeps_its_context_is_not_a_leak(
    pytester: pytest.Pytester,
) -> None:
    """``with app.test_client() as c: yield c`` keeps the last request's
    context until the fixture's own teardown, which may come after the
    leak check's: not a leak, in either fixture order.
    """
    pytester.makeconftest(
        APP
        + """
@app.get("/")
def index():
    return offload.submit(lambda: request.path).id

@pytest.fixture
def client():
    with app.test_client() as c:
        yield c
"""
    )
    pytester.makepyfile(
        """
        def test_client_then_join(client, offload_join):
            assert client.get("/").status_code == 200
            assert offload_join(5)

        def test_join_then_client(offload_join, client):
            assert client.get("/").status_code == 200
            assert offload_join(5)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_job_left_running_is_reported_once(pytester: pytest.Pytester) -> None:
    """A job that never ends fails the test that submitted it, naming it and
    where it was submitted; later tests are not blamed for it, and the run
    does not wait OFFLOAD_SHUTDOWN_TIMEOUT for it at exit.
    """
    # Without the plugin's own drain, exit would wait this long for the job.
    pytester.makeconftest(
        APP.replace(
            "offload = Offload(app)",
            'app.config["OFFLOAD_SHUTDOWN_TIMEOUT"] = 600\noffload = Offload(app)',
        )
    )
    pytester.makepyfile(
        """
        import threading
        from conftest import app, offload

        gate = threading.Event()

        def test_leaves_a_job_running(offload_leak_check):
            with app.app_context():
                offload.submit(gate.wait, 600)

        def test_next(offload_leak_check):
            with app.app_context():
                assert offload.submit(int, "7").result(5) == 7

        def test_after_that(offload_join):
            assert True
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-o", "console_output_style=classic", timeout=90
    )
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*leak check: jobs still unfinished after 5.0s:"
            " <Job * 'threading.Event.wait' RUNNING> submitted from"
            " *test_a_job_left_running_is_reported_once.py:* in"
            " test_leaves_a_job_running*"
        ]
    )
    # "E   " is the traceback's line; the short summary's "ERROR ..." line
    # repeats it when the terminal is wide enough.
    [failure] = [
        line
        for line in result.stdout.lines
        if line.startswith("E ") and "Flask-Offload leak check" in line
    ]
    assert "carried call" not in failure


def test_a_carried_call_is_blamed_on_the_test_that_started_it(
    pytester: pytest.Pytester,
) -> None:
    """A carried thread a session fixture started (a consumer that runs all
    along) is no test's leak; one a test leaves running fails that test
    only, once: later tests neither wait for it nor report it.
    """
    pytester.makeconftest(
        APP
        + """
from flask_offload import carry

stop = threading.Event()


@pytest.fixture(scope="session", autouse=True)
def consumer():
    with app.test_request_context("/"):
        thread = threading.Thread(target=carry(stop.wait))
    thread.start()
    yield
    stop.set()
    thread.join()
"""
    )
    pytester.makepyfile(
        """
        import threading
        from flask_offload import carry
        from conftest import app

        gate = threading.Event()

        def test_first(offload_leak_check):
            assert True

        def test_leaves_a_carried_call_running(offload_leak_check):
            with app.test_request_context("/"):
                threading.Thread(target=carry(gate.wait), args=(60,)).start()

        def test_next(offload_leak_check):
            assert True

        def test_release():
            gate.set()
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-o", "console_output_style=classic", timeout=90
    )
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        ["*test_leaves_a_carried_call_running*", "*1 carried call(s) still running*"]
    )
    errors = [line for line in result.outlines if line.startswith("ERROR ")]
    assert len(errors) == 1 and "test_leaves_a_carried_call_running" in errors[0]
