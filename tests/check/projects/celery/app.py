"""Celery tasks run in a worker, without the request: reported. Flask-Offload
tasks replay it: not reported.
"""

import celery as celery_lib
from celery import Celery
from celery import shared_task
from factory import make_worker
from flask import current_app
from flask import Flask
from flask import g
from flask import request
from flask import session
from flask import url_for
from flask_login import current_user
from huey import RedisHuey

from flask_offload import Offload

app = Flask(__name__)
offload = Offload(app)
celery = Celery(__name__)
worker = make_worker(app)
app.extensions["celery"] = celery
huey = RedisHuey()


class AppCelery(Celery):
    pass


custom = AppCelery(__name__)


@celery.task
def plain():
    return request.args["q"]  # expect: OFF101


@celery.task(bind=True, max_retries=3)
def bound(self):
    return session["user_id"]  # expect: OFF101


@shared_task
def shared():
    return g.user  # expect: OFF102


@shared_task(ignore_result=False)
def shared_user():
    return current_user.id  # expect: OFF101


@celery_lib.shared_task
def module_shared():
    return url_for("index")  # expect: OFF103


@worker.task
def from_factory():
    return current_app.config["X"]  # expect: OFF102


@app.extensions["celery"].task
def from_extensions():
    return request.path  # expect: OFF101


@custom.task()
def from_subclass():
    return request.method  # expect: OFF101


def user_agent():
    return request.user_agent  # expect: OFF101


@celery.task
def through_a_call():
    return user_agent()


@celery.task
def with_values(user_id, path):
    return user_id, path


@celery.task
def guarded():
    with app.test_request_context():
        return request.path


@offload.task
def offload_task():
    return request.path, session["user_id"], g.user


@huey.task()
def other_queue():
    return 1


def register(celery_app):
    @celery_app.task
    def registered():
        return request.host  # expect: OFF101

    return registered


@app.post("/")
def view():
    plain.delay()
    through_a_call.apply_async()
    with_values.delay(current_user.id, request.path)
    offload_task.submit()
    return "ok"
