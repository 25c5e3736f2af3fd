"""Carry the current context into threads, pools and executors you start yourself."""

from __future__ import annotations

import functools
import typing as t
import weakref

from flask import current_app
from flask import has_app_context

from .extension import settings_for
from .jobs import _cv_job
from .snapshot import capture
from .snapshot import replay

P = t.ParamSpec("P")
R = t.TypeVar("R")


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

    # Uploaded files stay open while the wrapper can still be called.
    weakref.finalize(carried, snapshot.release)
    return carried


def install() -> None:
    """Turn on automatic propagation (``OFFLOAD_PROPAGATE``): not yet
    implemented; see the propagation docs.
    """
    raise NotImplementedError(
        "OFFLOAD_PROPAGATE is not available yet. Wrap thread targets with"
        " 'flask_offload.carry(fn)' instead."
    )
