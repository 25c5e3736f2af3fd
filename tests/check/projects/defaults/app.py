"""A parameter defaulting to None, filled from a context proxy only when the
caller gives nothing: reported only on paths where it is not given.
"""

import threading

from flask import current_app
from flask import Flask

app = Flask(__name__)


def if_none(batch=10, app=None):
    if app is None:
        app = current_app._get_current_object()
    return app


def if_not(app=None):
    if not app:
        app = current_app._get_current_object()
    return app


def either(app=None):
    return app or current_app._get_current_object()


def in_else(app=None):
    if app is not None:
        pass
    else:
        app = current_app._get_current_object()
    return app


def early_return(app=None):
    if app:
        return app
    return current_app._get_current_object()


def left_out(app=None):
    if app is None:
        app = current_app._get_current_object()  # expect: OFF102
    return app


def passed_on(app=None):
    if app is None:
        app = current_app._get_current_object()  # expect: OFF102
    return app


def maybe_none(app=None):
    if app is None:
        app = current_app._get_current_object()  # expect: OFF102
    return app


def in_closure(app=None):
    if app is None:
        app = current_app._get_current_object()  # expect: OFF102
    return app


def not_none_guard(app=None):
    if app is not None:
        return current_app.name  # expect: OFF102
    return None


def forward(app=None):
    # May pass on the None it was given.
    passed_on(app=app)


def start_closure(app=None):
    def worker():
        in_closure(app)

    threading.Thread(target=worker).start()


@app.route("/")
def index():
    real = current_app._get_current_object()
    blank = None

    def worker():
        if_none(batch=20, app=real)
        if_not(real)
        either(app=real)
        in_else(app=real)
        early_return(real)
        left_out()
        maybe_none(app=blank)
        not_none_guard(app=real)

    threading.Thread(target=worker).start()
    threading.Thread(target=forward).start()
    return "ok"
