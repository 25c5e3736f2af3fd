"""Run each job at submit, in the caller's thread, through the same path a
job takes to another process: capture, serialise to JSON, sign, verify,
deserialise, replay in a fresh context. Meant for tests: what would break
across processes breaks here, at once, in the test that submitted.
"""

from __future__ import annotations

import asyncio
import threading
import typing as t
import weakref

from .. import signing
from ..files import UploadedFile
from ..jobs import JobState
from ..snapshot import Snapshot
from .base import Backend
from .base import run_job

if t.TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

    from ..jobs import Job

# Files stay in this process: the serialised snapshot refers to them by key.
_local_files: weakref.WeakValueDictionary[str, UploadedFile] = (
    weakref.WeakValueDictionary()
)


def _file_ref(f: UploadedFile) -> dict[str, t.Any]:
    key = f"{id(f):x}"
    _local_files[key] = f
    return {
        "ref": key,
        "field": f.field,
        "filename": f.filename,
        "content_type": f.content_type,
        "size": f.size,
    }


def _open_file(data: dict[str, t.Any]) -> UploadedFile:
    return _local_files[data["ref"]]


class InlineBackend(Backend):
    name = "inline"

    def enqueue(
        self,
        app: Flask,
        job: Job,
        fn: t.Callable[..., t.Any],
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
    ) -> None:
        snapshot = job.snapshot
        assert snapshot is not None
        try:
            bind = {"job": job.id, "task": job.name}
            token = signing.sign(
                app,
                {"snap": snapshot.to_dict(app, file_ref=_file_ref), **bind},
                require_key=False,
            )
            payload = signing.verify(
                app,
                token,
                max_age=self.settings.snapshot_max_age,
                bind=bind,
                require_key=False,
            )
            replayed = Snapshot.from_dict(app, payload["snap"], open_file=_open_file)
            if self.settings.backend != "thread" and _declared(app, job.name, fn):
                # Standing in for Celery (or configured inline): a declared
                # task gets its arguments as a worker decodes them from its
                # message. Standing in for the thread backend (the
                # offload_inline fixture), every job gets them as they are,
                # as it would in production.
                args, kwargs = signing.as_sent(args, kwargs)
        except Exception as e:
            # The job must end, never stay pending; the caller sees the error.
            job._finish(JobState.FAILED, exc=e)
            raise
        if _loop_running():
            # In an async view's event-loop thread a job cannot run async code
            # (asgiref refuses): run it to completion in a thread of its own.
            runner = threading.Thread(
                target=run_job,
                args=(app, job, replayed, fn, args, kwargs, self.settings),
                name=f"flask-offload-inline-{job.id[:8]}",
            )
            runner.start()
            runner.join()
        else:
            run_job(app, job, replayed, fn, args, kwargs, self.settings)


def _declared(app: Flask, name: str, fn: t.Callable[..., t.Any]) -> bool:
    """Whether ``fn`` is the function of the task declared as ``name``."""
    offload = app.extensions.get("offload")
    task = getattr(offload, "tasks", {}).get(name)
    return task is not None and task.fn is fn


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
