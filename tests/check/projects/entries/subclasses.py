import threading
from concurrent.futures import ThreadPoolExecutor
from threading import Thread
from threading import Timer

from flask import Flask
from flask import request

app = Flask(__name__)


class AuditThread(Thread):
    def __init__(self):
        super().__init__(target=self.job, daemon=True)

    def job(self):
        print(request.headers["X-User"])  # expect: OFF101


class LegacyThread(threading.Thread):
    def __init__(self):
        threading.Thread.__init__(self, target=self.job)

    def job(self):
        print(request.args["q"])  # expect: OFF101


class PositionalThread(Thread):
    def __init__(self, user_id):
        super().__init__(None, self.job, args=(user_id,))

    def job(self, user_id):
        print(user_id, request.path)  # expect: OFF101


class BaseWorker(Thread):
    def __init__(self, target):
        super().__init__(target=target, daemon=True)


class ChildWorker(BaseWorker):
    def __init__(self):
        super().__init__(target=self.job)

    def job(self):
        print(request.url)  # expect: OFF101


class ContextThread(Thread):
    # Its run() gives the target a request context.
    def __init__(self, real_app):
        super().__init__(target=self.job)
        self.real_app = real_app

    def run(self):
        with self.real_app.test_request_context():
            super().run()

    def job(self):
        print(request.path)


class Handler:
    def __init__(self, target):
        self.target = target


class RequestHandler(Handler):
    # Not a thread: the target is only stored.
    def __init__(self):
        super().__init__(target=self.describe)

    def describe(self):
        return request.path


@app.post("/subclasses")
def start_subclasses():
    AuditThread().start()
    LegacyThread().start()
    PositionalThread(7).start()
    ChildWorker().start()
    ContextThread(app).start()
    RequestHandler()
    return "", 202


class AuditPool(ThreadPoolExecutor):
    # A pool of the project's own, with submit() and map() inherited.
    def __init__(self):
        super().__init__(max_workers=2, thread_name_prefix="audit")


class RetryTimer(threading.Timer):
    pass


class LoggingTimer(Timer):
    def run(self):
        print("timer for", request.path)  # expect: OFF101
        super().run()


def pooled():
    return request.headers["X-Pool"]  # expect: OFF101


def mapped(item):
    return item, request.method  # expect: OFF101


def retried():
    return request.args["retry"]  # expect: OFF101


def logged():
    return request.url  # expect: OFF101


@app.post("/subclassed-pools")
def start_subclassed_pools():
    AuditPool().submit(pooled)
    with AuditPool() as pool:
        list(pool.map(mapped, [1, 2]))
    RetryTimer(5.0, retried).start()
    LoggingTimer(5.0, logged).start()
    return "", 202
