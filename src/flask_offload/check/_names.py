"""Dotted names the checker knows about.

Names are canonical: :func:`canonical` folds the private modules Flask and
Flask-Login define them in (``flask.globals.request``) onto the public
spelling (``flask.request``), so the tables below list each name once.
"""

from __future__ import annotations

# Top-level modules a project file may never stand in for, even if the
# project has a module with the same name: resolving them to project code
# would hide every thread and every Flask name.
PROTECTED_TOPS = frozenset(
    {
        "asyncio",
        "celery",
        "concurrent",
        "eventlet",
        "flask",
        "flask_executor",
        "flask_login",
        "flask_offload",
        "flask_socketio",
        "functools",
        "gevent",
        "multiprocessing",
        "threading",
        "_thread",
    }
)

_PREFIXES = (
    ("flask.globals.", "flask."),
    ("flask.helpers.", "flask."),
    ("flask.templating.", "flask."),
    ("flask.ctx.", "flask."),
    ("flask.json.jsonify", "flask.jsonify"),
    ("flask_login.utils.", "flask_login."),
    ("concurrent.futures.thread.", "concurrent.futures."),
    ("concurrent.futures.process.", "concurrent.futures."),
    ("concurrent.futures._base.", "concurrent.futures."),
    ("gevent.greenlet.", "gevent."),
    ("eventlet.greenthread.", "eventlet."),
    ("multiprocessing.context.", "multiprocessing."),
    ("celery.app.base.", "celery."),
    ("celery.app.shared_task", "celery.shared_task"),
)


def canonical(name: str) -> str:
    """Fold a dotted name onto the spelling used in the tables below.

    :param name: A dotted name such as ``flask.globals.request``.
    """
    for old, new in _PREFIXES:
        if name.startswith(old):
            return new + name[len(old) :]
    return name


# Context-bound proxies. Request-level ones need a request context, which
# ``with app.app_context()`` does not give.
REQUEST_VARS = frozenset(
    {"flask.request", "flask.session", "flask_login.current_user", "flask.request_ctx"}
)
APP_VARS = frozenset({"flask.g", "flask.current_app", "flask.app_ctx"})

# Helpers that look up the current request or app when called.
REQUEST_HELPERS = frozenset(
    {
        "flask.flash",
        "flask.get_flashed_messages",
        "flask.send_file",
        "flask.send_from_directory",
        "flask.after_this_request",
        "flask_login.login_user",
        "flask_login.logout_user",
    }
)
APP_HELPERS = frozenset(
    {
        "flask.url_for",
        "flask.render_template",
        "flask.render_template_string",
        "flask.stream_template",
        "flask.stream_template_string",
        "flask.jsonify",
        "flask.make_response",
    }
)

# Methods of library objects that look up ``current_app`` when called:
# Flask-Mail's ``Mail.send`` does, to send its ``email_dispatched`` signal,
# so ``Thread(target=mail.send, args=(msg,))`` fails.
APP_METHODS = {"flask_mail.Mail": frozenset({"send", "send_message"})}
APP_METHOD_NAMES = frozenset(name for names in APP_METHODS.values() for name in names)

COPY_CONTEXT = "flask.copy_current_request_context"
PARTIAL = "functools.partial"

# Callables whose first argument starts background work, with the position
# and keyword of the target and of its ``args`` sequence.
THREAD_LIKE = {
    "threading.Thread": ("thread", 1, "target", 3, "args"),
    "threading.Timer": ("timer", 1, "function", 2, "args"),
    "multiprocessing.Process": ("process", 1, "target", 3, "args"),
}
# Callables taking ``(fn, *args)``: position of ``fn``.
SPAWN_FUNCS = {
    "gevent.spawn": ("greenlet", 0),
    "gevent.spawn_raw": ("greenlet", 0),
    "gevent.spawn_later": ("greenlet", 1),
    "gevent.Greenlet": ("greenlet", 0),
    "gevent.Greenlet.spawn": ("greenlet", 0),
    "eventlet.spawn": ("greenlet", 0),
    "eventlet.spawn_n": ("greenlet", 0),
    "eventlet.spawn_after": ("greenlet", 1),
    "_thread.start_new_thread": ("thread", 0),
}
TASK_FUNCS = frozenset({"asyncio.create_task", "asyncio.ensure_future"})
# Celery's app class: ``@<instance>.task`` makes a task run by a worker.
CELERY = "celery.Celery"
# Runs ``fn`` in a thread, in a copy of the caller's context: followed as a
# call, not as background code.
TO_THREAD = "asyncio.to_thread"
# ``copy_context().run(fn, ...)`` runs ``fn`` in a copy of the caller's
# context too: a ``run`` given as a thread's or pool's target is followed the
# same way.
COPY_CONTEXT_VARS = "contextvars.copy_context"
LOOP_FACTORIES = frozenset(
    {"asyncio.get_event_loop", "asyncio.get_running_loop", "asyncio.new_event_loop"}
)

POOL_CLASSES = frozenset(
    {
        "concurrent.futures.ThreadPoolExecutor",
        "concurrent.futures.ProcessPoolExecutor",
        "concurrent.futures.Executor",
        "multiprocessing.Pool",
        "multiprocessing.pool.Pool",
        "multiprocessing.pool.ThreadPool",
        "multiprocessing.dummy.Pool",
        "gevent.pool.Pool",
        "gevent.pool.Group",
        "gevent.threadpool.ThreadPool",
    }
)
# Pools whose workers are other processes: carry() cannot reach them.
PROCESS_POOLS = frozenset(
    {
        "concurrent.futures.ProcessPoolExecutor",
        "multiprocessing.Pool",
        "multiprocessing.pool.Pool",
    }
)
# ``with propagating():`` makes what these pools run carry the context
# (process pools cannot: they pickle the function).
PROPAGATED_POOLS = frozenset(
    {
        "concurrent.futures.ThreadPoolExecutor",
        "multiprocessing.pool.ThreadPool",
        "multiprocessing.dummy.Pool",
        "gevent.pool.Pool",
        "gevent.pool.Group",
    }
)
PROPAGATING = frozenset(
    {"flask_offload.propagating", "flask_offload.propagation.propagating"}
)
# Method name -> (position of the callable, whether it runs it for many items).
POOL_METHODS = {
    "map": (0, True),
    "imap": (0, True),
    "imap_unordered": (0, True),
    "starmap": (0, True),
    "map_async": (0, True),
    "starmap_async": (0, True),
    "apply": (0, False),
    "apply_async": (0, False),
    "spawn": (0, False),
}
# Receivers whose ``submit`` carries the context (or is not an executor).
SAFE_SUBMIT_PREFIXES = ("flask_offload", "flask_executor")

# Names a star import (``from flask import *``) is known to bind: those the
# tables above look for and the module exports. ``flask.request_ctx`` and
# ``flask.app_ctx`` are left out, ``flask`` does not export them.
STAR_NAMES = frozenset(
    {
        *(REQUEST_VARS | APP_VARS) - {"flask.request_ctx", "flask.app_ctx"},
        *REQUEST_HELPERS,
        *APP_HELPERS,
        COPY_CONTEXT,
        PARTIAL,
        "flask.has_app_context",
        "flask.has_request_context",
        TO_THREAD,
        *THREAD_LIKE,
        *(name for name in SPAWN_FUNCS if name != "gevent.Greenlet.spawn"),
        *TASK_FUNCS,
        *LOOP_FACTORIES,
        *POOL_CLASSES,
    }
)
