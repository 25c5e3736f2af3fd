"""A factory in its own module, used under a name without "celery"."""

from celery import Celery


def make_worker(flask_app):
    worker = Celery(flask_app.import_name)
    worker.conf.update(flask_app.config)
    if flask_app.debug:
        return worker
    return worker
