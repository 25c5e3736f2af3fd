"""The class pushing the app context subclasses ``Task`` through a base of
the project's own.
"""

from celery import Celery
from celery import Task
from flask import current_app
from flask import Flask
from flask import session

flask_app = Flask(__name__)


class LoggedBase(Task):
    abstract = True


class WithAppContext(LoggedBase):
    def __call__(self, *args, **kwargs):
        with flask_app.app_context():
            return super().__call__(*args, **kwargs)


celery_app = Celery(task_cls=WithAppContext)


@celery_app.task
def report():
    current_app.logger.info("report")
    return session["user"]  # expect: OFF101
