from __future__ import annotations

# The projects under projects/ are inputs for the checker, not tests.
collect_ignore_glob = ["projects/*"]
