"""Static checker for Flask context bugs in background code.

Finds code run by threads, executors, pools and greenlets that reads
``request``, ``session``, ``g``, ``current_app`` or ``current_user``, or
calls helpers such as ``url_for``, and misuse of
``copy_current_request_context``. Nothing is imported or run: files are
parsed with :mod:`ast` and the project's own calls are followed statically.

Run it with ``python -m flask_offload.check PATH...``.
"""

from __future__ import annotations

from ._cli import main
from ._core import check
from ._core import check_paths
from ._core import Finding
from ._core import Report
from ._rules import RULES

__all__ = ["RULES", "Finding", "Report", "check", "check_paths", "main"]
