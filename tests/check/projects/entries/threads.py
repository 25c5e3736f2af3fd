import threading as th
from threading import Thread
from threading import Timer

from flask import Flask
from flask import g
from flask import request
from flask import session

app = Flask(__name__)


def work():
    print(request.path)  # expect: OFF101


def runner(job):
    job()


def job_reads_session():
    return session["user_id"]  # expect: OFF101


def later():
    print(g.user)  # expect: OFF102


class Worker(Thread):
    def run(self):
        print(request.remote_addr)  # expect: OFF101


@app.route("/start")
def start():
    Thread(target=work).start()
    th.Thread(target=runner, args=(job_reads_session,)).start()
    Timer(5.0, later).start()
    Worker().start()
    th.Thread(target=lambda: print(request.url)).start()  # expect: OFF101
    return "started"


def later_by_keyword():
    print(g.user)  # expect: OFF102


@app.route("/later")
def start_later():
    Timer(interval=5.0, function=later_by_keyword).start()
    return "started"
