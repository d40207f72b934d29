"""Handlers for user_create, user_alter, user_delete and user_list: tenants kept
in the metadata log (log/users.py), managed with ``raftlog user``.

Writes go to the metadata group's leader (NOT_LEADER elsewhere; the client
follows it) and are answered once applied there; every other node applies
them from the log (server/metadata_users.py). The reply's ``metadata_index``
is the log index the change was applied at: once a node's metadata group has
applied that far (its ``cluster_status``), it authenticates by the change
(``raftlog user --wait``). Each is checked here first for a clear message,
and again by the state machine, which alone decides.

What only a node can check, since the state machine knows nothing of any
node's cluster.toml: the cluster must authenticate clients, and a user kept
in the log may not take a name, a token or a certificate name of the file's
users (checked against the answering node's file; the file's user wins on a
node whose file says otherwise).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from raftlog.client.errors import ErrorCode
from raftlog.client.users import QUOTA_KEYS, token_sha256
from raftlog.log.commands import DeleteUser, SetUser
from raftlog.log.features import DYNAMIC_USERS, USER_KEY_FORMATS
from raftlog.log.users import (
    PATTERN_KEYS,
    RECORD_KEYS,
    clashing_user,
    merged_record,
    user_keys_format_problem,
    user_name_problem,
    user_record_problem,
)

from .acl import User
from .clock_skew import wall_time
from .errors import HandlerError, raise_outcome, raise_result_error, request_deadline
from .groups import METADATA_GROUP

Handler = Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]]

# A write waits this long at most for the cluster's log format to reach the one
# it needs (DYNAMIC_USERS, or USER_KEY_FORMATS' format for a key that came later:
# an expiry, a fetch quota, a deny rule) when this node's build reads it: a
# cluster just started (or just upgraded) raises its format within a round of
# its controller's check (server/log_format.py), and `raftlog cluster up;
# raftlog user create` should not fail in that moment.
FORMAT_WAIT_S = 5.0


def user_json(user: User, source: str) -> dict[str, Any]:
    """A user as ``user_list`` shows it: grants, deny rules and quotas, never a
    token or its hash. Every pattern list is there, empty or not, so that a reader
    need not know which keys a user may lack."""
    out: dict[str, Any] = {
        "name": user.name,
        "source": source,
        "token": user.token is not None or user.token_sha256 is not None,
        "cluster": user.cluster,
    }
    for key in (*PATTERN_KEYS, "tls_names"):
        out[key] = list(getattr(user, key))
    for key in QUOTA_KEYS:
        if getattr(user, key) is not None:
            out[key] = getattr(user, key)
    if user.expires_at_ms is not None:
        out["expires_at_ms"] = user.expires_at_ms
        out["expires_at"] = user.expiry_text()
        # By the answering node's clock, which the hello and every request check.
        out["expired"] = user.expired(wall_time() * 1000)
    return out


class UserOps:
    """The user_* handlers of one node (server/handlers.py routes to them)."""

    def __init__(self, handlers: Any) -> None:
        self.h = handlers
        self.driver = handlers.driver
        self.cfg = handlers.cfg

    def handlers(self) -> dict[str, Handler]:
        return {
            "user_create": self.user_create,
            "user_alter": self.user_alter,
            "user_delete": self.user_delete,
            "user_list": self.user_list,
        }

    async def user_create(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        name, record = fields["name"], dict(fields["user"])
        await self._check_writable(name, fields, record)
        self._check_record(name, record, self.driver.metadata.users)
        expires_at_ms = record.get("expires_at_ms")
        if isinstance(expires_at_ms, int) and expires_at_ms <= wall_time() * 1000:
            # An alter may (to suspend a user at once); a new user born expired
            # is a mistake in the caller's arithmetic.
            raise HandlerError(
                ErrorCode.INVALID_REQUEST,
                f"user {name!r}: expires_at_ms {expires_at_ms} is not in the future",
            )
        return await self._propose(SetUser(name, record, True), fields)

    async def user_alter(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """Change the keys given; a None value removes one (a quota), and without
        ``token_sha256`` the token stays."""
        name, changes = fields["name"], dict(fields["user"])
        await self._check_writable(name, fields, changes)
        if not changes:
            raise HandlerError(ErrorCode.INVALID_REQUEST, "user_alter: nothing to change")
        unknown = sorted(k for k in changes if k not in RECORD_KEYS)
        if unknown:
            raise HandlerError(
                ErrorCode.INVALID_REQUEST,
                f"unknown user keys {unknown} (known: {', '.join(RECORD_KEYS)})",
            )
        users = self.driver.metadata.users
        if name in users:  # else the state machine answers UNKNOWN_USER
            self._check_record(name, merged_record(users[name], changes), users)
        return await self._propose(SetUser(name, changes, False), fields)

    async def user_delete(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        await self._check_writable(fields["name"], fields)
        return await self._propose(DeleteUser(fields["name"]), fields)

    async def user_list(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """The metadata log's users (linearizable) and this node's file users.
        A log user whose name the file also has is ``shadowed``: the file's wins."""
        await self.h._meta_sync()
        file_names = self.cfg.auth.user_names
        users = [user_json(u, "file") for u in self.cfg.auth.users]
        for name, record in sorted(self.driver.metadata.users.items()):
            shown = user_json(User.from_record(name, record), "metadata")
            if name in file_names:
                shown["shadowed"] = True
            users.append(shown)
        return {
            "users": sorted(users, key=lambda u: (u["name"], u["source"])),
            "authenticates_clients": self.cfg.auth.authenticates_clients,
        }

    # ------------------------------------------------------------ checks

    async def _check_writable(
        self, name: str, fields: dict[str, Any], changes: dict[str, Any] | None = None
    ) -> None:
        """What every write needs: the metadata leader, a cluster that
        authenticates clients and reads the formats the write needs (users, and
        any key ``changes`` sets that came later), and a name the file does not
        hold."""
        self.h._require_meta_leader()
        needed = max(
            [DYNAMIC_USERS]
            + [USER_KEY_FORMATS.get(k, 0) for k, v in (changes or {}).items() if v is not None]
        )
        wait_until = min(request_deadline(fields), trio.current_time() + FORMAT_WAIT_S)
        while self.driver.metadata.log_format < needed <= self.cfg.log_format:
            if not await self.driver.wait_changed(wait_until):
                break
        auth = self.cfg.auth
        if not auth.authenticates_clients or auth.peer_token is None:
            raise HandlerError(
                ErrorCode.INVALID_REQUEST,
                "this cluster does not authenticate clients: users kept in the metadata "
                "log need cluster.toml's [auth] with a peer_token and a credential for "
                "the operator (client_tokens or an [[auth.user]] with cluster = true)",
            )
        log_format = self.driver.metadata.log_format
        if log_format < DYNAMIC_USERS:
            raise HandlerError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"users in the metadata log need log format {DYNAMIC_USERS}, and this "
                f"cluster is at {log_format}: every node must run a raftlog version that "
                f"reads format {DYNAMIC_USERS} first (raftlog cluster status)",
            )
        problem = user_keys_format_problem(changes or {}, log_format)
        if problem is not None:
            raise HandlerError(ErrorCode.UNSUPPORTED_VERSION, f"user {name!r}: {problem}")
        problem = user_name_problem(name)
        if problem is not None:
            raise HandlerError(ErrorCode.INVALID_REQUEST, problem)
        if name in auth.user_names:
            raise HandlerError(
                ErrorCode.INVALID_REQUEST,
                f"user {name!r} is an [[auth.user]] of cluster.toml: change it in the file "
                "(and raftlog cluster reload)",
            )

    def _check_record(
        self, name: str, record: dict[str, Any], users: dict[str, dict[str, Any]]
    ) -> None:
        problem = user_record_problem(record) or clashing_user(users, name, record)
        if problem is None:
            problem = self._file_clash(record)
        if problem is not None:
            raise HandlerError(ErrorCode.INVALID_REQUEST, f"user {name!r}: {problem}")

    def _file_clash(self, record: dict[str, Any]) -> str | None:
        """A token or certificate name that already names a principal of the file."""
        auth = self.cfg.auth
        digest = record.get("token_sha256")
        if digest is not None:
            tokens = [u.token for u in auth.users if u.token is not None]
            tokens += [*auth.client_tokens, *([auth.peer_token] if auth.peer_token else [])]
            if any(token_sha256(t) == digest for t in tokens):
                return "that token is already in use in cluster.toml's [auth]"
        for tls_name in record.get("tls_names", ()):
            owner = auth.user_of_cert([tls_name.lower()])
            if owner is not None:
                return f"tls_names {tls_name!r} already names [[auth.user]] {owner.name!r}"
        return None

    async def _propose(self, command: SetUser | DeleteUser, fields: dict[str, Any]) -> dict:
        deadline = request_deadline(fields)
        result = raise_outcome(await self.driver.propose(METADATA_GROUP, command, deadline))
        raise_result_error(result)
        reply: dict[str, Any] = {"metadata_index": result.index}
        record = self.driver.metadata.users.get(command.name)
        if record is not None:  # else deleted
            reply["user"] = user_json(User.from_record(command.name, record), "metadata")
        return reply
