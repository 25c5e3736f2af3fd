"""Superset's set-up: the task class's base is a name bound to
``celery_app.Task`` inside a method.
"""

from ext import celery_app


class Initializer:
    def __init__(self, app):
        self.flask_app = app

    def configure_celery(self):
        flask_app = self.flask_app
        base = celery_app.Task

        class AppContextTask(base):
            abstract = True

            def __call__(self, *args, **kwargs):
                with flask_app.app_context():
                    return base.__call__(self, *args, **kwargs)

        celery_app.Task = AppContextTask
