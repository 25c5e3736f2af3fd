"""The thread backend: queue bounds, draining at exit and on SIGTERM."""

from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from flask import Flask

from flask_offload import Offload
from flask_offload import QueueFull


def test_queue_full_raises(app: Flask) -> None:
    app.config.update(OFFLOAD_MAX_WORKERS=1, OFFLOAD_MAX_QUEUE=2)
    offload = Offload(app)
    gate = threading.Event()
    started = threading.Event()

    def block() -> None:
        started.set()
        gate.wait(10)

    with app.app_context():
        first = offload.submit(block)
        assert started.wait(10)  # taken by the worker: no longer queued
        queued = [offload.submit(gate.wait, 10) for _ in range(2)]
        with pytest.raises(QueueFull, match="OFFLOAD_MAX_QUEUE"):
            offload.submit(gate.wait, 10)
        assert len(offload.jobs()) == 3  # the refused one was never a job
        gate.set()
        assert all(j.result(10) for j in queued)
        first.result(10)
        # Places are given back as jobs start.
        assert offload.submit(int).result(10) == 0
        offload.shutdown()


def test_queue_full_blocks(app: Flask) -> None:
    app.config.update(
        OFFLOAD_MAX_WORKERS=1, OFFLOAD_MAX_QUEUE=1, OFFLOAD_QUEUE_FULL="block"
    )
    offload = Offload(app)
    gate = threading.Event()
    started = threading.Event()
    submitted = threading.Event()

    def block() -> None:
        started.set()
        gate.wait(10)

    with app.app_context():
        offload.submit(block)
        assert started.wait(10)
        offload.submit(int)  # fills the queue

    def third() -> None:
        with app.app_context():
            offload.submit(int)
        submitted.set()

    th = threading.Thread(target=third)
    th.start()
    assert not submitted.wait(0.2)  # blocked while the queue is full
    gate.set()
    assert submitted.wait(10)
    th.join()
    with app.app_context():
        assert offload.join(10)
        offload.shutdown()


def _wait_idle(offload: Offload, app: Flask, workers: int) -> None:
    """Wait until ``workers`` workers are idle (each gave its idle token
    back after its last job; the job is done just before that).
    """
    backend = offload._state(app)[1].backend
    deadline = time.monotonic() + 10
    while len(backend._idle) < workers:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "workers never became idle"
        time.sleep(0.001)


def _occupy(offload: Offload, workers: int) -> threading.Event:
    """Give ``workers`` workers a job each that runs until the returned
    event is set; return once all of them run.
    """
    gate = threading.Event()
    running = threading.Semaphore(0)

    def hold() -> None:
        running.release()
        gate.wait(10)

    for _ in range(workers):
        offload.submit(hold)
    for _ in range(workers):
        assert running.acquire(timeout=10)
    return gate


def test_jobs_handed_to_idle_workers_are_not_waiting(app: Flask) -> None:
    """OFFLOAD_MAX_QUEUE counts jobs waiting for a worker: a burst that idle
    workers take at once is never refused, even before they run.
    """
    app.config.update(OFFLOAD_MAX_WORKERS=4, OFFLOAD_MAX_QUEUE=2)
    offload = Offload(app)
    with app.app_context():
        _occupy(offload, 4).set()  # four workers, all idle again after
        for _ in range(10):
            _wait_idle(offload, app, 4)
            jobs = [offload.submit(int) for _ in range(3)]
            assert [j.result(10) for j in jobs] == [0, 0, 0]
        offload.shutdown()


def test_cancelled_jobs_give_back_their_queue_places(app: Flask) -> None:
    app.config.update(OFFLOAD_MAX_WORKERS=1, OFFLOAD_MAX_QUEUE=2)
    offload = Offload(app)
    with app.app_context():
        gate = _occupy(offload, 1)
        a, b = offload.submit(int), offload.submit(int)
        with pytest.raises(QueueFull):
            offload.submit(int)
        assert a.cancel() and b.cancel()
        c = offload.submit(lambda: "c")
        d = offload.submit(lambda: "d")
        with pytest.raises(QueueFull):  # c and d wait: the queue is full again
            offload.submit(int)
        gate.set()
        assert (c.result(10), d.result(10)) == ("c", "d")
        # The worker took the cancelled jobs out: exactly two places again.
        _wait_idle(offload, app, 1)
        gate = _occupy(offload, 1)
        queued = [offload.submit(int), offload.submit(int)]
        with pytest.raises(QueueFull):
            offload.submit(int)
        gate.set()
        assert [j.result(10) for j in queued] == [0, 0]
        offload.shutdown()


def test_jobs_submitting_jobs_do_not_deadlock_a_blocking_queue(app: Flask) -> None:
    """With OFFLOAD_QUEUE_FULL = "block", a job that submits more jobs than
    the queue holds is not held back: its worker is the one that would make
    room.
    """
    app.config.update(
        OFFLOAD_MAX_WORKERS=1, OFFLOAD_MAX_QUEUE=1, OFFLOAD_QUEUE_FULL="block"
    )
    offload = Offload(app)

    def parent() -> list[str]:
        return [offload.submit(lambda i=i: i * 2).id for i in range(3)]

    with app.app_context():
        ids = offload.submit(parent).result(10)
        assert offload.join(10)
        assert [offload.get_job(i).result(0) for i in ids] == [0, 2, 4]  # type: ignore[union-attr]
        offload.shutdown()


def test_worker_threads_end_with_their_app() -> None:
    """An app factory called again and again (a test suite) leaves no worker
    threads behind once its apps are gone.
    """
    offload = Offload()
    threads: list[threading.Thread] = []
    for i in range(3):
        app = Flask(f"factory_app_{i}")
        offload.init_app(app)
        with app.app_context():
            assert offload.submit(int).result(10) == 0
        threads += [
            th
            for th in threading.enumerate()
            if th.name.startswith(f"flask-offload-factory_app_{i}-")
        ]
        del app
    gc.collect()
    assert len(threads) == 3
    for th in threads:
        th.join(10)
        assert not th.is_alive()


def test_submit_after_shutdown_is_refused(app: Flask) -> None:
    offload = Offload(app)
    with app.app_context():
        offload.shutdown()
        with pytest.raises(RuntimeError, match="was shut down.*the process is exiting"):
            offload.submit(int)


SCRIPT = """
import logging, sys, threading, time
from flask import Flask, request
from werkzeug.serving import make_server
from flask_offload import Offload

logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                    format="%(levelname)s %(message)s")
app = Flask("drain")
app.config.update(OFFLOAD_MAX_WORKERS=2, OFFLOAD_SHUTDOWN_TIMEOUT={timeout})
offload = Offload(app)

def slow(i):
    time.sleep(0.05)
    # Not flushed: what drained jobs print must survive a SIGTERM exit.
    print(f"done {{i}} user={{request.headers['X-User']}}")

@app.post("/jobs")
def jobs():
    ids = [offload.submit(slow, i).id for i in range(20)]
    print("ids " + " ".join(ids), flush=True)
    return "ok"

server = make_server("127.0.0.1", 0, app, threaded=True)
print(f"port {{server.server_port}}", flush=True)
{mode}
"""

SERVE = "server.serve_forever()"
EXIT = """
import urllib.request
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_port}/jobs"
req = urllib.request.Request(url, method="POST", headers={"X-User": "ann"})
urllib.request.urlopen(req).read()
print("main thread ends", flush=True)
"""


def run_script(tmp_path: Path, timeout: float, mode: str) -> subprocess.Popen[str]:
    path = tmp_path / "app.py"
    path.write_text(textwrap.dedent(SCRIPT.format(timeout=timeout, mode=mode)))
    return subprocess.Popen(
        [sys.executable, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
    )


def post_jobs(proc: subprocess.Popen[str]) -> list[str]:
    import requests

    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    requests.post(
        f"http://127.0.0.1:{port}/jobs", headers={"X-User": "ann"}, timeout=10
    )
    line = proc.stdout.readline()
    assert line.startswith("ids "), line
    return line.split()[1:]


def test_normal_exit_drains_queue(tmp_path: Path) -> None:
    proc = run_script(tmp_path, 30, EXIT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    done = re.findall(r"done (\d+) user=ann", out)
    assert sorted(map(int, done)) == list(range(20))
    assert "main thread ends" in out


def test_sigterm_drains_all_jobs(tmp_path: Path) -> None:
    proc = run_script(tmp_path, 30, SERVE)
    ids = post_jobs(proc)
    assert len(ids) == 20
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, out
    assert sorted(map(int, re.findall(r"done (\d+) user=ann", out))) == list(range(20))
    assert "abandoned" not in out


def test_sigterm_logs_every_abandoned_job(tmp_path: Path) -> None:
    proc = run_script(tmp_path, 0.12, SERVE)
    ids = post_jobs(proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, out
    finished = set(map(int, re.findall(r"done (\d+) user=ann", out)))
    abandoned = set(re.findall(r"Job (\w+) \(__main__\.slow\) .* abandoned", out))
    finished_ids = {ids[i] for i in finished}
    assert abandoned, out  # 0.12 s cannot run 20 jobs of 0.05 s on 2 workers
    # Every job either finished or was logged by id: none vanished silently.
    assert abandoned | finished_ids == set(ids)


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_existing_sigterm_handler_is_kept(tmp_path: Path) -> None:
    """gunicorn and others handle SIGTERM themselves: we do not take it over."""
    script = tmp_path / "keep.py"
    script.write_text(
        textwrap.dedent(
            """
            import signal
            from flask import Flask
            def mine(signum, frame): pass
            signal.signal(signal.SIGTERM, mine)
            from flask_offload import Offload
            Offload(Flask("x"))
            print(signal.getsignal(signal.SIGTERM) is mine)
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"


FORK = """
import os
from flask import Flask
from flask_offload import Offload

app = Flask("fork")
offload = Offload(app)
with app.app_context():
    first = offload.submit(int, "1")
    assert first.result(5) == 1  # the parent has a worker thread now
    parked = offload.submit(__import__("time").sleep, 0.3)  # still queued or running
pid = os.fork()
if pid == 0:
    # gunicorn --preload forks workers like this: the child has no threads.
    with app.app_context():
        job = offload.submit(int, "2")
        ok = job.wait(5) and job.result() == 2
        known = offload.jobs()
    print("child", "ran" if ok else "HUNG", len(known), flush=True)
    os._exit(0 if ok and known == [job] else 1)
_, status = os.waitpid(pid, 0)
with app.app_context():
    assert parked.wait(5)
print("parent ok", os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_runs_its_own_jobs(tmp_path: Path) -> None:
    """gunicorn --preload: jobs ran in the master before the fork; a worker
    still runs its own jobs, and knows none of the master's.
    """
    script = tmp_path / "fork.py"
    script.write_text(FORK)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "child ran 1" in out.stdout
    assert "parent ok 0" in out.stdout


FORK_THEN_GEVENT = """
import os, signal
from flask import Flask
from flask_offload import Offload

app = Flask("preload")
offload = Offload(app)
pid = os.fork()
if pid == 0:
    # gunicorn's gevent worker: the app was loaded before the fork, the
    # worker patches after it.
    from gevent import monkey
    monkey.patch_all()
    import gevent
    signal.alarm(10)  # the event loop blocked: die instead of hanging
    for n in range(3):
        with app.test_request_context(f"/?n={n}"):
            job = offload.submit(lambda: 1)
        assert job.wait(5)
        gevent.sleep(0)  # the loop still turns once a worker waits again
    print("child ran 3", flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("child status", status, flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_gevent_worker_forked_after_loading_the_app(tmp_path: Path) -> None:
    """gunicorn -k gevent --preload: the pool made at the fork is made again
    from gevent's patched modules at the first submit, so a worker waiting
    for jobs never blocks the event loop.
    """
    pytest.importorskip("gevent")
    script = tmp_path / "fork_gevent.py"
    script.write_text(FORK_THEN_GEVENT)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert "child ran 3" in out.stdout, out.stdout + out.stderr
    assert "child status 0" in out.stdout


GREEN_SIGTERM = """
{patch}
import time
import {library}
from flask import Flask
from flask_offload import Offload

app = Flask("green_term")
offload = Offload(app)

def job():
    time.sleep(0.5)  # cooperative: patched time
    print("job finished", flush=True)

with app.app_context():
    offload.submit(job)
print("ready", flush=True)
{library}.sleep(30)  # the main greenlet waits in the hub, as servers do
print("not stopped", flush=True)
"""
# How each library patches the standard library, first thing in a program.
PATCH = {
    "gevent": "from gevent import monkey; monkey.patch_all()",
    "eventlet": "import eventlet; eventlet.monkey_patch()",
}


@pytest.mark.skipif(os.name != "posix", reason="signals")
@pytest.mark.parametrize("library", ["gevent", "eventlet"])
def test_sigterm_under_green_threads_drains_from_a_greenlet(
    tmp_path: Path, library: str
) -> None:
    """Under gevent and eventlet the SIGTERM handler runs in the hub, where
    it may not wait: it drains in a greenlet and still ends the process by
    SIGTERM. (eventlet's patched threading has a main-thread object of its
    own, which the real main thread is not: the handler is installed
    anyway.)
    """
    pytest.importorskip(library)
    path = tmp_path / f"{library}_term.py"
    path.write_text(GREEN_SIGTERM.format(library=library, patch=PATCH[library]))
    proc = subprocess.Popen(
        [sys.executable, "-W", "ignore", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, out
    assert "job finished" in out
    assert "Error" not in out and "not stopped" not in out


INTERRUPTED_DRAIN = """
import logging, os, signal, sys, threading, time
from flask import Flask
from flask_offload import Offload

logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                    format="%(levelname)s %(message)s")
app = Flask("interrupted")
app.config.update(OFFLOAD_SHUTDOWN_TIMEOUT=60)
offload = Offload(app)
started = threading.Event()

def stuck():
    started.set()
    time.sleep(60)

def second_ctrl_c():
    # Once the main thread waits in the drain at exit, as a user's second
    # Ctrl-C would find it.
    main = threading.main_thread().ident
    while True:
        frame, names = sys._current_frames().get(main), []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        if names and names[0] == "wait" and "_shutdown_all" in names:
            os.kill(os.getpid(), signal.SIGINT)
            return
        time.sleep(0.01)

with app.app_context():
    job = offload.submit(stuck)
started.wait()
threading.Thread(target=second_ctrl_c, daemon=True).start()
print("job", job.id, flush=True)
"""


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_interrupted_drain_logs_the_jobs_it_abandons(tmp_path: Path) -> None:
    """A second Ctrl-C during the drain at exit (or eventlet's quick
    shutdown, which raises SystemExit there) ends the wait: the jobs still
    running are logged by id, and the exit is quiet, not a traceback.
    """
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED_DRAIN)
    out = subprocess.run(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=30,
    ).stdout
    job_id = out.splitlines()[0].split()[1]
    assert (
        f"Job {job_id} (__main__.stuck) submitted from" in out
        and "was still running when KeyboardInterrupt ended the shutdown's wait" in out
    ), out
    assert "Exception ignored" not in out and "Traceback" not in out, out


def test_shutdown_of_several_apps_closes_all_before_draining() -> None:
    """One Offload for two apps: a shutdown outside any app context stops
    both from accepting jobs before it waits for either, so the drain takes
    one timeout, not one per app, and no job submitted meanwhile is
    abandoned later.
    """
    offload = Offload()
    apps = [Flask(f"app{i}") for i in range(2)]
    release = threading.Event()
    started = threading.Event()

    def held() -> str:
        started.set()
        assert release.wait(10)
        return "done"

    for app in apps:
        offload.init_app(app)
    with apps[0].app_context():
        first = offload.submit(held)
    assert started.wait(10)
    drain = threading.Thread(target=offload.shutdown)
    drain.start()

    def refused(app: Flask) -> bool:
        with app.app_context():
            try:
                offload.submit(int)
            except RuntimeError:
                return True
        return False

    try:
        deadline = time.monotonic() + 10
        while not refused(apps[0]):  # the drain has begun
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert refused(apps[1])  # the other app closed too, before any wait
    finally:
        release.set()
        drain.join(10)
    assert first.result(0) == "done"


LATE_IMPORT = """
import threading

def late():
    threading.main_thread().join()
    import flask_offload  # while the interpreter exits
    print("imported", flask_offload.Offload.__name__, flush=True)

threading.Thread(target=late).start()
"""


def test_import_while_the_interpreter_exits(tmp_path: Path) -> None:
    script = tmp_path / "late_import.py"
    script.write_text(LATE_IMPORT)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "imported Offload" in out.stdout, out.stdout + out.stderr
