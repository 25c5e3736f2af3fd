"""pytest fixtures for apps that use Flask-Offload.

Loaded automatically (``pytest11`` entry point) in every project that
installs Flask-Offload, so it defines only ``offload_*`` fixtures and
imports nothing heavy.
"""

from __future__ import annotations

import typing as t
import weakref

import pytest

# Jobs and carried calls a leak check already failed a test for: not
# reported again by later tests (one that never ends would otherwise fail
# every one of them).
_reported: set[str] = set()
_reported_replays: weakref.WeakSet[t.Any] = weakref.WeakSet()


def _pushed() -> t.Any:
    """The Flask context active in this thread, or ``None``."""
    from .compat import current_app_context

    return current_app_context()


def _preserved_by_test_client() -> bool:
    """Whether the active context is one a test client keeps after a request
    made in ``with client:`` (a fixture ``with app.test_client() as c: yield
    c`` pops it at its own teardown, which may come after the check).
    """
    from .compat import current_request

    req = current_request()
    return req is not None and "werkzeug.debug.preserve_context" in req.environ


def _pending_ids() -> set[str]:
    from . import extension

    return {j.id for s in list(extension._live_states) for j in s.registry.pending()}


def _replays() -> set[object]:
    from .snapshot import running_replays

    return running_replays()


def _check_no_leaks(
    pushed: t.Any,
    before: set[str],
    replays: t.AbstractSet[object] = frozenset(),
    timeout: float = 5.0,
) -> None:
    """Fail if a job submitted during the test or a carried call started
    during it is still running, or a Flask context is left pushed in the
    test's thread.

    :param pushed: The context that was active when the fixture was set up
        (a fixture's ``with app.app_context(): yield app``): not a leak.
    :param before: Ids of jobs unfinished when the fixture was set up: not
        this test's.
    :param replays: Carried calls running when the fixture was set up (a
        session fixture's consumer thread): not this test's.
    """
    import time

    from . import extension
    from .snapshot import running_replays

    def new_replays() -> list[object]:
        return [
            r
            for r in running_replays()
            if r not in replays and r not in _reported_replays
        ]

    deadline = time.monotonic() + timeout
    unfinished: list[t.Any] = []
    seen = set(before) | _reported  # earlier tests' jobs: not waited for
    while True:
        # Again until no new job shows up: jobs may submit jobs.
        pending = [
            job
            for state in list(extension._live_states)
            for job in state.registry.pending()
            if job.id not in seen
        ]
        if not pending:
            break
        for job in pending:
            seen.add(job.id)
            if not job.wait(max(0.0, deadline - time.monotonic())):
                unfinished.append(job)
    while new_replays() and time.monotonic() < deadline:
        time.sleep(0.01)
    problems = []
    if unfinished:
        _reported.update(j.id for j in unfinished)
        listed = ", ".join(
            f"{j!r} submitted from {j.submitted_from}" for j in unfinished
        )
        problems.append(f"jobs still unfinished after {timeout}s: {listed}")
    left = new_replays()
    if left:
        _reported_replays.update(left)
        problems.append(f"{len(left)} carried call(s) still running")
    current = _pushed()
    if current is not pushed and not _preserved_by_test_client():
        problems.append(
            f"a Flask context is still pushed in the test's thread: {current!r}"
        )
    if problems:
        pytest.fail("Flask-Offload leak check: " + "; ".join(problems))


@pytest.fixture
def offload_leak_check() -> t.Iterator[None]:
    """After the test, fail if a job it submitted or a carried call still
    runs or a Flask context was left pushed. Use it with
    ``@pytest.mark.usefixtures`` or make it autouse in your ``conftest.py``.
    A context that was already pushed when it was set up (by an ``app``
    fixture) is not a leak.
    """
    pushed, before, replays = _pushed(), _pending_ids(), _replays()
    yield
    _check_no_leaks(pushed, before, replays)


@pytest.fixture
def offload_inline() -> t.Iterator[None]:
    """Run every job at submit, in the test's thread, through the real
    serialise, sign, verify and replay path (the ``inline`` backend), for all
    apps during this test.
    """
    from . import extension

    pushed, before, replays = _pushed(), _pending_ids(), _replays()
    previous = extension._force_inline
    extension._force_inline = True
    try:
        yield
    finally:
        extension._force_inline = previous
    _check_no_leaks(pushed, before, replays)


@pytest.fixture
def offload_join() -> t.Iterator[t.Callable[[float | None], bool]]:
    """A function that waits for every job of every app to finish:
    ``assert offload_join(5)``. Also checks for leaks after the test.
    """
    from . import extension

    pushed, before, replays = _pushed(), _pending_ids(), _replays()

    def join(timeout: float | None = 10.0) -> bool:
        return extension.join_states(list(extension._live_states), timeout)

    yield join
    _check_no_leaks(pushed, before, replays)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Jobs a leak check reported must not keep the test process alive for
    ``OFFLOAD_SHUTDOWN_TIMEOUT`` at exit: drain for one second, log what is
    abandoned, and leave nothing for the atexit drain.
    """
    import sys

    extension = sys.modules.get("flask_offload.extension")
    if extension is None or not _reported:
        return
    states = list(extension._live_states)
    extension._shutdown_states(states, True, 1.0)
    for state in states:
        extension._live_states.discard(state)
