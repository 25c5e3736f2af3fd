"""A project class named like a task (``Subtask``, a thread) pushing an app
context is not a Celery task class: the tasks still have no app context.
"""

import threading

from celery import Celery
from flask import current_app
from flask import Flask
from flask import g

app = Flask(__name__)
celery_app = Celery()


class Subtask(threading.Thread):
    """A helper thread of the project, not a Celery task."""


class ReportSubtask(Subtask):
    def __call__(self):
        with app.app_context():
            return self.run()


@celery_app.task
def job():
    return g.user, current_app.name  # expect: OFF102
