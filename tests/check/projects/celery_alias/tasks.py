from ext import celery_app
from flask import current_app
from flask import request


@celery_app.task(name="cache.warm")
def warm():
    current_app.logger.info("warming")
    return request.path  # expect: OFF101
