"""Flask-Offload: run work after the response, in threads or Celery, with
the request it came from.
"""

from __future__ import annotations

from .errors import JobCancelled
from .errors import NotRegistered
from .errors import OffloadError
from .errors import QueueFull
from .errors import SnapshotError
from .errors import SnapshotTampered
from .extension import Offload
from .jobs import current_job
from .jobs import Job
from .jobs import JobState
from .propagation import carry
from .propagation import propagating
from .snapshot import Snapshot
from .tasks import Task

__all__ = [
    # Extension
    "Offload",
    "Task",
    # Jobs
    "Job",
    "JobState",
    "current_job",
    "Snapshot",
    # Hand-made threads and pools
    "carry",
    "propagating",
    # Errors
    "OffloadError",
    "SnapshotError",
    "SnapshotTampered",
    "QueueFull",
    "NotRegistered",
    "JobCancelled",
]
