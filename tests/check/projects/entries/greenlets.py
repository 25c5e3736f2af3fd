import asyncio

import gevent
from flask import Flask
from flask import request
from flask import session

app = Flask(__name__)


def green():
    return request.json  # expect: OFF101


async def notify(user_id):
    print(user_id, session.get("lang"))  # expect: OFF101


async def awaited_helper():
    return request.args  # awaited by the view: the context is still there


@app.route("/green")
def green_view():
    gevent.spawn(green)
    return "ok"


@app.route("/async")
async def async_view():
    asyncio.create_task(notify(1))
    task = asyncio.create_task(awaited_helper())
    await task
    return "ok"
