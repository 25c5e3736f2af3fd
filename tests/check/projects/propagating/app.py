"""Threads, thread pools and gevent greenlets started inside ``with
propagating():`` carry the request; process pools, and the same calls
outside the block or under ``propagating(False)``, do not.
"""

import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import ThreadPoolExecutor

import gevent
from flask import Flask
from flask import request

from flask_offload import Offload
from flask_offload import propagating

app = Flask(__name__)
offload = Offload(app)
pool = ThreadPoolExecutor(2)
processes = ProcessPoolExecutor(2)


def legacy_report():
    return request.args["month"]  # expect: OFF101


def threaded_report():
    return request.args["format"]


def pooled_report(n):
    return request.args["page"]


def greenlet_report():
    return request.headers["X-Tenant"]


def process_report(n):
    return request.args["region"]  # expect: OFF101


def timer_report():
    return request.args["day"]


@app.post("/reports")
def reports():
    with propagating():
        threading.Thread(target=threaded_report).start()
        threading.Timer(1.0, timer_report).start()
        pool.submit(pooled_report, 1)
        list(pool.map(pooled_report, [1, 2]))
        gevent.spawn(greenlet_report)
        processes.submit(process_report, 1)
    return "", 202


@app.post("/later")
def later():
    with propagating(False):
        threading.Thread(target=legacy_report).start()
    return "", 202
