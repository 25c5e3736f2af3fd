"""The project's own decorators."""

import functools
import threading

from app import app
from flask import request

REGISTRY = []


def passthrough(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def audited(f):
    def wrapper(*args, **kwargs):
        print("called from", request.remote_addr)  # expect: OFF101
        return f(*args, **kwargs)

    return functools.wraps(f)(wrapper)


def with_app_context(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        with app.app_context():
            return f(*args, **kwargs)

    return wrapper


def with_request_context(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        with app.test_request_context("/"):
            return f(*args, **kwargs)

    return wrapper


def retry(times):
    def decorator(f):
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            for _ in range(times - 1):
                try:
                    return f(*args, **kwargs)
                except OSError:
                    pass
            return f(*args, **kwargs)

        return wrapper

    return decorator


def async_task(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        thread = threading.Thread(target=f, args=args, kwargs=kwargs)
        thread.start()
        return thread

    return wrapper


def register(f):
    REGISTRY.append(f)
    return f
