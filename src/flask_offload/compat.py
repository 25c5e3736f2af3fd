"""The only module that knows about Flask and Werkzeug internals.

Flask 3.1 has separate request and app contexts; Flask 3.2 merges the request
into :class:`flask.ctx.AppContext` (``AppContext(app, request=..., session=...)``)
and passes the context to ``do_teardown_request``. Everything version-specific,
and every private attribute the library must read, lives here so the rest of
the package uses public API only.
"""

from __future__ import annotations

import inspect
import io
import operator
import os
import sys
import typing as t

from flask import Flask
from flask import globals as _flask_globals
from flask.ctx import AppContext
from flask.sessions import SessionMixin
from flask.signals import appcontext_popped
from flask.signals import appcontext_pushed
from flask.signals import appcontext_tearing_down
from flask.wrappers import Request
from werkzeug.datastructures import EnvironHeaders
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request as WerkzeugRequest
from werkzeug.wsgi import LimitedStream

#: True on Flask 3.2 and later, where the request lives in the app context.
MERGED_CONTEXT: bool = "request" in inspect.signature(AppContext.__init__).parameters

#: Whether a descriptor can be re-opened through procfs, giving a new open file
#: description (own offset) on the same inode. ``os.dup`` shares the offset.
HAS_PROC_FD: bool = sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd")


_cv_app: t.Any = _flask_globals._cv_app
# The context variable that holds the context owning the request and session:
# the request context on 3.1, the merged app context on 3.2.
_cv_ctx: t.Any = (
    _cv_app if MERGED_CONTEXT else _flask_globals._cv_request  # type: ignore[attr-defined,unused-ignore]
)
#: Flask's context variables: a replay sets its own, never another's.
FLASK_CONTEXT_VARS: frozenset[t.Any] = frozenset({_cv_app, _cv_ctx})


# Submit and replay run once per job, so they read Flask's context variables
# directly: the ``request``, ``g`` and ``current_app`` proxies cost a lookup
# through werkzeug's LocalProxy on every access.


def current_app_context() -> AppContext | None:
    """The active app context, or ``None``."""
    ctx: AppContext | None = _cv_app.get(None)
    return ctx


def current_request() -> Request | None:
    """The active request, or ``None`` outside a request."""
    ctx = _cv_ctx.get(None)
    if ctx is None:
        return None
    # 3.2's merged context may hold no request; 3.1's request context always does.
    req: Request | None = ctx._request if MERGED_CONTEXT else ctx.request
    return req


def capture_state() -> tuple[
    Request | None, t.Any, dict[str, t.Any] | None, SessionMixin | None
]:
    """What a capture reads from the active contexts, in one call (capture
    runs on every submit): the active request and the context that holds it
    (for :func:`view_state`), ``None`` for both outside a request; the
    attributes of ``g`` (its ``__dict__``, not a copy), ``None`` outside an
    app context; and the request's session if it was opened, else ``None``.

    The session is read from the context, not through ``flask.session``,
    which sets ``session.accessed``: Flask then adds ``Vary: Cookie`` to the
    response, wrong for a capture that does not change what the response
    depends on.
    """
    app_ctx = _cv_app.get(None)
    if app_ctx is None:
        return None, None, None, None
    g = vars(app_ctx.g)
    if MERGED_CONTEXT:
        return app_ctx._request, app_ctx, g, getattr(app_ctx, "_session", None)
    ctx = _cv_ctx.get(None)
    if ctx is None:
        return None, None, g, None
    return ctx.request, ctx, g, ctx._session


def view_state(
    req: Request, ctx: t.Any
) -> tuple[
    ImmutableMultiDict[str, str] | None,
    SharedFields | None,
    tuple[Flask, t.Any, t.Any] | None,
]:
    """What a job's copy of the view's request ``req`` (held by ``ctx``,
    from :func:`capture_state`) reuses instead of computing it again, as
    the view sees it:

    - ``req.args`` if the view already parsed it, else ``None`` (reading it
      here would parse the query string for nothing if no job reads it);
    - :func:`request_fields`;
    - the routing ``(app, url_adapter, match)`` for :func:`enter_job_context`,
      where the match is ``(rule, view_args)`` (a copy of the view's current
      ``view_args``, so after any ``url_value_preprocessor``), the routing
      exception, or ``None``. ``None`` if the active app context is another
      app's.
    """
    args = req.__dict__.get("args")  # where werkzeug's cached_property keeps it
    if not isinstance(args, ImmutableMultiDict):
        args = None
    shared = request_fields(req)
    app = ctx.app
    app_ctx = _cv_app.get(None)
    if app_ctx is None or app_ctx.app is not app:
        return args, shared, None
    match: t.Any = req.routing_exception
    if match is None and req.url_rule is not None:
        match = (req.url_rule, dict(req.view_args or {}))
    return args, shared, (app, ctx.url_adapter, match)


def apply_match(req: Request, match: t.Any) -> None:
    """Give ``req`` a route match from :func:`view_state`: ``(rule,
    view_args)`` (``view_args`` copied), a routing exception, or ``None``.
    """
    # Stored in the instance dict, as setting the attributes would (they are
    # plain class attributes of Flask's Request): fewer instructions, once
    # per job.
    attrs = req.__dict__
    if type(match) is tuple:
        attrs["url_rule"] = match[0]
        attrs["view_args"] = dict(match[1])
    elif match is not None:
        attrs["routing_exception"] = match


#: What Werkzeug's ``Request.__init__`` derives from the environ, besides the
#: environ itself and the headers (each copy of a request gets its own).
#: :func:`build_request` assigns them in this order.
_SHARED_FIELDS = (
    "method",
    "path",
    "query_string",
    "remote_addr",
    "root_path",
    "scheme",
    "server",
    "shallow",
)
# One C call for all eight: a comprehension costs about 4k more instructions.
_get_shared = operator.itemgetter(*_SHARED_FIELDS)

#: The values of :data:`_SHARED_FIELDS` of one request, in that order.
SharedFields = tuple[t.Any, ...]


def request_fields(req: Request) -> SharedFields | None:
    """What ``Request.__init__`` derived from the environ of ``req`` (method,
    path, remote address...), to build copies of it with
    :func:`build_request` instead of deriving them again; ``None`` if this
    request class or Werkzeug version sets something else. The environ and
    headers are left out: each copy gets its own.
    """
    if type(req).__init__ is not WerkzeugRequest.__init__:
        return None
    fields = req.__dict__
    if type(fields.get("headers")) is not EnvironHeaders:
        return None
    try:
        shared: SharedFields = _get_shared(fields)
    except KeyError:
        return None
    return shared


def set_cached(req: Request, values: dict[str, t.Any]) -> None:
    """Give cached properties of ``req`` (``args``, ``stream``...) their
    values, so reading them parses nothing.
    """
    for name, value in values.items():
        setattr(req, name, value)


_NO_HEADERS: tuple[tuple[str, str], ...] = ()


def build_request(
    cls: type[Request],
    shared: SharedFields,
    environ: dict[str, t.Any],
    stream: t.Any,
    args: ImmutableMultiDict[str, str] | None,
    match: t.Any,
) -> Request:
    """``cls(environ)`` for a copy of the environ of the request ``shared``
    was taken from (:func:`request_fields`), with its ``stream`` and its
    ``args`` (each if not ``None``) and the view's route ``match`` (see
    :func:`view_state`) set.

    Werkzeug's ``Request.__init__`` derives a few strings from the environ;
    they are the same for every copy, so they are copied instead.
    """
    req: Request = object.__new__(cls)
    attrs = req.__dict__
    # In _SHARED_FIELDS' order; one unpacking instead of a dict and update().
    (
        attrs["method"],
        attrs["path"],
        attrs["query_string"],
        attrs["remote_addr"],
        attrs["root_path"],
        attrs["scheme"],
        attrs["server"],
        attrs["shallow"],
    ) = shared
    attrs["environ"] = environ
    # EnvironHeaders(environ), without the call through super().__init__.
    # Its _list stays empty (it reads the environ; changing it raises), so
    # all share one empty tuple.
    headers = object.__new__(EnvironHeaders)
    headers._list = _NO_HEADERS  # type: ignore[assignment]
    headers.environ = environ
    attrs["headers"] = headers
    # Werkzeug's cached properties keep their value in the instance dict.
    if stream is not None:
        attrs["stream"] = stream
    if args is not None:
        attrs["args"] = args
    apply_match(req, match)
    environ["werkzeug.request"] = req
    return req


def current_g() -> t.Any:
    """``g`` of the active app context. An app context must be active."""
    return _cv_app.get().g


class JobContext(t.Protocol):
    """A job's context, made and pushed by :func:`enter_job_context` or
    :func:`enter_job_app_context`.
    """

    def leave(self, exc: BaseException | None) -> SessionMixin | None:
        """Tear the context down as popping it would, and return the session
        copy if the job used it.
        """


class RequestSource(t.Protocol):
    """What a job's request is rebuilt from (:class:`~.snapshot.RequestData`)."""

    #: A one-item list shared by every replay of one captured request: the
    #: bound URL adapter and the route match depend only on the request's
    #: environ, so they are computed once (3.1).
    routing: list[t.Any]

    def make_request(
        self, app: Flask, max_body_size: int, match: t.Any = None
    ) -> Request: ...


SessionFactory = t.Callable[[Flask, "dict[str, t.Any]"], SessionMixin]


def enter_job_context(
    app: Flask,
    source: RequestSource,
    max_body_size: int,
    make_session: SessionFactory,
    session_data: dict[str, t.Any],
    teardown_request: bool,
) -> JobContext:
    """Make and push one fresh context for a job. Leaving it runs the app's
    request teardown only if ``teardown_request`` is true.

    Call it only in a new :class:`contextvars.Context` that is dropped after
    the job (as :func:`~.snapshot.replay` does): on 3.1, leaving does not
    reset the context variables it set, the dropped ``Context`` does.

    On 3.1 the request and the session copy are built when the job first
    touches them: a job that only uses its arguments, ``g`` or
    ``current_app`` pays for neither. On 3.2 they are built at once, in a
    single :class:`AppContext` (Flask-SQLAlchemy keys its session by the app
    context's identity, so a job must be one context).
    """
    if MERGED_CONTEXT:
        sess = make_session(app, session_data)
        ctx = _MergedJobContext(
            app,
            request=source.make_request(app, max_body_size),  # type: ignore[call-arg,unused-ignore]
            session=sess,  # type: ignore[call-arg,unused-ignore]
        )
        routing = source.routing[0]
        if routing is not None and routing[0] is app:
            ctx.url_adapter = routing[1]
            ctx._job_match = routing
        ctx._job_session = sess
        if teardown_request:
            ctx._job_skips_teardown = False
        ctx.push()
        return ctx
    ctx31: t.Any = _JobRequestContext(
        app, source, max_body_size, make_session, session_data, teardown_request
    )
    _enter_app_context(app, ctx31)
    _cv_ctx.set(ctx31)
    entered: JobContext = ctx31  # typed without t.cast, a call at run time
    return entered


def enter_job_app_context(app: Flask) -> JobContext:
    """Make and push a fresh app context for a job submitted outside a
    request; as :func:`enter_job_context`, only in a new ``Context``.
    """
    if MERGED_CONTEXT:
        ctx = _MergedJobContext(app)
        ctx.push()
        return ctx
    app_ctx: t.Any = _JobAppContext(app)
    _enter_app_context(app, app_ctx)
    entered: JobContext = app_ctx
    return entered


class _MergedJobContext(AppContext):
    """Flask 3.2's context for a job: routing from the captured request
    (the view's match) when there is one, as on 3.1.
    """

    _job_match: t.Any = None
    _job_session: SessionMixin | None = None
    # Read by the app's do_teardown_request wrapper (wrap_teardown_request).
    _job_skips_teardown = True

    def match_request(self) -> None:
        routing = self._job_match
        if routing is None:
            super().match_request()  # type: ignore[misc,unused-ignore]
        else:
            apply_match(self._request, routing[2])  # type: ignore[attr-defined,unused-ignore]

    def leave(self, exc: BaseException | None) -> SessionMixin | None:
        self.pop(exc)
        return self._job_session

    def copy(self) -> AppContext:
        # copy_current_request_context in a job: a plain context sharing the
        # job's request, which runs teardown_request as any copy does (a
        # copy of this class would inherit _job_skips_teardown). Flask 3.2's
        # signature, untyped on 3.1.
        this: t.Any = self
        make: t.Any = AppContext
        copied: AppContext = make(
            this.app, request=this._request, session=this._session
        )
        return copied


def registered_after_request(ctx: t.Any) -> bool:
    """Whether code run in the job's context ``ctx`` called
    ``after_this_request``: no response follows a job, so what it
    registered never runs. (On 3.1 the list exists only if used.)
    """
    return bool(ctx.__dict__.get("_after_request_functions"))


def _enter_app_context(app: Flask, ctx: t.Any) -> None:
    """What pushing a 3.1 app context does, for ``ctx`` in the job's own
    ``Context``: make it the active app context, then send
    ``appcontext_pushed`` if anyone listens. :func:`_leave_app_context`
    undoes it.
    """
    _cv_app.set(ctx)
    if appcontext_pushed.receivers:
        appcontext_pushed.send(app, _async_wrapper=app.ensure_sync)


def _leave_app_context(app: Flask, exc: BaseException | None) -> None:
    """What popping a 3.1 app context runs: ``teardown_appcontext`` (not
    called when nothing would run: no function, receiver or override, as
    for most jobs), then the ``appcontext_popped`` signal if anyone listens.
    """
    if (
        app.teardown_appcontext_funcs
        or appcontext_tearing_down.receivers
        or type(app).do_teardown_appcontext is not Flask.do_teardown_appcontext
        or "do_teardown_appcontext" in app.__dict__
    ):
        app.do_teardown_appcontext(exc)
    if appcontext_popped.receivers:
        appcontext_popped.send(app, _async_wrapper=app.ensure_sync)


class _LazyList:
    """A list attribute made on first use: a job's contexts rarely need the
    lists Flask's contexts make for every push (after-request functions,
    tokens of nested pushes). A non-data descriptor: once made, the list in
    the instance dict is read directly.
    """

    def __init__(self, *items: t.Any) -> None:
        self.items = items
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: t.Any, owner: type | None = None) -> t.Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = list(self.items)
        return value


class _JobGlobals:
    """``g`` of a 3.1 job context, made on first use: many jobs never use
    it. A data descriptor keeping it in ``_lazy_g``.
    """

    def __get__(self, ctx: t.Any, owner: type | None = None) -> t.Any:
        if ctx is None:
            return self
        g = ctx._lazy_g
        if g is None:
            g = ctx._lazy_g = ctx.app.app_ctx_globals_class()
        return g

    def __set__(self, ctx: t.Any, value: t.Any) -> None:
        ctx._lazy_g = value


def _job_context_classes() -> tuple[t.Any, t.Any]:
    """Make Flask 3.1's job contexts, ``(JobAppContext, JobRequestContext)``
    (``RequestContext`` is gone from 3.2).
    """
    from flask.ctx import _sentinel
    from flask.ctx import RequestContext

    class JobAppContext(AppContext):
        """Flask 3.1's app context, for a job. ``g`` and the URL adapter are
        made on first use: many jobs never use them.

        Entered by setting the context variable in the job's own
        ``Context``, and left by :meth:`leave`. The token list (made only if
        used) holds a placeholder for that first push, so a nested
        ``push``/``pop`` (a ``with`` block in the job) works as on any app
        context and does not tear it down early.
        """

        _lazy_g: t.Any = None
        _lazy_adapter: t.Any = _sentinel
        # The placeholder stands for the push done by entering the job.
        _cv_tokens = _LazyList(None)

        def __init__(self, app: Flask) -> None:
            self.app = app

        g = _JobGlobals()

        @property
        def url_adapter(self) -> t.Any:
            adapter = self._lazy_adapter
            if adapter is _sentinel:
                adapter = self._lazy_adapter = self.app.create_url_adapter(None)
            return adapter

        @url_adapter.setter
        def url_adapter(self, value: t.Any) -> None:
            self._lazy_adapter = value

        def leave(self, exc: BaseException | None) -> SessionMixin | None:
            _leave_app_context(self.app, exc)
            return None

    class JobRequestContext(RequestContext):
        """Flask 3.1's request context for a job: routing from the cache, and
        the request and session built on first use. It is the job's app
        context too (``g``, ``current_app``; one object fewer per job, as
        the merged context of Flask 3.2): entered by
        :func:`enter_job_context`, left by :meth:`leave`; a nested
        ``push``/``pop`` works as on any request context (see
        :class:`JobAppContext`).
        """

        g = _JobGlobals()

        # Class defaults: fewer stores per job.
        _lazy_g: t.Any = None
        _lazy_request: Request | None = None
        _lazy_session: SessionMixin | None = None
        _match: t.Any = None
        flashes = None
        # Read by the app's do_teardown_request wrapper (wrap_teardown_request).
        _job_skips_teardown = True
        _after_request_functions = _LazyList()
        # The placeholder stands for the push done by entering the job.
        _cv_tokens = _LazyList((None, None))

        def __init__(
            self,
            app: Flask,
            source: RequestSource,
            max_body_size: int,
            make_session: SessionFactory,
            session_data: dict[str, t.Any],
            teardown_request: bool,
        ) -> None:
            self.app = app
            if teardown_request:
                self._job_skips_teardown = False
            # What the request and session are built from, if used.
            self._parts = (source, max_body_size, make_session, session_data)
            routing = source.routing[0]
            if routing is None or routing[0] is not app:
                routing = self._route(source)
            self.url_adapter = routing[1]
            self._match = routing[2]

        def _route(self, source: RequestSource) -> tuple[Flask, t.Any, t.Any]:
            # Binding the URL map needs a request: build it this once.
            app = self.app
            adapter: t.Any = None
            match: t.Any = None
            try:
                adapter = app.create_url_adapter(self.request)
                if adapter is not None:
                    match = adapter.match(return_rule=True)
            except HTTPException as e:
                match = e
            routing = (app, adapter, match)
            source.routing[0] = routing
            apply_match(self.request, match)
            return routing

        # Properties, not __getattr__: Python makes and discards an
        # AttributeError before calling __getattr__, which costs more than
        # the property call on the job's few reads.
        @property
        def request(self) -> Request:
            req = self._lazy_request
            if req is None:
                parts = self._parts
                req = self._lazy_request = parts[0].make_request(
                    self.app, parts[1], self._match
                )
            return req

        @request.setter
        def request(self, value: Request) -> None:
            self._lazy_request = value

        @property
        def _session(self) -> SessionMixin:
            sess = self._lazy_session
            if sess is None:
                parts = self._parts
                sess = self._lazy_session = parts[2](self.app, parts[3])
            return sess

        @_session.setter
        def _session(self, value: SessionMixin) -> None:
            self._lazy_session = value

        def match_request(self) -> None:
            if self._lazy_request is not None:
                apply_match(self._lazy_request, self._match)

        def leave(self, exc: BaseException | None) -> SessionMixin | None:
            """What popping the job's request context and its app context
            runs, in Flask 3.1's order: request teardown (only if asked
            for), closing the request (only if it has anything to close),
            then app context teardown and its signal. The request is still
            active during ``teardown_appcontext``, as on Flask 3.2.
            """
            app = self.app
            req = self._lazy_request
            try:
                if not self._job_skips_teardown:
                    # Not called at all when skipped: the app's wrapper (see
                    # wrap_teardown_request) would return at once.
                    app.do_teardown_request(exc)
            finally:
                try:
                    # The job's own file handles are closed even if a
                    # teardown function raised.
                    if req is not None and (
                        "files" in req.__dict__
                        or type(req).close is not WerkzeugRequest.close
                    ):
                        req.close()
                finally:
                    if req is not None:
                        req.environ["werkzeug.request"] = None
                    _leave_app_context(app, exc)
            return self._lazy_session

        def copy(self) -> RequestContext:
            return RequestContext(
                self.app,
                environ=self.request.environ,
                request=self.request,
                session=self._session,
            )

    return JobAppContext, JobRequestContext


# Made at import, so entering a job's context finds its class without a call.
_JobAppContext: t.Any
_JobRequestContext: t.Any
_JobAppContext, _JobRequestContext = (
    (None, None) if MERGED_CONTEXT else _job_context_classes()
)


_TEARDOWN_MARK = "_flask_offload_teardown"


def wrap_teardown_request(app: Flask, after: t.Callable[[], None]) -> None:
    """Wrap ``app.do_teardown_request`` on this app instance: it does nothing
    for a job's own context (see :func:`enter_job_context`) unless the job
    asked for request teardown, and otherwise calls ``after()`` once the
    teardown functions ran, even if one of them raised, with the request
    still active.

    Works for the 3.1 signature ``(exc)`` and the 3.2 one ``(ctx, exc)``: the
    context being torn down is the active one in both. Idempotent per app.
    """
    if getattr(app, _TEARDOWN_MARK, False):
        return
    original = app.do_teardown_request

    def do_teardown_request(*args: t.Any, **kwargs: t.Any) -> None:
        # A context of a nested request pushed inside a job is not skipped.
        if getattr(_cv_ctx.get(None), "_job_skips_teardown", False):
            return
        try:
            original(*args, **kwargs)
        finally:
            after()

    app.do_teardown_request = do_teardown_request  # type: ignore[method-assign]
    setattr(app, _TEARDOWN_MARK, True)


def spooled_parts(stream: t.Any) -> tuple[str, t.Any]:
    """Classify an upload stream without forcing it to roll over to disk.

    :return: ``("file", fileobj)`` for a stream backed by a real file (a
        :class:`~tempfile.SpooledTemporaryFile` that has rolled over, or any
        object with a working ``fileno``), ``("bytes", data)`` for one held in
        memory, or ``("stream", stream)`` for anything else.
    """
    inner = stream
    # SpooledTemporaryFile: calling fileno() would force a roll-over, so look
    # at whether it already rolled and take its underlying file directly.
    if hasattr(stream, "_rolled") and hasattr(stream, "_file"):
        inner = stream._file
        if not stream._rolled:
            return "bytes", inner.getvalue()
    if hasattr(inner, "getvalue"):
        return "bytes", inner.getvalue()
    try:
        inner.fileno()
    except (AttributeError, OSError, ValueError):
        return "stream", stream
    return "file", inner


class _Rejoined(io.RawIOBase):
    """A view's body stream after a capture read its first bytes: those
    bytes, then the rest of the original stream.
    """

    def __init__(self, head: bytes, rest: t.Any) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int:
        size = len(buffer)
        head = self._head
        if head:
            n = min(size, len(head))
            buffer[:n] = head[:n]
            self._head = head[n:]
            return n
        data = self._rest.read(size)
        n = len(data)
        buffer[:n] = data
        return n


class _Refused(io.RawIOBase):
    """The body stream of a request the app refused as too large, after a
    capture's parse raised: reading it raises the same 413 again.
    """

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int:
        raise RequestEntityTooLarge()


def refuse_body(req: Request) -> None:
    """After a capture's parse of ``req`` raised ``RequestEntityTooLarge``
    (over ``MAX_FORM_PARTS`` or ``MAX_FORM_MEMORY_SIZE``), Werkzeug would
    parse what is left of the body on the view's next read and give it
    empty fields. Make that read raise the 413 again, as it would have
    without the capture.
    """
    d = req.__dict__
    if "stream" in d:
        d["stream"] = _Refused()
    d.pop("form", None)
    d.pop("files", None)


def give_back(req: Request, stream: t.Any, data: bytes, whole: bool) -> None:
    """Give ``data``, just read from the view's ``stream``, back to whatever
    reads the body after the capture, as without it.

    Werkzeug's own stream (a Content-Length body, or one limited by
    ``MAX_CONTENT_LENGTH``) gets the bytes back inside it, so a view or
    thread already holding ``request.stream`` reads all of it. Another
    stream (the server's input, handed over as it is for a chunked body)
    cannot be refilled: ``request.stream`` and ``wsgi.input`` are replaced
    by streams that give the same bytes again, then the rest.

    :param whole: ``data`` is the whole body: the rest is empty.
    """
    if not data or stream is None:
        return
    environ = req.environ
    if isinstance(stream, LimitedStream):
        inner = stream._stream
        rejoined: t.Any = _Rejoined(data, inner)  # an IO of bytes, as wanted
        stream._stream = rejoined
        stream._pos -= len(data)
        if environ.get("wsgi.input") is inner:
            environ["wsgi.input"] = rejoined
        return
    # ``stream`` is a cached property: its value lives in the instance dict.
    if whole:
        req.__dict__["stream"] = io.BytesIO(data)
        if environ.get("wsgi.input") is stream:
            environ["wsgi.input"] = io.BytesIO(data)
        return
    rejoined = io.BufferedReader(_Rejoined(data, stream))
    req.__dict__["stream"] = rejoined
    if environ.get("wsgi.input") is stream:
        environ["wsgi.input"] = rejoined


def read_form_body(req: Request) -> bytes | None:
    """The raw bytes of a urlencoded form the view has not read, cached on
    ``req`` (its form is parsed from the cache) and given back to its
    stream: ``get_data()`` and ``request.stream`` in the view still give
    them after a capture. ``None`` if the view parsed the form, or read the
    stream, itself: the bytes are gone, as they would be without the
    capture. (A body the view read with ``get_data`` is taken from
    Werkzeug's cache by the caller.)
    """
    d = req.__dict__
    stream = d.get("stream")
    if "form" in d or (isinstance(stream, LimitedStream) and stream.is_exhausted):
        return None
    data = req.get_data(cache=True, parse_form_data=False)
    give_back(req, d.get("stream"), data, whole=True)
    return data


def parsed_files(req: Request) -> t.Any:
    """``req.files``, parsing the form if not yet done. A form parsed from
    the cached body would leave ``request.stream`` a used-up copy of it; the
    view keeps its own stream instead, which still gives the body.
    """
    held = req.__dict__.get("stream")
    files = req.files
    if held is not None and "_cached_data" in req.__dict__:
        req.__dict__["stream"] = held
    return files


def read_body(req: Request, limit: int) -> tuple[bytes | None, int | None]:
    """The body of ``req`` for a capture, read without taking it from the
    view: ``(body, None)`` if it has at most ``limit`` bytes, else ``(None,
    size)``, where ``size`` is ``-1`` if unknown (a chunked body).

    A body the view already read with ``get_data`` (or ``get_json``) is taken
    from Werkzeug's cache. Otherwise at most ``limit + 1`` bytes are read
    from ``req.stream``, and given back: inside Werkzeug's own stream (and
    ``wsgi.input``), so a view or thread already holding it reads all of it,
    or else by replacing the view's ``stream`` with one that gives the same
    bytes again, then the rest. The view reads its body as if nothing had.
    """
    cached = req.__dict__.get("_cached_data")  # get_data(cache=True)'s cache
    if cached is not None:
        return (cached, None) if len(cached) <= limit else (None, len(cached))
    length = req.content_length
    if length is not None and length > limit:
        return None, length
    stream: t.Any = req.stream
    limited = isinstance(stream, LimitedStream)
    chunks: list[bytes] = []
    got = 0
    # A read may return fewer bytes than asked before the end of the body.
    while got <= limit:
        # As Werkzeug's own readall: a stream limited by MAX_CONTENT_LENGTH
        # raises 413 if read once it is used up, even for a body of exactly
        # that size.
        if limited and stream.is_exhausted:
            break
        chunk = stream.read(limit + 1 - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    body = b"".join(chunks)
    give_back(req, stream, body, whole=got <= limit)
    return (None, -1) if got > limit else (body, None)
