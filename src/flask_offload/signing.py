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


ENCRYPTION_INFO = b"flask-offload.snapshot.encryption.v1"


def _fernet_key(secret: str | bytes) -> bytes:
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    if isinstance(secret, str):
        secret = secret.encode()
    raw = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=ENCRYPTION_INFO
    ).derive(secret)
    return base64.urlsafe_b64encode(raw)


def _fernet(app: Flask) -> t.Any:
    try:
        from cryptography.fernet import Fernet
        from cryptography.fernet import MultiFernet
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "The Celery backend encrypts the snapshots it sends to workers,"
            " which needs the 'cryptography' package. Install it with:"
            " pip install 'Flask-Offload[celery]'"
        ) from e
    # Newest key first: MultiFernet encrypts with the first, decrypts with any.
    keys = list(reversed(_keys(app, require=True)))
    return MultiFernet([Fernet(_fernet_key(k)) for k in keys])


def encrypt(app: Flask, data: bytes) -> str:
    """Encrypt ``data`` (Fernet: AES-128-CBC and HMAC-SHA256) with a key
    derived (HKDF-SHA256) from ``SECRET_KEY``.
    """
    token: bytes = _fernet(app).encrypt(data)
    return token.decode("ascii")


def decrypt(app: Flask, token: str) -> bytes:
    """Decrypt a token made by :func:`encrypt`, with ``SECRET_KEY`` or one of
    ``SECRET_KEY_FALLBACKS``.

    :raises SnapshotTampered: It does not decrypt with any of the keys.
    """
    from cryptography.fernet import InvalidToken

    try:
        data: bytes = _fernet(app).decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeEncodeError) as e:
        raise SnapshotTampered(
            "The job's encrypted snapshot does not decrypt with SECRET_KEY or"
            " SECRET_KEY_FALLBACKS: it was edited, or encrypted with another key."
        ) from e
    return data
