"""``flask offload ...`` commands, added to the app's CLI by ``init_app``."""

from __future__ import annotations

import json
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from .jobs import JobState
from .jobs import progress_percent

offload_cli = AppGroup(
    "offload", help="Flask-Offload: jobs, workers and the context checker."
)


@offload_cli.command("jobs")
@click.option(
    "--state",
    type=click.Choice([s.value for s in JobState], case_sensitive=False),
    default=None,
    help="Only jobs in this state, such as FAILED.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def jobs_command(state: str | None, as_json: bool) -> None:
    """List the jobs this process knows.

    The thread and inline backends keep jobs in the memory of the process
    that runs them, so from a separate CLI process this lists the jobs that
    this command's own app submitted (usually none).
    """
    offload = current_app.extensions["offload"]
    jobs = offload.jobs(state.upper() if state else None)
    if as_json:
        click.echo(json.dumps([j.to_dict() for j in jobs], indent=2))
        return
    if not jobs:
        click.echo("No jobs.")
        return
    for job in jobs:
        d = job.to_dict()
        percent = progress_percent(d)
        progress = f" {percent}" if percent else ""
        click.echo(f"{d['id']}  {d['state']:<9}{progress}  {d['name']}")


@offload_cli.command(
    "worker",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def worker_command(args: tuple[str, ...]) -> None:
    """Run a Celery worker for this app (OFFLOAD_BACKEND = 'celery').

    Extra arguments go to 'celery worker', for example
    'flask --app yourapp offload worker --concurrency 4 --loglevel INFO'.
    With the Celery backend, --help also lists Celery's worker options.
    """
    celery = current_app.config.get("OFFLOAD_BACKEND") == "celery"
    if "--help" in args or "-h" in args:
        click.echo(click.get_current_context().get_help())
        if not celery:
            return
        click.echo("\nCelery's worker options:\n")
    if not celery:
        raise click.UsageError(
            "'flask offload worker' runs Celery workers, but OFFLOAD_BACKEND is"
            f" {current_app.config.get('OFFLOAD_BACKEND')!r}. Set OFFLOAD_BACKEND"
            " = 'celery' (the thread backend needs no separate worker)."
        )
    from .backends.celery import run_worker

    run_worker(current_app._get_current_object(), list(args))  # type: ignore[attr-defined]


@offload_cli.command(
    "check",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def check_command(args: tuple[str, ...]) -> None:
    """Find Flask context bugs in background code (static analysis).

    Same as 'python -m flask_offload.check'; pass --help for its options.
    """
    from .check import main

    sys.exit(main(list(args), prog="flask offload check"))
