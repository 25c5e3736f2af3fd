"""Where jobs run. Backends are loaded by name from ``OFFLOAD_BACKEND``; an
optional one (Celery) is imported only when it is chosen.
"""

from __future__ import annotations

from .base import Backend

__all__ = ["Backend", "BACKENDS"]

#: The names accepted by ``OFFLOAD_BACKEND``.
BACKENDS = ("thread", "inline", "celery")
