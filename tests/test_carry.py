"""carry(): hand-made threads, Thread subclasses, pools and executors."""

from __future__ import annotations

import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.dummy import Pool

import pytest
from flask import current_app
from flask import Flask
from flask import g
from flask import has_request_context
from flask import request
from flask import session

from flask_offload import carry
from flask_offload import current_job
from flask_offload import Offload

from .conftest import LiveServer


def who(item: int = 0) -> tuple[str | None, str | None, int, int]:
    """What background code reads: the header, an arg, g, and its input."""
    return (request.headers.get("X-User"), request.args.get("q"), g.get("n"), item)


class Worker(threading.Thread):
    def __init__(self, fn: t.Callable[[], t.Any], out: list[t.Any]) -> None:
        super().__init__()
        self.fn = fn
        self.out = out

    def run(self) -> None:
        self.out.append(self.fn())


ROUNDS = 20


@pytest.fixture
def server(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> LiveServer:
    @app.before_request
    def set_g() -> None:
        g.n = int(request.args.get("n", 0))

    return serve(app)


def test_thread_target(app: Flask, server: LiveServer) -> None:
    out: list[t.Any] = []
    started: list[threading.Thread] = []

    @app.get("/thread")
    def thread_view() -> str:
        th = threading.Thread(target=carry(lambda: out.append(who())))
        th.start()
        started.append(th)
        return "ok"

    for i in range(ROUNDS):
        assert server.get(f"/thread?q=a{i}&n={i}", headers={"X-User": f"u{i}"}).ok
    for th in started:
        th.join(10)
    assert sorted(out, key=lambda r: r[2]) == [
        (f"u{i}", f"a{i}", i, 0) for i in range(ROUNDS)
    ]


def test_thread_subclass_after_response(app: Flask, server: LiveServer) -> None:
    out: list[t.Any] = []
    hold = threading.Event()
    threads: list[threading.Thread] = []

    def after() -> t.Any:
        assert hold.wait(10)
        return who()

    @app.get("/sub")
    def sub() -> str:
        th = Worker(carry(after), out)
        th.start()
        threads.append(th)
        return "ok"

    assert server.get("/sub?q=x&n=3", headers={"X-User": "ann"}).ok
    hold.set()
    threads[0].join(10)
    assert out == [("ann", "x", 3, 0)]


@pytest.mark.parametrize("kind", ["dummy.Pool.map", "ThreadPoolExecutor.map"])
def test_one_wrapper_shared_by_map(app: Flask, server: LiveServer, kind: str) -> None:
    """copy_current_request_context raises the Token error here (flask#5252)."""
    barrier = threading.Barrier(3, timeout=10)

    def work(item: int) -> t.Any:
        if item < 3:
            barrier.wait()  # three calls of the same wrapper at once
        return who(item)

    @app.get("/map")
    def map_view() -> dict[str, t.Any]:
        wrapped = carry(work)
        if kind == "dummy.Pool.map":
            with Pool(3) as pool:
                results = pool.map(wrapped, range(9))
        else:
            with ThreadPoolExecutor(3) as ex:
                results = list(ex.map(wrapped, range(9)))
        return {"results": results}

    for i in range(5):
        r = server.get(f"/map?q=m{i}&n={i}", headers={"X-User": f"u{i}"})
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [[f"u{i}", f"m{i}", i, k] for k in range(9)]


def test_grandchild_pool_inside_carried_thread_after_response(
    app: Flask, server: LiveServer
) -> None:
    hold = threading.Event()
    out: list[t.Any] = []
    done = threading.Event()

    def child() -> None:
        assert hold.wait(10)
        with Pool(2) as pool:
            out.extend(pool.map(carry(who), range(4)))
        with ThreadPoolExecutor(2) as ex:
            out.extend(ex.map(carry(who), range(4, 6)))
        grandchild = threading.Thread(target=carry(lambda: out.append(who(99))))
        grandchild.start()
        grandchild.join()
        done.set()

    @app.get("/nest")
    def nest() -> str:
        threading.Thread(target=carry(child)).start()
        return "ok"

    assert server.get("/nest?q=deep&n=5", headers={"X-User": "zoe"}).ok
    hold.set()
    assert done.wait(10)
    assert out == [("zoe", "deep", 5, k) for k in [0, 1, 2, 3, 4, 5, 99]]


def test_each_call_gets_its_own_context(app: Flask, server: LiveServer) -> None:
    seen: list[t.Any] = []

    def work() -> None:
        g.n += 1  # a call changes its own g only
        seen.append((g.n, request._get_current_object()))

    @app.get("/own")
    def own() -> str:
        wrapped = carry(work)
        wrapped()
        wrapped()
        return str(g.n)

    assert server.get("/own?n=1").text == "1"
    assert [n for n, _ in seen] == [2, 2]
    assert seen[0][1] is not seen[1][1]


def test_calls_do_not_share_the_sessions_lists(app: Flask, server: LiveServer) -> None:
    """A call that changes a list in its session copy changes it for itself
    only, as with ``g``.
    """

    def add_to_cart(item: str) -> list[str]:
        session["cart"].append(item)
        return list(session["cart"])

    @app.get("/login")
    def login() -> str:
        session["cart"] = ["x"]
        return "ok"

    @app.get("/run")
    def run() -> dict[str, t.Any]:
        wrapped = carry(add_to_cart)
        return {"calls": [wrapped("a"), wrapped("b")], "view": session["cart"]}

    server.get("/login")
    assert server.get("/run").json() == {
        "calls": [["x", "a"], ["x", "b"]],
        "view": ["x"],
    }


def test_carry_outside_context_raises() -> None:
    with pytest.raises(RuntimeError, match="'carry' can only be used when"):
        carry(who)


def test_carry_in_app_context_only(app: Flask, offload: Offload) -> None:
    out: list[t.Any] = []
    with app.app_context():
        th = threading.Thread(
            target=carry(lambda: out.append((current_app.name, has_request_context())))
        )
    th.start()
    th.join(10)
    assert out == [(app.name, False)]


def test_carry_inside_job_keeps_current_job(app: Flask, offload: Offload) -> None:
    def job() -> str:
        def grandchild() -> None:
            current_job.set_progress(0.5, "from grandchild")

        th = threading.Thread(target=carry(grandchild))
        th.start()
        th.join()
        return current_job.id

    with app.app_context():
        j = offload.submit(job)
        assert j.result(10) == j.id
    assert (j.progress, j.message) == (0.5, "from grandchild")


def test_carry_without_offload_instance(serve: t.Callable[[Flask], LiveServer]) -> None:
    """carry() also works in an app that never created an Offload."""
    app = Flask("plain")
    teardowns: list[str] = []
    out: list[t.Any] = []

    @app.teardown_request
    def td(exc: BaseException | None) -> None:
        teardowns.append(threading.current_thread().name)

    @app.get("/plain")
    def plain() -> str:
        th = threading.Thread(
            target=carry(lambda: out.append(request.args["q"])), name="bg"
        )
        th.start()
        th.join()
        return "ok"

    server = serve(app)
    assert server.get("/plain?q=1").ok
    assert out == ["1"]
    assert "bg" not in teardowns


def test_a_carried_call_returns_what_the_function_returns(
    app: Flask, server: LiveServer
) -> None:
    """A generator or a coroutine returned by a carried function reaches the
    caller as it is, as without carry (only a job's result must be final).
    """
    import inspect

    def lazy_rows(n: int) -> t.Iterator[int]:
        return (i * 2 for i in range(n))

    async def fetch() -> int:
        return 1

    def starts_fetch() -> t.Any:
        return fetch()

    @app.get("/lazy")
    def lazy() -> dict[str, t.Any]:
        with ThreadPoolExecutor(1) as ex:
            rows = list(ex.submit(carry(lazy_rows), 3).result())
            coro = ex.submit(carry(starts_fetch)).result()
        kind = inspect.iscoroutine(coro)
        coro.close()
        return {"rows": rows, "coroutine": kind}

    assert server.get("/lazy").json() == {"rows": [0, 2, 4], "coroutine": True}


@pytest.mark.parametrize("holder", ["stream", "wsgi.input"])
def test_a_stream_taken_before_a_carry_still_gives_the_whole_body(
    app: Flask, server: LiveServer, holder: str
) -> None:
    """A view that takes ``request.stream`` and then starts a carried thread,
    which captures the body: the stream it took still reads the whole body,
    as without carry; so does ``wsgi.input`` read after the capture.
    """
    body = bytes(range(256)) * 4000  # 1,024,000 bytes

    @app.post("/save")
    def save() -> dict[str, int]:
        stream = request.stream
        seen: list[int] = []
        th = threading.Thread(target=carry(lambda: seen.append(len(request.data))))
        th.start()
        th.join()
        if holder == "wsgi.input":
            stream = request.environ["wsgi.input"]
        got = stream.read(request.content_length)
        return {"view": len(got), "same": int(got == body), "job": seen[0]}

    r = server.post("/save", data=body, headers={"Content-Type": "application/x-raw"})
    assert r.json() == {"view": len(body), "same": 1, "job": len(body)}
