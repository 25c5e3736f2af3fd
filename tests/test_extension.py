"""init_app, config, several apps, the factory pattern, submitting outside a request."""

from __future__ import annotations

import gc
import logging
import threading

import click
import pytest
from flask import current_app
from flask import Flask
from flask import g
from flask import has_request_context
from flask.testing import FlaskCliRunner

import flask_offload
from flask_offload import Job
from flask_offload import Offload
from flask_offload.extension import DEFAULTS
from flask_offload.extension import settings_for


def test_init_app_sets_defaults_and_registers(app: Flask) -> None:
    offload = Offload()
    offload.init_app(app)
    assert app.extensions["offload"] is offload
    for key, value in DEFAULTS.items():
        assert app.config[key] == value
    assert not hasattr(offload, "app")
    with app.app_context():
        assert offload.submit(lambda: current_app.name).result(10) == app.name
        offload.shutdown()


def test_registering_twice_is_an_error(app: Flask) -> None:
    Offload(app)
    with pytest.raises(RuntimeError, match="already been registered"):
        Offload(app)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("OFFLOAD_BACKEND", "rq", "OFFLOAD_BACKEND is 'rq'"),
        ("OFFLOAD_MAX_WORKERS", 0, "at least 1"),
        ("OFFLOAD_QUEUE_FULL", "drop", "'raise' or 'block'"),
        ("OFFLOAD_CARRY_G", "user", "OFFLOAD_CARRY_G must be"),
        ("OFFLOAD_URL_PREFIX", "offload", "starts with '/'"),
        # Shown as given, not as the string 'None'.
        ("OFFLOAD_URL_PREFIX", None, r"like '/offload', not None\."),
        ("OFFLOAD_MAX_WORKERS", True, "OFFLOAD_MAX_WORKERS must be a whole number"),
        ("OFFLOAD_MAX_QUEUE", "abc", "OFFLOAD_MAX_QUEUE must be a whole number"),
        ("OFFLOAD_MAX_QUEUE", -1, "OFFLOAD_MAX_QUEUE must be a whole number"),
        ("OFFLOAD_MAX_FINISHED", -1, "OFFLOAD_MAX_FINISHED must be a whole number"),
        ("OFFLOAD_MAX_BODY_SIZE", "16MB", "OFFLOAD_MAX_BODY_SIZE must be a whole"),
        ("OFFLOAD_MAX_BODY_SIZE", None, "OFFLOAD_MAX_BODY_SIZE must be a whole"),
        ("OFFLOAD_MAX_BODY_SIZE", 1.5, "OFFLOAD_MAX_BODY_SIZE must be a whole"),
        (
            "OFFLOAD_SHUTDOWN_TIMEOUT",
            None,
            "OFFLOAD_SHUTDOWN_TIMEOUT must be a finite number",
        ),
        (
            "OFFLOAD_SHUTDOWN_TIMEOUT",
            -1,
            "OFFLOAD_SHUTDOWN_TIMEOUT must be a finite number",
        ),
        ("OFFLOAD_RESULT_TTL", "1h", "OFFLOAD_RESULT_TTL must be a finite number"),
        (
            "OFFLOAD_SNAPSHOT_MAX_AGE",
            0,
            "OFFLOAD_SNAPSHOT_MAX_AGE must be a finite number",
        ),
        ("OFFLOAD_SHUTDOWN_TIMEOUT", float("inf"), "finite number of seconds"),
        ("OFFLOAD_SNAPSHOT_MAX_AGE", "inf", "finite number of seconds"),
        ("OFFLOAD_RESULT_TTL", 1e300, "finite number of seconds"),
        ("OFFLOAD_RESULT_TTL", float("nan"), "finite number of seconds"),
        ("OFFLOAD_CARRY_G", 5, "OFFLOAD_CARRY_G must be"),
        ("OFFLOAD_CREDENTIAL_HEADERS", 5, "OFFLOAD_CREDENTIAL_HEADERS must be a list"),
        ("OFFLOAD_DASHBOARD", "maybe", "OFFLOAD_DASHBOARD must be True or False"),
        ("OFFLOAD_PROPAGATE", 2, "OFFLOAD_PROPAGATE must be True or False"),
        ("OFFLOAD_CARRY_CREDENTIALS", [], "OFFLOAD_CARRY_CREDENTIALS must be True"),
        ("OFFLOAD_MAX_QUEUE", False, "OFFLOAD_MAX_QUEUE must be a whole number"),
    ],
)
def test_bad_config_is_explained(key: str, value: object, match: str) -> None:
    app = Flask(__name__)
    app.config[key] = value
    with pytest.raises(ValueError, match=match):
        Offload(app)
    assert "offload" not in app.extensions  # nothing half-registered
    app.config[key] = DEFAULTS[key]
    Offload(app)  # fixing the config is enough


def test_config_numbers_from_strings() -> None:
    """Numbers given as strings (from environment variables) are read."""
    app = Flask(__name__)
    app.config.update(
        OFFLOAD_MAX_QUEUE="50", OFFLOAD_MAX_BODY_SIZE="1024", OFFLOAD_RESULT_TTL="60"
    )
    Offload(app)
    settings = settings_for(app)
    assert (settings.max_queue, settings.max_body_size) == (50, 1024)
    assert settings.result_ttl == 60.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("false", False), ("0", False), ("Off", False), ("", False), (None, False)]
    + [("true", True), ("1", True), (" YES ", True), (1, True), (True, True)],
)
def test_config_switches_from_strings(value: object, expected: bool) -> None:
    """Switches given as strings (from environment variables) are read as
    they read: "false" turns nothing on.
    """
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="s",
        OFFLOAD_DASHBOARD=value,
        OFFLOAD_PROPAGATE=value,
        OFFLOAD_CARRY_CREDENTIALS=value,
        OFFLOAD_JOB_TEARDOWN_REQUEST=value,
    )
    offload = Offload(app)
    try:
        settings = settings_for(app)
        assert settings.dashboard is expected
        assert settings.propagate is expected
        assert settings.carry_credentials is expected
        assert settings.job_teardown_request is expected
        # What the user sees: the dashboard's URLs exist only when it is on.
        assert ("offload" in app.blueprints) is expected
    finally:
        with app.app_context():
            offload.shutdown()


def test_config_read_once(app: Flask) -> None:
    app.config["OFFLOAD_CARRY_G"] = None
    offload = Offload(app)
    app.config["OFFLOAD_CARRY_G"] = "primitives"  # too late: ignored
    with app.test_request_context("/"):
        g.x = 1
        assert offload.submit(lambda: g.get("x")).result(10) is None
        offload.shutdown()


def test_factory_pattern_and_several_apps() -> None:
    offload = Offload()

    def create_app(name: str, workers: int) -> Flask:
        app = Flask(name)
        app.config["OFFLOAD_MAX_WORKERS"] = workers
        offload.init_app(app)
        return app

    one, two = create_app("one", 1), create_app("two", 2)
    names: dict[str, set[str]] = {"one": set(), "two": set()}
    gate = threading.Barrier(2, timeout=10)

    def where() -> str:
        names[current_app.name].add(threading.current_thread().name)
        return current_app.name

    with one.app_context():
        job_one = offload.submit(where)
    with two.app_context():
        jobs_two = [offload.submit(gate.wait) for _ in range(2)] + [
            offload.submit(where)
        ]
    assert job_one.result(10) == "one"
    assert jobs_two[-1].result(10) == "two"
    with one.app_context():
        assert offload.jobs() == [job_one]  # each app has its own jobs
        offload.shutdown()
    with two.app_context():
        assert job_one not in offload.jobs()
        offload.shutdown()
    assert names["one"].isdisjoint(names["two"])  # and its own pool


def test_an_apps_state_goes_with_the_app() -> None:
    offload = Offload()

    def run_one_job(name: str) -> list[Job]:
        app = Flask(name)
        offload.init_app(app)
        with app.app_context():
            job = offload.submit(current_app_name)
            assert job.result(10) == name
            offload.shutdown()
            return offload.jobs()

    assert [job.name for job in run_one_job("first")] == [
        f"{__name__}.current_app_name"
    ]
    gc.collect()  # a Flask app is freed by the collector (it has cycles)
    # Outside an app context, offload.jobs() lists the jobs of every app
    # the extension knows: none once the app is gone.
    assert offload.jobs() == []
    assert len(run_one_job("second")) == 1
    gc.collect()
    assert offload.jobs() == []


def current_app_name() -> str:
    return current_app.name


def test_submit_needs_an_app_context() -> None:
    offload = Offload(Flask(__name__))
    with pytest.raises(RuntimeError, match="Working outside of application context"):
        offload.submit(print)


def test_app_not_registered() -> None:
    offload = Offload(Flask("a"))
    other = Flask("b")
    with (
        other.app_context(),
        pytest.raises(RuntimeError, match="Did you forget to call 'init_app'"),
    ):
        offload.submit(print)


def test_submit_in_app_context_only(app: Flask, offload: Offload) -> None:
    def probe() -> tuple[str, bool]:
        return current_app.name, has_request_context()

    with app.app_context():
        assert offload.submit(probe).result(10) == (app.name, False)


def test_job_outside_a_request_builds_urls_and_has_its_own_g(
    app: Flask, offload: Offload
) -> None:
    """A job's app context makes its URL adapter and ``g`` on first use:
    both must still behave as a fresh app context's do.
    """
    from flask import url_for

    app.config["SERVER_NAME"] = "shop.example.com"

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> str:
        return str(order_id)

    def probe() -> tuple[str, list[str], str]:
        before = sorted(vars(g))
        g.order = 7
        return url_for("order", order_id=g.order), before, g.order

    with app.app_context():
        g.tenant = "acme"  # carried: a primitive (OFFLOAD_CARRY_G)
        g._login_user = object()  # never carried: underscored
        first = offload.submit(probe).result(10)
        second = offload.submit(probe).result(10)
    # The second job does not see the first one's g.order.
    assert first == ("http://shop.example.com/orders/7", ["tenant"], 7)
    assert second == first


def test_submit_from_cli_command(app: Flask, offload: Offload) -> None:
    results: list[tuple[str, bool]] = []

    @app.cli.command("export")
    def export() -> None:
        job = offload.submit(lambda: (current_app.name, has_request_context()))
        results.append(job.result(10))
        click.echo(f"{job.id} {job.state}")

    runner = FlaskCliRunner(app)
    out = runner.invoke(args=["export"])
    assert out.exit_code == 0, out.output
    assert out.output.strip().endswith("SUCCEEDED")
    assert results == [(app.name, False)]


def test_cli_jobs_lists_jobs(app: Flask, offload: Offload) -> None:
    @app.cli.command("work")
    def work() -> None:
        offload.submit(int, "3").result(10)
        offload.submit(int, "x").exception(10)

    runner = FlaskCliRunner(app)
    assert runner.invoke(args=["work"]).exit_code == 0
    out = runner.invoke(args=["offload", "jobs"])
    assert out.exit_code == 0
    lines = out.output.strip().splitlines()
    assert len(lines) == 2
    assert "FAILED" in lines[0] and "builtins.int" in lines[0]
    assert "SUCCEEDED" in lines[1]
    failed = runner.invoke(args=["offload", "jobs", "--state", "failed", "--json"])
    assert '"state": "FAILED"' in failed.output
    bogus = runner.invoke(args=["offload", "jobs", "--state", "bogus"])
    assert bogus.exit_code == 2  # a usage error, not a traceback
    assert "'bogus' is not one of" in bogus.output
    assert "succeeded" in bogus.output.lower()
    assert runner.invoke(args=["offload", "jobs", "--help"]).output.startswith("Usage")


def test_all_matches_public_names() -> None:
    public = {
        name
        for name, obj in vars(flask_offload).items()
        if not name.startswith("_")
        and getattr(obj, "__module__", "").startswith("flask_offload")
    }
    public.add("current_job")  # a LocalProxy: its __module__ is werkzeug's
    modules = {
        "errors",
        "extension",
        "jobs",
        "propagation",
        "snapshot",
        "tasks",
        "compat",
    }
    modules |= {"files", "signing", "backends", "signals", "cli", "check"}
    assert set(flask_offload.__all__) == public - modules
    assert len(flask_offload.__all__) == len(set(flask_offload.__all__))
    for name in flask_offload.__all__:
        assert getattr(flask_offload, name) is not None


def test_submit_and_carry_refuse_what_is_not_callable(
    app: Flask, offload: Offload
) -> None:
    from flask_offload import carry

    with app.app_context():
        with pytest.raises(TypeError, match="needs a function to run, not 42"):
            offload.submit(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="'carry' needs a function to wrap"):
            carry("report")  # type: ignore[arg-type]
        assert offload.jobs() == []  # nothing half-submitted


def test_misspelt_settings_are_named(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """A misspelt setting would leave the app on the default without a word
    (Flask ignores unknown keys): ``init_app`` logs which setting was meant.
    A key of the app's own, close to no setting, passes quietly.
    """
    app.config.update(
        OFFLOAD_MAX_WORKER=2,
        OFFLOAD_DASHBAORD=True,
        # The app's own keys, some starting with a setting's name.
        OFFLOAD_APP_OWN_DIR="/tmp",
        OFFLOAD_STORAGE_DIR="/tmp",
        OFFLOAD_CELERY_QUEUE="jobs",
        OFFLOAD_MAX_RETRIES=3,
        OFFLOAD_SNAPSHOT_MAX_SIZE=1,
    )
    with caplog.at_level(logging.WARNING, logger="flask_offload"):
        Offload(app)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "The config key OFFLOAD_MAX_WORKER is not a Flask-Offload setting and has"
        " no effect: did you mean OFFLOAD_MAX_WORKERS? See the settings in the"
        " configuration docs.",
        "The config key OFFLOAD_DASHBAORD is not a Flask-Offload setting and has"
        " no effect: did you mean OFFLOAD_DASHBOARD? See the settings in the"
        " configuration docs.",
    ]
