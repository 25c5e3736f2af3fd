"""Aliases of the context proxies, reported where they are used."""

import threading

import flask
from flask import Flask
from flask import request
from flask import session
from flask_login import current_user

app = Flask(__name__)
REQ = request


def make_request():
    return {"headers": {}}


def local_alias():
    req = request  # expect: OFF101
    return req.headers["Authorization"]  # expect: OFF101


def module_attribute_alias():
    r = flask.request  # expect: OFF101
    return r.args.get("q")  # expect: OFF101


def user_alias():
    user = current_user  # expect: OFF101
    return user.id  # expect: OFF101


def global_alias():
    return REQ.headers  # expect: OFF101


def tuple_alias():
    req, sess = request, session  # expect: OFF101, OFF101
    return req.form, sess["cart"]  # expect: OFF101, OFF101


def walrus_alias():
    if (req := request) is not None:  # expect: OFF101
        return req.path  # expect: OFF101
    return None


def alias_on_one_branch(flag):
    req = make_request()
    if flag:
        req = request  # expect: OFF101
    return req.headers  # expect: OFF101


def alias_kept_through_loop(items):
    req = request  # expect: OFF101
    for item in items:
        item.update(req.args)  # expect: OFF101


# Not reported: the alias is replaced before it is used.


def rebound():
    req = request  # expect: OFF101
    req = make_request()
    return req["headers"]


def rebound_on_every_branch(flag):
    req = request  # expect: OFF101
    if flag:
        req = make_request()
    else:
        req = {}
    return req.get("headers")


def rebound_by_loop(requests):
    req = request  # expect: OFF101
    for req in requests:
        print(req.headers)


def rebound_by_with(opener):
    user = current_user  # expect: OFF101
    with opener() as user:  # noqa: F811
        return user.id


def parameter(req):
    return req.headers


def swapped():
    req, other = make_request(), request  # expect: OFF101
    return req["headers"], other is None  # expect: OFF101


@app.route("/")
def index():
    req = request
    user = current_user
    token = req.headers.get("X-Token")
    threading.Thread(target=local_alias).start()
    threading.Thread(target=module_attribute_alias).start()
    threading.Thread(target=user_alias).start()
    threading.Thread(target=global_alias).start()
    threading.Thread(target=tuple_alias).start()
    threading.Thread(target=walrus_alias).start()
    threading.Thread(target=rebound).start()
    threading.Thread(target=swapped).start()
    threading.Thread(target=alias_on_one_branch, args=(True,)).start()
    threading.Thread(target=alias_kept_through_loop, args=([],)).start()
    threading.Thread(target=rebound_on_every_branch, args=(True,)).start()
    threading.Thread(target=rebound_by_loop, args=([],)).start()
    threading.Thread(target=rebound_by_with, args=(open,)).start()
    threading.Thread(target=parameter, args=(token,)).start()
    return str(user.id)
