"""Users kept in the cluster's metadata log, from the client's side.

``AsyncClient.create_user`` and ``alter_user`` send a user's grants with the
SHA-256 of its token, never the token: the node stores the hash (server
log/users.py), and the token itself crosses the wire only in the hellos of the
user's own connections. Tokens should be random (``generate_token``): an
unsalted hash of a guessable password could be reversed from a copy of a
node's data directory.

A change is answered once the controller (the metadata group's leader)
applied it, at the metadata log index the reply names (``metadata_index``);
the other nodes apply it a heartbeat or so later. ``AsyncClient.wait_applied``
waits for every node to get there, asking each for its ``cluster_status`` of
the metadata group (``applied_metadata``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from typing import Any

from .errors import UnsupportedVersionError

# 32 random bytes, URL-safe base64 (43 characters): as Kafka's delegation tokens.
TOKEN_BYTES = 32
QUOTA_KEYS = ("requests_per_sec", "produce_bytes_per_sec", "fetch_bytes_per_sec", "max_connections")
# alter_user(remove=...): the optional keys a user may lose (expires_at_ms: never expire).
REMOVABLE_KEYS = (*QUOTA_KEYS, "expires_at_ms")
# Deny rules: patterns refused whatever the grants say (server acl.py). Log
# format 7 and later; an empty list denies nothing, as an absent one does.
DENY_KEYS = ("deny_read", "deny_write", "deny_admin", "deny_groups")
# The keyword arguments of create_user and alter_user that are a user's settings
# (both take every one of them; tests/client/test_users.py checks the signatures).
SETTING_KEYS = (
    "read", "write", "admin", "groups", *DENY_KEYS, "cluster", "tls_names", *REMOVABLE_KEYS,
)  # fmt: skip
# The metadata group's id in cluster_status replies (server/groups.py METADATA_GROUP).
METADATA_GROUP = 0


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
    token: str | None, given: dict[str, Any], remove: Iterable[str] = (), *, altering: bool = False
) -> dict[str, Any]:
    """The ``user`` map of a user_create / user_alter request: the keys of
    ``given`` that are not None (grants as lists of patterns), the token's hash,
    and a None for each key to remove.

    An empty deny list is not sent as one: a create leaves it out, an alter
    (``altering``) removes the key. Either means "nothing denied", and unlike
    an empty list neither needs the log format of deny rules, so a client can
    create users (and clear deny rules) on a cluster that has not reached it."""
    out: dict[str, Any] = {}
    if token is not None:
        out["token_sha256"] = token_sha256(token)
    for key, value in given.items():
        if isinstance(value, str):  # list("billing.*") would grant each character
            raise TypeError(f"{key} takes a list of patterns, got the string {value!r}")
        if value is None:
            continue
        value = value if isinstance(value, (bool, int, float)) else list(value)
        if key in DENY_KEYS and not value:
            if altering:
                out[key] = None
            continue
        out[key] = value
    for key in remove:
        if key not in REMOVABLE_KEYS:
            raise ValueError(f"cannot remove {key!r}; removable: {', '.join(REMOVABLE_KEYS)}")
        out[key] = None
    return out


def change_index(reply: dict[str, Any]) -> int:
    """The metadata log index a user_create / user_alter / user_delete reply says
    the change was applied at. UnsupportedVersionError from a node too old to
    say: the change itself was made."""
    index = reply.get("metadata_index")
    if type(index) is not int:
        raise UnsupportedVersionError(
            "the change was made, but the node that answered does not report its "
            "metadata_index (an older raftlog), so there is nothing to wait for"
        )
    return index


def applied_metadata(status: dict[str, Any]) -> int | None:
    """How far a node's cluster_status reply says it applied the metadata group
    (None: it hosts no metadata group, e.g. not a member yet)."""
    for group in status.get("groups") or ():
        if isinstance(group, dict) and group.get("group") == METADATA_GROUP:
            applied = group.get("applied")
            return applied if type(applied) is int else None
    return None
