"""Extension instances, created without an app (the factory pattern).

Kept apart from :mod:`examples.app` so that tasks can import ``offload``
without importing the app that imports them.
"""

from __future__ import annotations

from flask_offload import Offload

offload = Offload()
