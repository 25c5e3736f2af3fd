"""Brokers and real Celery worker subprocesses for the Celery tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import typing as t
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIRE_SERVICES = os.environ.get("OFFLOAD_REQUIRE_SERVICES") == "1"
REDIS = ("127.0.0.1", 6379)
#: Set to 1 to run the Celery tests on the filesystem transport (the fallback
#: for machines without Redis and RabbitMQ) even where the services answer.
FORCE_FILESYSTEM = os.environ.get("OFFLOAD_TEST_FILESYSTEM_BROKER") == "1"
RABBITMQ = ("127.0.0.1", 5672)


def reachable(host: str, port: int) -> bool:
    if FORCE_FILESYSTEM:
        return False
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def broker_config(kind: str, folder: str) -> dict[str, t.Any]:
    """Celery settings for ``kind`` ("redis" or "amqp"): the real service when
    it answers, else the filesystem transport (failing instead when
    ``OFFLOAD_REQUIRE_SERVICES=1``). Each call gets its own queue.
    """
    queue = f"offload-test-{uuid.uuid4().hex[:12]}"
    has_redis = reachable(*REDIS)
    config: dict[str, t.Any] = {"task_default_queue": queue}
    if kind == "redis" and has_redis:
        config.update(
            broker_url="redis://127.0.0.1:6379/0",
            result_backend="redis://127.0.0.1:6379/0",
        )
        return config
    if kind == "amqp" and reachable(*RABBITMQ):
        config["broker_url"] = "amqp://guest:guest@127.0.0.1:5672//"
        if has_redis:
            config["result_backend"] = "redis://127.0.0.1:6379/0"
        else:
            config["result_backend"] = _file_results(folder)
        return config
    if REQUIRE_SERVICES and not FORCE_FILESYSTEM:
        pytest.fail(
            f"The {kind} broker is not reachable; OFFLOAD_REQUIRE_SERVICES=1"
            " requires it."
        )
    messages = os.path.join(folder, "broker")
    processed = os.path.join(folder, "processed")
    control = os.path.join(folder, "control")
    for path in (messages, processed, control):
        os.makedirs(path, exist_ok=True)
    config.update(
        broker_url="filesystem://",
        broker_transport_options={
            "data_folder_in": messages,
            "data_folder_out": messages,
            "processed_folder": processed,
            # Remote control (revoke) files; kombu's default is ./control.
            "control_folder": control,
            "store_processed": False,
            "polling_interval": 0.05,
        },
        result_backend=_file_results(folder),
    )
    return config


def _file_results(folder: str) -> str:
    results = os.path.join(folder, "results")
    os.makedirs(results, exist_ok=True)
    return f"file://{results}"


def transport(config: dict[str, t.Any]) -> str:
    return str(config["broker_url"]).split(":", 1)[0]


class Worker:
    """A real worker process for ``tests.celery_support.app``."""

    _count = 0

    def __init__(
        self,
        config: dict[str, t.Any],
        *,
        pool: str = "solo",
        concurrency: int = 1,
        cli: str = "celery",
        env: dict[str, str] | None = None,
        target: str = "tests.celery_support.app:celery_app",
    ) -> None:
        Worker._count += 1
        name = f"w{Worker._count}-{os.getpid()}@%h"
        options = [
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-n",
            name,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
        ]
        if cli == "flask":
            cmd = [
                sys.executable,
                "-m",
                "flask",
                "--app",
                "tests.celery_support.app",
                "offload",
                "worker",
                *options,
            ]
        else:
            cmd = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                target,
                "worker",
                *options,
            ]
        full_env = {
            **os.environ,
            **(env or {}),
            "OFFLOAD_TEST_CONFIG": json.dumps(config),
            "PYTHONUNBUFFERED": "1",
        }
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (ROOT, full_env.get("PYTHONPATH")) if p
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
            if " ready." in line:
                self.ready.set()
        self.proc.stdout.close()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "".join(self.lines)

    def wait_ready(self, timeout: float = 30) -> None:
        if not self.ready.wait(timeout):
            self.kill()
            raise AssertionError(f"The worker did not start:\n{self.output}")

    def wait_output(self, text: str, timeout: float = 20) -> str:
        """Wait until the worker printed ``text``; return the output."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while text not in "".join(self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not left):
                    raise AssertionError(
                        f"The worker never printed {text!r}:\n{''.join(self.lines)}"
                    )
                self._cond.wait(min(left, 0.5))
            return "".join(self.lines)

    def signal(self, sig: int, *, group: bool = True) -> None:
        """Send ``sig`` to the worker's process group, or to its main
        process only (as ``kill PID`` or systemd's ``KillMode=mixed``).
        """
        if self.proc.poll() is None:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM (warm shutdown), then SIGKILL if it does not exit."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        self._reader.join(5)


def wait_for(
    predicate: t.Callable[[], t.Any], timeout: float = 20, what: str = "condition"
) -> t.Any:
    """Poll ``predicate`` (a state in another process) until it is truthy."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout}s waiting for {what}.")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)
