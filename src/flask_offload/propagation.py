"""Carry the current context into threads, pools and executors you start
yourself: by hand with :func:`carry`, or automatically with
``OFFLOAD_PROPAGATE`` (:func:`install`) or :func:`propagating`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import sys
import threading
import typing as t
import weakref

from flask import current_app
from flask import Flask
from flask import has_app_context

from .extension import settings_for
from .jobs import _cv_job
from .snapshot import capture
from .snapshot import other_context_vars
from .snapshot import replay

if t.TYPE_CHECKING:  # pragma: no cover
    from concurrent.futures import ThreadPoolExecutor
    from multiprocessing.pool import ThreadPool

    from .jobs import Job
    from .snapshot import Snapshot

P = t.ParamSpec("P")
R = t.TypeVar("R")

#: Set on every callable that already replays a captured context (the
#: wrappers of :func:`carry` and of propagation): propagation never wraps
#: them again.
CARRIED_MARK = "__flask_offload_carried__"


def carry(fn: t.Callable[P, R]) -> t.Callable[P, R]:
    """Capture the current context now, and replay a fresh copy of it at
    every call of the returned wrapper.

    .. code-block:: python

        threading.Thread(target=carry(fn), args=(1,)).start()
        pool.map(carry(fn), items)

    Unlike :func:`flask.copy_current_request_context`, the wrapper may be
    called any number of times, from any number of threads at once, at any
    depth of nesting, also after the response: each call gets its own request
    object, its own ``g`` with the carried values, and runs
    ``teardown_appcontext`` once in its own thread. Uploaded files stay
    readable as long as the wrapper exists. Inside a job, ``current_job`` is
    the job in the carried calls too.

    :raises RuntimeError: No app context is active.
    """
    if not callable(fn):
        raise TypeError(
            f"'carry' needs a function to wrap, not {fn!r}: carry(fn), then call"
            " the result (or give it to a thread or pool) with the arguments."
        )
    if not has_app_context():
        raise RuntimeError(
            "'carry' can only be used when an application or request context is"
            " active, such as in a view function, a CLI command, a job, or inside"
            " 'with app.app_context()'. Call it where the work is handed off (where"
            " the thread is started or the pool is given the function), not at"
            " import time."
        )
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = settings_for(app)
    snapshot = capture(carry_g=settings.carry_g, max_body_size=settings.max_body_size)
    snapshot.acquire()
    job = _cv_job.get(None)
    teardown_request = settings.job_teardown_request
    max_body_size = settings.max_body_size

    @functools.wraps(fn)
    def carried(*args: P.args, **kwargs: P.kwargs) -> R:
        return t.cast(
            R,
            replay(
                app,
                snapshot,
                fn,
                args,
                kwargs,
                job=job,
                teardown_request=teardown_request,
                max_body_size=max_body_size,
            ),
        )

    setattr(carried, CARRIED_MARK, True)
    # Uploaded files stay open while the wrapper can still be called.
    weakref.finalize(carried, snapshot.release)
    return carried


# -- automatic propagation -------------------------------------------------

#: Whether ``threading.Thread`` takes ``context=`` (Python 3.14 and later).
#: Then a thread copies its starter's context or starts empty depending on
#: ``sys.flags.thread_inherit_context``; propagation passes a fresh one.
THREAD_HAS_CONTEXT: bool = (
    "context" in inspect.signature(threading.Thread.__init__).parameters
)

# None: each app's OFFLOAD_PROPAGATE decides; True/False: a propagating()
# block decides, whatever the app says.
_cv_override: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "flask_offload.propagate"
)

# Threads whose target or class comes from these modules are pool and
# executor workers, event loops, or long-lived service threads: they get no
# snapshot (a worker started inside one request would show it to every later
# task; a service thread would pin the request for the life of the process).
# The tasks such pools run are wrapped one by one instead.
_SKIP_THREAD_MODULES = (
    "concurrent.futures.",
    "multiprocessing.",
    "asyncio.",
    "asgiref.",
    "logging.",
    "flask_offload.",
    "sentry_sdk.",
    "opentelemetry.",
    # Service threads libraries start lazily, often in the first request
    # that needs them (a scheduler, a connection pool's maintenance thread,
    # a broker consumer): replayed, they would show that request to all
    # the work they later do for other users.
    "apscheduler.",
    "psycopg_pool.",
    "kombu.",
    # Celery's own threads, not its API: Thread(target=task.delay) still
    # carries the request, which the task's snapshot needs.
    "celery.worker.",
    "celery.concurrency.",
    "celery.backends.",
    "celery.events.",
    "celery.beat.",
    "celery.utils.",
    "redis.",
)
# multiprocessing.dummy.Process is a public Thread subclass started with a
# user's target: only the target (multiprocessing.pool's) tells a ThreadPool
# worker apart.
_SKIP_THREAD_CLASS_MODULES = tuple(
    m for m in _SKIP_THREAD_MODULES if m != "multiprocessing."
)
# Callables handed to executors by these modules manage a context of their
# own (asgiref's loop and sync_to_async threads): a replay around them would
# only add a teardown_appcontext in the wrong thread.
_SKIP_CALLER_MODULES = ("asgiref.", "flask_offload.")
# But a replay (and _forced_call) calls the function it was handed from
# these: a patch called there was handed over by the user's code, as in
# submit(pool.map, fn, items), and captures again for fn.
_REPLAY_MODULES = ("flask_offload.snapshot", __name__)

_lock = threading.RLock()
_patched = False
# "Owner.attribute" -> what our patch calls through to.
_originals: dict[str, t.Any] = {}
# "Owner.attribute" -> (owner, attribute, the owner's own value before
# patching or _MISSING when it was inherited, our patch). Kept after
# uninstalling while another library's patch wraps ours: ours stays in their
# chain, passing straight through, and installing again re-activates it there
# instead of stacking a second one that would call the first.
_restore: dict[str, tuple[t.Any, str, t.Any, t.Callable[..., t.Any]]] = {}
_MISSING: t.Any = object()
_PATCH_MARK = "_flask_offload_patch"
_POOL_METHODS = (
    "apply_async",
    "map",
    "map_async",
    "starmap",
    "starmap_async",
    "imap",
    "imap_unordered",
)
# gevent.pool.Group's methods that take the function first. Their work is
# spawned from a greenlet of their own, which has no context: the function
# is wrapped when handed over instead (once for all items, as map does).
_GEVENT_GROUP_METHODS = (
    "spawn",
    "apply_async",
    "map",
    "map_async",
    "imap",
    "imap_unordered",
)


class _Carrier:
    """One capture, replayed afresh at every call: what propagation hands to
    a thread, a pool or an executor instead of the original callable.

    Holds one reference to the snapshot (uploaded files stay readable) until
    it is garbage collected.
    """

    __slots__ = (
        "fn",
        "app",
        "snapshot",
        "job",
        "teardown_request",
        "max_body_size",
        "forced",
        "context_vars",
        "__weakref__",
    )

    __flask_offload_carried__ = True

    def __init__(
        self,
        fn: t.Callable[..., t.Any],
        app: Flask,
        snapshot: Snapshot,
        job: Job | None,
        teardown_request: bool,
        max_body_size: int,
        forced: bool,
    ) -> None:
        self.fn = fn
        self.app = app
        self.snapshot = snapshot
        self.job = job
        self.teardown_request = teardown_request
        self.max_body_size = max_body_size
        self.forced = forced
        # Other libraries' context at the hand-off (Sentry's scope, a span),
        # held until the task or thread is done with it. Not for carry(),
        # whose wrapper may be kept for long: Sentry's scope references the
        # live request.
        self.context_vars = other_context_vars()
        snapshot.acquire()

    def __call__(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        fn = self.fn
        if self.forced:
            # Turned on by a propagating() block: stay on in what this
            # task starts, however deep.
            args = (fn, *args)
            fn = _forced_call
        return replay(
            self.app,
            self.snapshot,
            fn,
            args,
            kwargs,
            job=self.job,
            teardown_request=self.teardown_request,
            max_body_size=self.max_body_size,
            context_vars=self.context_vars,
        )

    def __del__(self) -> None:
        self.snapshot.release()

    def __repr__(self) -> str:
        return f"<propagated {self.fn!r}>"


def _forced_call(fn: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
    _cv_override.set(True)
    return fn(*args, **kwargs)


def _enabled_app() -> tuple[Flask, bool] | None:
    """The current app, and whether propagation was forced by a block, when
    propagation applies here. Call only with an app context active.
    """
    if not _patched:
        return None  # uninstalled, but left under another library's patch
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    forced = _cv_override.get(None)
    if forced is None:
        # Only apps registered with Offload and OFFLOAD_PROPAGATE on.
        if "offload" not in app.extensions or not settings_for(app).propagate:
            return None
        return app, False
    return (app, True) if forced else None


def _make_carrier(fn: t.Callable[..., t.Any], app: Flask, forced: bool) -> _Carrier:
    settings = settings_for(app)
    snapshot = capture(carry_g=settings.carry_g, max_body_size=settings.max_body_size)
    return _Carrier(
        fn,
        app,
        snapshot,
        _cv_job.get(None),
        settings.job_teardown_request,
        settings.max_body_size,
        forced,
    )


def _skip_callable(fn: t.Any, modules: tuple[str, ...]) -> bool:
    """Whether ``fn`` (or the function a partial calls) comes from one of
    ``modules``. Our own patches live in this module but stand for the
    threading, pool or gevent method they replace, which is public API: they
    are never skipped, so ``submit(pool.map, fn, items)`` carries the context
    on to the inner call.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    module = getattr(fn, "__module__", None) or ""
    # The mark is looked up only for the few callables that match.
    return module.startswith(modules) and not getattr(fn, _PATCH_MARK, False)


def _carries_itself(fn: t.Any) -> bool:
    """Whether ``fn`` already brings its own context: a carried wrapper, or
    ``partial(some_context.run, ...)`` (``asyncio.to_thread``).
    """
    if getattr(fn, CARRIED_MARK, False):
        return True
    while isinstance(fn, functools.partial):
        fn = fn.func
        if getattr(fn, CARRIED_MARK, False):
            return True
    return isinstance(getattr(fn, "__self__", None), contextvars.Context)


def _wrap_task(fn: t.Any, caller: str) -> t.Any:
    """``fn`` wrapped to replay the current context at each call, or ``fn``
    itself when propagation does not apply. Needs an app context.
    """
    if caller.startswith(_SKIP_CALLER_MODULES) and caller not in _REPLAY_MODULES:
        return fn
    if _carries_itself(fn) or _skip_callable(fn, _SKIP_CALLER_MODULES):
        return fn
    enabled = _enabled_app()
    if enabled is None:
        return fn
    return _make_carrier(fn, *enabled)


def _caller_module(depth: int = 2) -> str:
    try:
        return str(sys._getframe(depth).f_globals.get("__name__") or "")
    except ValueError:  # pragma: no cover - no such frame
        return ""


# -- threading.Thread.start ----------------------------------------------


class _ThreadRun:
    """Set as the started thread's own ``run``: replays the capture around
    the class's ``run`` (so subclasses and ``Timer`` are covered), then
    removes itself so the thread keeps no context and no cycle.
    """

    __slots__ = ("thread", "carrier", "previous", "__weakref__")

    __flask_offload_carried__ = True

    def __init__(
        self, thread: threading.Thread, carrier: _Carrier, previous: t.Any
    ) -> None:
        self.thread = thread
        self.carrier = carrier
        # A ``run`` the program set on the thread itself, put back after.
        self.previous = previous

    def __call__(self, *_: t.Any) -> None:
        # Called as ``thread.run()``, or with the thread by a thread
        # integration patched in before ours, which took ``thread.run`` as a
        # plain function (Sentry's calls ``old_run(current_thread())``).
        try:
            self.carrier()
        finally:
            previous = self.previous
            if previous is _MISSING:
                self.thread.__dict__.pop("run", None)
            else:
                self.thread.__dict__["run"] = previous
            del self.carrier, self.previous


def _skip_thread(thread: threading.Thread) -> bool:
    if type(thread).__module__.startswith(_SKIP_THREAD_CLASS_MODULES):
        return True
    target = getattr(thread, "_target", None)
    if target is None and isinstance(thread, threading.Timer):
        if type(thread).run is threading.Timer.run:
            target = thread.function
    if target is None:
        return False
    if type(thread).run in (threading.Thread.run, threading.Timer.run):
        if _carries_itself(target):
            return True
    return _skip_callable(target, _SKIP_THREAD_MODULES)


def _prepare_thread(thread: threading.Thread) -> t.Any:
    """Wrap the thread's ``run`` before it starts. Returns what to restore if
    starting fails, or ``_MISSING`` when nothing was changed.
    """
    if thread._started.is_set():  # type: ignore[attr-defined]
        return _MISSING  # start() raises its own error
    enabled = _enabled_app()
    if enabled is None:
        return _MISSING
    if THREAD_HAS_CONTEXT and getattr(thread, "_context", None) is None:
        # Started inside a request or job: never inherit its live context,
        # whatever sys.flags.thread_inherit_context says.
        thread._context = contextvars.Context()  # type: ignore[attr-defined]
    if _skip_thread(thread):
        return _MISSING
    previous = thread.__dict__.get("run", _MISSING)
    thread.run = _ThreadRun(  # type: ignore[method-assign]
        thread, _make_carrier(thread.run, *enabled), previous
    )
    return previous


def _thread_start(self: threading.Thread) -> None:
    start = _originals["Thread.start"]
    if not has_app_context():
        return start(self)  # type: ignore[no-any-return]
    previous = _prepare_thread(self)
    try:
        return start(self)  # type: ignore[no-any-return]
    except BaseException:
        if isinstance(self.__dict__.get("run"), _ThreadRun):
            if previous is _MISSING:
                del self.__dict__["run"]
            else:
                self.__dict__["run"] = previous
        raise


# -- concurrent.futures.ThreadPoolExecutor ---------------------------------


def _executor_submit(
    self: ThreadPoolExecutor,
    fn: t.Callable[..., t.Any],
    /,
    *args: t.Any,
    **kwargs: t.Any,
) -> t.Any:
    if has_app_context():
        fn = _wrap_task(fn, _caller_module())
    return _originals["ThreadPoolExecutor.submit"](self, fn, *args, **kwargs)


def _executor_map(
    self: ThreadPoolExecutor, fn: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any
) -> t.Any:
    # One capture for the whole map; its submits see a carried callable.
    if has_app_context():
        fn = _wrap_task(fn, _caller_module())
    return _originals["ThreadPoolExecutor.map"](self, fn, *args, **kwargs)


# -- multiprocessing.pool.ThreadPool ------------------------------------------


#: Where the ``*_async`` methods take ``callback`` and ``error_callback``
#: among the arguments after ``func``.
_CALLBACK_POSITIONS = {"apply_async": 2, "map_async": 2, "starmap_async": 2}


def _pool_method(name: str) -> t.Callable[..., t.Any]:
    first_callback = _CALLBACK_POSITIONS.get(name)

    def method(self: ThreadPool, func: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        if has_app_context():
            caller = _caller_module()
            func = _wrap_task(func, caller)
            if first_callback is not None:
                # The callbacks run in the pool's result thread, which has
                # no context: what they hand to the pool in turn (joblib's
                # later batches) must see the request too.
                args, kwargs = _wrap_callbacks(args, kwargs, first_callback, caller)
        return _originals[f"ThreadPool.{name}"](self, func, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


def _wrap_callbacks(
    args: tuple[t.Any, ...], kwargs: dict[str, t.Any], first: int, caller: str
) -> tuple[tuple[t.Any, ...], dict[str, t.Any]]:
    """``callback`` and ``error_callback`` wrapped as tasks, given by
    position (from ``first``) or by name.
    """
    given = list(args)
    for offset, key in enumerate(("callback", "error_callback")):
        index = first + offset
        if index < len(given):
            if given[index] is not None:
                given[index] = _wrap_task(given[index], caller)
        elif kwargs.get(key) is not None:
            kwargs = {**kwargs, key: _wrap_task(kwargs[key], caller)}
    return tuple(given), kwargs


# -- gevent ----------------------------------------------------------------


def _gevent_spawner(key: str, run_index: int) -> t.Callable[..., t.Any]:
    def spawn(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if has_app_context() and len(args) > run_index:
            fn = _wrap_task(args[run_index], _caller_module())
            args = (*args[:run_index], fn, *args[run_index + 1 :])
        return _originals[key](*args, **kwargs)

    spawn.__name__ = spawn.__qualname__ = key.rpartition(".")[2]
    return spawn


_Patch = tuple[str, t.Any, str, t.Callable[..., t.Any]]


def _patches() -> list[_Patch]:
    """``(key, owner, attribute, replacement)`` for everything patched."""
    from concurrent.futures import ThreadPoolExecutor
    from multiprocessing.pool import ThreadPool

    patches: list[_Patch] = [
        ("Thread.start", threading.Thread, "start", _thread_start),
        ("ThreadPoolExecutor.submit", ThreadPoolExecutor, "submit", _executor_submit),
        ("ThreadPoolExecutor.map", ThreadPoolExecutor, "map", _executor_map),
    ]
    for name in _POOL_METHODS:
        patches.append((f"ThreadPool.{name}", ThreadPool, name, _pool_method(name)))
    gevent = sys.modules.get("gevent")
    if gevent is not None:
        for name, index in (("spawn", 0), ("spawn_later", 1)):
            key = f"gevent.{name}"
            patches.append((key, gevent, name, _gevent_spawner(key, index)))
        pool = sys.modules.get("gevent.pool")
        if pool is not None:
            for name in _GEVENT_GROUP_METHODS:
                key = f"gevent.pool.Group.{name}"
                patches.append((key, pool.Group, name, _gevent_spawner(key, 1)))
    for *_, replacement in patches:
        setattr(replacement, _PATCH_MARK, True)
    return patches


def _own(owner: t.Any, name: str) -> t.Any:
    if isinstance(owner, type):
        return owner.__dict__.get(name, _MISSING)
    return getattr(owner, name)


def _patch() -> None:
    global _patched
    if _patched:
        return
    for key, owner, name, replacement in _patches():
        own = _own(owner, name)
        left = _restore.get(key)
        if left is not None and own is not left[2]:
            # Ours is still in the chain (under another library's patch, or
            # put back by it): _patched makes it act again.
            continue
        _originals[key] = getattr(owner, name)
        _restore[key] = (owner, name, own, replacement)
        setattr(owner, name, replacement)
    _patched = True


def _unpatch() -> None:
    global _patched
    if not _patched:
        return
    for key, (owner, name, before, ours) in list(_restore.items()):
        if _own(owner, name) is not ours:
            # Patched again on top of ours (by another library): leave the
            # chain alone; ours passes straight through while uninstalled.
            # Compared by identity: functools.wraps copies our mark.
            continue
        if before is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, before)
        del _restore[key]
    _patched = False


def install() -> None:
    """Turn on automatic propagation. :meth:`~flask_offload.Offload.init_app`
    calls it when ``OFFLOAD_PROPAGATE`` is true. Safe to call any number of
    times, for any number of apps.

    Patches ``threading.Thread.start``, ``ThreadPoolExecutor.submit`` and
    ``map``, the task methods of ``multiprocessing.pool.ThreadPool`` and,
    when gevent is imported, ``gevent.spawn``, ``gevent.spawn_later`` and
    the ``spawn``, ``apply_async``, ``map``, ``map_async``, ``imap`` and
    ``imap_unordered`` methods of ``gevent.pool.Group`` (and ``Pool``). The
    patches act only while an app context of an app with
    ``OFFLOAD_PROPAGATE`` on (or a :func:`propagating` block) is active;
    elsewhere they cost one context variable lookup.
    """
    with _lock:
        _patch()


def uninstall() -> None:
    """Remove the patches. Work already handed off keeps its context; apps
    with ``OFFLOAD_PROPAGATE`` on stop propagating.

    A patch that another library (such as Sentry's or OpenTelemetry's thread
    integration) has wrapped since is left in their chain, passing straight
    through; :func:`install` re-activates it there, and a later call removes
    it once that library has put it back.
    """
    with _lock:
        _unpatch()


def installed() -> bool:
    """Whether the propagation patches are in place."""
    return _patched


@contextlib.contextmanager
def propagating(enabled: bool = True) -> t.Iterator[None]:
    """Turn automatic propagation on (or off) for one block, whatever
    ``OFFLOAD_PROPAGATE`` says: for the threads, pools and executors used in
    the block, in the current thread, and for what their tasks start in turn.

    .. code-block:: python

        with propagating():
            legacy_report.run()  # starts threads that read `request`

    The first block installs the patches (:func:`install`); they stay in
    place, inert outside blocks for apps that leave ``OFFLOAD_PROPAGATE``
    off, because tasks started in a block may outlive it.

    :param enabled: ``False`` turns propagation off for the block instead.
    """
    if not _patched:
        install()
    token = _cv_override.set(enabled)
    try:
        yield
    finally:
        _cv_override.reset(token)
