"""One copied wrapper started on every pass of a loop (OFF112)."""

import threading
from concurrent.futures import ThreadPoolExecutor

from flask import copy_current_request_context
from flask import Flask

app = Flask(__name__)
executor = ThreadPoolExecutor(4)


def handle(item):
    return item


@app.post("/submit")
def submit_in_loop():
    wrapped = copy_current_request_context(handle)
    for item in range(3):
        executor.submit(wrapped, item)  # expect: OFF112
    return "ok"


@app.post("/threads")
def threads_in_loop():
    wrapped = copy_current_request_context(handle)
    threads = []
    for item in range(3):
        thread = threading.Thread(target=wrapped, args=(item,))  # expect: OFF112
        threads.append(thread)
        thread.start()
    for thread in threads:
        thread.join()
    return "ok"


@app.post("/comprehension")
def comprehension():
    wrapped = copy_current_request_context(handle)
    futures = [executor.submit(wrapped, item) for item in range(3)]  # expect: OFF112
    return str(len(futures))


@app.post("/decorated")
def decorated_before_loop():
    @copy_current_request_context
    def each(item):
        return handle(item)

    pending = list(range(3))
    while pending:
        executor.submit(each, pending.pop())  # expect: OFF112
    return "ok"


# Not reported.


@app.post("/per-task")
def copy_per_task():
    for item in range(3):
        wrapped = copy_current_request_context(handle)
        executor.submit(wrapped, item)
    for item in range(3):
        executor.submit(copy_current_request_context(handle), item)
    for item in range(3):

        @copy_current_request_context
        def each(item=item):
            return handle(item)

        threading.Thread(target=each).start()
    return "ok"


@app.post("/once")
def submitted_once():
    wrapped = copy_current_request_context(handle)
    executor.submit(wrapped, 1)
    return "ok"


@app.post("/one-at-a-time")
def one_at_a_time():
    wrapped = copy_current_request_context(handle)
    for item in range(3):
        executor.submit(wrapped, item).result()
    for item in range(3):
        thread = threading.Thread(target=wrapped, args=(item,))
        thread.start()
        thread.join()
    return "ok"


@app.post("/first")
def first_that_fits():
    wrapped = copy_current_request_context(handle)
    for item in range(3):
        if item:
            executor.submit(wrapped, item)
            break
    while True:
        executor.submit(wrapped, 0)
        break
    return "ok"


@app.post("/plain")
def plain_function_in_loop():
    for item in range(3):
        executor.submit(handle, item)
    return "ok"
