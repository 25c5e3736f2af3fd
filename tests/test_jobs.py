"""The Job handle, the registry, tasks, signals and failure reporting."""

from __future__ import annotations

import json
import logging
import sys
import threading
import typing as t
import uuid

import pytest
from flask import Flask
from flask import has_request_context

from flask_offload import current_job
from flask_offload import Job
from flask_offload import JobCancelled
from flask_offload import JobState
from flask_offload import Offload
from flask_offload import signals

from .conftest import LiveServer


def test_job_fields_and_result(app: Flask, offload: Offload) -> None:
    with app.app_context():
        job = offload.submit(pow, 2, 10)
        assert job.result(10) == 1024
    assert job.state is JobState.SUCCEEDED
    assert job.state == "SUCCEEDED"
    assert len(job.id) == 32 and int(job.id, 16) >= 0
    assert job.name == "builtins.pow"
    assert job.submitted_from is not None
    assert job.submitted_from.startswith("tests/test_jobs.py:")
    assert job.submitted_from.endswith(" in test_job_fields_and_result")
    assert job.submitted_at <= job.started_at <= job.finished_at  # type: ignore[operator]
    assert job.submitted_at.tzinfo is not None
    assert job.done() and job.wait(0)
    assert job.exception() is None
    d = job.to_dict()
    json.dumps(d)
    assert d["state"] == "SUCCEEDED" and d["error"] is None and d["duration"] >= 0
    assert "result" not in d and "args" not in d


def test_job_ids_are_distinct_uuid4(app: Flask, offload: Offload) -> None:
    # More jobs than one batch of random ids holds (128), so ids from several
    # batches are checked.
    with app.app_context():
        jobs = [offload.submit(int) for _ in range(600)]
        assert offload.join(10)
    ids = [job.id for job in jobs]
    assert len(set(ids)) == len(ids)
    for job_id in ids:
        parsed = uuid.UUID(job_id)
        assert parsed.hex == job_id
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_progress_visible_while_running(app: Flask, offload: Offload) -> None:
    reported = threading.Event()
    proceed = threading.Event()
    received: list[tuple[float | None, str | None]] = []

    def on_progress(sender: Flask, job: Job) -> None:
        received.append((job.progress, job.message))

    def work() -> None:
        current_job.set_progress(0.4, "parsed 4,000 rows")
        reported.set()
        assert proceed.wait(10)
        current_job.set_progress(1.0)

    with signals.job_progress.connected_to(on_progress, sender=app), app.app_context():
        job = offload.submit(work)
        assert reported.wait(10)
        assert job.state is JobState.RUNNING
        assert (job.progress, job.message) == (0.4, "parsed 4,000 rows")
        assert job.to_dict()["progress"] == 0.4
        proceed.set()
        job.result(10)
    assert received == [(0.4, "parsed 4,000 rows"), (1.0, None)]


def test_set_progress_rejects_bad_values(app: Flask, offload: Offload) -> None:
    with app.app_context():
        job = offload.submit(lambda: current_job.set_progress(40))
        err = job.exception(10)
    assert isinstance(err, ValueError)
    assert "between 0 and 1" in str(err)
    with app.app_context():
        job = offload.submit(lambda: current_job.set_progress("40%"))  # type: ignore[arg-type]
        err = job.exception(10)
    assert isinstance(err, TypeError)
    assert "number between 0 and 1" in str(err) and "set_progress(0.4" in str(err)


def test_current_job_outside_job() -> None:
    with pytest.raises(RuntimeError, match="Working outside of a job"):
        current_job.set_progress(0.1)


def test_cancel_pending_never_runs(app: Flask) -> None:
    app.config["OFFLOAD_MAX_WORKERS"] = 1
    offload = Offload(app)
    gate = threading.Event()
    ran: list[str] = []
    with app.app_context():
        blocker = offload.submit(gate.wait, 10)
        pending = offload.submit(ran.append, "pending")
        assert pending.cancel() is True
        assert pending.state is JobState.CANCELLED and pending.done()
        assert blocker.cancel() is False  # running: only a request
        assert blocker.cancel_requested
        gate.set()
        assert offload.join(10)
        offload.shutdown()
    assert ran == []
    with pytest.raises(JobCancelled):
        pending.result()
    assert blocker.state is JobState.SUCCEEDED


def test_running_job_honours_cancel_request(app: Flask, offload: Offload) -> None:
    started = threading.Event()

    def long_job() -> None:
        started.set()
        for _ in range(1000):
            if current_job.cancel_requested:
                raise JobCancelled("stopped at the user's request")
            threading.Event().wait(0.01)

    with app.app_context():
        job = offload.submit(long_job)
        assert started.wait(10)
        job.cancel()
        assert job.wait(10)
    assert job.state is JobState.CANCELLED
    with pytest.raises(JobCancelled, match="user's request"):
        job.result()


def test_result_timeout(app: Flask, offload: Offload) -> None:
    gate = threading.Event()
    with app.app_context():
        job = offload.submit(gate.wait, 10)
        with pytest.raises(TimeoutError, match="did not finish within 0.01 seconds"):
            job.result(0.01)
        assert job.wait(0.01) is False
        gate.set()
        assert job.result(10) is True


def test_failure_logged_and_reraised(
    app: Flask, offload: Offload, caplog: pytest.LogCaptureFixture
) -> None:
    finished: list[Job] = []

    def broken(order_id: int) -> None:
        raise ValueError(f"order {order_id} is malformed")

    with (
        caplog.at_level(logging.ERROR, logger="flask_offload"),
        signals.job_finished.connected_to(
            lambda s, job: finished.append(job), sender=app
        ),
        app.app_context(),
    ):
        job = offload.submit(broken, 7)
        with pytest.raises(ValueError, match="order 7 is malformed"):
            job.result(10)
    assert job.state is JobState.FAILED
    assert job.to_dict()["error"] == {
        "type": "ValueError",
        "message": "order 7 is malformed",
    }
    (record,) = [r for r in caplog.records if r.name == "flask_offload"]
    message = record.getMessage()
    assert job.id in message
    assert "test_failure_logged_and_reraised.<locals>.broken" in message
    assert "tests/test_jobs.py:" in message
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert finished == [job]


def test_failed_job_keeps_its_traceback_not_its_locals(
    app: Flask, offload: Offload
) -> None:
    """The locals of a failed job's frames are let go (a connection, a
    buffer), not the traceback nor what the job put in its exception; a
    generator that made the exception, still in use, is not closed; and
    job_finished receivers still see the locals.
    """
    import gc
    import traceback
    import weakref

    class Buffer:
        pass

    def errors() -> t.Iterator[ValueError]:
        n = 0
        while True:
            n += 1
            try:
                raise ValueError(f"row {n} is malformed")
            except ValueError as e:
                yield e

    source = errors()
    refs: list[weakref.ref[Buffer]] = []

    def parse() -> None:
        buffer = Buffer()
        refs.append(weakref.ref(buffer))
        raise next(source)

    def check(amount: int) -> None:
        limit = 100
        raise ValueError("amount over limit", locals())

    seen: list[bool] = []

    def receiver(sender: Flask, job: Job) -> None:
        tb = job.exception(0).__traceback__  # type: ignore[union-attr]
        seen.append(any("limit" in f.f_locals for f, _ in traceback.walk_tb(tb)))

    with app.app_context():
        job = offload.submit(parse)
        exc = job.exception(10)
        with signals.job_finished.connected_to(receiver, sender=app):
            checked = offload.submit(check, 250).exception(10)
        assert offload.join(10)
    assert isinstance(exc, ValueError)
    gc.collect()
    assert refs[0]() is None
    names = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
    assert "parse" in names and "run_job" not in names
    assert str(next(source)) == "row 2 is malformed"  # still usable
    assert seen == [True]
    assert checked is not None
    assert checked.args == ("amount over limit", {"amount": 250, "limit": 100})


def test_signals_order(app: Flask, offload: Offload) -> None:
    events: list[tuple[str, str]] = []

    def recorder(name: str) -> t.Callable[..., None]:
        return lambda sender, job: events.append((name, job.state.value))

    with (
        signals.job_submitted.connected_to(recorder("submitted"), sender=app),
        signals.job_started.connected_to(recorder("started"), sender=app),
        signals.job_finished.connected_to(recorder("finished"), sender=app),
        app.app_context(),
    ):
        offload.submit(int).result(10)
    assert events == [
        ("submitted", "PENDING"),
        ("started", "RUNNING"),
        ("finished", "SUCCEEDED"),
    ]


def test_failing_signal_receiver_is_logged_not_fatal(
    app: Flask, offload: Offload, caplog: pytest.LogCaptureFixture
) -> None:
    def bad(sender: Flask, job: Job) -> None:
        raise RuntimeError("receiver bug")

    with signals.job_started.connected_to(bad, sender=app), app.app_context():
        assert offload.submit(int, "5").result(10) == 5
    assert "A receiver of job-started failed" in caplog.text


def test_get_job_jobs_and_join(app: Flask, offload: Offload) -> None:
    gate = threading.Event()
    with app.app_context():
        a = offload.submit(gate.wait, 10)
        b = offload.submit(int, "1")
        b.wait(10)
        assert offload.get_job(a.id) is a
        assert offload.get_job("nope") is None
        assert offload.jobs()[:2] == [b, a]
        assert offload.jobs(JobState.RUNNING) == [a]
        assert offload.jobs("SUCCEEDED") == [b]
        assert offload.jobs("succeeded") == [b]  # as the CLI and URLs take it
        with pytest.raises(ValueError, match="'done' is not a job state. Use one of"):
            offload.jobs("done")
        assert offload.join(0.05) is False
        gate.set()
        assert offload.join(10) is True
    # Outside an app context, the instance looks in all its apps.
    assert offload.get_job(a.id) is a


def test_finished_jobs_expire_running_never(app: Flask) -> None:
    app.config.update(OFFLOAD_MAX_FINISHED=3, OFFLOAD_RESULT_TTL=3600)
    offload = Offload(app)
    gate = threading.Event()
    with app.app_context():
        running = offload.submit(gate.wait, 10)
        done = [offload.submit(int, str(i)) for i in range(10)]
        for job in done:
            job.wait(10)
        assert offload.join(0.05) is False
        known = offload.jobs()
        assert running in known
        assert [j for j in known if j is not running] == done[-3:][::-1]
        gate.set()
        offload.join(10)
        offload.shutdown()


def test_result_ttl(app: Flask) -> None:
    app.config.update(OFFLOAD_RESULT_TTL=0)
    offload = Offload(app)
    with app.app_context():
        job = offload.submit(int)
        job.wait(10)
        assert offload.get_job(job.id) is None
        assert job.result() == 0  # the handle itself stays usable
        offload.shutdown()


def test_task_decorator(app: Flask, offload: Offload) -> None:
    @offload.task
    def add(a: int, b: int = 0) -> int:
        return a + b

    @offload.task(name="reports.build")
    def build() -> bool:
        return has_request_context()

    assert add(1, b=2) == 3  # direct call runs in the caller
    assert add.name == "tests.test_jobs.test_task_decorator.<locals>.add"
    assert add.__name__ == "add"
    assert offload.tasks["reports.build"] is build
    with app.test_request_context("/"):
        job = add.submit(2, b=3)
        assert job.result(10) == 5
        assert build.delay().result(10) is True
        assert build.delay().name == "reports.build"
    with pytest.raises(ValueError, match="already declared"):
        offload.task(name="reports.build")(lambda: None)


def test_task_decorator_refuses_what_is_not_a_function(
    app: Flask, offload: Offload
) -> None:
    """A name written positionally, or anything else not callable, is
    refused where it is declared, saying how to name a task, and declares
    nothing: the mistake does not reappear as a duplicate task elsewhere.
    """
    with pytest.raises(TypeError, match=r"offload\.task\(name='reports\.build'\)"):

        @offload.task("reports.build")  # type: ignore[call-overload]
        def build() -> None:
            pass

    with pytest.raises(TypeError, match="42, which is not callable"):
        offload.task(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="not callable"):
        offload.task(name="reports.other")(None)  # type: ignore[arg-type]
    for bad in ("", 5, ["x"]):
        with pytest.raises(TypeError, match="must be a non-empty string"):
            offload.task(name=bad)  # type: ignore[call-overload]
    assert offload.tasks == {}

    class Name(str):  # a StrEnum member, say: a string
        pass

    @offload.task(name=Name("reports.build"))
    def build_it() -> int:
        return 1

    with app.app_context():
        job = build_it.delay()
        assert job.result(10) == 1
        # An id that is a str subclass (Markup from a template) finds it.
        assert offload.get_job(Name(job.id)) is job


def test_join_inside_a_job_says_it_would_wait_for_itself(
    app: Flask, offload: Offload
) -> None:
    """``offload.join()`` in a job would wait for that job too (forever with
    no timeout): it raises at once, naming what to call instead, and the
    job's own children are waited for through their handles.
    """

    def child(n: int) -> int:
        return n * 2

    def parent() -> list[int]:
        kids = [offload.submit(child, n) for n in range(3)]
        with pytest.raises(RuntimeError, match=r"inside job .*'result\(\)'"):
            offload.join()
        return [k.result(10) for k in kids]

    with app.app_context():
        # Without the error the join would never return, nor the job.
        assert offload.submit(parent).result(10) == [0, 2, 4]
        assert offload.join(10)


def test_progress_after_the_job_ended_is_ignored(app: Flask, offload: Offload) -> None:
    """A thread the job left running reports progress after the job ended:
    the finished job keeps its last progress, and no ``job_progress``
    signal follows its ``job_finished``. A bad value still raises.
    """
    events: list[tuple[str, t.Any]] = []
    go = threading.Event()
    reported: list[t.Any] = []

    def late(job: Job) -> None:
        go.wait(10)
        job.set_progress(0.9, "late")
        with pytest.raises(ValueError, match="between 0 and 1"):
            job.set_progress(2)
        reported.append(True)

    left: list[threading.Thread] = []

    def work() -> str:
        current_job.set_progress(0.5, "half")
        job = current_job._get_current_object()  # type: ignore[attr-defined]
        left.append(threading.Thread(target=late, args=(job,)))
        left[0].start()
        return "done"

    def on_progress(sender: t.Any, job: Job) -> None:
        events.append(("progress", job.progress))

    def on_finished(sender: t.Any, job: Job) -> None:
        events.append(("finished", job.state))

    with (
        signals.job_progress.connected_to(on_progress, sender=app),
        signals.job_finished.connected_to(on_finished, sender=app),
        app.app_context(),
    ):
        job = offload.submit(work)
        assert job.result(10) == "done"
        go.set()
        left[0].join(10)
    assert reported == [True]
    assert (job.progress, job.message) == (0.5, "half")
    assert events == [("progress", 0.5), ("finished", JobState.SUCCEEDED)]


def test_job_finished_receivers_may_set_progress(app: Flask, offload: Offload) -> None:
    """A ``job_finished`` receiver completing the progress of a job that
    succeeded (a common pattern) still sets it, while it runs.
    """

    def complete(sender: t.Any, job: Job) -> None:
        if job.state is JobState.SUCCEEDED:
            job.set_progress(1.0, "done")

    with signals.job_finished.connected_to(complete, sender=app), app.app_context():
        job = offload.submit(int)
        assert job.result(10) == 0
    assert (job.progress, job.message) == (1.0, "done")


def test_async_job_function(app: Flask, offload: Offload) -> None:
    async def fetch(x: int) -> int:
        return x * 2

    with app.app_context():
        assert offload.submit(fetch, 21).result(10) == 42


def test_async_callable_object(app: Flask, offload: Offload) -> None:
    """An object whose ``__call__`` is ``async def`` runs, in the job's
    context, as an ``async def`` function does: its body is not skipped.
    """

    class Fetch:
        async def __call__(self, x: int) -> tuple[int, bool]:
            return x * 2, current_job is not None and has_request_context()

    with app.test_request_context("/"):
        assert offload.submit(Fetch(), 21).result(10) == (42, True)


def test_generator_functions_are_refused(app: Flask, offload: Offload) -> None:
    """A generator function's body would never run as a job: refused at
    submit, or, returned by another callable, the job fails saying why.
    """
    ran: list[int] = []

    def rows() -> t.Iterator[int]:
        ran.append(1)
        yield 1

    async def arows() -> t.AsyncIterator[int]:
        ran.append(2)
        yield 2

    with app.app_context():
        for fn in (rows, arows):
            with pytest.raises(TypeError, match="is a generator function"):
                offload.submit(fn)
        with pytest.raises(TypeError, match="is a generator function"):
            offload.task(rows)
        err = offload.submit(lambda: rows()).exception(10)
    assert isinstance(err, TypeError) and "returned a generator" in str(err)
    assert ran == []
    assert offload.jobs() and all(j.done() for j in offload.jobs())


def test_a_partials_name_is_its_functions(app: Flask, offload: Offload) -> None:
    """Jobs of different partials are told apart in logs and the dashboard."""
    import functools

    with app.app_context():
        job = offload.submit(functools.partial(functools.partial(pow, 2), 10))
        assert job.result(10) == 1024
    assert job.name == "builtins.pow"


def test_submit_from_view_and_poll(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """The request thread sees progress while the job runs."""
    step = threading.Event()
    reported = threading.Event()

    def work() -> None:
        current_job.set_progress(0.5, "half")
        reported.set()
        assert step.wait(10)

    @app.post("/start")
    def start() -> dict[str, str]:
        return {"id": offload.submit(work).id}

    @app.get("/status/<job_id>")
    def status(job_id: str) -> dict[str, t.Any]:
        job = offload.get_job(job_id)
        assert job is not None
        return job.to_dict()

    server = serve(app)
    job_id = server.post("/start").json()["id"]
    assert reported.wait(10)
    body = server.get(f"/status/{job_id}").json()
    assert (body["state"], body["progress"], body["message"]) == (
        "RUNNING",
        0.5,
        "half",
    )
    step.set()
    with app.app_context():
        offload.get_job(job_id).result(10)  # type: ignore[union-attr]
    assert server.get(f"/status/{job_id}").json()["state"] == "SUCCEEDED"


def test_job_finished_receiver_may_read_the_result(
    app: Flask, offload: Offload
) -> None:
    """Receivers see a finished job: result() returns instead of deadlocking."""
    results: list[t.Any] = []

    def on_finished(sender: Flask, job: Job) -> None:
        results.append((job.done(), job.result(), job.exception()))

    with signals.job_finished.connected_to(on_finished, sender=app), app.app_context():
        job = offload.submit(int, "42")
        assert job.wait(10)
    assert results == [(True, 42, None)]


def test_handed_off_job_kept_for_the_ttl() -> None:
    """A job a backend hands off (Celery) counts as finished for the registry
    from that moment: its TTL starts then, not at the monotonic clock's origin
    (boot time), which would drop it at once on a machine up longer than it.
    """
    from flask_offload.jobs import JobRegistry

    registry = JobRegistry(ttl=1.0, max_finished=10)
    job = Job("tasks.sent")
    registry.add(job)
    registry._job_done(job)  # handed off, not finished in this process
    assert registry.get(job.id) is job
    assert registry.recent() == [job]


# Submitters, workers, cancels and waiters share no lock (jobs.py): these
# races are run many times over, with the GIL switching threads every
# microsecond instead of every 5 ms so that they interleave, and each must end
# with every job accounted for exactly once.


@pytest.fixture()
def fast_switching() -> t.Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_cancel_racing_the_start_has_exactly_one_winner(
    app: Flask, fast_switching: None
) -> None:
    app.config["OFFLOAD_MAX_WORKERS"] = 4
    offload = Offload(app)
    ran: list[int] = []
    jobs: list[Job] = []
    cancelled: dict[int, bool] = {}
    submitted = threading.Semaphore(0)

    def canceller() -> None:
        for i in range(2000):
            submitted.acquire()
            cancelled[i] = jobs[i].cancel()

    th = threading.Thread(target=canceller)
    th.start()
    with app.app_context():
        for i in range(2000):
            jobs.append(offload.submit(ran.append, i))
            submitted.release()
        th.join(30)
        assert offload.join(30)
        offload.shutdown()
    assert len(ran) == len(set(ran))
    for i, job in enumerate(jobs):
        assert job.done()
        if cancelled[i]:
            assert job.state is JobState.CANCELLED and i not in ran
        else:
            assert job.state is JobState.SUCCEEDED and i in ran
    # Both outcomes happened, or the race was never run.
    assert 0 < sum(cancelled.values()) < 2000


def test_waiters_racing_the_end_of_jobs_always_wake(
    app: Flask, fast_switching: None
) -> None:
    app.config["OFFLOAD_MAX_WORKERS"] = 4
    offload = Offload(app)
    woke: list[bool] = []

    def waiter(job: Job) -> None:
        woke.append(job.wait(10))

    with app.app_context():
        threads = []
        for _ in range(500):
            job = offload.submit(int)
            th = threading.Thread(target=waiter, args=(job,))
            th.start()
            threads.append(th)
            woke.append(job.wait(10))
        for th in threads:
            th.join(20)
        offload.shutdown()
    assert woke == [True] * 1000


def test_jobs_from_many_threads_are_all_found_and_joined(
    app: Flask, fast_switching: None
) -> None:
    # OFFLOAD_MAX_FINISHED = 0 makes the registry empty out, and replace its
    # dict, many times while other threads add jobs.
    app.config.update(OFFLOAD_MAX_WORKERS=4, OFFLOAD_MAX_FINISHED=0)
    offload = Offload(app)
    seen: list[bool] = []

    def job_finds_itself() -> None:
        seen.append(
            offload.get_job(current_job.id) is current_job._get_current_object()
        )  # type: ignore[attr-defined]

    def submitter() -> None:
        with app.app_context():
            for _ in range(500):
                offload.submit(job_finds_itself)

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    with app.app_context():
        assert offload.join(30)
        assert offload.jobs() == []
        offload.shutdown()
    assert seen == [True] * 2000
