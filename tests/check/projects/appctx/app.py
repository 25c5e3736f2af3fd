import threading

from flask import current_app
from flask import Flask
from flask import g
from flask import request
from flask import url_for

app = Flask(__name__)


def with_app():
    with app.app_context():
        g.count = 1
        print(current_app.name, url_for("index"))
        print(request.args)  # expect: OFF101


def with_current_app():
    with current_app.app_context():  # expect: OFF102
        print(current_app.config["DEBUG"])


def pushed():
    ctx = app.app_context()
    ctx.push()
    print(g.user)


def in_request_context():
    with app.test_request_context("/"):
        print(request.path)


def helper_needs_app():
    print(current_app.debug)  # expect: OFF102


def calls_helper():
    with app.app_context():
        helper_needs_app()
    helper_needs_app()


@app.route("/")
def index():
    threading.Thread(target=with_app).start()
    threading.Thread(target=with_current_app).start()
    threading.Thread(target=pushed).start()
    threading.Thread(target=in_request_context).start()
    threading.Thread(target=calls_helper).start()
    return "ok"
