"""Users kept in the cluster's metadata log, from the client's side.

``AsyncClient.create_user`` and ``alter_user`` send a user's grants with the
SHA-256 of its token, never the token: the node stores the hash (server
log/users.py), and the token itself crosses the wire only in the hellos of the
user's own connections. Tokens should be random (``generate_token``): an
unsalted hash of a guessable password could be reversed from a copy of a
node's data directory.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from typing import Any

# 32 random bytes, URL-safe base64 (43 characters): as Kafka's delegation tokens.
TOKEN_BYTES = 32
QUOTA_KEYS = ("requests_per_sec", "produce_bytes_per_sec", "fetch_bytes_per_sec", "max_connections")
# alter_user(remove=...): the optional keys a user may lose (expires_at_ms: never expire).
REMOVABLE_KEYS = (*QUOTA_KEYS, "expires_at_ms")
# The keyword arguments of create_user and alter_user that are a user's settings
# (both take every one of them; tests/client/test_users.py checks the signatures).
SETTING_KEYS = ("read", "write", "admin", "groups", "cluster", "tls_names", *REMOVABLE_KEYS)


def generate_token() -> str:
    """A new random client token."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_sha256(token: str) -> str:
    """What the cluster keeps of ``token`` (hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def setting_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """The settings among a create_user / alter_user call's arguments (its
    ``locals()`` on entry), for ``user_fields``: one list of keys for both."""
    return {key: arguments[key] for key in SETTING_KEYS}


def user_fields(
    token: str | None, given: dict[str, Any], remove: Iterable[str] = ()
) -> dict[str, Any]:
    """The ``user`` map of a user_create / user_alter request: the keys of
    ``given`` that are not None (grants as lists of patterns), the token's hash,
    and a None for each key to remove."""
    out: dict[str, Any] = {}
    if token is not None:
        out["token_sha256"] = token_sha256(token)
    for key, value in given.items():
        if isinstance(value, str):  # list("billing.*") would grant each character
            raise TypeError(f"{key} takes a list of patterns, got the string {value!r}")
        if value is not None:
            out[key] = value if isinstance(value, (bool, int, float)) else list(value)
    for key in remove:
        if key not in REMOVABLE_KEYS:
            raise ValueError(f"cannot remove {key!r}; removable: {', '.join(REMOVABLE_KEYS)}")
        out[key] = None
    return out
