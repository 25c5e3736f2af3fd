"""Names taken from Flask and threading with star imports."""

from threading import *  # noqa: F403

from flask import *  # noqa: F403


def work():
    return request.args  # noqa: F405  # expect: OFF101


def later():
    return url_for("index")  # noqa: F405  # expect: OFF103


def start():
    Thread(target=work).start()  # noqa: F405
    Timer(5.0, later).start()  # noqa: F405
