import threading

from flask import Flask
from flask import g
from flask import request

app = Flask(__name__)


def work():
    print(request.path)  # noqa: OFF101
    print(request.url, g.user)  # noqa
    print(request.args)  # noqa: E501
    print(g.x, request.method)  # noqa: OFF102


@app.route("/")
def index():
    threading.Thread(target=work).start()
    return "ok"
