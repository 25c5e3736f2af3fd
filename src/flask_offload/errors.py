"""Exceptions raised by Flask-Offload. All of them derive from :exc:`OffloadError`."""

from __future__ import annotations


class OffloadError(Exception):
    """Base class of every error Flask-Offload raises."""


class SnapshotError(OffloadError):
    """The request could not be captured, serialised or replayed for a job."""


class SnapshotTampered(SnapshotError):
    """A signed snapshot failed verification: forged, edited, moved onto another
    task, or expired. The job's body does not run.
    """


class QueueFull(OffloadError):
    """The thread backend's queue holds ``OFFLOAD_MAX_QUEUE`` pending jobs and
    ``OFFLOAD_QUEUE_FULL`` is ``"raise"``.
    """


class NotRegistered(OffloadError):
    """The function is not an ``@offload.task``, and the backend can only send
    declared tasks to another process.
    """


class JobCancelled(OffloadError):
    """The job was cancelled. Raised by :meth:`Job.result` for a cancelled job;
    a job may raise it itself to stop early as ``CANCELLED``.
    """
