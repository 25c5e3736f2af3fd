import threading
from threading import Thread

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
