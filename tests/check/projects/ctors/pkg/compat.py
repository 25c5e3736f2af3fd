import functools
import threading
from concurrent.futures import ThreadPoolExecutor

Later = threading.Timer
Background = functools.partial(threading.Thread, daemon=True)
Workers = ThreadPoolExecutor
# Not a constructor of background work.
Lock = threading.Lock


class Reminder(threading.Timer):
    """A timer of the project's own."""


def make_crew():
    """A factory: what it returns is an executor, whatever the name."""
    return ThreadPoolExecutor(4)
