"""A proxy given to a Thread subclass that keeps it for run()."""

import threading

from flask import current_app
from flask import Flask
from flask import request
from flask_login import current_user

app = Flask(__name__)


class Report(threading.Thread):
    def __init__(self, req, user=None):
        super().__init__()
        self.req = req
        self.user = user

    def run(self):
        print(self.req.args, self.user)


class Deref(threading.Thread):
    def __init__(self, req):
        super().__init__()
        # Read at once, in the view's thread: fine.
        self.args = dict(req.args)

    def run(self):
        print(self.args)


class AppThread(threading.Thread):
    def __init__(self, app, **kwargs):
        super().__init__(**kwargs)
        self.app = app

    def run(self):
        with self.app.app_context():
            super().run()


@app.route("/")
def index():
    Report(request).start()  # expect: OFF104
    Report(dict(request.args), user=current_user).start()  # expect: OFF104
    Deref(request).start()
    AppThread(current_app).start()  # expect: OFF104
    AppThread(current_app._get_current_object()).start()
    return "ok"
