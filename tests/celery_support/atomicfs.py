"""kombu's filesystem transport and Celery's file result backend, with each
message and result written atomically.

kombu's own ``_put`` creates the message file, then writes it. A worker
polling the same folder can move and read the file in between, find it
empty, and stop with "Unrecoverable error: JSONDecodeError" (seen when a task
running in the worker submits another one). Here the message is written in a
folder next to the queue folder and then renamed into it, so a reader only
ever sees whole messages.

Celery's file result backend truncates a result file and then writes it, so
a reader can see a task's state go back to PENDING for a moment; here the
new result replaces the old one in one rename.

Registered in place of ``filesystem://`` and ``file://`` by this package's
``__init__``, which both the tests and the worker processes import.
"""

from __future__ import annotations

import os
import typing as t
import uuid
from time import monotonic

from celery.backends.filesystem import FilesystemBackend as _FilesystemBackend
from kombu.transport import filesystem
from kombu.utils.encoding import ensure_bytes
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: t.Any, **kwargs: t.Any) -> None:
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        folder = self.data_folder_out
        writing = os.path.join(os.path.dirname(os.path.abspath(folder)), "writing")
        os.makedirs(writing, exist_ok=True)
        partial = os.path.join(writing, name)
        with open(partial, "wb") as f:
            f.write(str_to_bytes(dumps(payload)))
        os.replace(partial, os.path.join(folder, name))


class Transport(filesystem.Transport):
    Channel = Channel


class FilesystemBackend(_FilesystemBackend):  # type: ignore[misc]
    def set(self, key: str, value: t.Any) -> None:
        filename = self._filename(key)  # bytes: Celery joins bytes paths
        suffix = f".{uuid.uuid4().hex}.partial"
        partial = filename + (
            os.fsencode(suffix) if isinstance(filename, bytes) else suffix
        )
        with self.open(partial, "wb") as f:
            f.write(ensure_bytes(value))
        os.replace(partial, filename)
