"""kombu's filesystem transport, with each message written atomically.

kombu's own ``_put`` creates the message file, then writes it. A worker
polling the same folder can move and read the file in between, find it
empty, and stop with "Unrecoverable error: JSONDecodeError" (seen when a task
running in the worker submits another one). Here the message is written in a
folder next to the queue folder and then renamed into it, so a reader only
ever sees whole messages.

Registered in place of ``filesystem://`` by this package's ``__init__``, which
both the tests and the worker processes import.
"""

from __future__ import annotations

import os
import typing as t
import uuid
from time import monotonic

from kombu.transport import filesystem
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
