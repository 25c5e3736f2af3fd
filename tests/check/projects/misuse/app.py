import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.dummy import Pool

from flask import copy_current_request_context
from flask import Flask
from flask import request

app = Flask(__name__)


@copy_current_request_context  # expect: OFF111
def at_import():
    return request.path


def plain():
    return request.path


wrapped_at_import = copy_current_request_context(plain)  # expect: OFF111


def save_upload(name):
    upload = request.files[name]
    upload.save("/tmp/" + name)


def handle(item):
    return item, request.args


@app.post("/upload")
def upload():
    job = copy_current_request_context(save_upload)  # expect: OFF113
    threading.Thread(target=job, args=("doc",)).start()

    @copy_current_request_context  # expect: OFF113
    def nested():
        return save_upload("photo")

    threading.Thread(target=nested).start()

    @copy_current_request_context
    def reads_form():
        return request.form["title"]

    threading.Thread(target=reads_form).start()
    return "ok"


@app.route("/many")
def many():
    shared = copy_current_request_context(handle)
    with Pool(4) as pool:
        pool.map(shared, range(10))  # expect: OFF112
    with ThreadPoolExecutor() as executor:
        executor.map(copy_current_request_context(handle), range(3))  # expect: OFF112

        @copy_current_request_context
        def each(item):
            return handle(item)

        list(executor.map(each, range(3)))  # expect: OFF112
        for item in range(3):
            executor.submit(copy_current_request_context(handle), item)
    return "ok"
