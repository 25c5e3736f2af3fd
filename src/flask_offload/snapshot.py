"""Capture an immutable snapshot of the current request, and replay a fresh
context from it wherever a job runs.

Capture happens in the submitting thread. The request part (environ, parsed
body, uploaded files) is taken once per request and cached in its environ, so
several submits, and ``carry`` calls inside jobs, share it; the mutable parts
(``g``, the session) are copied at each submit.

Replay happens where the job runs: a new, empty :class:`contextvars.Context`,
a new request object pre-filled from the snapshot (no re-parsing), a copy of
the session, a fresh ``g`` holding the carried values, and one fresh Flask
context that runs ``teardown_appcontext`` once when the job ends.
"""

from __future__ import annotations

import base64
import contextvars
import copy
import io
import json
import logging
import os
import sys
import threading
import time
import typing as t
import weakref
from inspect import CO_COROUTINE
from types import AsyncGeneratorType
from types import CoroutineType
from types import FunctionType
from types import GeneratorType
from types import MappingProxyType

from flask import Flask
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SecureCookieSession
from flask.sessions import SessionMixin
from flask.wrappers import Request
from werkzeug.datastructures import ImmutableMultiDictMixin
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from . import compat
from .errors import SnapshotError
from .files import mark_upload
from .files import open_uploads
from .files import UploadedFile
from .jobs import _cv_job
from .jobs import SubmitSite

if t.TYPE_CHECKING:  # pragma: no cover
    from types import FrameType

    from .jobs import Job

logger = logging.getLogger("flask_offload")

#: Where the captured request part is cached in the WSGI environ.
ENV_KEY = "flask_offload.request"
# Set only in the environ of a served request whose captured data holds
# uploaded files: the request holds one reference to them until its teardown.
# Without files there is nothing to release, and the cached data goes with
# the environ.
_OWNER_KEY = "flask_offload.owner"
_TORN_DOWN_KEY = "flask_offload.torn_down"
# The thread capturing a request for the first time (see _capture_request).
_CLAIM_KEY = "flask_offload.capturing"

_URLENCODED = "application/x-www-form-urlencoded"
_FORM_TYPES = frozenset({"multipart/form-data", _URLENCODED})
_WSGI_CONSTANTS: dict[str, t.Any] = {
    "wsgi.version": (1, 0),
    "wsgi.multithread": True,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}
# Environ keys whose values are never strings: the WSGI spec's, the servers'
# and Werkzeug's own. Dropped by name before the type check in
# _string_environ, which still finds any other non-string value.
_NON_STRING_KEYS = (
    "wsgi.version",
    "wsgi.input",
    "wsgi.errors",
    "wsgi.multithread",
    "wsgi.multiprocess",
    "wsgi.run_once",
    "wsgi.file_wrapper",
    "wsgi.input_terminated",
    "wsgi.early_hints",
    "gunicorn.socket",
    "werkzeug.socket",
    "werkzeug.request",
    _CLAIM_KEY,
)
_PRIMITIVES = (str, int, float, bool, type(None))
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


class _NotPrimitive(Exception):
    pass


#: Deeper lists and dicts (or ones that contain themselves) are not plain
#: values: skipped or carried by reference, never a RecursionError at submit.
_MAX_DEPTH = 100


def _copy_primitive(value: t.Any, depth: int = 0) -> t.Any:
    """Copy str/int/float/bool/None and lists/dicts of them, by value."""
    kind = type(value)
    if kind in _PRIMITIVES:
        return value
    if depth >= _MAX_DEPTH:
        raise _NotPrimitive
    if kind is list:
        return [_copy_primitive(v, depth + 1) for v in value]
    if kind is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _NotPrimitive
            out[k] = _copy_primitive(v, depth + 1)
        return out
    raise _NotPrimitive


def _copy_value(value: t.Any) -> t.Any:
    """Copy primitive containers; other objects are carried by reference."""
    try:
        return _copy_primitive(value)
    except _NotPrimitive:
        return value


def _copy_session_value(value: t.Any) -> t.Any:
    """Copy a session value whatever it holds: session values are data
    (tuples, datetimes, bytes, UUIDs in lists and dicts), and a job must
    never share a mutable one with the view's live session or another job.
    A value ``deepcopy`` refuses (a custom session interface's object) is
    carried by reference.

    :param value: One value of the session.
    """
    try:
        return _copy_primitive(value)
    except _NotPrimitive:
        pass
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


# Other servers' and middlewares' extension keys (they have a dot) seen
# holding a non-string value: waitress's "waitress.client_disconnected",
# uWSGI's "uwsgi.version"... Learned at the first capture that finds one,
# then dropped by name like _NON_STRING_KEYS, so later captures keep the
# fast path. Bounded; replaced whole (one atomic store), never mutated.
_learned_keys: tuple[str, ...] = ()
_MAX_LEARNED = 32


def _string_environ(environ: dict[str, t.Any]) -> dict[str, str]:
    """The string-valued items of a WSGI environ: the CGI and ``HTTP_*``
    variables, and any other key whose value is a string.
    """
    # A C copy, the well-known non-string keys dropped by name, and one C
    # pass that fails on any other non-string value (str.join takes only
    # strings; max() comparing them costs more): about half the instructions
    # of a comprehension testing every value. The dropped keys leave holes in
    # the copy; dict.copy (unlike dict()) still clones such a dict in one
    # step when a job copies it.
    out = environ.copy()
    pop = out.pop
    for key in _NON_STRING_KEYS:
        pop(key, None)
    for key in _learned_keys:
        value = pop(key, None)
        if isinstance(value, str):  # a string this time: keep it
            out[key] = value
    try:
        "".join(out.values())
    except TypeError:
        out = {k: v for k, v in out.items() if isinstance(v, str)}
        _learn_keys(environ)
    return out


def _learn_keys(environ: dict[str, t.Any]) -> None:
    global _learned_keys
    known = _learned_keys
    new = tuple(
        k
        for k, v in environ.items()
        if "." in k
        and not isinstance(v, str)
        and k not in known
        and k not in _NON_STRING_KEYS
    )
    if new and len(known) < _MAX_LEARNED:
        _learned_keys = (known + new)[:_MAX_LEARNED]


#: ``RequestData.body_size`` of a body the app itself refused as too large
#: (a job submitted from an errorhandler(413)).
_REFUSED = -2


class _ErrorsStream:
    """A server's ``wsgi.errors`` as a job writes to it after the response.
    Some servers end the stream with the request (mod_wsgi's log object
    expires): the job's log lines then go to standard error, not lost.
    """

    __slots__ = ("stream",)

    def __init__(self, stream: t.Any) -> None:
        self.stream = stream

    def write(self, text: str) -> t.Any:
        try:
            return self.stream.write(text)
        except Exception:
            return sys.stderr.write(text)

    def writelines(self, lines: t.Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except Exception:
            sys.stderr.flush()


class _OmittedBody(io.RawIOBase):
    """Stands in for a request body too large to carry; reading it explains why."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int:
        if self.size == _REFUSED:
            raise SnapshotError(
                "The request body was not carried into the job because the app"
                " refused it as too large (413: over MAX_CONTENT_LENGTH,"
                " MAX_FORM_MEMORY_SIZE or MAX_FORM_PARTS). Raise the app's limit,"
                " or pass what the job needs as an argument."
            )
        # -1: a chunked body, of which only the first limit + 1 bytes were read.
        size = (
            f"{self.size} bytes"
            if self.size >= 0
            else f"sent without Content-Length, over {self.limit} bytes"
        )
        raise SnapshotError(
            f"The request body ({size}) was not carried into the job"
            f" because it is larger than OFFLOAD_MAX_BODY_SIZE ({self.limit} bytes)."
            " Raise OFFLOAD_MAX_BODY_SIZE, or read what the job needs in the view"
            " and pass it as an argument."
        )


class _NoInput(io.RawIOBase):
    """The ``wsgi.input`` of every job whose request had no body: always
    empty. Shared, so closing it does nothing.
    """

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int:
        return 0

    def close(self) -> None:
        pass


_NO_INPUT = _NoInput()


class RequestData:
    """The request part of a snapshot: plain data, shared by every job
    submitted from one request. Uploaded files are released when the last
    holder (the request itself, a job, a ``carry`` wrapper) releases it.
    """

    __slots__ = (
        "environ",
        "form",
        "files",
        "body",
        "body_size",
        "routing",
        "args",
        "fields",
        "errors",
        "_form",
        "_replays",
    )

    def __init__(
        self,
        environ: dict[str, str],
        form: tuple[tuple[str, str], ...] | None = None,
        files: tuple[UploadedFile, ...] = (),
        body: bytes | None = None,
        body_size: int | None = None,
    ) -> None:
        #: The string-valued WSGI environ keys (CGI and ``HTTP_*`` variables),
        #: as the app saw them (after any proxy middleware). Read-only: the
        #: jobs of one request share it; each job's ``request.environ`` is
        #: its own copy.
        self.environ: MappingProxyType[str, str] = MappingProxyType(environ)
        #: Form fields as ``(name, value)`` pairs, for form requests.
        self.form = form
        #: Uploaded files, for multipart requests.
        self.files = files
        #: The raw body: of a non-form request, or of a form whose raw bytes
        #: were kept (see :meth:`_with_body`); else ``None``.
        self.body = body
        #: Set when the body was too large to carry: its size in bytes,
        #: ``-1`` if it had no ``Content-Length`` (chunked), or ``-2`` if the
        #: app itself refused it (413).
        self.body_size = body_size
        #: The view's routing (bound URL adapter and route match), taken at
        #: the first capture or computed by the first replay; reused by all.
        self.routing: list[t.Any] = [None]
        #: The query string as the view parsed it, if it did.
        self.args: t.Any = None
        #: The request class and what its ``__init__`` derived from this
        #: environ (method, path, remote address...), taken from the view's
        #: request or the first replay, reused by every replay (see
        #: :func:`.compat.request_fields`); ``None`` until known.
        self.fields: tuple[type[Request], compat.SharedFields] | None = None
        #: The server's ``wsgi.errors`` stream, where Flask's default log
        #: handler writes while a request is active (gunicorn's error log);
        #: ``None`` (standard error) in another process.
        self.errors: t.Any = None
        # The parsed form shared by the replays, and the request class it is for.
        self._form: tuple[type[Request], t.Any] | None = None
        # Whether a request was made already (for sharing the parsed query string).
        self._replays = 0

    @classmethod
    def from_request(cls, req: Request, ctx: t.Any, max_body_size: int) -> RequestData:
        """Capture the view's request ``req``, held by the context ``ctx``."""
        # Only string values: the CGI and HTTP_* variables. (This also leaves
        # out this library's own environ keys, none of which holds a string.)
        environ = _string_environ(req.environ)
        try:
            data = cls._with_body(req, environ, max_body_size)
        except RequestEntityTooLarge:
            # Over MAX_CONTENT_LENGTH, MAX_FORM_MEMORY_SIZE or MAX_FORM_PARTS.
            # The view answers as it would without the capture: 413 if it
            # reads the body itself (Werkzeug raises again), its own answer
            # if it does not; from an errorhandler(413), its response. The
            # job gets the request without its body; reading it raises.
            compat.refuse_body(req)
            data = cls(environ, body_size=_REFUSED)
        data.args, shared, data.routing[0] = compat.view_state(req, ctx)
        if shared is not None:
            data.fields = (type(req), shared)
        errors = req.environ.get("wsgi.errors")
        if errors is not None and errors is not sys.stderr:
            data.errors = _ErrorsStream(errors)
        return data

    @classmethod
    def _with_body(
        cls, req: Request, environ: dict[str, str], max_body_size: int
    ) -> RequestData:
        """The request data of ``req`` with its body (form, files or bytes)."""
        if environ.get("CONTENT_TYPE") and req.mimetype in _FORM_TYPES:
            # Parse now: after the response the server discards an unread body.
            # The raw bytes too, where they are bounded: a body the view read
            # already (cached), or a urlencoded one within both limits. Then
            # get_data() in the view and in the job still gives them (a
            # webhook's signature is computed over them), and the form is
            # parsed from them.
            raw = req.__dict__.get("_cached_data")  # get_data(cache=True)'s
            if raw is None and req.mimetype == _URLENCODED:
                # Werkzeug reads all of it to parse it anyway: kept, it stays
                # readable in the view, and the form is parsed from it.
                raw = compat.read_form_body(req)
            if raw is not None and len(raw) > max_body_size:
                raw = None
            uploads = open_uploads(
                compat.parsed_files(req), _TORN_DOWN_KEY in req.environ
            )
            handed: list[UploadedFile] = []
            try:
                for name, storage in uploads:
                    handed.append(UploadedFile.from_storage(name, storage))
            except BaseException:
                # Out of descriptors, say: close the files handed off so
                # far, which are closed by count, never by the collector.
                for f in handed:
                    f.close()
                raise
            data = cls(environ, tuple(req.form.items(multi=True)), tuple(handed), raw)
            for index, (_, storage) in enumerate(uploads):
                mark_upload(storage, data, index)
        elif not environ.get("CONTENT_LENGTH") and "chunked" not in environ.get(
            "HTTP_TRANSFER_ENCODING", ""
        ):
            # No body (a GET, most often): don't build an input stream to
            # find that out.
            data = cls(environ)
        else:
            body, size = compat.read_body(req, max_body_size)
            data = cls(environ, body=body, body_size=size)
        return data

    # Counted per file, so a snapshot rebuilt from JSON in this process
    # (inline backend) that refers to the same files counts with the others.
    def acquire(self) -> None:
        for f in self.files:
            f.acquire()

    def release(self) -> None:
        for f in self.files:
            f.release()

    def make_request(
        self, app: Flask, max_body_size: int, match: t.Any = None
    ) -> Request:
        """A new request object for one replay, with its own environ, body
        stream and file handles. The query string (if the view parsed it) and
        the form are parsed once and shared when they are immutable
        (Werkzeug's default ``parameter_storage_class``); an app's mutable
        one is parsed again for each job.

        :param match: The route match to give it (see
            :func:`.compat.view_state`), if any.
        """
        cls = app.request_class
        args = self.args
        # args, form, files and stream are cached properties: giving them
        # values skips parsing, and the job never touches the original body.
        extra: dict[str, t.Any] | None = None
        stream: t.Any
        if self.form is not None:
            stream = io.BytesIO(self.body or b"")
            form = self._form
            if form is None or form[0] is not cls:
                form = (cls, cls.parameter_storage_class(self.form))
                # Shared by the next replays only if no job can change it: an
                # app's parameter_storage_class may be a mutable MultiDict.
                if isinstance(form[1], ImmutableMultiDictMixin):
                    self._form = form
            extra = {
                "form": form[1],
                "files": cls.parameter_storage_class(
                    [
                        (f.field, mark_upload(f.open(), self, i))
                        for i, f in enumerate(self.files)
                    ]
                ),
            }
        elif self.body_size is not None:
            stream = io.BufferedReader(_OmittedBody(self.body_size, max_body_size))
        elif self.body is not None:
            # Even an empty one: a body the view had read up before submit
            # is empty in the job too, not cut short.
            stream = io.BytesIO(self.body)
        else:
            # No body (a GET, most often): no stream until the job reads it;
            # Werkzeug then makes an empty one, as it does in a view.
            stream = None
        # The job's own environ. .copy(): one step even with the holes
        # _string_environ leaves.
        environ: dict[str, t.Any] = self.environ.copy()
        environ.update(_WSGI_CONSTANTS)
        errors = self.errors
        environ["wsgi.errors"] = sys.stderr if errors is None else errors
        environ[ENV_KEY] = self
        environ["wsgi.input"] = _NO_INPUT if stream is None else stream
        fields = self.fields
        if fields is not None and fields[0] is cls:
            req = compat.build_request(cls, fields[1], environ, stream, args, match)
        else:
            # Rebuilt from JSON, or replayed in an app with another request
            # class: derive the fields the normal way.
            req = cls(environ)
            if fields is None:
                shared = compat.request_fields(req)
                if shared is not None:
                    self.fields = (cls, shared)
            cached: dict[str, t.Any] = {} if stream is None else {"stream": stream}
            if args is not None:
                cached["args"] = args
            compat.set_cached(req, cached)
            compat.apply_match(req, match)
        if extra is not None:
            compat.set_cached(req, extra)
        if args is None:
            if self._replays:
                # Several jobs from a request whose view never read the query
                # string: parse it once, here, and share it with the next
                # ones, unless a job could change it (as for the form).
                parsed = req.args
                if isinstance(parsed, ImmutableMultiDictMixin):
                    self.args = parsed
            self._replays = 1
        return req

    def to_dict(
        self,
        file_ref: t.Callable[[UploadedFile], dict[str, t.Any]],
        drop_headers: frozenset[str] = frozenset(),
    ) -> dict[str, t.Any]:
        environ = {k: v for k, v in self.environ.items() if k not in drop_headers}
        return {
            "environ": environ,
            "form": [list(p) for p in self.form] if self.form is not None else None,
            "files": [file_ref(f) for f in self.files],
            "body": (
                base64.b64encode(self.body).decode() if self.body is not None else None
            ),
            "body_size": self.body_size,
        }

    def parse_form_body(self) -> None:
        """A urlencoded form that travelled as its raw body (to Celery, when
        large): parse it once, as the web process had, so that jobs get the
        fields, ``get_data()`` and ``request.stream``, in any order, as on
        the thread backend.
        """
        body = self.body
        content_type = self.environ.get("CONTENT_TYPE", "")
        if (
            self.form is not None
            or body is None
            or content_type.split(";")[0].strip().lower() != _URLENCODED
        ):
            return
        _, form, _ = FormDataParser().parse(io.BytesIO(body), _URLENCODED, len(body))
        self.form = tuple(form.items(multi=True))

    @classmethod
    def from_dict(
        cls,
        data: dict[str, t.Any],
        open_file: t.Callable[[dict[str, t.Any]], UploadedFile],
    ) -> RequestData:
        form = data.get("form")
        body = data.get("body")
        return cls(
            dict(data["environ"]),
            tuple((str(k), str(v)) for k, v in form) if form is not None else None,
            tuple(open_file(f) for f in data.get("files") or ()),
            base64.b64decode(body) if body is not None else None,
            data.get("body_size"),
        )


class Snapshot:
    """An immutable capture of what a job needs from where it was submitted.

    Its request part is shared by the jobs submitted from one request, and
    its mappings are read-only (a job changes its own ``request.environ``,
    a copy); the session and ``g`` values are the job's own copies.
    """

    __slots__ = ("request", "session", "g", "site", "__weakref__")

    def __init__(
        self,
        request: RequestData | None,
        session: dict[str, t.Any] | None,
        g: dict[str, t.Any],
        site: SubmitSite | None = None,
    ) -> None:
        #: The request part, or ``None`` when submitted outside a request.
        self.request = request
        #: A copy of the session's data, or ``None`` outside a request.
        self.session = session
        #: The carried ``g`` values.
        self.g = g
        #: Where the job was submitted, ``(filename, lineno, function)``.
        self.site = site

    # Only uploaded files are counted: most requests have none.
    def acquire(self) -> None:
        data = self.request
        if data is not None and data.files:
            data.acquire()

    def release(self) -> None:
        data = self.request
        if data is not None and data.files:
            data.release()

    def to_dict(
        self,
        app: Flask,
        *,
        file_ref: t.Callable[[UploadedFile], dict[str, t.Any]],
        drop_headers: frozenset[str] = frozenset(),
    ) -> dict[str, t.Any]:
        """The JSON-safe form of the snapshot, for another process.

        :raises SnapshotError: A carried ``g`` value is not JSON.
        """
        for name, value in self.g.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise SnapshotError(
                    f"'g.{name}' ({type(value).__name__}) cannot be carried to"
                    " another process: only JSON values can. Carry an id instead"
                    " (for example 'g.user_id') or remove the name from"
                    " OFFLOAD_CARRY_G."
                ) from None
        data: dict[str, t.Any] = {"v": 1, "g": self.g}
        if self.site is not None:
            data["site"] = list(self.site)
        if self.session is not None:
            data["session"] = _session_serializer(app).dumps(self.session)
        if self.request is not None:
            data["request"] = self.request.to_dict(file_ref, drop_headers)
        return data

    @classmethod
    def from_dict(
        cls,
        app: Flask,
        data: dict[str, t.Any],
        *,
        open_file: t.Callable[[dict[str, t.Any]], UploadedFile],
    ) -> Snapshot:
        if data.get("v") != 1:
            raise SnapshotError(
                f"Unknown snapshot version {data.get('v')!r}: the worker runs another"
                " version of Flask-Offload than the process that submitted the job."
            )
        req = data.get("request")
        sess = data.get("session")
        site = data.get("site")
        return cls(
            RequestData.from_dict(req, open_file) if req is not None else None,
            _session_serializer(app).loads(sess) if sess is not None else None,
            dict(data.get("g") or {}),
            (str(site[0]), int(site[1]), str(site[2])) if site else None,
        )


def _session_serializer(app: Flask) -> t.Any:
    serializer = getattr(app.session_interface, "serializer", None)
    if serializer is None or not hasattr(serializer, "loads"):
        return TaggedJSONSerializer()
    return serializer


def _release_request_data() -> None:
    """Drop the served request's own reference to its captured files, at
    its teardown (never in jobs, where request teardown is skipped).
    """
    req = compat.current_request()
    if req is None:
        return
    environ = req.environ
    # Flask closes the uploads next; a submit from a stream_with_context
    # generator captures again without them, and says why (also when the
    # view read them without submitting).
    environ[_TORN_DOWN_KEY] = True
    if environ.pop(_OWNER_KEY, False):
        data = environ.pop(ENV_KEY, None)
        if data is not None:
            data.release()


def prepare_app(app: Flask) -> None:
    """Make ``app`` skip request teardown for jobs' own contexts and release
    each request's captured data at its teardown. Idempotent; done by
    ``init_app``, and for an app that only uses ``carry``, when its settings
    are first read.
    """
    # A wrapper on the app instance, not a receiver of request_tearing_down:
    # a connected signal costs every request of every app about 3 µs.
    compat.wrap_teardown_request(app, _release_request_data)


def caller_site(
    frame: FrameType | None = None, skip: tuple[str, ...] = ()
) -> SubmitSite | None:
    """The first frame outside this package, from ``frame`` (by default the
    caller's) outwards: where the user submitted.

    :param frame: Where to start; ``submit`` passes its caller's frame, so
        its own frame object is never created.
    :param skip: Directories of other packages to look past (Celery's, for
        a task sent with ``delay()``).
    """
    if frame is None:
        frame = sys._getframe(1)
    skip = (_PKG_DIR, *skip)
    while frame is not None:
        code = frame.f_code
        if not code.co_filename.startswith(skip):
            return (code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return None


def capture(
    *,
    carry_g: str | t.Sequence[str] | None,
    max_body_size: int,
    site: SubmitSite | None = None,
) -> Snapshot:
    """Capture the current context. An app context must be active, of an app
    :func:`prepare_app` was run for (which releases the captured request at
    its teardown).

    The returned snapshot holds no reference yet: call :meth:`Snapshot.acquire`
    for each holder (a job, a ``carry`` wrapper).
    """
    req, ctx, g_values, live = compat.capture_state()
    g = _carried_g(carry_g, g_values) if carry_g and g_values else {}
    if req is None:
        return Snapshot(None, None, g, site)
    environ = req.environ
    data = environ.get(ENV_KEY)
    if data is None:
        if (
            environ.get("CONTENT_LENGTH")
            or environ.get("CONTENT_TYPE")
            or environ.get("HTTP_TRANSFER_ENCODING")
        ):
            data = _capture_request(req, ctx, environ, max_body_size)
        else:
            # Nothing to read (a GET): threads capturing it at once each
            # make the same data, and the last one stays.
            data = environ[ENV_KEY] = RequestData.from_request(req, ctx, max_body_size)
    return Snapshot(
        data,
        # Messages flashed for the user's next page are not the job's: a job
        # rendering the site's layout would show (and consume) them.
        {k: _copy_session_value(v) for k, v in live.items() if k != "_flashes"}
        if live
        else {},
        g,
        site,
    )


def _capture_request(
    req: Request, ctx: t.Any, environ: dict[str, t.Any], max_body_size: int
) -> RequestData:
    """The first capture of a request, cached in its environ. Threads that
    share the view's request (``copy_context().run``, ``asyncio.to_thread``)
    may capture at once: one claims the capture and reads the body, the
    others wait for it, as two readers of one input stream would wait for
    bytes the other took. The thread holding the claim may capture again
    while it parses (work started from a custom file stream factory): that
    capture gets the request without its body, which is being read.
    """
    me = threading.get_ident()
    owner = environ.get(_CLAIM_KEY)
    if owner == me:
        # Empty, so the replay never parses: not cached, the capture this
        # one interrupts will be.
        return RequestData(_string_environ(environ), form=(), body=b"")
    if owner is None:
        owner = environ.setdefault(_CLAIM_KEY, me)
    while owner != me:
        # Rare: another thread is reading this request's body. Polled, so it
        # works the same with gevent's or eventlet's patched sleep.
        time.sleep(0.001)
        data: RequestData | None = environ.get(ENV_KEY)
        if data is not None:
            return data
        owner = environ.get(_CLAIM_KEY)
        if owner is None:  # its capture failed: try it here
            owner = environ.setdefault(_CLAIM_KEY, me)
    try:
        data = environ.get(ENV_KEY)
        if data is None:
            data = RequestData.from_request(req, ctx, max_body_size)
            if data.files:
                environ[_OWNER_KEY] = True
                data.acquire()  # the request's own reference, until its teardown
            environ[ENV_KEY] = data
    finally:
        # The claim is this call's: a capture made under it returned above.
        environ.pop(_CLAIM_KEY, None)
    return data


def _carried_g(
    carry_g: str | t.Sequence[str], values: dict[str, t.Any]
) -> dict[str, t.Any]:
    """The ``g`` values to carry, copied, from ``values`` (``vars(g)``)."""
    out = {}
    if carry_g == "primitives":
        for name, value in values.items():
            # Underscored names are extensions' private per-request state
            # (Flask-Login's g._login_user): never carried implicitly.
            if name[0] == "_":
                continue
            try:
                out[name] = _copy_primitive(value)
            except _NotPrimitive:
                pass
    else:
        for name in carry_g:
            if name in values:
                out[name] = _copy_value(values[name])
    return out


# The contexts replayed and not yet popped, in any thread. A set: adding and
# removing are atomic, so concurrent jobs share no lock here.
_active: set[object] = set()


def _after_fork_in_child() -> None:
    _active.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
_warned_session: weakref.WeakSet[Flask] = weakref.WeakSet()
_warned_after_request: weakref.WeakSet[Flask] = weakref.WeakSet()


def running_replays() -> set[object]:
    """The carried calls running right now, in any thread (each by its
    context), for telling those of one test from those started before it.
    """
    return set(_active)


def replay(
    app: Flask,
    snapshot: Snapshot,
    fn: t.Callable[..., t.Any],
    args: tuple[t.Any, ...],
    kwargs: dict[str, t.Any],
    job: Job | None = None,
    teardown_request: bool = False,
    max_body_size: int = 0,
    context_vars: tuple[tuple[contextvars.ContextVar[t.Any], t.Any], ...] = (),
) -> t.Any:
    """Call ``fn(*args, **kwargs)`` in a fresh context rebuilt from
    ``snapshot``, in a new :class:`contextvars.Context`, so nothing is shared
    with the submitting thread or left on this one.

    :param job: The job this runs, for ``current_job``.
    :param teardown_request: Run the app's request teardown when the
        context ends (``OFFLOAD_JOB_TEARDOWN_REQUEST``).
    :param max_body_size: ``OFFLOAD_MAX_BODY_SIZE``, for the message of a
        body too large to carry.
    :param context_vars: Other libraries' context variables to set first,
        from :func:`other_context_vars` where the call was handed off.
    """
    context = contextvars.Context()
    if context_vars:
        context.run(_set_vars, context_vars)
    return context.run(
        _replay, app, snapshot, fn, args, kwargs, job, teardown_request, max_body_size
    )


def other_context_vars() -> tuple[tuple[contextvars.ContextVar[t.Any], t.Any], ...]:
    """The context variables set here that are neither Flask's nor this
    library's: Sentry's scope, OpenTelemetry's current span. A carried call
    gets them as the code that handed it off had them, as a task given a
    copy of the context (``asyncio.to_thread``) would; never what an earlier
    task left on the thread that runs it.
    """
    own = compat.FLASK_CONTEXT_VARS
    return tuple(
        (var, value)
        for var, value in contextvars.copy_context().items()
        if var not in own and not var.name.startswith("flask_offload")
    )


def _set_vars(
    context_vars: tuple[tuple[contextvars.ContextVar[t.Any], t.Any], ...],
) -> None:
    for var, value in context_vars:
        var.set(value)


#: Results that mean the job's body has not run yet.
_LAZY = frozenset({GeneratorType, AsyncGeneratorType, CoroutineType})


def _finish_lazy(app: Flask, result: t.Any) -> t.Any:
    """Await a coroutine a callable returned (an object with an ``async def
    __call__``), in the job's context as ``async def`` jobs are; refuse a
    generator, whose body would only run later, outside any context.
    """
    if type(result) is CoroutineType:

        async def wait_for() -> t.Any:
            return await result

        return app.ensure_sync(wait_for)()
    if type(result) is GeneratorType:
        result.close()
    raise TypeError(
        "The job's function returned a generator, so its body never ran. Make"
        " it return its result instead, for example the list of what it"
        " yields: 'return list(...)'."
    )


def _replay(
    app: Flask,
    snapshot: Snapshot,
    fn: t.Callable[..., t.Any],
    args: tuple[t.Any, ...],
    kwargs: dict[str, t.Any],
    job: Job | None,
    teardown_request: bool,
    max_body_size: int,
) -> t.Any:
    if job is not None:
        _cv_job.set(job)
    data = snapshot.request
    ctx = (
        compat.enter_job_app_context(app)
        if data is None
        else compat.enter_job_context(
            app,
            data,
            max_body_size,
            _make_session,
            snapshot.session or {},
            teardown_request,
        )
    )
    # Jobs are tracked by their registry; only carried calls are counted here.
    if job is None:
        _active.add(ctx)
    error: BaseException | None = None
    try:
        if snapshot.g:
            g_dict = vars(compat.current_g())
            for name, value in snapshot.g.items():
                g_dict[name] = _copy_value(value)
        if (
            type(fn) is not FunctionType
            or fn.__code__.co_flags & CO_COROUTINE
            or type(app).ensure_sync is not Flask.ensure_sync
            or "ensure_sync" in app.__dict__
        ):
            # Only a plain def with Flask's own ensure_sync is called as it
            # is: ensure_sync's inspect calls cost more than the checks.
            fn = app.ensure_sync(fn)
        result = fn(*args, **kwargs)
        if type(result) in _LAZY and job is not None:
            # A job's result is final; a carried call returns what the
            # function returned, as without Flask-Offload.
            result = _finish_lazy(app, result)
        return result
    except BaseException as e:
        error = e
        raise
    finally:
        sess = None
        try:
            sess = ctx.leave(error)
        finally:
            if job is None:
                _active.discard(ctx)
            if (
                compat.registered_after_request(ctx)
                and app not in _warned_after_request
            ):
                _warned_after_request.add(app)
                logger.warning(
                    "A job called 'after_this_request'. Jobs run after the"
                    " response was sent, so the function it registered never"
                    " runs. Change the response in the view instead. This"
                    " warning is logged once per app."
                )
            if (
                sess is not None
                and sess.modified
                and app not in _warned_session
                and _visible_change(sess, snapshot.session or {})
            ):
                _warned_session.add(app)
                logger.warning(
                    "A job changed the session. Jobs run after the response was"
                    " sent, so session changes made in a job never reach the"
                    " client. Store the data elsewhere (a database) instead."
                    " This warning is logged once per app."
                )


#: Session keys Flask-Login writes when it loads a user (from a remember-me
#: cookie, or for session protection), which a job that only reads
#: ``current_user`` does: its bookkeeping, not a change the app made.
_LOGIN_KEYS = frozenset({"_user_id", "_fresh", "_id", "_remember", "_remember_seconds"})


def _visible_change(sess: SessionMixin, before: dict[str, t.Any]) -> bool:
    """Whether the job changed the session other than by Flask-Login's
    bookkeeping (:data:`_LOGIN_KEYS`). ``flash()`` (``_flashes``) counts: the
    message is lost too.
    """
    missing = object()
    return any(
        key not in _LOGIN_KEYS and sess.get(key, missing) != before.get(key, missing)
        for key in {*sess.keys(), *before.keys()}
    )


def _make_session(app: Flask, data: dict[str, t.Any]) -> SessionMixin:
    """A copy of the captured session for one job, marked unmodified."""
    cls = getattr(app.session_interface, "session_class", SecureCookieSession)
    # Copied again for each replay: the calls of one carried function share
    # the captured session, and one call appending to a list in it must not
    # change what the others see.
    data = {k: _copy_session_value(v) for k, v in data.items()}
    try:
        sess = cls(data)
    except TypeError:
        sess = SecureCookieSession(data)
    sess.modified = False
    made: SessionMixin = sess
    return made
