"""A Task class entering the app context on an ExitStack, and a request
context for tasks declared with ``request_context=True``, as Indico's does.
"""

from contextlib import ExitStack

from celery import Celery
from flask import current_app
from flask import Flask
from flask import g
from flask import session

flask_app = Flask(__name__)


class StackCelery(Celery):
    def patch_task(self, app):
        class AppTask(self.Task):
            def __call__(s, *args, **kwargs):
                stack = ExitStack()
                stack.enter_context(app.app_context())
                if getattr(s, "request_context", False):
                    stack.enter_context(app.test_request_context())
                with stack:
                    return super().__call__(*args, **kwargs)

        self.Task = AppTask


celery = StackCelery(__name__)


@celery.task
def cleanup():
    current_app.logger.info("cleaning %s", g.get("run"))
    return session.get("user_id")  # expect: OFF101


@celery.task(request_context=True)
def build_site():
    session["lang"] = "en"


@celery.task(request_context=False)
def build_other():
    session["lang"] = "en"  # expect: OFF101
