"""Flask's Celery guide: tasks run in an app context, never a request one."""

from celery import Celery
from celery import Task
from flask import Flask


def celery_init_app(app):
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


flask_app = Flask(__name__)
celery_app = celery_init_app(flask_app)
