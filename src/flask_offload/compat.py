"""The only module that knows about Flask and Werkzeug internals.

Flask 3.1 has separate request and app contexts; Flask 3.2 merges the request
into :class:`flask.ctx.AppContext` (``AppContext(app, request=..., session=...)``)
and passes the context to ``do_teardown_request``. Everything version-specific,
and every private attribute the library must read, lives here so the rest of
the package uses public API only.
"""

from __future__ import annotations

import inspect
import os
import sys
import typing as t

from flask import Flask
from flask import globals as _flask_globals
from flask.ctx import AppContext
from flask.sessions import SessionMixin
from flask.wrappers import Request

#: True on Flask 3.2 and later, where the request lives in the app context.
MERGED_CONTEXT: bool = "request" in inspect.signature(AppContext.__init__).parameters

#: Whether a descriptor can be re-opened through procfs, giving a new open file
#: description (own offset) on the same inode. ``os.dup`` shares the offset.
HAS_PROC_FD: bool = sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd")


# The context variable that holds the context owning the session: the request
# context on 3.1, the merged app context on 3.2.
_cv_ctx: t.Any = (
    _flask_globals._cv_app if MERGED_CONTEXT else _flask_globals._cv_request  # type: ignore[attr-defined,unused-ignore]
)


class PushableContext(t.Protocol):
    def push(self) -> None: ...

    def pop(self, exc: BaseException | None = ...) -> None: ...


def request_job_context(
    app: Flask,
    request: Request,
    session: SessionMixin,
    routing_cache: list[t.Any] | None = None,
) -> PushableContext:
    """Make one fresh context that carries ``request`` and ``session``.

    On 3.2 this is a single :class:`AppContext`, which matters because
    Flask-SQLAlchemy keys its session by the app context's identity.

    :param routing_cache: A one-item list shared by every replay of one
        captured request. On 3.1 the bound URL adapter and the route match
        are computed once, stored there, and reused: both depend only on the
        request's environ, which every replay shares.
    """
    if MERGED_CONTEXT:
        return AppContext(app, request=request, session=session)  # type: ignore[call-arg,no-any-return,unused-ignore]
    ctx: PushableContext = _job_request_context_class()(
        app, request, session, routing_cache
    )
    return ctx


_JobRequestContext: t.Any = None


def _job_request_context_class() -> t.Any:
    global _JobRequestContext
    if _JobRequestContext is not None:
        return _JobRequestContext
    from flask.ctx import RequestContext
    from werkzeug.exceptions import HTTPException

    class JobRequestContext(RequestContext):
        """Flask 3.1's request context, with routing taken from the cache."""

        def __init__(
            self,
            app: Flask,
            request: Request,
            session: SessionMixin,
            cache: list[t.Any] | None,
        ) -> None:
            routing = cache[0] if cache else None
            if routing is None or routing[0] is not app:
                adapter: t.Any = None
                match: t.Any = None
                try:
                    adapter = app.create_url_adapter(request)
                    if adapter is not None:
                        match = adapter.match(return_rule=True)
                except HTTPException as e:
                    match = e
                routing = (app, adapter, match)
                if cache is not None:
                    cache[0] = routing
            # What RequestContext.__init__ sets, without binding the map again.
            self.app = app
            self.request = request
            self.url_adapter = routing[1]
            self.flashes = None
            self._session = session
            self._after_request_functions = []
            self._cv_tokens = []
            self._match = routing[2]
            if self.url_adapter is None and isinstance(self._match, HTTPException):
                request.routing_exception = self._match

        def match_request(self) -> None:
            match = self._match
            if isinstance(match, HTTPException):
                self.request.routing_exception = match
            elif match is not None:
                self.request.url_rule, view_args = match
                self.request.view_args = dict(view_args)

    _JobRequestContext = JobRequestContext
    return JobRequestContext


def current_session() -> SessionMixin | None:
    """The current request's session without marking it accessed.

    Reading it through ``flask.session`` sets ``session.accessed``, which
    makes Flask add ``Vary: Cookie`` to the response: wrong for a capture that
    does not change what the response depends on.
    """
    return getattr(_cv_ctx.get(None), "_session", None)


_TEARDOWN_MARK = "_flask_offload_teardown"


def skip_teardown_request_in_jobs(app: Flask, skip: t.Callable[[], bool]) -> None:
    """Wrap ``app.do_teardown_request`` on this app instance so it does nothing
    while ``skip()`` is true (inside a job that must not run request teardown).

    Works for the 3.1 signature ``(exc)`` and the 3.2 one ``(ctx, exc)``.
    Idempotent per app.
    """
    if getattr(app, _TEARDOWN_MARK, False):
        return
    original = app.do_teardown_request

    def do_teardown_request(*args: t.Any, **kwargs: t.Any) -> None:
        if skip():
            return
        original(*args, **kwargs)

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
