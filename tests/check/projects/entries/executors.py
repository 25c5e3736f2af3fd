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
    return "ok"
