"""A job submitted from a view sees the request after the response was sent."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import threading
import typing as t

import pytest
from flask import after_this_request
from flask import flash
from flask import Flask
from flask import g
from flask import request
from flask import session
from flask import url_for
from flask.wrappers import Request

from flask_offload import Offload
from flask_offload import SnapshotError

from .conftest import LiveServer


class PassportService:
    """The seed's service: reads the caller from the Authorization header."""

    @staticmethod
    def current_user_id() -> str | None:
        auth = request.headers.get("Authorization")
        if not auth or not auth.startswith("Bearer "):
            return None
        return auth.removeprefix("Bearer ")


operation_log: list[tuple[str | None, str]] = []


def save_operation_log(action: str) -> None:
    operation_log.append((PassportService.current_user_id(), action))


@pytest.fixture
def hold() -> threading.Event:
    """Jobs wait on this until the test has the response: they run after it."""
    return threading.Event()


def test_job_sees_request_after_response(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    hold: threading.Event,
) -> None:
    seen: dict[str, t.Any] = {}

    def job() -> None:
        assert hold.wait(10)
        seen.update(
            args=request.args.to_dict(flat=False),
            auth=request.headers.get("Authorization"),
            custom=request.headers.get("X-Custom"),
            json=request.get_json(),
            remote=request.remote_addr,
            path=request.path,
            method=request.method,
            url=url_for("submit", _external=True),
            endpoint=request.endpoint,
            session=dict(session),
            g=dict(vars(g._get_current_object())),
        )

    @app.post("/submit")
    def submit() -> dict[str, str]:
        session["cart"] = [1, 2]
        g.user_id = 7
        g.tags = ["a", {"b": 1}]
        g.connection = object()  # not a primitive: stays in the request
        g._private = "x"  # extension state: never carried
        return {"id": offload.submit(job).id}

    server = serve(app)
    # A first request sets the session cookie the second one carries.
    r = server.post(
        "/submit?q=1&q=2",
        json={"order": 42},
        headers={"Authorization": "Bearer alice", "X-Custom": "yes"},
    )
    assert r.status_code == 200
    hold.set()
    with app.app_context():
        job_obj = offload.get_job(r.json()["id"])
        assert job_obj is not None
        job_obj.result(10)
    assert seen["args"] == {"q": ["1", "2"]}
    assert seen["auth"] == "Bearer alice"
    assert seen["custom"] == "yes"
    assert seen["json"] == {"order": 42}
    assert seen["remote"] == "127.0.0.1"
    assert seen["path"] == "/submit"
    assert seen["method"] == "POST"
    assert seen["url"] == f"{server.url}/submit"
    assert seen["endpoint"] == "submit"
    assert seen["session"] == {"cart": [1, 2]}
    assert seen["g"] == {"user_id": 7, "tags": ["a", {"b": 1}]}


def test_form_and_seed_service(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    hold: threading.Event,
) -> None:
    """The seed's PassportService works unchanged inside save_operation_log()."""
    operation_log.clear()
    seen: dict[str, t.Any] = {}

    def job() -> None:
        assert hold.wait(10)
        seen["form"] = request.form.to_dict()
        save_operation_log("import")

    @app.post("/form")
    def form() -> dict[str, str]:
        return {"id": offload.submit(job).id}

    server = serve(app)
    r = server.post(
        "/form",
        data={"name": "Ann", "city": "Oslo"},
        headers={"Authorization": "Bearer u9"},
    )
    hold.set()
    with app.app_context():
        offload.get_job(r.json()["id"]).result(10)  # type: ignore[union-attr]
    assert seen["form"] == {"name": "Ann", "city": "Oslo"}
    assert operation_log == [("u9", "import")]


def test_mutable_parameter_storage_is_not_shared_between_jobs(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """An app whose request class parses into a mutable ``MultiDict`` (a
    Werkzeug customisation point): each job gets the form and query string
    as submitted, whatever the jobs before it changed in theirs, and the
    view's own are left alone.
    """
    from werkzeug.datastructures import MultiDict

    class MutableRequest(Request):
        parameter_storage_class = MultiDict

    app.request_class = MutableRequest

    def job(n: int) -> dict[str, str | None]:
        seen = {"form": request.form.get("f"), "args": request.args.get("x")}
        request.form["f"] = f"job{n}"
        request.args["x"] = f"job{n}"
        return seen

    @app.post("/scrub")
    def scrub() -> dict[str, t.Any]:
        saw = [offload.submit(job, n).result(10) for n in range(3)]
        return {"saw": saw, "view": [request.form["f"], request.args["x"]]}

    r = serve(app).post("/scrub?x=orig", data={"f": "orig"})
    assert r.json() == {
        "saw": [{"form": "orig", "args": "orig"}] * 3,
        "view": ["orig", "orig"],
    }


def test_session_and_g_are_copies(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    hold: threading.Event,
) -> None:
    """Changes on either side after submit are not seen by the other."""
    seen: dict[str, t.Any] = {}
    after_view: dict[str, t.Any] = {}

    def job() -> None:
        seen["before"] = (list(g.items), dict(session))
        g.items.append("job")
        session["from_job"] = True
        assert hold.wait(10)

    @app.post("/copy")
    def copy_view() -> dict[str, str]:
        g.items = ["view"]
        session["n"] = 1
        j = offload.submit(job)
        g.items.append("later")
        session["n"] = 2
        after_view["g"] = list(g.items)
        return {"id": j.id}

    server = serve(app)
    r = server.post("/copy")
    hold.set()
    with app.app_context():
        offload.get_job(r.json()["id"]).result(10)  # type: ignore[union-attr]
    assert seen["before"] == (["view"], {"n": 1})
    assert after_view["g"] == ["view", "later"]


def test_carry_g_names(app: Flask, serve: t.Callable[[Flask], LiveServer]) -> None:
    app.config["OFFLOAD_CARRY_G"] = ["tenant", "client"]
    offload = Offload(app)
    seen: dict[str, t.Any] = {}
    client = object()

    @app.post("/names")
    def names() -> dict[str, str]:
        g.tenant = "acme"
        g.client = client
        g.other = 1
        return {
            "id": offload.submit(lambda: seen.update(vars(g._get_current_object()))).id
        }

    server = serve(app)
    r = server.post("/names")
    with app.app_context():
        offload.get_job(r.json()["id"]).result(10)  # type: ignore[union-attr]
        offload.shutdown()
    assert seen == {"tenant": "acme", "client": client}


def test_carry_g_none(app: Flask, serve: t.Callable[[Flask], LiveServer]) -> None:
    app.config["OFFLOAD_CARRY_G"] = None
    offload = Offload(app)

    @app.post("/none")
    def none() -> dict[str, str]:
        g.user_id = 1
        return {"id": offload.submit(lambda: dict(vars(g._get_current_object()))).id}

    server = serve(app)
    r = server.post("/none")
    with app.app_context():
        assert offload.get_job(r.json()["id"]).result(10) == {}  # type: ignore[union-attr]
        offload.shutdown()


def test_body_over_limit_fails_only_when_read(
    app: Flask, serve: t.Callable[[Flask], LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    app.config["OFFLOAD_MAX_BODY_SIZE"] = 100
    offload = Offload(app)

    @app.post("/big")
    def big() -> dict[str, str]:
        a = offload.submit(lambda: request.args["x"])
        b = offload.submit(lambda: request.get_data())
        return {"a": a.id, "b": b.id}

    server = serve(app)
    r = server.post(
        "/big?x=1", data=b"y" * 1000, headers={"Content-Type": "text/plain"}
    )
    with app.app_context():
        assert offload.get_job(r.json()["a"]).result(10) == "1"  # type: ignore[union-attr]
        job_b = offload.get_job(r.json()["b"])
        assert job_b is not None
        error = job_b.exception(10)
        offload.shutdown()
    assert "OFFLOAD_MAX_BODY_SIZE" in str(error)
    assert "1000 bytes" in str(error)


@pytest.mark.parametrize("read", ["stream", "get_data", "json"])
def test_view_reads_its_body_after_submit(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer], read: str
) -> None:
    """Submitting reads the body for the job, but the view still reads all
    of it afterwards, whichever way it reads.
    """
    payload = b'{"rows": "%s"}' % (b"x" * 70_000)

    @app.post("/ingest")
    def ingest() -> dict[str, t.Any]:
        job = offload.submit(lambda: len(request.get_data()))
        if read == "stream":
            size = len(request.stream.read())
        elif read == "get_data":
            size = len(request.get_data())
        else:
            size = len(request.get_json()["rows"]) + 12
        return {"id": job.id, "view": size}

    server = serve(app)
    r = server.post(
        "/ingest", data=payload, headers={"Content-Type": "application/json"}
    )
    assert r.json()["view"] == len(payload)
    with app.app_context():
        assert offload.get_job(r.json()["id"]).result(10) == len(payload)  # type: ignore[union-attr]


@pytest.mark.parametrize("size", [600, 300_000])
def test_chunked_body_is_read_only_up_to_the_limit(
    app: Flask, serve: t.Callable[[Flask], LiveServer], size: int
) -> None:
    """A body sent without Content-Length (chunked) is carried when it fits
    in OFFLOAD_MAX_BODY_SIZE; a larger one is not buffered, the view streams
    all of it, and the job that reads it gets an error naming the setting.
    """
    app.config["OFFLOAD_MAX_BODY_SIZE"] = 1024
    offload = Offload(app)
    chunk = bytes(range(256)) * 4

    @app.post("/upload")
    def upload() -> dict[str, t.Any]:
        job = offload.submit(lambda: hashlib.sha256(request.get_data()).hexdigest())
        digest = hashlib.sha256()
        read = 0
        while block := request.stream.read(65536):
            digest.update(block)
            read += len(block)
        return {"id": job.id, "read": read, "sha256": digest.hexdigest()}

    server = serve(app)
    body = (chunk * (size // len(chunk) + 1))[:size]
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    try:
        conn.request(
            "POST",
            "/upload",
            body=iter([body[i : i + 8192] for i in range(0, size, 8192)]),
            headers={"Content-Type": "application/octet-stream"},
            encode_chunked=True,
        )
        out = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert out["read"] == size
    assert out["sha256"] == hashlib.sha256(body).hexdigest()
    with app.app_context():
        job = offload.get_job(out["id"])
        assert job is not None
        if size <= 1024:
            assert job.result(10) == out["sha256"]
        else:
            error = job.exception(10)
            assert isinstance(error, SnapshotError)
            assert "without Content-Length, over 1024 bytes" in str(error)
            assert "OFFLOAD_MAX_BODY_SIZE" in str(error)
        offload.shutdown()


def test_job_of_a_request_without_body_reads_an_empty_one(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """A GET's jobs read an empty body, as the view would, through every way
    in; closing its stream in one job leaves the next one's readable.
    """

    def job() -> dict[str, t.Any]:
        out = {
            "data": request.get_data().decode(),
            "stream": request.stream.read().decode(),
            "input": request.environ["wsgi.input"].read().decode(),
            "input_closed": request.environ["wsgi.input"].closed,
            "json": request.get_json(silent=True),
        }
        request.stream.close()
        request.environ["wsgi.input"].close()
        return out

    @app.get("/report")
    def report() -> dict[str, str]:
        return {"ids": ",".join(offload.submit(job).id for _ in range(2))}

    server = serve(app)
    empty = {"data": "", "stream": "", "input": "", "input_closed": False, "json": None}
    for _ in range(2):
        ids = server.get("/report").json()["ids"].split(",")
        with app.app_context():
            for job_id in ids:
                assert offload.get_job(job_id).result(10) == empty  # type: ignore[union-attr]


def test_session_change_in_job_warns_once(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def job() -> None:
        session["x"] = 1

    @app.post("/s")
    def s() -> dict[str, list[str]]:
        return {"ids": [offload.submit(job).id, offload.submit(job).id]}

    server = serve(app)
    with caplog.at_level("WARNING", logger="flask_offload"):
        r = server.post("/s")
        with app.app_context():
            for job_id in r.json()["ids"]:
                offload.get_job(job_id).result(10)  # type: ignore[union-attr]
    warnings = [r for r in caplog.records if "session" in r.getMessage()]
    assert len(warnings) == 1
    assert "never reach the client" in warnings[0].getMessage()


def test_flash_in_job_warns(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A message flashed in a job is lost with the session: warned about."""

    @app.post("/f")
    def f() -> dict[str, str]:
        return {"id": offload.submit(flash, "done").id}

    server = serve(app)
    with caplog.at_level("WARNING", logger="flask_offload"):
        r = server.post("/f")
        with app.app_context():
            offload.get_job(r.json()["id"]).result(10)  # type: ignore[union-attr]
    assert "A job changed the session" in caplog.text


def test_after_this_request_in_job_warns(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A function a job registers with ``after_this_request`` never runs:
    no response follows a job. Warned about once per app, as session
    changes are.
    """
    ran: list[str] = []

    def job() -> None:
        @after_this_request
        def add_header(response: t.Any) -> t.Any:
            ran.append("after")
            return response

    @app.post("/a")
    def a() -> dict[str, list[str]]:
        return {"ids": [offload.submit(job).id, offload.submit(job).id]}

    server = serve(app)
    with caplog.at_level("WARNING", logger="flask_offload"):
        r = server.post("/a")
        with app.app_context():
            for job_id in r.json()["ids"]:
                offload.get_job(job_id).result(10)  # type: ignore[union-attr]
    warnings = [r for r in caplog.records if "after_this_request" in r.getMessage()]
    assert len(warnings) == 1
    assert "never runs" in warnings[0].getMessage()
    assert ran == []


def test_submit_does_not_add_vary_cookie(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """Capturing the session must not change the response's caching headers."""

    @app.get("/login")
    def login() -> str:
        session["user"] = "ann"
        return "ok"

    @app.get("/plain")
    def plain() -> dict[str, str]:
        return {"id": offload.submit(lambda: session.get("user")).id}

    server = serve(app)
    assert "Cookie" in server.get("/login").headers.get("Vary", "")
    r = server.get("/plain")
    assert "Cookie" not in r.headers.get("Vary", "")
    with app.app_context():
        assert offload.get_job(r.json()["id"]).result(10) == "ann"  # type: ignore[union-attr]


def test_job_sees_the_routing_the_view_saw(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    hold: threading.Event,
) -> None:
    """The route match is the view's, taken at submit: view_args as the view
    had them after url_value_preprocessor, and url_for works in the job.
    """
    seen: dict[str, t.Any] = {}

    @app.url_value_preprocessor
    def pull_lang(endpoint: str | None, values: dict[str, t.Any] | None) -> None:
        if values is not None:
            g.lang = values.pop("lang", None)

    @app.url_defaults
    def add_lang(endpoint: str, values: dict[str, t.Any]) -> None:
        values.setdefault("lang", "en")

    def job() -> None:
        assert hold.wait(10)
        seen.update(
            view_args=request.view_args,
            rule=request.url_rule.rule if request.url_rule else None,
            endpoint=request.endpoint,
            url=url_for("order", order_id=8),
        )

    @app.get("/<lang>/orders/<int:order_id>")
    def order(order_id: int) -> dict[str, str]:
        return {"id": offload.submit(job).id}

    server = serve(app)
    r = server.get("/nb/orders/7")
    hold.set()
    with app.app_context():
        offload.get_job(r.json()["id"]).result(10)  # type: ignore[union-attr]
    assert seen == {
        "view_args": {"order_id": 7},
        "rule": "/<lang>/orders/<int:order_id>",
        "endpoint": "order",
        "url": "/en/orders/8",
    }


def test_request_class_with_its_own_init(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    hold: threading.Event,
) -> None:
    """An app's own Request subclass is built with its own __init__ in jobs."""
    from flask import Request

    class TenantRequest(Request):
        def __init__(self, environ: dict[str, t.Any], *args: t.Any) -> None:
            super().__init__(environ, *args)
            self.tenant = environ.get("HTTP_X_TENANT", "none")

    app.request_class = TenantRequest
    seen: list[t.Any] = []

    def job() -> None:
        assert hold.wait(10)
        seen.append((type(request._get_current_object()), request.tenant))  # type: ignore[attr-defined]

    @app.get("/t")
    def view() -> dict[str, str]:
        return {"id": offload.submit(job).id}

    server = serve(app)
    r = server.get("/t", headers={"X-Tenant": "acme"})
    hold.set()
    with app.app_context():
        offload.get_job(r.json()["id"]).result(10)  # type: ignore[union-attr]
    assert seen == [(TenantRequest, "acme")]


def test_job_sees_the_request_the_view_saw(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    hold: threading.Event,
) -> None:
    """Method, path, host and remote address are the view's, even if a hook
    changed the environ after the request was made; the job's environ is its
    own copy.
    """
    seen: dict[str, t.Any] = {}

    @app.before_request
    def rewrite_environ() -> None:
        request.environ["REMOTE_ADDR"] = "203.0.113.9"

    def job() -> None:
        assert hold.wait(10)
        request.environ["HTTP_X_JOB"] = "changed"
        seen.update(
            method=request.method,
            path=request.path,
            host=request.host,
            remote_addr=request.remote_addr,
            environ_addr=request.environ["REMOTE_ADDR"],
        )

    @app.post("/reports/<name>")
    def report(name: str) -> dict[str, t.Any]:
        job_id = offload.submit(job).id
        return {
            "id": job_id,
            "method": request.method,
            "path": request.path,
            "host": request.host,
            "remote_addr": request.remote_addr,
            "x_job": request.environ.get("HTTP_X_JOB"),
        }

    server = serve(app)
    r = server.post("/reports/q3")
    view = r.json()
    hold.set()
    with app.app_context():
        offload.get_job(view.pop("id")).result(10)  # type: ignore[union-attr]
    assert view["remote_addr"] == "127.0.0.1"
    assert view.pop("x_job") is None
    assert seen == {**view, "environ_addr": "203.0.113.9"}


def test_job_environ_carries_strings_only(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """The job's environ has every string the view's had, including a
    middleware's own keys, and none of the server's or a middleware's objects
    (sockets, streams, clients): only the WSGI values the replay supplies.
    """
    wsgi_app = app.wsgi_app

    def middleware(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        environ["myapp.tenant"] = "acme"
        environ["myapp.db"] = object()
        environ["myapp.limit"] = 10
        return wsgi_app(environ, start_response)

    app.wsgi_app = middleware  # type: ignore[method-assign]

    def job() -> dict[str, t.Any]:
        environ = request.environ
        return {
            "strings": {k: v for k, v in environ.items() if isinstance(v, str)},
            "others": sorted(k for k, v in environ.items() if not isinstance(v, str)),
        }

    @app.get("/report")
    def report() -> dict[str, t.Any]:
        environ = request.environ
        return {
            "id": offload.submit(job).id,
            "strings": {k: v for k, v in environ.items() if isinstance(v, str)},
            "others": sorted(k for k, v in environ.items() if not isinstance(v, str)),
        }

    r = serve(app).get("/report?month=2025-01", headers={"X-Tenant": "acme"})
    view = r.json()
    with app.app_context():
        seen = offload.get_job(view["id"]).result(10)  # type: ignore[union-attr]
    assert seen["strings"] == view["strings"]
    assert seen["strings"]["myapp.tenant"] == "acme"
    assert seen["strings"]["HTTP_X_TENANT"] == "acme"
    # The view's environ held the server's socket and the middleware's objects.
    assert {"myapp.db", "myapp.limit", "werkzeug.socket"} <= set(view["others"])
    assert seen["others"] == [
        "flask_offload.request",
        "werkzeug.request",
        "wsgi.errors",
        "wsgi.input",
        "wsgi.multiprocess",
        "wsgi.multithread",
        "wsgi.run_once",
        "wsgi.version",
    ]


def test_job_environ_after_a_key_changes_type(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """A server's or middleware's key seen holding an object is dropped by
    name in later captures (waitress and uWSGI set such keys on every
    request), but when it holds a string it is still carried.
    """
    wsgi_app = app.wsgi_app

    def middleware(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        as_text = environ.get("QUERY_STRING") == "text"
        environ["myserver.client"] = "10.0.0.7" if as_text else object()
        environ["myserver.hook"] = lambda: None
        return wsgi_app(environ, start_response)

    app.wsgi_app = middleware  # type: ignore[method-assign]

    def job() -> dict[str, t.Any]:
        return {k: v for k, v in request.environ.items() if "myserver" in k}

    @app.get("/report")
    def report() -> str:
        return offload.submit(job).id

    server = serve(app)
    seen = []
    for query in ("object", "text", "object", "text"):
        job_id = server.get(f"/report?{query}").text
        with app.app_context():
            seen.append(offload.get_job(job_id).result(10))  # type: ignore[union-attr]
    assert seen == [{}, {"myserver.client": "10.0.0.7"}] * 2


def test_job_request_fields_match_werkzeug() -> None:
    """A job's request copies what Werkzeug derives from the environ, each
    value to its own attribute (they are set in one unpacking, by position).
    """
    from flask.wrappers import Request
    from werkzeug.test import EnvironBuilder

    from flask_offload import compat

    environ = EnvironBuilder(
        path="/orders",
        base_url="https://shop.example.com:8443/app",
        query_string="month=2025-01",
        method="PATCH",
        environ_base={"REMOTE_ADDR": "203.0.113.5"},
    ).get_environ()
    view_request = Request(environ)
    shared = compat.request_fields(view_request)
    assert shared is not None
    copy = compat.build_request(
        Request, shared, dict(environ), io.BytesIO(), None, None
    )
    fields = compat._SHARED_FIELDS
    assert [getattr(copy, f) for f in fields] == [
        getattr(view_request, f) for f in fields
    ]
    assert len({repr(getattr(copy, f)) for f in fields}) == len(fields)
    assert copy.url == "https://shop.example.com:8443/app/orders?month=2025-01"
    # Its headers are read from its own environ, as Werkzeug's are.
    assert dict(copy.headers) == dict(view_request.headers)
    assert copy.headers["Host"] == "shop.example.com:8443"
    assert copy.args.to_dict() == {"month": "2025-01"}


def test_session_values_are_copied_whatever_they_hold(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """Session values holding tuples or datetimes are copied too: a job
    changing its copy in place changes neither the view's session (and so
    the client's cookie) nor what another job sees.
    """
    import datetime

    def job(tag: str) -> list[t.Any]:
        session["cart"].append(("job", tag))
        session["prefs"]["theme"] = tag
        return [list(item) for item in session["cart"]]

    @app.post("/login")
    def login() -> str:
        session["cart"] = [("book", 1)]
        session["prefs"] = {"theme": "light", "since": datetime.datetime(2024, 1, 1)}
        return "ok"

    @app.post("/go")
    def go() -> dict[str, t.Any]:
        first = offload.submit(job, "j1").result(10)
        second = offload.submit(job, "j2").result(10)
        session["visits"] = 1  # the view saves its session, as most do
        return {"first": first, "second": second}

    @app.get("/show")
    def show() -> dict[str, t.Any]:
        return {
            "cart": [list(item) for item in session["cart"]],
            "theme": session["prefs"]["theme"],
        }

    server = serve(app)
    server.post("/login")
    r = server.post("/go").json()
    assert r["first"] == [["book", 1], ["job", "j1"]]
    assert r["second"] == [["book", 1], ["job", "j2"]]
    assert server.get("/show").json() == {"cart": [["book", 1]], "theme": "light"}


def test_g_value_that_contains_itself_is_not_carried(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """A tree with parent links on ``g`` is not a plain value: left out,
    like other objects, instead of failing the submit.
    """

    @app.post("/tree")
    def tree() -> dict[str, str]:
        root: dict[str, t.Any] = {"name": "root", "children": []}
        root["children"].append({"name": "leaf", "parent": root})
        g.tree = root
        deep: list[t.Any] = []
        for _ in range(5000):
            deep = [deep]
        g.deep = deep
        g.user = "ann"
        return {"id": offload.submit(lambda: sorted(vars(g))).id}

    server = serve(app)
    r = server.post("/tree")
    assert r.status_code == 200, r.text
    with app.app_context():
        assert offload.get_job(r.json()["id"]).result(10) == ["user"]  # type: ignore[union-attr]


def test_submit_from_an_errorhandler_413(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """A request over MAX_CONTENT_LENGTH: the app's 413 handler can still
    submit a job, which gets the request without its body; reading the body
    there says why it is missing.
    """
    app.config["MAX_CONTENT_LENGTH"] = 1000
    seen: dict[str, t.Any] = {}

    def audit() -> str:
        seen["path"] = request.path
        try:
            request.get_data()
        except SnapshotError as e:
            seen["error"] = str(e)
        return request.headers["X-Client"]

    @app.post("/upload")
    def upload() -> str:
        return str(len(request.files))

    @app.errorhandler(413)
    def too_large(e: Exception) -> tuple[dict[str, str], int]:
        return {"id": offload.submit(audit).id}, 413

    server = serve(app)
    for kwargs in (
        {"files": {"f": ("big.bin", b"x" * 5000)}},
        {
            "data": b'{"a": "%s"}' % (b"x" * 5000),
            "headers": {"Content-Type": "application/json"},
        },
    ):
        headers = {"X-Client": "ann", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        r = server.post("/upload", headers=headers, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 413, r.text
        with app.app_context():
            assert offload.get_job(r.json()["id"]).result(10) == "ann"  # type: ignore[union-attr]
        assert seen["path"] == "/upload"
        assert "refused it as too large" in seen.pop("error")


@pytest.mark.parametrize("view_reads", ["before", "after", "never"])
def test_urlencoded_body_readable_in_view_and_job(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    view_reads: str,
) -> None:
    """A webhook that checks a signature over its raw urlencoded body can
    submit first: the view and the job both get the raw bytes, and the
    form.
    """
    import hmac

    def sign(body: bytes) -> str:
        return hmac.new(b"hook key", body, "sha256").hexdigest()

    def job() -> dict[str, t.Any]:
        return {"raw": request.get_data().decode(), "event": request.form["event"]}

    @app.post("/hook")
    def hook() -> dict[str, t.Any]:
        raw = request.get_data() if view_reads == "before" else None
        job_id = offload.submit(job).id
        if view_reads == "after":
            raw = request.get_data()
        ok = raw is None or hmac.compare_digest(
            sign(raw), request.headers["X-Signature"]
        )
        return {"id": job_id, "ok": ok, "event": request.form["event"]}

    body = b"event=paid&amount=42&note=caf%C3%A9"
    server = serve(app)
    r = server.post(
        "/hook",
        data=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Signature": sign(body),
        },
    )
    assert r.json()["ok"] is True and r.json()["event"] == "paid"
    with app.app_context():
        got = offload.get_job(r.json()["id"]).result(10)  # type: ignore[union-attr]
    assert got == {"raw": body.decode(), "event": "paid"}


def test_body_the_view_read_up_is_empty_in_the_job(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """The view copied the stream away before submitting: the job finds the
    body empty, as the view would, instead of a disconnected client.
    """

    def job() -> list[t.Any]:
        return [request.get_data(), request.get_json(silent=True)]

    @app.post("/copy")
    def copy() -> dict[str, t.Any]:
        sink = io.BytesIO()
        while chunk := request.stream.read(4096):
            sink.write(chunk)
        return {"id": offload.submit(job).id, "copied": len(sink.getvalue())}

    server = serve(app)
    r = server.post("/copy", json={"rows": "x" * 100})
    assert r.json()["copied"] > 100
    with app.app_context():
        assert offload.get_job(r.json()["id"]).result(10) == [b"", None]  # type: ignore[union-attr]


def test_messages_flashed_for_the_next_page_are_not_the_jobs(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job rendering the site's layout (which shows flashed messages) does
    not show the user's pending messages, and changes no session.
    """
    from flask import render_template_string

    layout = "{% for m in get_flashed_messages() %}[{{ m }}]{% endfor %}report"

    @app.post("/save")
    def save() -> dict[str, str]:
        flash("Saved!")  # for the user's next page
        return {"id": offload.submit(render_template_string, layout).id}

    @app.get("/next")
    def next_page() -> str:
        return render_template_string(layout)

    server = serve(app)
    with caplog.at_level("WARNING", logger="flask_offload"):
        r = server.post("/save")
        with app.app_context():
            assert offload.get_job(r.json()["id"]).result(10) == "report"  # type: ignore[union-attr]
    assert "changed the session" not in caplog.text
    assert server.get("/next").text == "[Saved!]report"


@pytest.mark.parametrize(
    ("limit", "reads", "send"),
    [
        ("MAX_CONTENT_LENGTH", "nothing", "json"),
        ("MAX_CONTENT_LENGTH", "json", "json"),
        ("MAX_CONTENT_LENGTH", "nothing", "multipart"),
        ("MAX_CONTENT_LENGTH", "files", "multipart"),
        ("MAX_FORM_MEMORY_SIZE", "nothing", "multipart"),
        ("MAX_FORM_MEMORY_SIZE", "form", "multipart"),
        *(
            # Werkzeug itself leaves the parts it parsed before refusing
            # unclosed, with or without Flask-Offload.
            pytest.param(
                "MAX_FORM_PARTS",
                reads,
                "multipart",
                marks=pytest.mark.filterwarnings(
                    "ignore::pytest.PytestUnraisableExceptionWarning"
                ),
            )
            for reads in ("nothing", "files")
        ),
    ],
)
def test_a_body_over_the_apps_limits_answers_as_without_a_submit(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    limit: str,
    reads: str,
    send: str,
) -> None:
    """A body over the app's limits, sent to a view that submits a job: the
    client gets what the same view answers without the submit (413 if it
    reads the body, its own answer if it does not), and a job reading the
    body learns that the app refused it.
    """
    app.config[limit] = 3 if limit == "MAX_FORM_PARTS" else 1000
    errors: list[BaseException] = []

    def job() -> None:
        try:
            request.get_data()
        except SnapshotError as e:
            errors.append(e)

    def view(submit: bool) -> str:
        if submit:
            offload.submit(job)
        if reads == "json":
            request.get_json()
        elif reads == "form":
            dict(request.form)
        elif reads == "files":
            dict(request.files)
        return "answered"

    app.add_url_rule("/plain", "plain", lambda: view(False), methods=["POST"])
    app.add_url_rule("/offload", "offload", lambda: view(True), methods=["POST"])
    server = serve(app)

    def post(path: str) -> tuple[int, str]:
        if send == "json":
            r = server.post(path, json={"a": "x" * 5000})
        elif limit == "MAX_FORM_MEMORY_SIZE":  # a large text field
            r = server.post(path, data={"a": "x" * 5000}, files={"f": ("a.bin", b"x")})
        else:
            r = server.post(
                path, files={f"f{i}": ("a.bin", b"x" * 400) for i in range(5)}
            )
        return r.status_code, r.text if r.status_code == 200 else ""

    assert post("/offload") == post("/plain")
    with app.app_context():
        assert offload.join(10)
    if limit == "MAX_FORM_PARTS":
        import gc

        server.wait_idle()
        gc.collect()  # Werkzeug's unclosed parts: warned about in this test
    [error] = errors
    assert "the app refused it as too large" in str(error)


def test_a_job_cannot_change_what_another_job_of_the_request_sees(
    app: Flask, offload: Offload, serve: t.Callable[[Flask], LiveServer]
) -> None:
    """The jobs of one request share its captured data: a job writing to it
    (through ``current_job.snapshot``) is refused, and a job's own
    ``request.environ`` is its own.
    """
    from flask_offload import current_job

    first_done = threading.Event()
    seen: dict[str, t.Any] = {}

    def first() -> None:
        request.environ["HTTP_X_USER"] = "mine"  # its own copy
        try:
            current_job.snapshot.request.environ["HTTP_X_USER"] = "mallory"  # type: ignore[index, union-attr]
        except TypeError as e:
            seen["refused"] = str(e)
        first_done.set()

    def second() -> None:
        first_done.wait(10)
        seen["user"] = request.headers["X-User"]

    @app.get("/two")
    def two() -> str:
        offload.submit(first)
        offload.submit(second)
        return "ok"

    server = serve(app)
    assert server.get("/two", headers={"X-User": "alice"}).text == "ok"
    with app.app_context():
        assert offload.join(10)
    assert seen["user"] == "alice"
    assert "does not support item assignment" in seen["refused"]


def test_a_jobs_log_lines_go_to_the_servers_error_log(tmp_path: t.Any) -> None:
    """Under gunicorn, ``current_app.logger`` in a job writes where it does in
    the view: the server's error log (Flask's handler uses ``wsgi.errors``).
    """
    import os
    import socket
    import subprocess
    import sys
    import time

    (tmp_path / "logapp.py").write_text(
        "from flask import Flask, current_app\n"
        "from flask_offload import Offload\n"
        "app = Flask(__name__)\n"
        "offload = Offload(app)\n"
        "def job():\n"
        "    current_app.logger.error('marker-from-the-job')\n"
        "@app.get('/')\n"
        "def index():\n"
        "    current_app.logger.error('marker-from-the-view')\n"
        "    return offload.submit(job).id\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "error.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "1", "--threads", "2"]
        + ["-b", f"127.0.0.1:{port}", "--error-logfile", str(log), "logapp:app"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        import requests

        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)  # the server is starting: no event to wait on
        assert r.status_code == 200
        while "marker-from-the-job" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)  # another process writes the file
        assert "marker-from-the-view" in log.read_text()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "marker-from-the-job" not in err


@pytest.mark.parametrize(
    "case",
    [
        "chunked_at_max",
        "urlencoded_over_form_memory",
        "urlencoded_stream",
        "held",
        "form_parsed_first_at_max",
        "chunked_stream_after",
        "chunked_input_after",
    ],
)
def test_the_view_reads_its_body_as_without_a_submit(
    app: Flask,
    offload: Offload,
    serve: t.Callable[[Flask], LiveServer],
    case: str,
) -> None:
    """Whatever the capture read, the view reads the same body as the same
    view without the submit (Flask itself is the reference), and the job
    gets it too.
    """
    body = b"sig=" + b"a" * 5000
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    chunked = case.startswith("chunked") or case == "form_parsed_first_at_max"
    if case in ("chunked_at_max", "form_parsed_first_at_max"):
        app.config["MAX_CONTENT_LENGTH"] = len(body)  # exactly
    if case in ("chunked_at_max", "chunked_input_after"):
        headers = {"Content-Type": "application/octet-stream"}
    elif case == "urlencoded_over_form_memory":
        app.config["MAX_FORM_MEMORY_SIZE"] = 1000  # Werkzeug parses it anyway
    seen: list[int] = []

    def view(submit: bool) -> str:
        held = request.stream if case == "held" else None
        if case == "form_parsed_first_at_max":
            first = request.form["sig"]
        if submit:
            offload.submit(
                lambda: seen.append(
                    len(request.form.get("sig", "")) or len(request.get_data())
                )
            )
        if case == "form_parsed_first_at_max":
            assert request.form["sig"] == first  # still there, no 413
            return hashlib.sha256(b"sig=" + first.encode()).hexdigest()
        if held is not None:
            got = held.read()
        elif case in ("urlencoded_stream", "chunked_stream_after"):
            got = request.stream.read()
        elif case == "chunked_input_after":
            got = request.environ["wsgi.input"].read()
        else:
            got = request.get_data()
        return hashlib.sha256(got).hexdigest()

    app.add_url_rule("/plain", "plain", lambda: view(False), methods=["POST"])
    app.add_url_rule("/offload", "offload", lambda: view(True), methods=["POST"])
    server = serve(app)

    def post(path: str) -> tuple[int, str]:
        data: t.Any = body
        if chunked:
            data = iter([body[:2000], body[2000:]])  # no Content-Length
        r = server.post(path, data=data, headers=headers)
        return r.status_code, r.text

    expected = (200, hashlib.sha256(body).hexdigest())
    assert post("/plain") == expected
    assert post("/offload") == expected
    with app.app_context():
        assert offload.join(10)
    # The job reads the form's field, or the raw bytes, the client sent.
    raw = headers["Content-Type"] == "application/octet-stream"
    assert seen == [len(body) if raw else len(body) - len("sig=")]
