import threading

import shop.core as core
from flask import Flask
from shop.core.audit import LoudAuditor
from shop.util.links import page

app = Flask(__name__)


class Mailer:
    def __init__(self):
        self.auditor = LoudAuditor("mail")

    def send_later(self):
        threading.Thread(target=self._send).start()

    def _send(self):
        self.auditor.record("mail")
        core.audit_event("mail")
        page()


@app.route("/mail")
def mail():
    Mailer().send_later()
    return "queued"
