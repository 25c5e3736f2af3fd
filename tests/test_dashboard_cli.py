"""``flask offload jobs`` and the ``--help`` of the ``flask offload``
commands, run through Flask's CLI runner.
"""

from __future__ import annotations

import json
import threading

from flask import Flask

from flask_offload import current_job
from flask_offload import Offload

WAIT = 10


def test_jobs_lists_state_progress_and_name(app: Flask, offload: Offload) -> None:
    release = threading.Event()
    started = threading.Event()

    def held() -> None:
        current_job.set_progress(0.4, "parsed 4,000 rows")
        started.set()
        assert release.wait(WAIT)

    def failing() -> None:
        raise ValueError("No.")

    with app.app_context():
        running = offload.submit(held)
        failed = offload.submit(failing)
    assert started.wait(WAIT) and failed.wait(WAIT)
    runner = app.test_cli_runner()
    try:
        table = runner.invoke(args=["offload", "jobs"])
        assert table.exit_code == 0, table.output
        lines = table.output.splitlines()
        assert lines[0].startswith(f"{failed.id}  FAILED")
        assert lines[0].endswith("failing")
        assert lines[1].startswith(f"{running.id}  RUNNING   40%")
        assert lines[1].endswith("held")

        only = runner.invoke(args=["offload", "jobs", "--state", "failed"])
        assert only.output.splitlines() == [lines[0]]

        as_json = runner.invoke(
            args=["offload", "jobs", "--json", "--state", "RUNNING"]
        )
        data = json.loads(as_json.output)
        assert [(d["id"], d["progress"], d["message"]) for d in data] == [
            (running.id, 0.4, "parsed 4,000 rows")
        ]
    finally:
        release.set()
    assert running.wait(WAIT)
    none = runner.invoke(args=["offload", "jobs", "--state", "PENDING"])
    assert none.output == "No jobs.\n"


def test_a_finished_job_shows_100_percent_as_on_the_dashboard(
    app: Flask, offload: Offload
) -> None:
    def part_way() -> None:
        current_job.set_progress(0.57)

    with app.app_context():
        job = offload.submit(part_way)
        assert job.wait(WAIT)
    table = app.test_cli_runner().invoke(args=["offload", "jobs"]).output
    assert table.startswith(f"{job.id}  SUCCEEDED 100%  ")


def test_help_says_what_each_command_does(app: Flask, offload: Offload) -> None:
    runner = app.test_cli_runner()
    group = runner.invoke(args=["offload", "--help"])
    assert group.exit_code == 0
    for name in ("jobs", "worker", "check"):
        assert f"  {name} " in group.output
    assert "Run a Celery worker for this app" in group.output
    jobs = runner.invoke(args=["offload", "jobs", "--help"])
    assert jobs.exit_code == 0
    assert "List the jobs this process knows" in jobs.output
    assert "--state" in jobs.output and "--json" in jobs.output
    # Without Celery configured, --help still says what the worker is for...
    worker = runner.invoke(args=["offload", "worker", "--help"])
    assert worker.exit_code == 0
    assert "Run a Celery worker for this app" in worker.output
    # ...and running it explains why it cannot.
    run = runner.invoke(args=["offload", "worker"])
    assert run.exit_code == 2
    assert "runs Celery workers" in run.output
