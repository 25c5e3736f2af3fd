"""False alarms once seen on real projects, written anew."""

import threading

from flask import flash
from flask import Flask
from flask import g
from flask import has_app_context
from flask import has_request_context
from flask import request

app = Flask(__name__)


def apply_operation(op, emit_flash=True):
    # The form view flashes; the socket path passes emit_flash=False.
    message = f"{op} done"
    if message and emit_flash:
        flash(message)  # expect: OFF103
    return message


def cached_lookup(key):
    # Works inside and outside requests on purpose.
    try:
        cache = g.setdefault("lookup_cache", {})
    except RuntimeError:
        cache = {}
    return cache.get(key)


def client_ip():
    if has_request_context():
        return request.remote_addr
    return None


def trace_id():
    if not has_request_context():
        return None
    return request.headers.get("X-Trace")


def background():
    apply_operation("pause", emit_flash=False)
    cached_lookup("x")
    client_ip()
    trace_id()


def background_flashing():
    apply_operation("resume")


@app.route("/")
def index():
    threading.Thread(target=background).start()
    threading.Thread(target=background_flashing).start()
    return "ok"


def guarded_expressions():
    # The guard written in an expression instead of an if statement.
    ip = request.remote_addr if has_request_context() else None
    agent = has_request_context() and request.user_agent.string
    path = None if not has_request_context() else request.path
    trace = not has_request_context() or request.headers.get("X-Trace")
    user = g.user if has_app_context() else None
    return ip, agent, path, trace, user


def wrongly_guarded_expressions():
    ip = request.remote_addr if not has_request_context() else None  # expect: OFF101
    path = has_request_context() or request.path  # expect: OFF101
    url = request.url if has_app_context() else None  # expect: OFF101
    return ip, path, url


def negated_if_guard():
    if not has_request_context():
        agent = None
    else:
        agent = request.user_agent.string
    return agent


def notify(message, emit_flash=True):
    emit_flash and flash(message)
    return message


def notify_unless(message, emit_flash=True):
    if not emit_flash:
        return None
    flash(message)
    return message


def notify_quietly():
    # Both flash only when emit_flash is true.
    notify("paused", emit_flash=False)
    notify_unless("paused", False)


@app.route("/guards")
def guards():
    threading.Thread(target=notify_quietly).start()
    threading.Thread(target=guarded_expressions).start()
    threading.Thread(target=wrongly_guarded_expressions).start()
    threading.Thread(target=negated_if_guard).start()
    return "ok"
