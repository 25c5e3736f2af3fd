from celery import shared_task
from flask import current_app
from flask import flash
from flask import g
from flask import request
from flask import url_for
from make_celery import celery_app


@shared_task(ignore_result=False)
def export(user_id):
    current_app.logger.info("export %s", user_id)
    g.started = True
    return url_for("exports.show", user_id=user_id, _external=True)


@celery_app.task
def notify():
    flash("done")  # expect: OFF103
    return request.remote_addr  # expect: OFF101
