"""Background work that is fine: nothing here may be reported."""

import threading
from concurrent.futures import ThreadPoolExecutor

from flask import copy_current_request_context
from flask import current_app
from flask import Flask
from flask import request
from flask_executor import Executor

from flask_offload import carry
from flask_offload import Offload

app = Flask(__name__)
offload = Offload(app)
flask_executor = Executor(app)
pool = ThreadPoolExecutor(2)


def reads_request():
    return request.headers.get("X-Trace")


@offload.task
def task_reads_request():
    return request.path


def send(to, subject, request):
    # ``request`` is a parameter here: it shadows Flask's.
    return to, subject, request.url


def send_mail(app, address):
    with app.app_context():
        return current_app.config["MAIL_FROM"], address


@app.route("/ok")
def ok():
    threading.Thread(target=carry(reads_request)).start()
    threading.Thread(target=copy_current_request_context(reads_request)).start()

    @copy_current_request_context
    def nested():
        return request.args

    threading.Thread(target=nested).start()
    offload.submit(reads_request)
    task_reads_request.submit()
    task_reads_request.delay()
    flask_executor.submit(reads_request)
    for user in ("a", "b"):
        pool.submit(copy_current_request_context(reads_request), user)
    threading.Thread(target=send, args=("a", request.args["subject"], None)).start()
    real_app = current_app._get_current_object()
    threading.Thread(target=send_mail, args=(real_app, "a@example.com")).start()
    return "ok"


def enqueue(offload_ext):
    # Not known statically: the name says it is Flask-Offload's.
    offload_ext.submit(reads_request)


def enqueue_from_extensions():
    offload_ext = current_app.extensions.get("offload")
    offload_ext.submit(reads_request)


def enqueue_through_extensions():
    current_app.extensions["offload"].submit(reads_request)
    current_app.extensions.get("offload").submit(reads_request)
    ext = current_app.extensions["offload"]
    ext.submit(reads_request)


@app.route("/to-thread")
async def to_thread():
    import asyncio

    # asyncio.to_thread runs it in a copy of the view's context.
    return await asyncio.to_thread(reads_request)
