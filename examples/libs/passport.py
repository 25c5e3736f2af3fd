"""Who is calling: the user behind the request's ``Authorization`` header.

This is the kind of helper a code base grows long before anything runs in
the background: it reads ``request.headers`` directly, wherever it is
called from. It is not changed for the demo; Flask-Offload replays the
request in the job, so it works there too.

The users and their bearer tokens are fixed demo data. A real service would
verify the token with its identity provider.
"""

from __future__ import annotations

import typing as t

from flask import request
from werkzeug.exceptions import Unauthorized


class User(t.NamedTuple):
    """A demo user."""

    id: int
    name: str
    email: str
    token: str


#: The demo's users, in the order the page lists them.
USERS: tuple[User, ...] = (
    User(1001, "alice", "alice@example.com", "demo-token-alice"),
    User(1002, "bob", "bob@example.com", "demo-token-bob"),
    User(1003, "carol", "carol@example.com", "demo-token-carol"),
)

_BY_TOKEN = {user.token: user for user in USERS}
_BY_ID = {user.id: user for user in USERS}


class PassportService:
    """Identify the caller of the current request.

    :meth:`current_user_id` is the seed project's code as it was, with
    :meth:`decode` made to know the demo's tokens.
    """

    @staticmethod
    def decode(token: str | None) -> dict[str, t.Any]:
        """The claims of an ``Authorization`` header's bearer token.

        :param token: The header's value, ``"Bearer <token>"``.
        :raises Unauthorized: The header is missing or the token is unknown.
        """
        if not token:
            raise Unauthorized(
                "The request has no 'Authorization' header. Send"
                " 'Authorization: Bearer <token>' with a demo user's token."
            )
        scheme, _, value = token.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("The 'Authorization' header must be 'Bearer <token>'.")
        user = _BY_TOKEN.get(value.strip())
        if user is None:
            raise Unauthorized("The bearer token does not belong to any demo user.")
        return {"sub": user.id, "name": user.name, "email": user.email}

    @classmethod
    def current_user_id(cls) -> int:
        """The id of the user calling the current request.

        :raises Unauthorized: The header is missing or the token is unknown.
        """
        token = request.headers.get("Authorization")
        return cls.decode(token)["sub"]  # type: ignore[no-any-return]

    @classmethod
    def current_user(cls) -> User:
        """The user calling the current request.

        :raises Unauthorized: The header is missing or the token is unknown.
        """
        return _BY_ID[cls.current_user_id()]

    @staticmethod
    def get_user(user_id: int) -> User | None:
        """The demo user with this id, or ``None``."""
        return _BY_ID.get(user_id)
