import functools
import multiprocessing
import threading

from flask import current_app
from flask import Flask
from flask import request
from flask_socketio import SocketIO

app = Flask(__name__)
socketio = SocketIO(app)


def uses(req, app):
    return req.path, app.name


def partial_target(prefix):
    return prefix + request.path  # expect: OFF101


def in_process():
    return current_app.name  # expect: OFF102


def ticker():
    print(request.endpoint)  # expect: OFF101


def shadowed():
    request = {"path": "/"}
    return request["path"]


# Started when the module is imported.
threading.Thread(target=ticker, daemon=True).start()


@app.route("/")
def index():
    threading.Thread(
        target=uses,
        args=(request, current_app),  # expect: OFF104
    ).start()
    threading.Thread(target=functools.partial(partial_target, "p")).start()
    multiprocessing.Process(target=in_process).start()
    socketio.start_background_task(shadowed)
    return "ok"
