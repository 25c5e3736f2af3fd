from concurrent.futures import ThreadPoolExecutor

from flask import current_app
from flask import Flask
from flask import request

app = Flask(__name__)
executor = ThreadPoolExecutor(2)


def submitted():
    return request.args.get("q")  # expect: OFF101


def mapped(item):
    return current_app.config["SCALE"] * item  # expect: OFF102


def in_loop_executor():
    return request.headers["X-Id"]  # expect: OFF101


def module_level_executor():
    return request.cookies  # expect: OFF101


def keyword_in_loop_executor():
    return request.headers["X-Trace"]  # expect: OFF101


def in_to_thread():
    return request.path  # expect: OFF101


def thread_running_a_loop():
    import asyncio

    # to_thread gives it this thread's context, and there is none.
    asyncio.run(asyncio.to_thread(in_to_thread))


@app.route("/run")
def run():
    with ThreadPoolExecutor() as pool_executor:
        pool_executor.submit(submitted)
        list(pool_executor.map(mapped, [1, 2]))
    executor.submit(module_level_executor)
    return "ok"


@app.route("/async")
async def run_async():
    import asyncio

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, in_loop_executor)
    await loop.run_in_executor(None, func=keyword_in_loop_executor)
    return "ok"


@app.route("/loop-thread")
def loop_thread():
    import threading

    threading.Thread(target=thread_running_a_loop).start()
    return "ok"


offload_pool = ThreadPoolExecutor(max_workers=4)


def audited():
    return request.headers["X-User"]  # expect: OFF101


def audited_locally():
    return request.remote_addr  # expect: OFF101


class Orders:
    def __init__(self):
        self.offload_executor = ThreadPoolExecutor()

    def audited(self):
        return request.url  # expect: OFF101

    def place(self):
        # Named for offloading, but plain pools: they carry no context.
        offload_pool.submit(audited)
        with ThreadPoolExecutor() as offload_workers:
            offload_workers.submit(audited_locally)
        self.offload_executor.submit(self.audited)
