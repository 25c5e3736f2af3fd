"""The Celery backend: not available yet in this version."""

from __future__ import annotations

import typing as t

from .base import Backend

if t.TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

    from ..extension import Offload
    from ..extension import Settings

_MESSAGE = (
    "OFFLOAD_BACKEND = 'celery' is not available in this version of"
    " Flask-Offload yet. Use the 'thread' backend."
)


class CeleryBackend(Backend):
    name = "celery"

    def __init__(self, settings: Settings, app: Flask, offload: Offload) -> None:
        raise RuntimeError(_MESSAGE)


def run_worker(app: Flask, args: list[str]) -> None:
    raise RuntimeError(_MESSAGE)
