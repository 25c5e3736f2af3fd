"""Sign and verify serialised snapshots.

Snapshots that leave the submitting thread as data (the ``inline`` backend's
round trip, Celery messages) are signed with itsdangerous using the app's
``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS`` and a salt of their own, so a
session cookie is never accepted as a snapshot and the other way round.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import secrets
import typing as t
import uuid
from decimal import Decimal

from flask import Flask
from itsdangerous import BadSignature
from itsdangerous import SignatureExpired
from itsdangerous import URLSafeTimedSerializer

from .errors import SnapshotError
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


def _wire_normal(value: t.Any) -> t.Any:
    """``value`` encoded as Celery's JSON serializer encodes it (kombu marks
    datetimes, UUIDs, decimals and bytes) and decoded as plain JSON, the
    marks left as they are: tuples become lists, mapping keys strings. A
    value and what a worker decodes from its message give the same result,
    so the sender and the worker agree on a digest (``{9: 1}`` arrives as
    ``{"9": 1}``).

    :raises TypeError: Something in ``value`` is not JSON.
    """
    dumps: t.Callable[[t.Any], str]
    try:
        from kombu.utils import json as kombu_json

        dumps = kombu_json.dumps
    except ImportError:  # pragma: no cover - Celery brings kombu
        dumps = json.dumps
    return json.loads(dumps(value))


_KEPT_TYPES = (
    datetime.datetime,
    datetime.date,
    datetime.time,
    uuid.UUID,
    Decimal,
    bytes,
)


def _sent(value: t.Any) -> t.Any:
    """``value`` as Celery's JSON serializer delivers it, without kombu:
    tuples become lists, mapping keys strings (as ``json`` writes them), and
    datetimes, UUIDs, decimals and bytes (which kombu marks) stay.

    :raises TypeError: Something in ``value`` is not JSON.
    """
    if value is None or isinstance(value, (str, int, float, *_KEPT_TYPES)):
        return value
    if isinstance(value, (list, tuple)):
        return [_sent(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not (k is None or isinstance(k, (str, int, float))):
                raise TypeError(
                    f"keys must be str, int, float, bool or None, not {k!r}"
                )
            out[k if isinstance(k, str) else json.dumps(k)] = _sent(v)
        return out
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def as_sent(
    args: tuple[t.Any, ...], kwargs: dict[str, t.Any]
) -> tuple[tuple[t.Any, ...], dict[str, t.Any]]:
    """The arguments as a Celery worker gets them through Celery's JSON
    serializer (the inline backend gives them to the job so): ``(1, 2)``
    arrives as ``[1, 2]``, ``{9: 1}`` as ``{"9": 1}``.

    :raises SnapshotError: An argument is not JSON, as Celery would refuse.
    """
    try:
        try:
            from kombu.utils import json as kombu_json
        except ImportError:  # pragma: no cover - without the celery extra
            sent_args, sent_kwargs = _sent([list(args), kwargs])
        else:
            loads: t.Callable[[str], t.Any] = kombu_json.loads
            dumps: t.Callable[[t.Any], str] = kombu_json.dumps
            sent_args, sent_kwargs = loads(dumps([list(args), kwargs]))
    except (TypeError, ValueError) as e:
        raise SnapshotError(
            f"The job's arguments cannot be sent as JSON: {e}. A job sent to"
            " Celery workers takes arguments that Celery's JSON serializer"
            " carries (str, int, float, bool, None, lists, dicts, datetimes,"
            " UUIDs, decimals, bytes). Pass an id or a dict of plain values"
            " instead."
        ) from None
    return tuple(sent_args), sent_kwargs


def _digest(value: t.Any) -> str:
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def args_digest(args: t.Any, kwargs: t.Any) -> str:
    """A digest of a job's arguments, binding a snapshot to them. The
    arguments are digested as the worker receives them (see
    :func:`_wire_normal`), so the sender and the worker agree.

    :raises SnapshotError: An argument is not a JSON value (as with
        Celery's ``pickle`` serializer): it could not be bound reliably.
    """
    try:
        normal = _wire_normal([args, kwargs])
    except (TypeError, ValueError) as e:
        raise SnapshotError(
            f"The job's arguments cannot be bound to its signed snapshot: {e}."
            " A job sent to Celery workers takes arguments that Celery's JSON"
            " serializer carries (str, int, float, bool, None, lists, dicts,"
            " datetimes, UUIDs, decimals, bytes), even with another"
            " serializer such as pickle. Pass an id or a dict of plain values"
            " instead."
        ) from None
    return _digest(normal)


#: The parts of a Celery message's body that make the worker send more
#: tasks after (or instead of) the job: link callbacks and errbacks, the rest
#: of a chain, a chord's body.
EMBED_KEYS = ("callbacks", "errbacks", "chain", "chord")


def embed_digest(embed: t.Mapping[str, t.Any] | None) -> str:
    """A digest of a Celery message's callbacks, errbacks, chain and chord
    (its body's "embed"), binding a snapshot to the tasks the worker sends
    after the job, as :func:`args_digest` binds it to the arguments. Empty
    and missing parts are the same.

    :raises SnapshotError: A part is not JSON.
    """
    parts = [(embed or {}).get(key) or None for key in EMBED_KEYS]
    try:
        normal = _wire_normal(parts)
    except (TypeError, ValueError) as e:
        raise SnapshotError(
            f"The message's callbacks, chain or chord cannot be bound to the"
            f" job's signed snapshot: {e}. Give them JSON arguments."
        ) from None
    return _digest(normal)


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
    check_bound(payload, bind or {})
    return payload


def check_bound(payload: dict[str, t.Any], bind: dict[str, t.Any]) -> None:
    """Check that a verified payload carries the values in ``bind``.

    :raises SnapshotTampered: One differs or is missing.
    """
    for name, expected in bind.items():
        if payload.get(name) != expected:
            raise SnapshotTampered(
                f"The job's snapshot belongs to another job ({name} does not match):"
                " a valid snapshot was copied onto another task, or the message's"
                " arguments, callbacks, chain or chord were changed."
            )


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
