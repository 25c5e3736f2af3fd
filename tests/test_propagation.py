"""OFFLOAD_PROPAGATE: code that starts its own threads, pools and executors
works unchanged, on a real server, reading the request after the response.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import hashlib
import multiprocessing.dummy
import multiprocessing.pool
import os
import queue
import subprocess
import sys
import textwrap
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool

import pytest
from flask import current_app
from flask import Flask
from flask import g
from flask import has_app_context
from flask import has_request_context
from flask import request
from flask.wrappers import Request

from flask_offload import carry
from flask_offload import current_job
from flask_offload import Offload
from flask_offload import propagation
from flask_offload.propagation import propagating

from .conftest import LiveServer

WAIT = 10.0

# Created at import time, outside any request, and shared by every test:
# the case where per-worker-thread propagation shows stale data.
IMPORT_EXECUTOR = ThreadPoolExecutor(1, thread_name_prefix="import-executor")
IMPORT_POOL = multiprocessing.dummy.Pool(1)


@pytest.fixture(scope="module", autouse=True)
def _close_import_pools() -> t.Iterator[None]:
    yield
    IMPORT_EXECUTOR.shutdown(wait=True)
    IMPORT_POOL.close()
    IMPORT_POOL.join()


@pytest.fixture(autouse=True)
def _uninstall() -> t.Iterator[None]:
    yield
    propagation.uninstall()
    assert not propagation.installed()


@pytest.fixture
def app() -> Flask:
    app = Flask("flask_offload_propagation_test")
    app.config.update(TESTING=True, SECRET_KEY="test secret", OFFLOAD_PROPAGATE=True)

    @app.before_request
    def set_g() -> None:
        g.user = request.headers.get("X-User")
        g.n = int(request.args.get("n", 0))

    return app


def who(tag: str = "") -> tuple[str | None, str | None, str | None, int | None, str]:
    """What legacy background code reads: a header, an arg, and g."""
    return (
        request.headers.get("X-User"),
        request.args.get("doc_id"),
        g.get("user"),
        g.get("n"),
        tag,
    )


def nothing_carried() -> tuple[bool, bool]:
    return has_app_context(), has_request_context()


class Collector:
    """Results from background code, released after the response."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.results: list[t.Any] = []
        self.threads: list[threading.Thread] = []
        self.waitables: list[t.Any] = []

    def read(self, tag: str = "") -> t.Any:
        assert self.release.wait(WAIT)
        value = who(tag)
        with self.lock:
            self.results.append(value)
        return value

    def finish(self) -> list[t.Any]:
        self.release.set()
        for th in self.threads:
            th.join(WAIT)
            assert not th.is_alive()
        for w in self.waitables:
            if hasattr(w, "result"):
                w.result(WAIT)
            elif hasattr(w, "get"):
                w.get(WAIT)
            else:
                list(w)
        return sorted(self.results, key=lambda r: r[-1])


class Worker(threading.Thread):
    """A legacy Thread subclass that overrides run()."""

    def __init__(self, col: Collector) -> None:
        super().__init__()
        self.col = col

    def run(self) -> None:
        self.col.read("subclass")


def test_seed_code_unchanged(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """The seed's own code, with only a wait added so it reads after the
    response.
    """
    assert propagation.installed()
    release = threading.Event()
    seen: list[str] = []
    threads: list[threading.Thread] = []

    def inner_func() -> None:
        assert release.wait(WAIT)
        doc_id = request.args.get("doc_id", "")
        seen.append(doc_id)

    @app.route("/start_thread")
    def start_thread() -> dict[str, bool]:
        th = threading.Thread(target=inner_func)
        th.start()
        threads.append(th)
        return {"success": True}

    server = serve(app)
    assert server.get("/start_thread?doc_id=42").json() == {"success": True}
    release.set()
    threads[0].join(WAIT)
    assert seen == ["42"]


def test_threads_sharing_the_request_capture_it_once(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """Threads running in copies of the view's own context (as
    ``asyncio.to_thread`` and ``copy_context().run`` make) hand work off at
    the same time, before anything read the body: one captures it, the
    others wait for that capture, and every task and the view get the whole
    body. Reading the one input stream at once left them all waiting for
    bytes another took, and the request never answered.
    """
    pool = ThreadPoolExecutor(8)

    def digest() -> str:
        return hashlib.sha256(request.get_data()).hexdigest()

    def fan_out() -> str:
        return pool.submit(digest).result(WAIT)

    @app.post("/fan-out")
    def fan_out_view() -> dict[str, t.Any]:
        starts = [
            pool.submit(contextvars.copy_context().run, fan_out) for _ in range(4)
        ]
        seen = {f.result(WAIT) for f in starts}
        return {"tasks": sorted(seen), "view": digest()}

    server = serve(app)
    try:
        for size in (200, 5_000, 300_000) * 3:
            body = os.urandom(size)
            want = hashlib.sha256(body).hexdigest()
            r = server.post(
                "/fan-out",
                data=body,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert r.json() == {"tasks": [want], "view": want}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def test_a_capture_inside_the_first_capture_of_a_request(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """A request class whose upload storage hands work to a pool (a stream
    factory registering the upload somewhere): parsing the form for the
    first capture starts propagated work, which captures the same request
    again in the same thread. It goes through with the request without its
    body (which is being read), and the job gets the whole request.
    """
    pool = ThreadPoolExecutor(2)
    during: list[t.Any] = []

    def look() -> tuple[str | None, dict[str, str], list[str]]:
        return request.args.get("n"), request.form.to_dict(), list(request.files)

    class RegisteringRequest(Request):
        def _get_file_stream(self, *args: t.Any, **kwargs: t.Any) -> t.IO[bytes]:
            during.append(pool.submit(look).result(WAIT))
            return super()._get_file_stream(*args, **kwargs)

    app.request_class = RegisteringRequest

    @app.post("/upload")
    def upload() -> dict[str, t.Any]:
        return {"job": offload.submit(look).result(WAIT), "view": look()}

    try:
        r = serve(app).post(
            "/upload?n=1", data={"a": "1"}, files={"f": ("a.txt", b"hello")}
        )
        whole = ["1", {"a": "1"}, ["f"]]
        assert r.json() == {"job": whole, "view": whole}
        # Work started while the body is read gets the request without it.
        assert during == [("1", {}, [])]
    finally:
        pool.shutdown(wait=False)


def test_a_run_the_program_sets_on_a_thread_is_kept(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """``thread.run = fn`` set by the program before ``start()``: it runs in
    the replayed request, and is still the thread's ``run`` afterwards, as
    without propagation.
    """
    seen: list[str | None] = []
    threads: list[threading.Thread] = []

    def work() -> None:
        seen.append(request.args.get("doc_id"))

    @app.route("/assigned-run")
    def assigned_run() -> str:
        thread = threading.Thread()
        thread.run = work  # type: ignore[method-assign]
        thread.start()
        thread.join(WAIT)
        threads.append(thread)
        return "ok"

    assert serve(app).get("/assigned-run?doc_id=7").text == "ok"
    assert seen == ["7"]
    assert threads[0].__dict__.get("run") is work


def start_everything(col: Collector) -> None:
    """Start every supported kind of background work, without waiting."""
    th = threading.Thread(target=col.read, args=("thread",))
    th.start()
    col.threads.append(th)
    sub = Worker(col)
    sub.start()
    col.threads.append(sub)
    timer = threading.Timer(0.0, col.read, args=("timer",))
    timer.start()
    col.threads.append(timer)
    col.waitables.append(IMPORT_EXECUTOR.submit(col.read, "executor.submit"))
    col.waitables.append(IMPORT_POOL.apply_async(col.read, ("pool.apply_async",)))
    col.waitables.append(IMPORT_POOL.map_async(col.read, ["pool.map_async"]))
    col.waitables.append(IMPORT_POOL.starmap_async(col.read, [("pool.starmap_async",)]))
    col.waitables.append(IMPORT_POOL.imap(col.read, ["pool.imap"]))
    col.waitables.append(IMPORT_POOL.imap_unordered(col.read, ["pool.imap_unordered"]))

    # The blocking calls run in a thread the view starts, nested.
    def blocking() -> None:
        list(IMPORT_EXECUTOR.map(col.read, ["executor.map"]))
        IMPORT_POOL.map(col.read, ["pool.map"])
        IMPORT_POOL.starmap(col.read, [("pool.starmap",)])

    nested = threading.Thread(target=blocking)
    nested.start()
    col.threads.append(nested)


KINDS = sorted(
    [
        "thread",
        "subclass",
        "timer",
        "executor.submit",
        "executor.map",
        "pool.apply_async",
        "pool.map_async",
        "pool.starmap_async",
        "pool.imap",
        "pool.imap_unordered",
        "pool.map",
        "pool.starmap",
    ]
)


def test_every_kind_reads_after_response(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    col = Collector()

    @app.get("/all")
    def all_kinds() -> str:
        start_everything(col)
        return "started"

    server = serve(app)
    assert server.get("/all?doc_id=d1&n=7", headers={"X-User": "alice"}).ok
    assert col.finish() == [("alice", "d1", "alice", 7, kind) for kind in KINDS]


def test_every_kind_inside_a_job(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    col = Collector()
    job_ids: list[str | None] = []

    def job() -> None:
        start_everything(col)
        th = threading.Thread(target=lambda: job_ids.append(current_job.id))
        th.start()
        th.join()

    @app.get("/job")
    def submit() -> str:
        return offload.submit(job).id

    server = serve(app)
    job_id = server.get("/job?doc_id=j&n=2", headers={"X-User": "bob"}).text
    with app.app_context():
        assert offload.join(WAIT)  # the job has started everything and ended
    assert col.finish() == [("bob", "j", "bob", 2, kind) for kind in KINDS]
    assert job_ids == [job_id]


def test_nested_any_depth(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """thread -> executor -> pool -> thread -> Timer, after the response."""
    col = Collector()
    done = threading.Event()

    def level_4() -> None:
        timer = threading.Timer(0.0, col.read, args=("timer",))
        timer.start()
        timer.join()
        done.set()

    def level_3(_: int) -> None:
        th = threading.Thread(target=level_4)
        th.start()
        th.join()

    def level_2() -> None:
        with ThreadPool(2) as pool:
            pool.map(level_3, [1])

    def level_1() -> None:
        with ThreadPoolExecutor(1) as ex:
            ex.submit(level_2).result()

    @app.get("/deep")
    def deep() -> str:
        th = threading.Thread(target=level_1)
        th.start()
        col.threads.append(th)
        return "ok"

    server = serve(app)
    assert server.get("/deep?doc_id=z&n=9", headers={"X-User": "zoe"}).ok
    assert col.finish() == [("zoe", "z", "zoe", 9, "timer")]
    assert done.is_set()


@pytest.mark.parametrize("by_name", [True, False])
def test_pool_callbacks_hand_off_with_the_request(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    by_name: bool,
) -> None:
    """A ThreadPool runs ``callback`` and ``error_callback`` in its result
    thread, which has no context. What they hand to the pool in turn must
    see the request too: joblib's threading backend sends every batch
    after the first few from there.
    """
    pool = ThreadPool(2)
    results: queue.Queue[tuple[str, str]] = queue.Queue()

    def who() -> str:
        return str(request.headers["X-User"])

    def fails() -> None:
        raise ValueError(request.headers["X-User"])

    def submit(func: t.Callable[..., t.Any], callback: t.Any, errback: t.Any) -> None:
        if by_name:
            pool.apply_async(func, callback=callback, error_callback=errback)
        else:
            pool.apply_async(func, (), {}, callback, errback)

    def chain(first: str) -> None:
        submit(who, lambda second: results.put((first, second)), None)

    def after_error(error: BaseException) -> None:
        submit(who, lambda second: results.put((str(error), second)), None)

    @app.get("/chain")
    def start() -> str:
        submit(who, chain, None)
        submit(fails, None, after_error)
        return "ok"

    try:
        server = serve(app)
        assert server.get("/chain", headers={"X-User": "zoe"}).ok
        got = {results.get(timeout=WAIT), results.get(timeout=WAIT)}
        assert got == {("zoe", "zoe")}
    finally:
        pool.close()
        pool.join()


@pytest.mark.parametrize("kind", ["executor", "pool"])
def test_import_time_pool_is_per_task(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer], kind: str
) -> None:
    """alice, bob, alice through one worker thread created at import time:
    each task sees its own request; between tasks the worker has nothing.
    """
    workers: set[int] = set()

    def task() -> t.Any:
        workers.add(threading.get_ident())
        return list(who())

    def run(fn: t.Callable[[], t.Any]) -> t.Any:
        if kind == "executor":
            return IMPORT_EXECUTOR.submit(fn).result(WAIT)
        return IMPORT_POOL.apply_async(fn).get(WAIT)

    @app.get("/task")
    def view() -> t.Any:
        return {"seen": run(task)}

    server = serve(app)
    for i, user in enumerate(["alice", "bob", "alice", "bob"]):
        r = server.get(f"/task?doc_id={user}{i}&n={i}", headers={"X-User": user})
        assert r.json()["seen"] == [user, f"{user}{i}", user, i, ""]
        # The same worker thread, used from outside any context: nothing left.
        assert run(nothing_carried) == (False, False)
    assert len(workers) == 1


@pytest.mark.parametrize("kind", ["executor", "pool"])
def test_pool_created_in_alices_request_never_shows_alice(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer], kind: str
) -> None:
    pools: list[t.Any] = []

    def get_pool() -> t.Any:
        if not pools:  # created lazily, inside the first (alice's) request
            pools.append(ThreadPoolExecutor(2) if kind == "executor" else ThreadPool(2))
        return pools[0]

    def run(fn: t.Callable[[], t.Any]) -> t.Any:
        pool = get_pool()
        if kind == "executor":
            return pool.submit(fn).result(WAIT)
        return pool.apply_async(fn).get(WAIT)

    @app.get("/lazy")
    def view() -> t.Any:
        return {"seen": run(lambda: list(who()))}

    server = serve(app)
    try:
        alice = server.get("/lazy?doc_id=a&n=1", headers={"X-User": "alice"})
        assert alice.json()["seen"] == ["alice", "a", "alice", 1, ""]
        for i in range(3):
            bob = server.get(f"/lazy?doc_id=b{i}&n=2", headers={"X-User": "bob"})
            assert bob.json()["seen"] == ["bob", f"b{i}", "bob", 2, ""]
        # Its worker threads were not pinned to alice's request.
        assert run(nothing_carried) == (False, False)
    finally:
        if kind == "executor":
            pools[0].shutdown(wait=True)
        else:
            pools[0].close()
            pools[0].join()


def test_each_task_gets_own_context_and_teardown_in_its_thread(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    teardowns: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    tasks: list[tuple[int, int]] = []

    @app.teardown_appcontext
    def record(exc: BaseException | None) -> None:
        with lock:
            teardowns.append((threading.get_ident(), g.get("mark")))

    def task(i: int) -> None:
        assert g.get("mark") is None  # a fresh g: nothing from an earlier task
        g.mark = f"task{i}"
        with lock:
            tasks.append((threading.get_ident(), i))

    @app.get("/tasks")
    def view() -> str:
        with ThreadPoolExecutor(2) as ex:
            list(ex.map(task, range(6)))
        return "ok"

    server = serve(app)
    assert server.get("/tasks").ok
    server.wait_idle()
    task_teardowns = sorted(x for x in teardowns if x[1] is not None)
    # One teardown per task, in the thread that ran it.
    assert task_teardowns == sorted((ident, f"task{i}") for ident, i in tasks)
    # Plus exactly one for the request itself.
    assert len(teardowns) == 7


def test_outside_any_context_untouched(app: Flask, offload: Offload) -> None:
    assert propagation.installed()
    seen: list[t.Any] = []
    th = threading.Thread(target=lambda: seen.append(nothing_carried()))
    th.start()
    assert "run" not in th.__dict__
    th.join()
    fn = IMPORT_EXECUTOR.submit(lambda: sys._getframe(1).f_code.co_name).result()
    assert fn == "run"  # the executor's own _WorkItem.run called the task directly
    assert seen == [(False, False)]
    assert IMPORT_POOL.apply_async(nothing_carried).get(WAIT) == (False, False)


def test_option_off_patches_nothing(
    serve: t.Callable[[Flask], LiveServer],
) -> None:
    originals = (threading.Thread.start, ThreadPoolExecutor.submit)
    app = Flask("off")
    ext = Offload(app)
    assert not propagation.installed()
    assert (threading.Thread.start, ThreadPoolExecutor.submit) == originals
    assert "map" not in ThreadPool.__dict__
    seen: list[t.Any] = []
    threads: list[threading.Thread] = []

    @app.get("/")
    def view() -> str:
        th = threading.Thread(target=lambda: seen.append(nothing_carried()))
        th.start()
        threads.append(th)
        return "ok"

    assert serve(app).get("/").ok
    threads[0].join(WAIT)
    assert seen == [(False, False)]
    ext.shutdown()


def test_twice_and_two_apps(serve: t.Callable[[Flask], LiveServer]) -> None:
    """Two apps on, one off, install called again: each app's own setting
    decides at each call.
    """
    apps = {}
    exts = []
    for name, on in [("on1", True), ("on2", True), ("off", False)]:
        a = Flask(name)
        a.config.update(SECRET_KEY="s", OFFLOAD_PROPAGATE=on)
        exts.append(Offload(a))
        apps[name] = a
    propagation.install()
    propagation.install()
    seen: dict[str, t.Any] = {}
    threads: list[threading.Thread] = []
    release = threading.Event()

    for name, a in apps.items():

        def view(name: str = name) -> str:
            def work() -> None:
                assert release.wait(WAIT)
                if has_request_context():
                    seen[name] = (current_app.name, request.args["x"])
                else:
                    seen[name] = None

            th = threading.Thread(target=work)
            th.start()
            threads.append(th)
            return "ok"

        a.add_url_rule("/", view_func=view)

    for name, a in apps.items():
        assert serve(a).get(f"/?x={name}").ok
    release.set()
    for th in threads:
        th.join(WAIT)
    assert seen == {"on1": ("on1", "on1"), "on2": ("on2", "on2"), "off": None}
    for ext in exts:
        ext.shutdown()
    propagation.uninstall()
    assert threading.Thread.start is propagation._originals["Thread.start"]
    propagation.uninstall()  # twice is fine too


STDLIB = {
    "thread": threading.Thread.__dict__["start"],
    "executor": ThreadPoolExecutor.__dict__["submit"],
    "pool": propagation._MISSING,  # ThreadPool inherits map from Pool
}
PATCHED = {
    "thread": (threading.Thread, "start"),
    "executor": (ThreadPoolExecutor, "submit"),
    "pool": (ThreadPool, "map"),
}


class OtherLibrary:
    """Patches on top of ours and removes itself again, as the thread
    integrations of Sentry (with ``functools.wraps``) and OpenTelemetry do.
    """

    def __init__(self, kind: str, wraps: bool = True) -> None:
        self.owner, self.name = PATCHED[kind]
        self.previous = getattr(self.owner, self.name)
        previous = self.previous

        def patched(*args: t.Any, **kwargs: t.Any) -> t.Any:
            return previous(*args, **kwargs)

        self.patch = functools.wraps(previous)(patched) if wraps else patched
        setattr(self.owner, self.name, self.patch)

    def remove(self) -> None:
        setattr(self.owner, self.name, self.previous)


@pytest.fixture
def restore_stdlib() -> t.Iterator[None]:
    """Put the stdlib's methods back even when a test fails halfway."""
    yield
    for kind, (owner, name) in PATCHED.items():
        if owner.__dict__.get(name, propagation._MISSING) is not STDLIB[kind]:
            propagation._restore.pop(f"{owner.__name__}.{name}", None)
            if STDLIB[kind] is propagation._MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, STDLIB[kind])


def peek(tag: str) -> list[t.Any] | None:
    return list(who(tag)) if has_request_context() else None


def run_in(kind: str, fn: t.Callable[[str], t.Any]) -> t.Any:
    """``fn(kind)`` in a thread, an executor task or a pool task."""
    if kind == "thread":
        out: list[t.Any] = []
        th = threading.Thread(target=lambda: out.append(fn(kind)))
        th.start()
        th.join(WAIT)
        return out[0]
    if kind == "executor":
        return IMPORT_EXECUTOR.submit(fn, kind).result(WAIT)
    return IMPORT_POOL.map(fn, [kind])[0]


@pytest.mark.parametrize("wraps", [True, False], ids=["wraps", "plain"])
@pytest.mark.parametrize("kind", list(PATCHED))
@pytest.mark.usefixtures("restore_stdlib")
def test_reinstall_under_another_librarys_patch(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    kind: str,
    wraps: bool,
) -> None:
    """install, another library patches on top, uninstall, install: ours is
    active again where it sits in the chain, not stacked a second time.
    """
    owner, name = PATCHED[kind]
    other = OtherLibrary(kind, wraps)
    propagation.uninstall()
    assert owner.__dict__[name] is other.patch  # their chain is left alone

    @app.get("/")
    def view() -> t.Any:
        return {"seen": run_in(kind, peek)}

    server = serve(app)
    assert server.get("/?doc_id=u").json() == {"seen": None}  # uninstalled
    propagation.install()
    assert owner.__dict__[name] is other.patch
    r = server.get("/?doc_id=r&n=2", headers={"X-User": "rey"})
    assert r.json() == {"seen": ["rey", "r", "rey", 2, kind]}
    other.remove()
    propagation.uninstall()
    assert owner.__dict__.get(name, propagation._MISSING) is STDLIB[kind]


@pytest.mark.parametrize("kind", list(PATCHED))
@pytest.mark.usefixtures("restore_stdlib")
def test_uninstall_after_other_library_removed_itself(kind: str) -> None:
    """install, another library on top, uninstall, it removes itself (putting
    ours back), install, uninstall: the stdlib's own method is back.
    """
    owner, name = PATCHED[kind]
    propagation.install()
    ours = owner.__dict__[name]
    other = OtherLibrary(kind)
    propagation.uninstall()
    other.remove()
    assert owner.__dict__[name] is ours  # inert until installed again
    assert run_in(kind, lambda _: nothing_carried()) == (False, False)
    propagation.install()
    assert owner.__dict__[name] is ours  # re-activated, not stacked
    propagation.uninstall()
    assert owner.__dict__.get(name, propagation._MISSING) is STDLIB[kind]
    assert threading.Thread.start is STDLIB["thread"]


def test_multiprocessing_dummy_process(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """``multiprocessing.dummy.Process`` is a Thread started with the user's
    target: propagated. The same class runs a ThreadPool's workers, whose
    target is the pool's own: those are not.
    """
    col = Collector()
    pools: list[ThreadPool] = []

    @app.get("/")
    def view() -> str:
        process = multiprocessing.dummy.Process(target=col.read, args=("process",))
        process.start()
        col.threads.append(process)
        pools.append(ThreadPool(1))  # its worker starts inside this request
        return "ok"

    server = serve(app)
    assert server.get("/?doc_id=p&n=3", headers={"X-User": "dee"}).ok
    assert col.finish() == [("dee", "p", "dee", 3, "process")]
    pool = pools[0]
    try:
        workers = pool._pool  # type: ignore[attr-defined]
        assert [type(w) for w in workers] == [multiprocessing.dummy.DummyProcess]
        assert "run" not in workers[0].__dict__  # no snapshot pinned to it
        assert pool.apply_async(nothing_carried).get(WAIT) == (False, False)
    finally:
        pool.close()
        pool.join()


def test_carried_targets_are_not_wrapped_again(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    teardowns: list[int] = []
    wrapped: list[bool] = []

    @app.teardown_appcontext
    def record(exc: BaseException | None) -> None:
        teardowns.append(threading.get_ident())

    seen: list[t.Any] = []

    @app.get("/")
    def view() -> str:
        th = threading.Thread(target=carry(lambda: seen.append(who())))
        th.start()
        wrapped.append("run" in th.__dict__)
        th.join()
        IMPORT_EXECUTOR.submit(carry(lambda: seen.append(who("ex")))).result()
        return "ok"

    server = serve(app)
    assert server.get("/?doc_id=c", headers={"X-User": "cy"}).ok
    server.wait_idle()
    assert wrapped == [False]
    assert seen == [("cy", "c", "cy", 0, ""), ("cy", "c", "cy", 0, "ex")]
    # The request's teardown plus one per carried call: no second replay.
    assert len(teardowns) == 3


@pytest.mark.parametrize("block", [False, True], ids=["option", "block"])
def test_patched_method_handed_to_a_patched_api(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer], block: bool
) -> None:
    """A patched method given as the function (``submit(pool.map, fn, ...)``)
    is propagated like any other: the inner call captures again in the
    replayed context. ``block`` hands it over inside a ``propagating()``
    block, whose tasks are called through another frame.
    """
    col = Collector()
    ex = ThreadPoolExecutor(2)
    pool = ThreadPool(2)

    def start() -> None:
        col.waitables.append(ex.submit(pool.map, col.read, ["submit(pool.map)"]))
        part = functools.partial(pool.starmap, col.read)
        col.waitables.append(ex.submit(part, [("submit(partial(pool.starmap))",)]))
        for target, tag in [(pool.map, "thread(pool.map)"), (carry(pool.map), "carry")]:
            th = threading.Thread(target=target, args=(col.read, [tag]))
            th.start()
            col.threads.append(th)

    @app.get("/")
    def view() -> str:
        with propagating() if block else contextlib.nullcontext():
            start()
        return "ok"

    server = serve(app)
    try:
        assert server.get("/?doc_id=m&n=5", headers={"X-User": "max"}).ok
        assert col.finish() == [
            ("max", "m", "max", 5, tag)
            for tag in sorted(
                [
                    "carry",
                    "submit(partial(pool.starmap))",
                    "submit(pool.map)",
                    "thread(pool.map)",
                ]
            )
        ]
    finally:
        col.release.set()
        ex.shutdown(wait=True)
        pool.close()
        pool.join()


def test_process_pools_never_patched(app: Flask, offload: Offload) -> None:
    assert propagation.installed()
    assert (
        concurrent.futures.ProcessPoolExecutor.submit
        is (concurrent.futures.ProcessPoolExecutor.__dict__["submit"])
    )
    assert not getattr(
        concurrent.futures.ProcessPoolExecutor.submit, "_flask_offload_patch", False
    )
    for name in propagation._POOL_METHODS:
        assert not getattr(
            getattr(multiprocessing.pool.Pool, name), "_flask_offload_patch", False
        )
        assert getattr(getattr(ThreadPool, name), "_flask_offload_patch", False)


def test_propagating_block_only(serve: t.Callable[[Flask], LiveServer]) -> None:
    app = Flask("block")
    app.config["SECRET_KEY"] = "s"
    ext = Offload(app)  # OFFLOAD_PROPAGATE off
    seen: list[t.Any] = []
    threads: list[threading.Thread] = []
    release = threading.Event()
    installed: list[bool] = []

    def work(tag: str) -> None:
        assert release.wait(WAIT)
        if has_request_context():
            seen.append((tag, request.args["x"]))
            # Nested threads of a block's task propagate too.
            th = threading.Thread(
                target=lambda: seen.append((tag + ">child", request.args["x"]))
            )
            th.start()
            th.join()
        else:
            seen.append((tag, None))

    def start(tag: str) -> None:
        th = threading.Thread(target=work, args=(tag,))
        th.start()
        threads.append(th)

    @app.get("/")
    def view() -> str:
        start("before")
        with propagating():
            installed.append(propagation.installed())
            start("inside")
        installed.append(propagation.installed())
        start("after")
        return "ok"

    assert serve(app).get("/?x=1").ok
    release.set()
    for th in threads:
        th.join(WAIT)
    assert sorted(seen) == [
        ("after", None),
        ("before", None),
        ("inside", "1"),
        ("inside>child", "1"),
    ]
    assert installed == [True, True]
    ext.shutdown()


def test_propagating_false_turns_it_off_for_a_block(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    seen: list[t.Any] = []

    @app.get("/")
    def view() -> str:
        with propagating(False):
            th = threading.Thread(target=lambda: seen.append(nothing_carried()))
            th.start()
            th.join()
        IMPORT_EXECUTOR.submit(lambda: seen.append(nothing_carried())).result()
        return "ok"

    assert serve(app).get("/").ok
    assert seen == [(False, False), (True, True)]
    assert propagation.installed()


def test_async_view_with_propagation(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """asgiref's own executor submits are not wrapped: one teardown for the
    request, one per started thread in that thread, none in the loop thread.
    """
    teardowns: list[int] = []
    col = Collector()
    loop_threads: list[int] = []

    @app.teardown_appcontext
    def record(exc: BaseException | None) -> None:
        teardowns.append(threading.get_ident())

    def in_executor() -> t.Any:
        return list(who("run_in_executor"))

    def sync_part() -> str:
        return str(request.args["doc_id"])

    @app.get("/async")
    async def view() -> t.Any:
        loop_threads.append(threading.get_ident())
        th = threading.Thread(target=col.read, args=("thread",))
        th.start()
        col.threads.append(th)
        loop = asyncio.get_running_loop()
        seen = await loop.run_in_executor(None, in_executor)
        from_to_thread = await asyncio.to_thread(sync_part)
        from asgiref.sync import sync_to_async

        from_s2a = await sync_to_async(sync_part)()
        return {"seen": seen, "to_thread": from_to_thread, "s2a": from_s2a}

    server = serve(app)
    r = server.get("/async?doc_id=as&n=4", headers={"X-User": "ann"})
    assert r.json() == {
        "seen": ["ann", "as", "ann", 4, "run_in_executor"],
        "to_thread": "as",
        "s2a": "as",
    }
    assert col.finish() == [("ann", "as", "ann", 4, "thread")]
    server.wait_idle()
    # Request + the started thread + run_in_executor's task; nothing in the
    # loop thread, nothing for asgiref's or to_thread's submits.
    assert len(teardowns) == 3
    assert not set(teardowns) & set(loop_threads)


def test_thread_start_failure_restores_run(app: Flask, offload: Offload) -> None:
    th = threading.Thread(target=lambda: None)
    th.start()
    th.join()
    with app.test_request_context("/"):
        with pytest.raises(RuntimeError, match="only be started once"):
            th.start()
    assert "run" not in th.__dict__


def test_thread_context_feature_on_314(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Simulate Python 3.14's ``Thread(context=)`` with
    ``sys.flags.thread_inherit_context`` on: a thread started in a request
    would inherit the request's live context. Propagation passes a fresh
    context instead, for carried threads and for pool workers alike.
    """
    inherit = contextvars.copy_context

    original_start = propagation._originals["Thread.start"]
    original_bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def start_314(self: threading.Thread) -> None:
        if getattr(self, "_context", None) is None:
            self._context = inherit()  # type: ignore[attr-defined]
        original_start(self)

    def bootstrap_314(self: threading.Thread) -> None:
        self._context.run(original_bootstrap, self)  # type: ignore[attr-defined]

    monkeypatch.setattr(propagation, "THREAD_HAS_CONTEXT", True)
    monkeypatch.setitem(propagation._originals, "Thread.start", start_314)
    monkeypatch.setattr(threading.Thread, "_bootstrap_inner", bootstrap_314)
    contexts: list[contextvars.Context] = []
    pools: list[ThreadPoolExecutor] = []

    @app.get("/")
    def view() -> t.Any:
        th = threading.Thread(target=lambda: None)
        th.start()
        th.join()
        contexts.append(th._context)  # type: ignore[attr-defined]
        given = contextvars.Context()
        th2 = threading.Thread(target=lambda: None)
        th2._context = given  # type: ignore[attr-defined]
        th2.start()
        th2.join()
        contexts.append(th2._context)  # type: ignore[attr-defined]
        pool = ThreadPoolExecutor(1)  # its worker starts inside this request
        pools.append(pool)
        return {"task": list(pool.submit(who).result(WAIT))}

    server = serve(app)
    assert server.get("/?doc_id=p", headers={"X-User": "pat"}).json() == {
        "task": ["pat", "p", "pat", 0, ""]
    }
    fresh, given = contexts
    assert len(fresh) == 0  # explicit, empty: not a copy of the request's
    assert given is not fresh
    # The pool's worker was started with a fresh context too: a task from
    # outside any request finds nothing of the request that started it.
    assert pools[0].submit(nothing_carried).result(WAIT) == (False, False)
    pools[0].shutdown()
    # Control: without propagation, the simulated 3.14 thread inherits.
    with app.test_request_context("/"), propagating(False):
        seen: list[bool] = []
        th = threading.Thread(target=lambda: seen.append(has_request_context()))
        th.start()
        th.join()
    assert seen == [True]


GEVENT_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import json
    import sys
    import threading
    import urllib.request

    import gevent
    from flask import Flask, g, request
    from werkzeug.serving import make_server

    from flask_offload import Offload

    app = Flask("gevent_app")
    app.config.update(SECRET_KEY="s", OFFLOAD_PROPAGATE=True)
    offload = Offload(app)
    release = gevent.event.Event()
    out = []
    waits = []

    def read(tag):
        release.wait(10)
        out.append([tag, request.args["doc_id"], request.headers["X-User"], g.user])

    @app.before_request
    def set_g():
        g.user = request.headers["X-User"]

    @app.get("/")
    def view():
        waits.append(gevent.spawn(read, "spawn"))
        waits.append(gevent.spawn_later(0, read, "spawn_later"))
        th = threading.Thread(target=read, args=("thread",))
        th.start()
        waits.append(th)
        return "ok"

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    for user in ["alice", "bob"]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/?doc_id={user}1", headers={"X-User": user}
        )
        assert urllib.request.urlopen(req, timeout=10).read() == b"ok"
    release.set()
    for w in waits:
        w.join(10)
    outside = gevent.spawn(lambda: __import__("flask").has_request_context())
    outside.join(10)
    server.shutdown()
    print(json.dumps({"out": sorted(out), "outside": outside.value,
                      "patched": gevent.spawn.__name__}))
    """
)


def run_script(
    tmp_path: t.Any, script: str, env: dict[str, str] | None = None
) -> t.Any:
    """Run ``script`` in its own process (what it patches is for good) and
    return what it printed last, as JSON.
    """
    path = tmp_path / "app_script.py"
    path.write_text(script)
    proc = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_gevent(tmp_path: t.Any, script: str) -> t.Any:
    """:func:`run_script` for a gevent script (monkey-patching is for good)."""
    pytest.importorskip("gevent")
    return run_script(tmp_path, script, {**os.environ, "PYTHONWARNINGS": "ignore"})


def test_gevent_spawn_and_patched_threads(tmp_path: t.Any) -> None:
    result = run_gevent(tmp_path, GEVENT_SCRIPT)
    assert result["outside"] is False
    assert result["out"] == sorted(
        [tag, f"{user}1", user, user]
        for user in ["alice", "bob"]
        for tag in ["spawn", "spawn_later", "thread"]
    )


GEVENT_POOL_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import json
    import threading
    import urllib.request

    import gevent
    import gevent.pool
    from flask import Flask, g, has_request_context, request
    from werkzeug.serving import make_server

    from flask_offload import Offload

    app = Flask("gevent_pool_app")
    app.config.update(SECRET_KEY="s", OFFLOAD_PROPAGATE=True)
    offload = Offload(app)
    release = gevent.event.Event()
    pool = gevent.pool.Pool(4)
    group = gevent.pool.Group()
    waits = []

    def read(tag):
        release.wait(10)
        return [tag, request.args["doc_id"], request.headers["X-User"], g.user]

    @app.before_request
    def set_g():
        g.user = request.headers["X-User"]

    @app.get("/")
    def view():
        waits.append(pool.map_async(read, ["pool.map_async"]))
        waits.append(pool.imap(read, ["pool.imap"]))
        waits.append(pool.imap_unordered(read, ["pool.imap_unordered"]))
        waits.append(group.map_async(read, ["group.map_async"]))
        # The blocking map runs in a greenlet the view spawns, nested.
        waits.append(gevent.spawn(lambda: pool.map(read, ["pool.map"])))
        # A patched method given as the function: its own call captures again.
        waits.append(gevent.spawn(pool.map, read, ["spawn(pool.map)"]))
        # A full pool's apply_async hands func to a greenlet of its own.
        full = gevent.pool.Pool(1)
        full.spawn(release.wait, 10)
        waits.append(full.apply_async(read, ("full.apply_async",)))
        return "ok"

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    for user in ["alice", "bob"]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/?doc_id={user}1", headers={"X-User": user}
        )
        assert urllib.request.urlopen(req, timeout=10).read() == b"ok"
    release.set()
    out = []
    for w in waits:
        value = list(w) if hasattr(w, "__next__") else w.get(timeout=10)
        out.extend([value] if value and isinstance(value[0], str) else value)
    outside = pool.map(lambda _: has_request_context(), [1])
    server.shutdown()
    print(json.dumps({"out": sorted(out), "outside": outside}))
    """
)


def test_gevent_pool_mapping_methods(tmp_path: t.Any) -> None:
    result = run_gevent(tmp_path, GEVENT_POOL_SCRIPT)
    assert result["outside"] == [False]
    assert result["out"] == sorted(
        [tag, f"{user}1", user, user]
        for user in ["alice", "bob"]
        for tag in [
            "pool.map_async",
            "pool.imap",
            "pool.imap_unordered",
            "group.map_async",
            "pool.map",
            "spawn(pool.map)",
            "full.apply_async",
        ]
    )


SENTRY_FIRST_SCRIPT = textwrap.dedent(
    """
    import json, threading
    import requests
    import sentry_sdk
    from sentry_sdk.integrations.threading import ThreadingIntegration

    # The usual order: Sentry set up at the top of the app module, before
    # the app and its extensions. No event is sent: nothing fails.
    sentry_sdk.init(
        dsn="http://key@127.0.0.1:9/1",
        integrations=[ThreadingIntegration(propagate_scope=True)],
    )

    from flask import Flask, request
    from werkzeug.serving import make_server
    from flask_offload import Offload

    app = Flask("sentry_first")
    app.config["OFFLOAD_PROPAGATE"] = True
    Offload(app)
    seen = []

    class Report(threading.Thread):
        def run(self):
            seen.append(["subclass", request.headers["X-User"]])

    def record(kind):
        seen.append([kind, request.headers["X-User"]])

    @app.get("/")
    def index():
        for thread in (
            threading.Thread(target=record, args=("target",)),
            Report(),
            threading.Timer(0.01, record, args=("timer",)),
        ):
            thread.start()
            thread.join(10)
        return "ok"

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    assert requests.get(url, headers={"X-User": "alice"}, timeout=10).text == "ok"
    server.shutdown()
    print(json.dumps(seen))
    """
)


def test_threads_under_sentry_set_up_before_offload(tmp_path: t.Any) -> None:
    """Sentry's thread integration patched in before Flask-Offload's calls
    our run with the thread: threads, Thread subclasses and Timers still run
    and see the request.
    """
    assert run_script(tmp_path, SENTRY_FIRST_SCRIPT) == [
        ["target", "alice"],
        ["subclass", "alice"],
        ["timer", "alice"],
    ]


SENTRY_SCOPE_SCRIPT = textwrap.dedent(
    """
    import json, threading
    import multiprocessing.dummy
    from concurrent.futures import ThreadPoolExecutor
    import requests
    import sentry_sdk
    from sentry_sdk.integrations.threading import ThreadingIntegration

    events = []

    def keep(event, hint):
        events.append([event["message"], event.get("tags", {}).get("customer")])
        return None  # nothing is sent

    sentry_sdk.init(
        dsn="http://key@127.0.0.1:9/1",
        before_send=keep,
        integrations=[ThreadingIntegration(propagate_scope=True)],
    )

    from flask import Flask, request
    from werkzeug.serving import make_server
    from flask_offload import Offload

    app = Flask("sentry_scope")
    app.config["OFFLOAD_PROPAGATE"] = True
    Offload(app)
    pool = ThreadPoolExecutor(2)
    lazy = []

    def report(kind):
        sentry_sdk.capture_message(f"{kind} {request.args['v']}")

    @app.get("/")
    def index():
        sentry_sdk.set_tag("customer", request.args["v"])
        pool.submit(report, "task").result(10)
        thread = threading.Thread(target=report, args=("thread",))
        thread.start()
        thread.join(10)
        # A pool made in the first request: its worker thread started in it.
        if not lazy:
            lazy.append(multiprocessing.dummy.Pool(1))
        lazy[0].apply_async(report, ("pooled",)).get(10)
        return "ok"

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    for v in ("alice", "bob"):
        assert requests.get(url, params={"v": v}, timeout=10).text == "ok"
    server.shutdown()
    print(json.dumps(events))
    """
)


def test_sentry_scope_reaches_propagated_work(tmp_path: t.Any) -> None:
    """Sentry set up first (its documented place) wraps threads and tasks to
    give them the view's scope: the propagated call keeps the scope of the
    request that handed it off, so an event reported there has the tags
    that view set, never those an earlier request left on a pool thread.
    """
    # Each with the tags of its own request: also bob's task on the pool
    # thread that alice's request started (which has alice's scope).
    assert run_script(tmp_path, SENTRY_SCOPE_SCRIPT) == [
        ["task alice", "alice"],
        ["thread alice", "alice"],
        ["pooled alice", "alice"],
        ["task bob", "bob"],
        ["thread bob", "bob"],
        ["pooled bob", "bob"],
    ]


def test_a_library_service_thread_started_in_a_request_carries_none(
    app: Flask, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """redis-py's PubSub worker thread, started lazily in alice's request,
    handles messages for everyone afterwards: it runs with no request, never
    with alice's.
    """
    import redis

    from .conftest import require_service

    require_service("Redis", "127.0.0.1", 6379)
    app.config["OFFLOAD_PROPAGATE"] = True
    offload = Offload(app)
    client = redis.Redis(host="127.0.0.1", port=6379, db=11)
    seen: list[t.Any] = []
    got = threading.Event()
    workers: list[t.Any] = []
    channel = f"offload-test-{os.getpid()}"

    def handler(message: dict[str, t.Any]) -> None:
        seen.append(request.headers.get("X-User") if has_request_context() else None)
        got.set()

    @app.get("/start")
    def start() -> str:
        if not workers:  # lazily, in the first request that needs it
            pubsub = client.pubsub()
            pubsub.subscribe(**{channel: handler})
            workers.append(pubsub.run_in_thread(sleep_time=0.01, daemon=True))
        return "ok"

    @app.get("/notify")
    def notify() -> str:
        client.publish(channel, "hello")
        return "ok"

    server = serve(app)
    try:
        server.get("/start", headers={"X-User": "alice"})
        server.get("/notify", headers={"X-User": "bob"})
        assert got.wait(WAIT)
        assert seen == [None]
    finally:
        for worker in workers:
            worker.stop()
            worker.join(WAIT)
        client.close()
        with app.app_context():
            offload.shutdown()


def test_celerys_api_in_a_thread_still_carries_the_request() -> None:
    """Celery's own service threads are skipped, not its API: a thread whose
    target sends a task (``task.delay``, ``app.send_task``) carries the
    request, which the task's snapshot is made from.
    """
    from celery import Celery

    celery_app = Celery("skip", broker="memory://")

    @celery_app.task
    def ping() -> None:
        pass

    for target in (ping.delay, celery_app.send_task):
        assert not propagation._skip_thread(threading.Thread(target=target))
    from celery.worker.autoscale import Autoscaler

    assert propagation._skip_thread(threading.Thread(target=Autoscaler.body))
