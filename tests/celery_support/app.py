"""A Flask app with the Celery backend, shared by the test process (which
serves it and submits jobs) and the worker subprocesses it starts:

    celery -A tests.celery_support.app:celery_app worker ...
    flask --app tests.celery_support.app offload worker ...

Its config comes from the JSON in ``OFFLOAD_TEST_CONFIG``; jobs write what
they observe to the folder ``OFFLOAD_TEST_DIR``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import typing as t

from flask import current_app
from flask import Flask
from flask import g
from flask import request
from flask import session
from flask import url_for
from flask_login import current_user
from flask_login import login_fresh
from flask_login import login_user
from flask_login import LoginManager
from flask_login import UserMixin
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_offload import current_job
from flask_offload import Offload

offload = Offload()
login = LoginManager()
#: Users the worker's user_loader knows. "bob" exists only here, so a job
#: that saw a serialized user instead of a reloaded one would notice.
NAMES = {"1": "alice", "2": "bob"}


class User(UserMixin):
    def __init__(self, uid: str) -> None:
        self.id = uid
        self.name = NAMES[uid]


@login.user_loader
def load_user(uid: str) -> User | None:
    return User(uid) if uid in NAMES else None


def data_dir() -> str:
    return str(current_app.config["OFFLOAD_TEST_DIR"])


def record(kind: str, value: t.Any) -> None:
    """Append one line to ``<dir>/<kind>.jsonl``: what a job observed."""
    with open(os.path.join(data_dir(), f"{kind}.jsonl"), "a") as f:
        f.write(json.dumps(value) + "\n")


def marker(name: str) -> str:
    return os.path.join(data_dir(), name)


@offload.task
def observe(label: str, n: int = 0) -> dict[str, t.Any]:
    """Everything a job can see of its request."""
    files = {}
    for field, storage in request.files.items():
        data = storage.read()
        files[field] = {
            "filename": storage.filename,
            "content_type": storage.content_type,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    return {
        "label": label,
        "n": n,
        "pid": os.getpid(),
        "job": current_job.id,
        "method": request.method,
        "path": request.path,
        "args": request.args.to_dict(),
        "json": request.get_json(silent=True),
        "form": request.form.to_dict(),
        "files": files,
        "headers": dict(request.headers),
        "remote_addr": request.remote_addr,
        "session": {k: v for k, v in session.items() if not k.startswith("_")},
        "user_id_in_session": session.get("_user_id"),
        "g": {k: getattr(g, k) for k in ("tenant", "request_id") if k in g},
        "user": None if current_user.is_anonymous else current_user.name,
        "fresh": login_fresh(),
        "url": url_for("where", _external=True),
        "data_len": len(request.get_data()),
    }


@offload.task
def app_only() -> dict[str, t.Any]:
    from flask import has_request_context

    return {"request": has_request_context(), "app": current_app.name}


@offload.task
def progress_then_wait(name: str) -> str:
    """Report progress, then wait until the test creates ``<name>.go``."""
    import time

    current_job.set_progress(0.5, "half way")
    open(marker(name + ".started"), "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(marker(name + ".go")):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.02)
    return "done"


@offload.task
def progress_after_return(name: str, fail: bool = False) -> str:
    """Leave a thread that reports progress once the test creates
    ``<name>.go``, after the job has ended (failed, with ``fail``); it
    writes ``<name>.reported`` when its call has returned (with the error,
    if it raised).
    """
    import threading
    import time

    job = current_job._get_current_object()  # type: ignore[attr-defined]
    done = marker(name + ".reported")
    go = marker(name + ".go")

    def late() -> None:
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            job.set_progress(0.9, "late")
            outcome = "returned"
        except Exception as e:
            outcome = repr(e)
        with open(done + ".tmp", "w") as f:
            f.write(outcome)
        os.replace(done + ".tmp", done)

    threading.Thread(target=late, daemon=True).start()
    if fail:
        raise ValueError("failed before the late report")
    return "done"


@offload.task
def double(n: int) -> int:
    return n * 2


@offload.task
def join_children() -> list[t.Any]:
    """Send three jobs, then wait for them with ``offload.join()``: the
    task's own job is not among those this worker process waits for.
    """
    kids = [double.submit(n) for n in range(3)]
    return [offload.join(20), [kid.result(0) for kid in kids]]


@offload.task
def stoppable(name: str) -> str:
    """Work until cancelled (checking as long jobs should), 30 s at most."""
    import time

    from flask_offload import JobCancelled

    open(marker(name + ".started"), "w").close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if current_job.cancel_requested:
            raise JobCancelled(f"{name} stopped on request")
        time.sleep(0.02)
    return "never cancelled"


@offload.task
def slow(name: str) -> str:
    """Announce the start (once per delivery), then wait for ``<name>.go``."""
    import time

    record(name, {"pid": os.getpid(), "job": current_job.id})
    deadline = time.monotonic() + 30
    while not os.path.exists(marker(name + ".go")):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.02)
    return f"{name} finished by {os.getpid()}"


@offload.task
def slow_upload(name: str) -> str:
    """:func:`slow` for a job with an upload: the sha256 of ``f`` once the
    test says go.
    """
    slow(name)
    return hashlib.sha256(request.files["f"].read()).hexdigest()


@offload.task
def touch(name: str) -> None:
    """Create the marker ``name``: proves the body ran."""
    open(marker(name), "w").close()


@offload.task
def fail(message: str) -> None:
    raise ValueError(message)


@offload.task
def relative_url() -> None:
    """urllib raises a ValueError holding the URL, with its API key."""
    import urllib.request

    urllib.request.urlopen("/v1/charge?api_key=S3cret")


@offload.task
def nested(label: str) -> str:
    """Submit another job from inside a job."""
    child = observe.submit(label + "-child")
    return child.id


@offload.task
def retry_once(label: str) -> dict[str, t.Any]:
    """Fail the first attempt through Celery's retry; report the request."""
    from celery import current_task

    record("retries", {"label": label, "retries": current_task.request.retries})
    if current_task.request.retries == 0:
        raise current_task.retry(countdown=0.1)
    return {"retries": current_task.request.retries, "user": current_user.name}


@offload.task
def chained(previous: t.Any) -> dict[str, t.Any]:
    """A chain's second step: sees the first step's request."""
    return {"previous": previous, "user": current_user.name, "path": request.path}


@offload.task
def file_digest(previous: t.Any = None) -> dict[str, t.Any]:
    """A chain step reading the request's upload and body."""
    f = request.files["f"]
    return {
        "previous": previous,
        "sha256": hashlib.sha256(f.read()).hexdigest(),
        "note": request.form["note"],
    }


@offload.task
def retried_after_cancel() -> bool:
    """Retries once a cancel is requested: the next attempt must not run."""
    import time

    from celery import current_task

    if current_task.request.retries:
        return current_job.cancel_requested
    deadline = time.monotonic() + 20
    while not current_job.cancel_requested and time.monotonic() < deadline:
        time.sleep(0.05)
    raise current_task.retry(countdown=0.1)


@offload.task
def replaced() -> None:
    """Replaced by ``file_digest`` with Celery's ``task.replace``."""
    from celery import current_task

    raise current_task.replace(offload.celery.tasks[f"{__name__}.file_digest"].s())


@offload.task
def die() -> None:
    """Its pool process dies, as one the OOM killer ends. Only for a prefork
    worker: it would end a solo worker.
    """
    current_job.set_progress(0.25, "a quarter")
    os.kill(os.getpid(), signal.SIGKILL)


@offload.task
def overrun() -> None:
    """Runs past a hard time limit, deaf to the SIGTERM before the SIGKILL
    (as one busy in a slow rollback).
    """
    import time

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    current_job.set_progress(0.25, "a quarter")
    time.sleep(30)


@offload.task
def observe_form() -> dict[str, t.Any]:
    """The form a job was submitted with (its raw body stored, if large),
    read as fields first, then from the stream.
    """
    return {
        "password": request.form["password"],
        "note": len(request.form["note"]),
        "stream": len(request.stream.read()),
    }


@offload.task
def observe_body() -> dict[str, t.Any]:
    """The JSON body a job was submitted with (stored, if large)."""
    body = request.get_json()
    return {"password": body["password"], "padding": len(body["padding"])}


@offload.authorize
def may_see(job: t.Any) -> bool:
    """Status URLs, for apps that turn the dashboard on: anyone may look."""
    return True


def create_app(config: dict[str, t.Any] | None = None) -> Flask:
    if config is None:
        config = json.loads(os.environ.get("OFFLOAD_TEST_CONFIG") or "{}")
    app = Flask(__name__, instance_path=config.get("OFFLOAD_TEST_DIR") or None)
    app.config.update(
        SECRET_KEY="celery test secret",
        OFFLOAD_BACKEND="celery",
        OFFLOAD_CARRY_G=["tenant", "request_id"],
    )
    app.config.update(config)
    # Behind a proxy: the app sees the scheme and host the client used.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    login.init_app(app)
    offload.init_app(app)

    @app.teardown_appcontext
    def teardown(exc: BaseException | None) -> None:
        try:
            job_id = current_job.id
        except RuntimeError:
            return
        record("teardown", job_id)

    @app.get("/where")
    def where() -> str:
        return "here"

    @app.route("/login/<uid>")
    def do_login(uid: str) -> str:
        login_user(User(uid))
        session["cart"] = ["apple"]
        return "ok"

    @app.route("/submit/<label>", methods=["GET", "POST"])
    def submit(label: str) -> dict[str, t.Any]:
        g.tenant = "acme"
        g.request_id = request.headers.get("X-Request-Id")
        g.secret_object = object()  # not carried: not in OFFLOAD_CARRY_G
        job = observe.submit(label, n=int(request.args.get("n", 0)))
        return {"id": job.id}

    @app.post("/submit-task/<name>")
    def submit_task(name: str) -> dict[str, t.Any]:
        """Submit a task of this module; a JSON list in the body is its
        arguments (any other body is the request the job reads).
        """
        task = offload.tasks[f"{__name__}.{name}"]
        body = request.get_json(silent=True) if request.is_json else None
        job = task.submit(*(body if isinstance(body, list) else []))
        return {"id": job.id}

    @app.post("/celery-delay")
    def celery_delay() -> dict[str, t.Any]:
        """Celery's own API in a view: the request is captured all the same."""
        task = offload.celery.tasks[f"{__name__}.observe"]
        result = task.apply_async(("delay",), task_id=request.args.get("task_id"))
        return {"id": result.id}

    @app.post("/chain")
    def chain() -> dict[str, t.Any]:
        from celery import chain as celery_chain

        tasks = offload.celery.tasks
        result = celery_chain(
            tasks[f"{__name__}.app_only"].s(), tasks[f"{__name__}.chained"].s()
        ).apply_async()
        return {"id": result.id}

    @app.post("/canvas")
    def canvas() -> dict[str, t.Any]:
        """A link callback and a group, sent with Celery's API in a view."""
        import uuid

        from celery import group

        tasks = offload.celery.tasks
        callback = tasks[f"{__name__}.chained"].s().set(task_id=uuid.uuid4().hex)
        tasks[f"{__name__}.app_only"].apply_async(link=callback)
        grouped = group(
            tasks[f"{__name__}.observe"].s("g1"), tasks[f"{__name__}.observe"].s("g2")
        ).apply_async()
        return {"callback": callback.id, "group": [r.id for r in grouped.results]}

    @app.post("/replace-upload")
    def replace_upload() -> dict[str, t.Any]:
        return {"id": replaced.submit().id}

    @app.post("/chain-upload")
    def chain_upload() -> dict[str, t.Any]:
        from celery import chain as celery_chain

        step = offload.celery.tasks[f"{__name__}.file_digest"]
        result = celery_chain(step.s(), step.s()).apply_async()
        return {"id": result.id}

    @app.post("/chord")
    def chord() -> dict[str, t.Any]:
        from celery import chord as celery_chord

        tasks = offload.celery.tasks
        result = celery_chord(
            [tasks[f"{__name__}.app_only"].s(), tasks[f"{__name__}.app_only"].s()],
            tasks[f"{__name__}.chained"].s(),
        ).apply_async()
        return {"id": result.id}

    return app


app = create_app()
with app.app_context():
    celery_app = offload.celery
