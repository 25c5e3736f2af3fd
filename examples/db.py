"""SQLite with the standard library, as in Flask's tutorial: one connection
per app context, opened on ``g`` by :func:`get_db` and closed when the
context is torn down.

A job gets its own app context, so it opens its own connection in its own
thread (``sqlite3`` connections may not cross threads) and Flask closes it
when the job ends.
"""

from __future__ import annotations

import sqlite3

from flask import current_app
from flask import Flask
from flask import g

SCHEMA = """
CREATE TABLE IF NOT EXISTS operation_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


def get_db() -> sqlite3.Connection:
    """The current app context's connection, opened on first use."""
    if "db" not in g:
        g.db = sqlite3.connect(current_app.config["DATABASE"])
        g.db.row_factory = sqlite3.Row
    db: sqlite3.Connection = g.db
    return db


def close_db(exc: BaseException | None = None) -> None:
    """Close the connection opened in this app context, if any."""
    db = g.pop("db", None)
    if db is not None:
        db.close()


def init_db() -> None:
    """Create the tables that do not exist yet."""
    get_db().executescript(SCHEMA)


def init_app(app: Flask) -> None:
    """Close connections at teardown and create the tables now."""
    app.teardown_appcontext(close_db)
    with app.app_context():
        init_db()
