"""False alarms once seen on real projects, written anew."""

import threading

from flask import flash
from flask import Flask
from flask import g
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
