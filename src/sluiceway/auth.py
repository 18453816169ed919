"""Who is calling: Bearer tokens issued by ``sluiceway token create``, stored hashed.

On AWS an API Gateway authorizer may vouch for the caller instead; the resolver then takes the
principal from the request context and never looks at the token.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from .db import Conn
from .errors import InvalidRequest, SluicewayError

TOKEN_PREFIX = "slw_"  # noqa: S105 - a prefix, not a secret
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


class Unauthorized(SluicewayError):
    """No valid credentials: a missing, malformed, unknown or revoked token."""

    code = "unauthorized"
    http_status = 401


def check_owner(owner: str) -> str:
    if not _OWNER.fullmatch(owner or ""):
        raise InvalidRequest(
            f"Invalid owner {owner!r}: 1-128 letters, digits, '.', '_', '@' or '-'."
        )
    return owner


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create_token(conn: Conn, owner: str, name: str = "") -> str:
    """Issue a new token for ``owner``; the only time its text is ever seen."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO dsa_core.api_tokens (owner, name, token_hash) VALUES (%s, %s, %s)",
        (check_owner(owner), name, _digest(token)),
    )
    return token


def owner_of(conn: Conn, authorization: str | None) -> str:
    """The owner a ``Bearer <token>`` header speaks for, or :class:`Unauthorized`."""
    if not authorization:
        raise Unauthorized("Missing Authorization header: send 'Authorization: Bearer <token>'.")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX):
        raise Unauthorized("Malformed Authorization header: expected 'Bearer slw_...'.")
    digest = _digest(token)
    # A read on every request; the write only once a minute per token (last_used_at is to
    # see which tokens are still in use, not an audit log): under load, an UPDATE per
    # request was a sixth of the API's time.
    row = conn.execute(
        "SELECT owner, last_used_at IS NULL OR last_used_at < now() - interval '1 minute' "
        "AS stale FROM dsa_core.api_tokens WHERE token_hash = %s AND revoked_at IS NULL",
        (digest,),
    ).fetchone()
    if row is None:
        raise Unauthorized("Unknown or revoked token.")
    if row["stale"]:
        conn.execute(
            "UPDATE dsa_core.api_tokens SET last_used_at = now() WHERE token_hash = %s", (digest,)
        )
    return str(row["owner"])
