import multiprocessing.pool
from multiprocessing.dummy import Pool

from flask import Flask
from flask import request
from flask_login import current_user

app = Flask(__name__)


def each(item):
    return item, request.method  # expect: OFF101


def star(a, b):
    return a + b + current_user.id  # expect: OFF101


def applied():
    return request.form  # expect: OFF101


def applied_by_keyword():
    return request.files  # expect: OFF101


@app.route("/pool")
def view():
    pool = Pool(4)
    list(pool.imap_unordered(each, range(3)))
    pool.starmap(star, [(1, 2)])
    tp = multiprocessing.pool.ThreadPool(2)
    tp.apply_async(applied)
    tp.apply_async(func=applied_by_keyword)
    return "ok"
