"""A module-level name rebound by a later import: the last one wins."""

import threading

from flask import current_app
from flask import Flask
from flask import g
from flask import request

app = Flask(__name__)
# Bound again, but to itself: still Flask's proxy.
current_app: Flask = current_app


def fetch(url):
    # urllib's request, imported below: this is no Flask request.
    return request.urlopen(url).read()


def record():
    current_app.logger.info("recording")  # expect: OFF102
    return g.user  # expect: OFF102


@app.route("/fetch")
def start_fetch():
    threading.Thread(target=fetch, args=("https://example.com",)).start()
    threading.Thread(target=record).start()
    return "ok"


from urllib import request  # noqa: E402, F811
