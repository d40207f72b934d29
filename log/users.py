"""Users kept in the metadata log: what one is, and when a record of one is valid.

``raftlog user create`` (and ``alter``, ``delete``) writes a tenant into the
metadata group (log/metadata.py ``SetUser``, ``DeleteUser``) instead of every
node's cluster.toml, as Kafka keeps its SCRAM credentials and ACLs in KRaft:
one command reaches every node, in the same order, and a node that was down
learns it from the log when it comes back. server/metadata_users.py turns the
records into the users the listener authenticates.

A record holds the same keys as a cluster.toml ``[[auth.user]]`` table
(server/acl.py), except the secret: the log keeps ``token_sha256``, the
SHA-256 of the token (hex), never the token. The client hashes it before
sending (client/aio.py ``create_user``), so a token crosses the wire only in
hellos, and a copy of a node's data directory or of its Raft log does not let
anyone log in. An unsalted hash is enough because tokens are random
(``raftlog user create`` makes 32 random bytes), not passwords a dictionary
could guess; the README says so.

The metadata state machine checks every record with ``user_record_problem``
when it applies one (after merging an alter into the stored record), so
every replica stores the same users and the server never meets a malformed
one. Handlers check first too, for a message before anything is proposed.
"""

from __future__ import annotations

import re
from typing import Any

from .features import USER_KEY_FORMATS

# A user's name: what logs, metrics and refusals show, so printable and short.
USER_NAME = re.compile(r"[A-Za-z0-9._@:-]{1,200}")
TOKEN_SHA256 = re.compile(r"[0-9a-f]{64}")
# What a user is granted (topics to read, write, administer; consumer groups) ...
GRANT_KEYS = ("read", "write", "admin", "groups")
# ... and, for each, what is denied whatever the grants say (Kafka's DENY ACLs:
# a deny takes precedence over an allow). Absent or empty: nothing is denied.
DENY_KEYS = ("deny_read", "deny_write", "deny_admin", "deny_groups")
PATTERN_KEYS = (*GRANT_KEYS, *DENY_KEYS)
RATE_KEYS = ("requests_per_sec", "produce_bytes_per_sec", "fetch_bytes_per_sec")
RECORD_KEYS = (
    "token_sha256", *PATTERN_KEYS, "cluster", *RATE_KEYS, "max_connections", "tls_names",
    "expires_at_ms",
)  # fmt: skip
# expires_at_ms: the wall-clock instant (ms since the epoch) from which the user's
# token and certificate names are refused, at hellos and on open connections
# (server/listener.py), as Kafka's delegation tokens expire. At most the end of
# year 9999, which every date library can show.
MAX_EXPIRES_AT_MS = 253_402_300_799_999
# Bounds on one record, so that one request cannot bloat every node's metadata.
MAX_PATTERNS = 1000
MAX_PATTERN_CHARS = 1000


def pattern_problem(pattern: object) -> str | None:
    """Why ``pattern`` is not a valid topic or group pattern (None: it is)."""
    if not isinstance(pattern, str) or not pattern:
        return "must be a non-empty string"
    if "*" in pattern[:-1]:
        return f"{pattern!r}: '*' may only end a pattern (a prefix match)"
    return None


def user_name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not USER_NAME.fullmatch(name):
        return f"bad user name {name!r}: use 1-200 of [A-Za-z0-9._@:-]"
    return None


def user_record_problem(record: object) -> str | None:
    """Why ``record`` is not a complete, valid user record (None if it is)."""
    if not isinstance(record, dict):
        return "a user record must be a map"
    for key in record:
        if key not in RECORD_KEYS:
            return f"unknown user key {key!r} (known: {', '.join(RECORD_KEYS)})"
    digest = record.get("token_sha256")
    if digest is not None and not (isinstance(digest, str) and TOKEN_SHA256.fullmatch(digest)):
        return "token_sha256 must be 64 lowercase hex digits (the SHA-256 of the token)"
    for key in (*PATTERN_KEYS, "tls_names"):
        problem = _strings_problem(key, record.get(key, []), patterns=key != "tls_names")
        if problem is not None:
            return problem
    if digest is None and not record.get("tls_names"):
        return "a user needs a token or tls_names (the names of its TLS client certificate)"
    if type(record.get("cluster", False)) is not bool:
        return f"cluster must be true or false, got {record['cluster']!r}"
    for key in RATE_KEYS:
        value = record.get(key)
        if value is not None and (type(value) not in (int, float) or not value > 0):
            return f"{key} must be a number > 0, got {value!r}"
    value = record.get("max_connections")
    if value is not None and (type(value) is not int or value <= 0):
        return f"max_connections must be an integer > 0, got {value!r}"
    value = record.get("expires_at_ms")
    if value is not None and (type(value) is not int or not 0 < value <= MAX_EXPIRES_AT_MS):
        return (
            "expires_at_ms must be an integer of milliseconds since the epoch, "
            f"in 1..{MAX_EXPIRES_AT_MS}, got {value!r}"
        )
    return None


def user_keys_format_problem(changes: dict[str, Any], log_format: int) -> str | None:
    """Why a record (or an alter's changes) may not be written at ``log_format``: it
    sets a key that nodes of an older format would refuse when applying it, and the
    replicas would diverge (log/features.py). A None value (a removal) sets nothing."""
    for key, value in sorted(changes.items()):
        needed = USER_KEY_FORMATS.get(key)
        if needed is not None and value is not None and log_format < needed:
            return (
                f"{key} needs log format {needed}, and this cluster is at {log_format}: "
                f"every node must run a raftlog version that reads format {needed} first "
                "(raftlog cluster status)"
            )
    return None


def _strings_problem(key: str, values: object, *, patterns: bool) -> str | None:
    if not isinstance(values, list):
        return f"{key} must be a list of strings, got {values!r}"
    if len(values) > MAX_PATTERNS:
        return f"{key} has {len(values)} entries; at most {MAX_PATTERNS}"
    for i, value in enumerate(values):
        if isinstance(value, str) and len(value) > MAX_PATTERN_CHARS:
            return f"{key}[{i}] is longer than {MAX_PATTERN_CHARS} characters"
        problem = pattern_problem(value) if patterns else None
        if not patterns and not (isinstance(value, str) and value):
            problem = "must be a non-empty string"
        if problem is not None:
            return f"{key}[{i}] {problem}"
    return None


def merged_record(old: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """An alter: ``changes`` over ``old``; a None value removes that key."""
    merged = {**old, **changes}
    return {k: v for k, v in merged.items() if v is not None}


def clashing_user(
    users: dict[str, dict[str, Any]], name: str, record: dict[str, Any]
) -> str | None:
    """Why ``record`` may not be user ``name`` beside the other ``users``: a token
    or a certificate name must name exactly one user (None if it may)."""
    digest = record.get("token_sha256")
    names = {n.lower() for n in record.get("tls_names", [])}
    for other, theirs in sorted(users.items()):
        if other == name:
            continue
        if digest is not None and theirs.get("token_sha256") == digest:
            return f"that token is already user {other!r}'s (each token names one user)"
        shared = names & {n.lower() for n in theirs.get("tls_names", [])}
        if shared:
            return f"tls_names {sorted(shared)} already name user {other!r}"
    return None
