"""Sign and verify serialised snapshots.

Snapshots that leave the submitting thread as data (the ``inline`` backend's
round trip, Celery messages) are signed with itsdangerous using the app's
``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS`` and a salt of their own, so a
session cookie is never accepted as a snapshot and the other way round.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import typing as t

from flask import Flask
from itsdangerous import BadSignature
from itsdangerous import SignatureExpired
from itsdangerous import URLSafeTimedSerializer

from .errors import SnapshotTampered

SALT = "flask-offload.snapshot.v1"

# Used only by the in-process inline backend when the app has no SECRET_KEY,
# so that tests of apps without one still exercise the real signing path.
_PROCESS_KEY = secrets.token_hex(32)


def _keys(app: Flask, *, require: bool) -> list[str | bytes]:
    key = app.config.get("SECRET_KEY")
    if not key:
        if require:
            raise RuntimeError(
                "Flask-Offload signs the snapshots it sends to other processes"
                " with the app's SECRET_KEY, which is not set. Set"
                " app.config['SECRET_KEY'] to a long random value, the same on"
                " the web processes and the workers."
            )
        return [_PROCESS_KEY]
    fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or []
    # itsdangerous signs with the last key and accepts all of them.
    return [*fallbacks, key]


def serializer(app: Flask, *, require_key: bool = True) -> URLSafeTimedSerializer:
    keys: t.Any = _keys(app, require=require_key)
    return URLSafeTimedSerializer(keys, salt=SALT)


def args_digest(args: t.Any, kwargs: t.Any) -> str:
    """A digest of a job's arguments, binding a snapshot to them."""
    try:
        raw = json.dumps(
            [args, kwargs], sort_keys=True, separators=(",", ":"), default=repr
        )
    except (TypeError, ValueError):
        raw = repr((args, kwargs))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def sign(app: Flask, payload: dict[str, t.Any], *, require_key: bool = True) -> str:
    """Sign a JSON-safe payload."""
    return serializer(app, require_key=require_key).dumps(payload)


def verify(
    app: Flask,
    token: str,
    *,
    max_age: float | None = None,
    bind: dict[str, t.Any] | None = None,
    require_key: bool = True,
) -> dict[str, t.Any]:
    """Verify a token made by :func:`sign` and return its payload.

    :param max_age: Reject tokens older than this many seconds.
    :param bind: Values the payload must carry unchanged, such as the task id.
    :raises SnapshotTampered: The signature, age or binding does not verify.
    """
    try:
        payload = serializer(app, require_key=require_key).loads(
            token, max_age=None if max_age is None else int(max_age)
        )
    except SignatureExpired as e:
        raise SnapshotTampered(
            f"The job's snapshot expired: it was signed more than {max_age} seconds"
            " ago. Raise OFFLOAD_SNAPSHOT_MAX_AGE if jobs wait longer than that."
        ) from e
    except BadSignature as e:
        raise SnapshotTampered(
            "The job's snapshot has an invalid signature: it was forged, edited,"
            " or signed with another SECRET_KEY. Producers and workers must share"
            " SECRET_KEY (and SECRET_KEY_FALLBACKS while rotating it)."
        ) from e
    if not isinstance(payload, dict):
        raise SnapshotTampered("The job's snapshot is not a mapping.")
    for name, expected in (bind or {}).items():
        if payload.get(name) != expected:
            raise SnapshotTampered(
                f"The job's snapshot belongs to another job ({name} does not match):"
                " a valid snapshot was copied onto another task or its arguments"
                " were changed."
            )
    return payload
