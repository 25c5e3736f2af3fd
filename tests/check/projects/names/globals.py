"""A global proxy name rebound inside a function."""

import threading

from flask import Flask
from flask import request
from flask import session  # noqa: F401

app = Flask(__name__)


def replace_request(data):
    global request
    print(request.path)  # expect: OFF101
    request = data
    return request["path"]


def maybe_replace_session(data, flag):
    global session
    if flag:
        session = data
    return session["user_id"]  # expect: OFF101


def reads_after_other_function():
    # Another function rebinding the global does not change this one.
    return request.args  # expect: OFF101


@app.route("/globals")
def start_globals():
    threading.Thread(target=replace_request, args=({"path": "/"},)).start()
    threading.Thread(target=maybe_replace_session, args=({}, True)).start()
    threading.Thread(target=reads_after_other_function).start()
    return "ok"
