"""Job status URLs (and, later, the live dashboard), registered by ``init_app``
when ``OFFLOAD_DASHBOARD`` is true.
"""

from __future__ import annotations

import typing as t

from flask import abort
from flask import Blueprint

if t.TYPE_CHECKING:  # pragma: no cover
    from ..extension import Offload


def create_blueprint(offload: Offload) -> Blueprint:
    """The ``offload`` blueprint for one :class:`~flask_offload.Offload`."""
    bp = Blueprint("offload", __name__)

    @bp.get("/jobs/<job_id>")
    def job_status(job_id: str) -> dict[str, t.Any]:
        job = offload.get_job(job_id)
        if job is None:
            abort(404)
        if not offload.is_authorized(job):
            abort(403)
        return job.to_dict()

    return bp
