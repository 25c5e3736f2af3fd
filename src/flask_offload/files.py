"""Uploaded files handed off to jobs.

When a job is submitted, each file in ``request.files`` becomes an
:class:`UploadedFile`. A file Werkzeug already spooled to disk is not copied:
an *anchor* descriptor is opened on the same (unlinked) inode, and every
replay opens its own handle from the anchor, with its own offset, so a job
reads from the start however the view moved its own handle, and closing a
job's handle never closes the view's file. On Linux each handle is a new
open of the inode through procfs; elsewhere handles are duplicates read with
``pread`` at their own positions, which never move the shared offset. A file
held in memory (at most Werkzeug's 500 KiB spool size) is copied.

Anchors are closed by reference count when the last holder (the request
itself, a job, a ``carry`` wrapper, a snapshot rebuilt from JSON that refers
to the same file) releases it, never by garbage collection.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import threading
import typing as t

from werkzeug.datastructures import FileStorage
from werkzeug.datastructures import Headers

from . import compat

if t.TYPE_CHECKING:  # pragma: no cover
    from .snapshot import RequestData

logger = logging.getLogger("flask_offload")


class _PositionalReader(io.RawIOBase):
    """Reads a descriptor with ``pread`` at its own position, never moving the
    descriptor's offset, which duplicates share. Where procfs cannot give
    each handle its own open file, this keeps handles independent.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int:
        data = os.pread(self._fd, len(buffer), self._pos)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            offset += os.fstat(self._fd).st_size
        if offset < 0:
            raise ValueError(f"Negative seek position {offset}.")
        self._pos = offset
        return offset

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class UploadedFile:
    """One uploaded file, readable by any number of jobs after the response."""

    __slots__ = (
        "field",
        "filename",
        "content_type",
        "headers",
        "_size",
        "_fd",
        "_data",
        "_lock",
        "_refs",
        "__weakref__",
    )

    def __init__(
        self,
        field: str,
        filename: str | None,
        content_type: str | None,
        headers: list[tuple[str, str]],
        *,
        fd: int | None = None,
        data: bytes | None = None,
        size: int | None = None,
    ) -> None:
        self.field = field
        self.filename = filename
        self.content_type = content_type
        self.headers = headers
        self._size = size
        self._fd = fd
        self._data = data
        self._lock = threading.Lock()
        self._refs = 0

    @classmethod
    def from_storage(cls, field: str, storage: FileStorage) -> UploadedFile:
        """Hand off a file from the live request without copying what is on disk."""
        kind, obj = compat.spooled_parts(storage.stream)
        headers = list(storage.headers.items())
        args = (field, storage.filename, storage.content_type, headers)
        if kind == "bytes":
            data = bytes(obj)
            return cls(*args, data=data, size=len(data))
        if kind == "file":
            # The anchor is a duplicate: it shares the view's offset, but
            # nothing ever reads through it. Handles opened from it have their
            # own (procfs, or pread elsewhere). Cheap in the view: no path
            # lookup, and the size is taken when a job first needs it.
            return cls(*args, fd=os.dup(obj.fileno()))
        # A stream with no descriptor (a custom stream factory): copy it into
        # a private unlinked temporary file, keeping the view's position.
        stream = storage.stream
        pos = stream.tell()
        stream.seek(0)
        tmp = tempfile.TemporaryFile()
        try:
            shutil.copyfileobj(stream, tmp)
        finally:
            stream.seek(pos)
        fd = os.dup(tmp.fileno())
        tmp.close()
        return cls(*args, fd=fd, size=os.fstat(fd).st_size)

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        size = self._size
        if size is None:
            with self._lock:
                if self._fd is None:
                    raise ValueError(
                        f"The upload {self.filename!r} was already released."
                    )
                size = self._size = os.fstat(self._fd).st_size
        return size

    def open(self) -> FileStorage:
        """A new :class:`FileStorage` with its own handle, positioned at 0.

        The caller owns it and must close it (the job's request does, when
        its context is torn down).
        """
        stream: t.IO[bytes]
        if self._data is not None:
            stream = io.BytesIO(self._data)
        else:
            with self._lock:
                if self._fd is None:
                    raise ValueError(
                        f"The upload {self.filename!r} was already released:"
                        " its job or carried function has ended."
                    )
                if compat.HAS_PROC_FD:
                    fd = os.open(
                        f"/proc/self/fd/{self._fd}", os.O_RDONLY | os.O_CLOEXEC
                    )
                    stream = open(fd, "rb")
                else:
                    stream = io.BufferedReader(_PositionalReader(os.dup(self._fd)))
        return FileStorage(
            stream=stream,
            filename=self.filename,
            name=self.field,
            content_type=self.content_type,
            content_length=self.size,
            headers=Headers(self.headers),
        )

    def acquire(self) -> None:
        """Take a reference: the anchor stays open until the last is released."""
        with self._lock:
            self._refs += 1

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            last = self._refs <= 0
        if last:
            self.close()

    def close(self) -> None:
        """Close the anchor. Handles already opened stay readable."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self._data = None


def open_uploads(
    files: t.Any, after_teardown: bool = False
) -> list[tuple[str, FileStorage]]:
    """The ``(field, file)`` pairs of a request's ``files`` whose streams are
    still open, in ``items(multi=True)`` order: what a capture hands off.

    A view may close an upload before it submits (an ``io.TextIOWrapper``
    around it closes it when collected); its data is gone, so jobs get the
    request without it, and a warning says so.

    :param files: The request's ``files``.
    :param after_teardown: The request's teardown has run (a submit from a
        ``stream_with_context`` generator): Flask closed the uploads then.
    """
    pairs = []
    for field, storage in files.items(multi=True):
        if getattr(storage.stream, "closed", False):
            if after_teardown:
                logger.warning(
                    "The uploaded file %r (field %r) was closed when the view"
                    " returned, before this job was submitted from the"
                    " streamed response, so the job does not get it. Submit"
                    " the jobs that read uploads in the view, before returning"
                    " the response.",
                    storage.filename,
                    field,
                )
                continue
            logger.warning(
                "The uploaded file %r (field %r) was closed in the view before"
                " a job was submitted, so jobs do not get it. Submit before"
                " closing it, or read it with a wrapper that leaves it open"
                " (call .detach() on an io.TextIOWrapper when done).",
                storage.filename,
                field,
            )
            continue
        pairs.append((field, storage))
    return pairs


# -- the view's uploads passed as arguments -------------------------------


class _UploadRef:
    """Stands in a job's arguments for one of the view's uploaded files: its
    position among the files the request's capture handed off, which is its
    position in the job's ``request.files.items(multi=True)``.
    """

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<uploaded file #{self.index}>"


#: The attribute that marks a request's ``FileStorage`` (the view's, or a
#: job's own) with the captured request data and its position there.
_MARK = "_flask_offload_upload"


def mark_upload(storage: FileStorage, data: RequestData, index: int) -> FileStorage:
    """Mark ``storage`` as the upload at ``index`` of the captured request
    ``data``, so that :func:`swap_uploads` recognises it as an argument.

    :param storage: The view's ``FileStorage``, or a job's own.
    :param data: The captured request it belongs to.
    :param index: Its position in ``data.files``.
    :return: ``storage``, marked.
    """
    setattr(storage, _MARK, (data, index))
    return storage


def swap_uploads(
    data: RequestData, args: tuple[t.Any, ...], kwargs: dict[str, t.Any]
) -> tuple[tuple[t.Any, ...], dict[str, t.Any]] | None:
    """If an argument is one of the uploaded files of the request whose
    captured data is ``data`` (the view's, closed after the response, or a
    job's own, closed when that job ends; see :func:`mark_upload`), the
    arguments with each such file replaced by a reference that
    :class:`WithUploads` resolves to the new job's own handle; else ``None``.
    Only top-level arguments are looked at.
    """
    found = False

    def swap(value: t.Any) -> t.Any:
        nonlocal found
        if isinstance(value, FileStorage):
            # Through __dict__: FileStorage passes other attributes to its stream.
            mark = value.__dict__.get(_MARK)
            if mark is not None and mark[0] is data:
                found = True
                return _UploadRef(mark[1])
        return value

    new_args = tuple(swap(a) for a in args)
    new_kwargs = {k: swap(v) for k, v in kwargs.items()}
    return (new_args, new_kwargs) if found else None


class WithUploads:
    """A job function whose arguments refer to the view's uploads (see
    :func:`swap_uploads`): called in the job, it passes the job's own
    :class:`FileStorage` for each, open at offset 0 and closed when the job
    ends.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: t.Callable[..., t.Any]) -> None:
        self.fn = fn

    def __call__(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        from flask import current_app
        from flask import request

        files = [storage for _, storage in request.files.items(multi=True)]

        def resolve(value: t.Any) -> t.Any:
            return files[value.index] if type(value) is _UploadRef else value

        return current_app.ensure_sync(self.fn)(
            *map(resolve, args), **{k: resolve(v) for k, v in kwargs.items()}
        )
