"""The users kept in the metadata log, as this node's listener authenticates them.

``raftlog user create|alter|delete`` changes users through the metadata group
(log/users.py); the driver hands every applied change here (``follow``), and
the listener asks here, after cluster.toml's ``[auth]``, who a hello's token
or certificate names (server/listener.py ``_client_user``).

What a change does to connections already open: the same as an ``[auth]``
reload (server/auth_reload.py). ``generation`` moves, so each open client
connection checks its credential again before its next request: a deleted
user's connections are refused UNAUTHORIZED from then on (and closed by the
sweep, server/connection_sweeper.py), an altered user's serve on with the new
grants and quotas. A rotated token cuts off the old one at once.

cluster.toml's users come first. Only a cluster that authenticates clients
through its file (``client_tokens`` or ``[[auth.user]]``) uses the log's users
at all: the operator who creates the first tenant needs a credential too, and
a cluster without one is open to everyone anyway. A name that the file also
has (a file changed after the user was created) is the file's user on this
node: ``user_list`` shows the log's one as shadowed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from .acl import User
from .metrics import LabelValues, Registry

log = logging.getLogger(__name__)


class MetadataUsers:
    """The metadata state's users (``MetadataStateMachine.users``) as ``User``s."""

    def __init__(self) -> None:
        self.users: tuple[User, ...] = ()
        # Moves on every change: connections compare it (with [auth]'s own).
        self.generation = 0
        self._records: dict[str, dict[str, Any]] | None = None
        self._by_digest: dict[str, User] = {}
        self._by_tls_name: dict[str, User] = {}

    def follow(self, records: dict[str, dict[str, Any]]) -> bool:
        """Take the metadata state's users; True if they changed. The state
        machine replaces its dict on every change, so an unchanged dict is the
        same object and costs one comparison (this runs after every metadata
        apply)."""
        if records is self._records:
            return False
        self._records = records
        users = tuple(User.from_record(name, r) for name, r in sorted(records.items()))
        if users == self.users:
            return False
        self.users = users
        self._by_digest = {u.token_sha256: u for u in users if u.token_sha256 is not None}
        self._by_tls_name = {n.lower(): u for u in users for n in u.tls_names}
        self.generation += 1
        log.info("event=metadata_users_changed users=%d", len(users))
        return True

    def user_of_token(self, token: bytes, file_names: set[str]) -> User | None:
        """The user whose token this is, unless cluster.toml has a user of its name."""
        # A lookup by digest tells a timing observer nothing about the token.
        found = self._by_digest.get(hashlib.sha256(token).hexdigest())
        if found is None or found.name in file_names:
            return None
        return found

    def user_of_cert(self, identities: list[str], file_names: set[str]) -> User | None:
        """The user whose ``tls_names`` holds one of a certificate's names, in
        their order (server/tls.py ``cert_identities``), unless the file has its name."""
        for name in identities:
            user = self._by_tls_name.get(name.lower())
            if user is not None and user.name not in file_names:
                return user
        return None


def register_user_expiry(
    registry: Registry, file_users: Callable[[], Iterable[User]], log_users: MetadataUsers
) -> None:
    """``raftlog_user_expiry_timestamp_seconds``: when each user that expires does
    (both sources), read at each scrape, so an operator can alert before a
    tenant is locked out: ``raftlog_user_expiry_timestamp_seconds - time() < 7 * 86400``
    (the shape of blackbox_exporter's ``probe_ssl_earliest_cert_expiry``)."""

    def collect() -> list[tuple[LabelValues, float]]:
        file_list = list(file_users())
        file_names = {u.name for u in file_list}
        sources = [("file", u) for u in file_list]
        sources += [("metadata", u) for u in log_users.users if u.name not in file_names]
        return [
            ((user.name, source), user.expires_at_ms / 1000)
            for source, user in sources
            if user.expires_at_ms is not None
        ]

    registry.collected(
        "raftlog_user_expiry_timestamp_seconds",
        "When each user that expires does (seconds since the epoch), by source: file "
        "(cluster.toml) or metadata (raftlog user).",
        ("user", "source"),
        collect,
    )
