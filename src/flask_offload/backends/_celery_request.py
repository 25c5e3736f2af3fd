"""The Celery request class of declared tasks, in its own module: Celery
imports it by name in the worker, and the web process never needs it.
"""

from __future__ import annotations

import logging
import typing as t

from billiard.exceptions import TimeLimitExceeded
from billiard.exceptions import WorkerLostError
from celery import states
from celery.worker.request import Request

logger = logging.getLogger("flask_offload")


class OffloadRequest(Request):  # type: ignore[misc]
    """Celery's request, which also deletes a job's stored objects when the
    worker's main process records its failure: a pool child lost (killed by
    the OOM killer) or killed at the hard time limit runs no
    ``task_postrun``, where they are deleted otherwise.
    """

    def on_failure(
        self, exc_info: t.Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)  # billiard's ExceptionWithTraceback
        # Only where the pool process ended without finishing the job: an
        # ordinary failure already did both, in the pool process.
        lost = isinstance(exc, (WorkerLostError, SystemExit, KeyboardInterrupt))
        # The hard time limit comes here first, then to on_timeout.
        if lost or isinstance(exc, TimeLimitExceeded):
            self._keep_progress()
        try:
            super().on_failure(
                exc_info, send_failed_event=send_failed_event, return_ok=return_ok
            )
        finally:
            if lost:
                self._delete_if_failed()

    def on_timeout(self, soft: bool, timeout: float) -> None:
        try:
            super().on_timeout(soft, timeout)
        finally:
            if not soft:
                self._delete_if_failed()

    def _keep_progress(self) -> None:
        """Copy when the job started and its last progress from its running
        state to its record, before the failure replaces that state: the
        pool process, which writes them at the end, is gone.
        """
        backend = getattr(self.task, "_offload_backend", None)
        if backend is None:
            return
        try:
            meta = self.task.backend.get_task_meta(self.id)
            value = meta.get("result")
            if meta.get("status") in ("STARTED", "PROGRESS") and isinstance(
                value, dict
            ):
                keys = ("started_at", "progress", "message")
                backend._write_info(self.id, {k: value.get(k) for k in keys})
        except Exception:
            logger.exception("Could not keep the progress of job %s.", self.id)

    def _delete_if_failed(self) -> None:
        backend = getattr(self.task, "_offload_backend", None)
        if backend is None:
            return
        try:
            # Only for good: a retry or a requeued message needs them.
            if self.task.backend.get_state(self.id) != states.FAILURE:
                return
            backend.delete_stored(self.id)
        except Exception:
            logger.exception("Could not delete what job %s stored.", self.id)
