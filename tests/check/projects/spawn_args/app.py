"""What a call starting background work gives its target: keyword
arguments, literal items of a map, constants that turn guards off, and
``copy_context().run``.
"""

import contextvars
import functools
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool
from multiprocessing import Process
from threading import Thread
from threading import Timer

from flask import current_app
from flask import flash
from flask import Flask
from flask import request

app = Flask(__name__)
pool = ThreadPoolExecutor()


def work(req=None):
    return req


def notify(emit_flash):
    if emit_flash:
        flash("done")  # expect: OFF103


def quiet(emit_flash):
    if emit_flash:
        flash("done")


def read(flag):
    if flag:
        return request.args


def in_copy():
    return request.path


def fresh():
    return request.url  # expect: OFF101


def in_process():
    return request.form  # expect: OFF101


def config_in_pool():
    return current_app.config["X"]  # expect: OFF102


@app.post("/")
def view():
    pool.submit(work, req=request)  # expect: OFF104
    Thread(target=work, kwargs={"req": request}).start()  # expect: OFF104
    pool.map(work, [request])  # expect: OFF104
    pool.submit(quiet, emit_flash=False)
    pool.submit(quiet, False)
    Thread(target=quiet, args=(False,)).start()
    Timer(1, read, kwargs={"flag": False}).start()
    pool.submit(functools.partial(read, flag=False))
    pool.submit(notify, True)
    ctx = contextvars.copy_context()
    pool.submit(ctx.run, in_copy)
    Thread(target=ctx.run, args=(in_copy,)).start()
    pool.submit(contextvars.Context().run, fresh)
    Process(target=in_process).start()
    ProcessPoolExecutor().submit(config_in_pool)
    Pool(2).apply_async(work, kwds={"req": request})  # expect: OFF104
    return ""


def overridden(notify=True):
    if notify:
        return request.path  # expect: OFF101


def unpacked(notify=True):
    if notify:
        return request.url  # expect: OFF101


OPTIONS = {"notify": True}


class Exporter:
    def run(self, bucket=None):
        if bucket is None:
            bucket = current_app.config["BUCKET"]  # expect: OFF102
        return bucket


@app.get("/more")
def more():
    # The call's keyword wins over the partial's; **OPTIONS may set it.
    Thread(
        target=functools.partial(overridden, notify=False), kwargs={"notify": 1}
    ).start()
    Thread(target=unpacked, kwargs={"notify": False, **OPTIONS}).start()
    # Through the class, the instance is the first argument: bucket is not given.
    Thread(target=Exporter.run, args=(Exporter(),)).start()
    return ""
