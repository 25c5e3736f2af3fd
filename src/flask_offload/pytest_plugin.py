"""pytest fixtures for apps that use Flask-Offload.

Loaded automatically (``pytest11`` entry point) in every project that
installs Flask-Offload, so it defines only ``offload_*`` fixtures and
imports nothing heavy.
"""

from __future__ import annotations

import typing as t

import pytest


def _pushed() -> t.Any:
    """The Flask context active in this thread, or ``None``."""
    from .compat import current_app_context

    return current_app_context()


def _check_no_leaks(pushed: t.Any, timeout: float = 5.0) -> None:
    """Fail if a job or a carried call is still running, or a Flask context is
    left pushed in the test's thread.

    :param pushed: The context that was active when the fixture was set up
        (a fixture's ``with app.app_context(): yield app``): not a leak.
    """
    import time

    from . import extension
    from .snapshot import active_replays

    deadline = time.monotonic() + timeout
    unfinished: list[t.Any] = []
    for state in list(extension._live_states):
        left = max(0.0, deadline - time.monotonic())
        if not state.registry.join(left):
            unfinished.extend(state.registry.unfinished())
    while active_replays() and time.monotonic() < deadline:
        time.sleep(0.01)
    problems = []
    if unfinished:
        problems.append(f"jobs still unfinished after {timeout}s: {unfinished}")
    if active_replays():
        problems.append(f"{active_replays()} carried call(s) still running")
    if _pushed() is not pushed:
        problems.append("a Flask context is still pushed in the test's thread")
    if problems:
        pytest.fail("Flask-Offload leak check: " + "; ".join(problems))


@pytest.fixture
def offload_leak_check() -> t.Iterator[None]:
    """After the test, fail if a job or carried call still runs or a Flask
    context was left pushed. Use it with ``@pytest.mark.usefixtures`` or make
    it autouse in your ``conftest.py``. A context that was already pushed
    when it was set up (by an ``app`` fixture) is not a leak.
    """
    pushed = _pushed()
    yield
    _check_no_leaks(pushed)


@pytest.fixture
def offload_inline() -> t.Iterator[None]:
    """Run every job at submit, in the test's thread, through the real
    serialise, sign, verify and replay path (the ``inline`` backend), for all
    apps during this test.
    """
    from . import extension

    pushed = _pushed()
    previous = extension._force_inline
    extension._force_inline = True
    try:
        yield
    finally:
        extension._force_inline = previous
    _check_no_leaks(pushed)


@pytest.fixture
def offload_join() -> t.Iterator[t.Callable[[float | None], bool]]:
    """A function that waits for every job of every app to finish:
    ``assert offload_join(5)``. Also checks for leaks after the test.
    """
    from . import extension

    pushed = _pushed()

    def join(timeout: float | None = 10.0) -> bool:
        return extension.join_states(list(extension._live_states), timeout)

    yield join
    _check_no_leaks(pushed)
