"""Aliases of thread, timer and executor constructors."""

import threading
from threading import Thread as T

from flask import Flask
from flask import request

from .compat import Background
from .compat import Later
from .compat import Lock
from .compat import make_crew
from .compat import Reminder as Nudge
from .compat import Workers

app = Flask(__name__)
After = threading.Timer
Spawn = threading.Thread
crew = make_crew()


def remind():
    return request.headers  # expect: OFF101


def follow_up():
    return request.args  # expect: OFF101


def audit():
    return request.form  # expect: OFF101


def export():
    return request.path  # expect: OFF101


def index_later():
    return request.url  # expect: OFF101


def collect():
    return request.cookies  # expect: OFF101


def nudge():
    return request.referrer  # expect: OFF101


def tally(item):
    return request.data  # expect: OFF101


def locked():
    return request.method


@app.route("/remind")
def schedule_reminder():
    After(60, remind).start()
    return "ok"


@app.route("/follow-up")
def schedule_follow_up():
    Later(60, follow_up).start()
    return "ok"


@app.route("/audit")
def start_audit():
    Spawn(None, audit).start()
    return "ok"


@app.route("/export")
def start_export():
    T(None, export).start()
    return "ok"


@app.route("/index")
def start_index():
    Background(None, index_later).start()
    return "ok"


@app.route("/collect")
def start_collect():
    pool = Workers(2)
    pool.submit(collect)
    return "ok"


@app.route("/nudge")
def schedule_nudge():
    Nudge(60, nudge).start()
    return "ok"


@app.route("/locked")
def with_lock():
    with Lock():
        locked()
    return "ok"


@app.route("/tally")
def start_tally():
    crew.map(tally, [1, 2])
    return "ok"
