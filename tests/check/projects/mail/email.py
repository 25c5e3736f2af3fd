"""Flask-Mail's send looks up current_app: threads must push an app context."""

import threading
from threading import Thread

from flask import current_app
from flask_mail import Message

from .extensions import mail


def send_async(msg):
    mail.send(msg)  # expect: OFF103


def send_async_in_context(app, msg):
    with app.app_context():
        mail.send(msg)
        mail.send_message(subject="hi", recipients=["a@example.com"])


def send_message_async():
    mail.send_message(subject="hi", recipients=["a@example.com"])  # expect: OFF103


def send_email(to):
    msg = Message("hi", recipients=[to])
    Thread(target=mail.send, args=(msg,)).start()  # expect: OFF103
    Thread(target=send_async, args=(msg,)).start()
    app = current_app._get_current_object()
    Thread(target=send_async_in_context, args=(app, msg)).start()
    threading.Thread(target=send_message_async).start()
    threading.Thread(target=lambda: mail.send(msg)).start()  # expect: OFF103
    # Sending in the view itself is fine.
    mail.send(msg)


class Outbox:
    def __init__(self):
        self.pending = []

    def send(self, msg):
        self.pending.append(msg)


outbox = Outbox()


def queue_message(msg):
    # The project's own send: not Flask-Mail's.
    Thread(target=outbox.send, args=(msg,)).start()
