from __future__ import annotations

import os
import socket
import threading
import typing as t

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from flask_offload import Offload

pytest_plugins = ["pytester"]

REQUIRE_SERVICES = os.environ.get("OFFLOAD_REQUIRE_SERVICES") == "1"


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a local service is missing; fail in CI, where it must exist."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        message = f"{name} is not reachable on {host}:{port}."
        if REQUIRE_SERVICES:
            pytest.fail(message + " OFFLOAD_REQUIRE_SERVICES=1 requires it.")
        pytest.skip(message)


class LiveServer:
    """A real threaded werkzeug server on 127.0.0.1, as users run Flask."""

    def __init__(self, app: Flask) -> None:
        def wsgi(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
            if environ["PATH_INFO"] == "/__live__":  # never reaches the app
                start_response("204 No Content", [])
                return []
            return app(environ, start_response)

        self.server = make_server("127.0.0.1", 0, wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self.thread.start()
        self.session = requests.Session()
        # Answering a request proves serve_forever runs (and has made its
        # selector): tests that count descriptors start from a settled state.
        requests.get(self.url + "/__live__", timeout=10)

    def get(self, path: str, **kwargs: t.Any) -> requests.Response:
        return self.session.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: t.Any) -> requests.Response:
        return self.session.post(self.url + path, timeout=30, **kwargs)

    def request(self, method: str, path: str, **kwargs: t.Any) -> requests.Response:
        return self.session.request(method, self.url + path, timeout=30, **kwargs)

    def wait_idle(self, timeout: float = 10) -> None:
        """Wait until no request thread runs: after the client has the response
        Werkzeug still drains the request body (with a selector of its own).
        """
        for thread in threading.enumerate():
            if "process_request_thread" in thread.name:
                thread.join(timeout)

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.server.server_close()
        self.session.close()


@pytest.fixture
def serve() -> t.Iterator[t.Callable[[Flask], LiveServer]]:
    """Start a real server for an app: ``server = serve(app)``."""
    servers: list[LiveServer] = []

    def start(app: Flask) -> LiveServer:
        server = LiveServer(app)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def app() -> Flask:
    app = Flask("flask_offload_test")
    app.config.update(TESTING=True, SECRET_KEY="test secret")
    return app


@pytest.fixture
def offload(app: Flask) -> t.Iterator[Offload]:
    ext = Offload(app)
    yield ext
    with app.app_context():
        assert ext.join(10), "jobs still running after the test"
        ext.shutdown(wait=True, timeout=10)


@pytest.fixture(autouse=True)
def _leak_check(offload_leak_check: None) -> None:
    """Every test: no job, carried call or pushed context is left behind."""
