import celery

celery_app = celery.Celery()
