from celery.app.backends import BACKEND_ALIASES
from kombu.transport import TRANSPORT_ALIASES

# filesystem:// and file:// with atomic writes (see atomicfs), in the tests
# and in the worker processes, which import this package first.
TRANSPORT_ALIASES["filesystem"] = "tests.celery_support.atomicfs:Transport"
BACKEND_ALIASES["file"] = "tests.celery_support.atomicfs:FilesystemBackend"
