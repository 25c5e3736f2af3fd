"""Declared tasks: ``@offload.task``."""

from __future__ import annotations

import functools
import typing as t
from inspect import CO_ASYNC_GENERATOR
from inspect import CO_GENERATOR
from types import FunctionType

if t.TYPE_CHECKING:  # pragma: no cover
    from .extension import Offload
    from .jobs import Job

P = t.ParamSpec("P")
R = t.TypeVar("R")


class Task(t.Generic[P, R]):
    """A function declared with :meth:`Offload.task`.

    Calling the task runs the function directly, in the caller. Use
    :meth:`submit` (or its alias :meth:`delay`) to run it as a job. Declared
    tasks are the only functions the Celery backend can send to a worker,
    and they work the same on every backend.
    """

    def __init__(self, offload: Offload, fn: t.Callable[P, R], name: str) -> None:
        self.offload = offload
        #: The wrapped function.
        self.fn = fn
        #: The task's name, ``"module.qualname"`` unless given.
        self.name = name
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<Task {self.name!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Run the task as a job; same as ``offload.submit(task, ...)``."""
        return self.offload.submit(self, *args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Alias of :meth:`submit`, for those used to Celery."""
        return self.offload.submit(self, *args, **kwargs)


def task_name(fn: t.Callable[..., t.Any]) -> str:
    """``"module.qualname"`` of a function (of the function a
    ``functools.partial`` wraps).
    """
    if type(fn) is FunctionType:  # the common case, once per submit
        return f"{fn.__module__ or '<unknown>'}.{fn.__qualname__}"
    while isinstance(fn, functools.partial):
        fn = fn.func
    module = getattr(fn, "__module__", None) or "<unknown>"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}"


#: Code flags of a function whose call only makes a generator.
GENERATOR_FLAGS = CO_GENERATOR | CO_ASYNC_GENERATOR


def refuse_generator(fn: t.Callable[..., t.Any]) -> None:
    """Raise :exc:`TypeError` if ``fn`` is a generator function: as a job its
    call would only make a generator, and its body would never run.

    :param fn: The function about to be submitted or declared.
    """
    if type(fn) is FunctionType and fn.__code__.co_flags & GENERATOR_FLAGS:
        raise TypeError(
            f"{task_name(fn)} is a generator function: as a job, calling it would"
            " only make a generator, and its body would never run. Make it"
            " return its result instead, for example the list of what it yields."
        )
