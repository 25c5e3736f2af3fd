"""The demo on the Celery backend: the same app, views and job; the import
runs in a Celery worker, on this machine or another.

.. code-block:: text

    celery -A examples.app:celery_app worker -l INFO    # a worker
    flask --app examples.celery_app run                  # the web app
    flask --app examples.celery_app offload worker       # or a worker this way

The broker and result backend are Redis on 127.0.0.1 unless
``DEMO_BROKER_URL`` (and ``DEMO_RESULT_BACKEND``) say otherwise, or
``DEMO_CELERY`` holds a JSON object of Celery settings. Web app and workers
must share ``DEMO_SECRET_KEY`` (the snapshots are signed with it) and
``DEMO_DATA_DIR`` (the SQLite database, exports and uploads live there).
"""

from __future__ import annotations

import json
import os
import typing as t

from .app import create_app
from .extensions import offload


def celery_config() -> dict[str, t.Any]:
    """The Celery settings, from the environment."""
    if os.environ.get("DEMO_CELERY"):
        config: dict[str, t.Any] = json.loads(os.environ["DEMO_CELERY"])
        return config
    broker = os.environ.get("DEMO_BROKER_URL", "redis://127.0.0.1:6379/0")
    return {
        "broker_url": broker,
        "result_backend": os.environ.get("DEMO_RESULT_BACKEND", broker),
    }


app = create_app(
    {
        "OFFLOAD_BACKEND": "celery",
        "OFFLOAD_CELERY": celery_config(),
        # The job identifies the caller from the upload's Authorization header
        # (PassportService). Credentials are dropped from what goes to the
        # broker unless this is set (the snapshot is encrypted either way).
        "OFFLOAD_CARRY_CREDENTIALS": True,
        # Uploads go to a folder the web app and the workers share.
        "OFFLOAD_STORAGE": os.path.join(
            os.environ.get("DEMO_DATA_DIR")
            or os.path.join(os.path.dirname(__file__), "instance"),
            "offload-uploads",
        ),
    }
)
with app.app_context():
    #: The Celery app: ``celery -A examples.app:celery_app worker``.
    celery_app = offload.celery
