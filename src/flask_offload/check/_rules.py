"""Rule codes and the messages reported for them."""

from __future__ import annotations

#: Every code the checker reports, with a one-line summary.
RULES: dict[str, str] = {
    "OFF101": "request, session or current_user is read in background code",
    "OFF102": "g or current_app is used in background code without an app context",
    "OFF103": "a helper needing a context (url_for, render_template, flash...) "
    "is called in background code",
    "OFF104": "a context proxy object itself is passed to background code",
    "OFF111": "copy_current_request_context is applied at import time",
    "OFF112": "one copy_current_request_context wrapper is shared by several"
    " threads (a map-style call, or a submit or Thread in a loop)",
    "OFF113": "a function wrapped with copy_current_request_context reads"
    " request.files",
}

_WHERE = {
    "thread": "a background thread",
    "timer": "a threading.Timer thread",
    "process": "a separate process",
    "process pool": "a process pool worker",
    "executor": "an executor worker",
    "pool": "a pool worker",
    "greenlet": "a greenlet",
    "task": "an asyncio task the view does not await",
    "background task": "a background task",
    "celery": "a Celery worker",
}

_CARRY = "wrap the target with flask_offload.carry()"
# carry() cannot reach another process: a Flask-Offload task can.
_OFFLOAD_TASK = (
    "make it a Flask-Offload task (@offload.task), which replays the request"
    " in the worker"
)


# Neither carry() nor the app can be sent to another process.
_PROCESS_KINDS = frozenset({"process", "process pool"})
_SUBMIT = (
    "run it with offload.submit() instead, which replays the request where the"
    " job runs (carry() cannot reach another process)"
)


def _fix(kind: str) -> str:
    if kind == "celery":
        return _OFFLOAD_TASK
    return _SUBMIT if kind in _PROCESS_KINDS else _CARRY


def where(kind: str) -> str:
    """Describe what runs the code for a kind of entry point."""
    return _WHERE.get(kind, "background code")


def request_read(name: str, kind: str, app_context: bool, proxy: str = "") -> str:
    fix = _fix(kind)
    if proxy == "flask_login.current_user":
        # Flask-Login does not raise there: it quietly gives None.
        return (
            f"'{name}' is read in code run by {where(kind)}, where there is no"
            " request, so Flask-Login's current_user is None there. Read what you"
            f" need (such as current_user.id) in the view and pass it, or {fix}."
        )
    if app_context:
        given = "its task class" if kind == "celery" else "'with app.app_context()'"
        return (
            f"'{name}' is read in code run by {where(kind)}; {given} gives it an"
            " application context but no request context. Read it in the view and"
            f" pass the value, or {fix}."
        )
    return (
        f"'{name}' is read in code run by {where(kind)}, where no request context"
        f" exists. Read it in the view and pass the value, or {fix}."
    )


def app_read(name: str, kind: str) -> str:
    if kind == "celery":
        # The app cannot be passed to another process: the worker pushes it.
        return (
            f"'{name}' is used in code run by {where(kind)}, where no application"
            " context exists. Pass the value itself, run the tasks under 'with"
            " app.app_context():' in a Task class (as Flask's Celery guide does),"
            f" or {_OFFLOAD_TASK}."
        )
    if kind in _PROCESS_KINDS:
        return (
            f"'{name}' is used in code run by {where(kind)}, where no application"
            " context exists. Pass the value itself, create the app in that"
            f" process and use 'with app.app_context():', or {_SUBMIT}."
        )
    return (
        f"'{name}' is used in code run by {where(kind)}, where no application"
        " context exists. Pass the app (current_app._get_current_object()) and use"
        f" 'with app.app_context():', pass the value itself, or {_CARRY}."
    )


def helper_call(name: str, kind: str, needs_request: bool) -> str:
    needs = "a request context" if needs_request else "an application context"
    return (
        f"'{name}()' needs {needs} but is called in code run by {where(kind)}."
        f" Call it in the view and pass the result, or {_fix(kind)}."
    )


def method_call(name: str, kind: str) -> str:
    if kind == "celery":
        how = (
            "run the tasks under 'with app.app_context():' in a Task class (as"
            f" Flask's Celery guide does), or {_OFFLOAD_TASK}"
        )
    elif kind in _PROCESS_KINDS:
        how = (
            "create the app in that process and call it under 'with"
            f" app.app_context():', or {_SUBMIT}"
        )
    else:
        how = (
            "pass the app (current_app._get_current_object()) and call it under"
            f" 'with app.app_context():', or {_CARRY}"
        )
    return (
        f"'{name}()' looks up current_app (Flask-Mail sends a signal with it) but"
        f" is called in code run by {where(kind)}, where no application context"
        f" exists: {how}."
    )


def proxy_passed(name: str, kind: str) -> str:
    # The app itself cannot be sent to another process either.
    app = (
        ""
        if kind in _PROCESS_KINDS
        else " (or current_app._get_current_object() for the app)"
    )
    return (
        f"The '{name}' proxy itself is passed to code run by {where(kind)}; it is"
        " only looked up when used, in the background, where no context exists."
        f" Pass the values you need{app} instead."
    )


def copy_at_import() -> str:
    return (
        "copy_current_request_context() is applied at import time, where no"
        " request is active, so it raises RuntimeError. Apply it inside the view"
        " to a function defined there, or use flask_offload.carry()."
    )


def shared_wrapper(name: str, method: str) -> str:
    return (
        f"One copy_current_request_context() wrapper ('{name}') is given to"
        f" {method}(), which calls it from several worker threads; pushing one"
        " copied context in two threads fails with 'ValueError: Token was created"
        " in a different Context'. Wrap the function once per item, or use"
        " flask_offload.carry()."
    )


def shared_in_loop(name: str, call: str) -> str:
    return (
        f"One copy_current_request_context() wrapper ('{name}'), made before the"
        f" loop, is given to {call}() on every pass, so several threads run it at"
        " once; pushing one copied context in two threads fails with 'ValueError:"
        " Token was created in a different Context'. Wrap the function inside the"
        " loop, once per task, or use flask_offload.carry()."
    )


def reads_files(name: str) -> str:
    return (
        f"'{name}' is wrapped with copy_current_request_context() and reads"
        " 'request.files', but uploaded files are closed once the response is"
        " sent. Read or save the upload in the view and pass the bytes or the"
        " path instead."
    )
