"""Users and what they may do: the authorization half of ``[auth]``.

A cluster.toml ``[[auth.user]]`` names one tenant: the token it presents in
its hello, the topics it may read, write and administer, the consumer groups
it may use, whether it may operate the cluster, and optionally its own quotas.
Like NATS's per-user ``publish`` / ``subscribe`` lists and Kafka's prefixed
ACLs, in one table per user::

    [[auth.user]]
    name = "billing"
    token = "tok-billing"
    read = ["billing.*", "events"]   # fetch, list_offsets, consume with a group
    write = ["billing.*"]            # produce
    admin = ["billing.*"]            # topic create / alter / delete
    groups = ["billing-*"]           # consumer group names (commit, join, describe)
    cluster = false                  # cluster status, members, leadership, reassignment
    requests_per_sec = 500           # optional: this user's quotas, instead of [quotas]
    produce_bytes_per_sec = 1048576
    fetch_bytes_per_sec = 4194304    # records fetched (consumer_byte_rate)
    max_connections = 100            # optional: its client connections per node

A pattern is a name, or a prefix followed by ``*`` (``"*"`` alone matches
everything). Everything not granted is refused (deny by default): a user with
no ``groups`` cannot use consumer groups, one without ``cluster`` cannot run
``raftlog cluster status``.

Deny rules take away from the grants, as Kafka's DENY ACLs do ("DENY takes
precedence over ALLOW"): ``deny_read``, ``deny_write``, ``deny_admin`` and
``deny_groups`` hold patterns of the same form, and a name one of them matches
is refused whatever the matching grant list says::

    read = ["*"]
    deny_read = ["billing.*"]        # reads every topic but billing.*

A grant is what a user may do; a deny is a fence that a later, broader grant
(a ``*`` added by an operator) cannot cross. The refusal says which deny
pattern matched, so an operator reading it knows which list to look at.

Refusals are the ``FORBIDDEN`` error code: the connection is authenticated and
stays open, only that request is refused, and nothing happens. ``UNAUTHORIZED``
stays what it was, a hello whose token (or certificate) is not accepted.

A user sees only the topics it has some permission on (granted and not
denied): ``metadata``, ``list_topics`` and ``group_list`` leave out the others,
and a request that names an invisible topic is refused rather than answered
UNKNOWN_TOPIC. A topic a user may read but not write is visible; one whose
every grant is denied is not, so a deny hides a topic's name as well as its
records.
``client_tokens`` (the older, flat list) and a cluster without ``[auth]``
have no user: such a connection may do everything, as before.

Every request type of the wire protocol must have a rule here
(``RULES``); one without a rule is refused, and a test checks the table
covers ``client.protocol.REQUESTS``, so a new request cannot ship unguarded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# Re-exported: config.py checks [[auth.user]] patterns with them (the grant and
# deny lists), as the metadata state machine checks those of users kept in the log.
from raftlog.log.users import DENY_KEYS as DENY_KEYS
from raftlog.log.users import PATTERN_KEYS as PATTERN_KEYS
from raftlog.log.users import pattern_problem as pattern_problem


class Permission(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


def matches(patterns: Iterable[str], name: str) -> bool:
    return first_match(patterns, name) is not None


def first_match(patterns: Iterable[str], name: str) -> str | None:
    """The first of ``patterns`` that matches ``name`` (what a refusal names), or None."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if name.startswith(pattern[:-1]):
                return pattern
        elif name == pattern:
            return pattern
    return None


def covers(denies: Iterable[str], grant: str) -> bool:
    """Whether every name ``grant`` matches is matched by one of ``denies``: a deny
    prefix that begins the grant's prefix, or the grant's own name. Conservative:
    several longer deny prefixes that together cover a grant do not count."""
    for deny in denies:
        if deny.endswith("*"):
            if grant.startswith(deny[:-1]):
                return True
        elif deny == grant:
            return True
    return False


@dataclass(frozen=True, slots=True)
class User:
    """One ``[[auth.user]]``: a tenant, its token, its grants and its quotas."""

    name: str
    # The secret a client sends in its hello; None: this user is known only by
    # its TLS client certificate (tls_names).
    token: str | None
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    # Deny rules: names these match are refused whatever the grants above say.
    deny_read: tuple[str, ...] = ()
    deny_write: tuple[str, ...] = ()
    deny_admin: tuple[str, ...] = ()
    deny_groups: tuple[str, ...] = ()
    cluster: bool = False
    # None: the cluster's [quotas] value applies to this user.
    requests_per_sec: float | None = None
    produce_bytes_per_sec: float | None = None
    # Bytes of records fetched a second (Kafka's consumer_byte_rate).
    fetch_bytes_per_sec: float | None = None
    # Client connections this user may hold open on one node (None: only the
    # node's [limits] max_client_connections applies).
    max_connections: int | None = None
    # With [tls] client_auth: a client whose verified certificate carries one of
    # these names (a DNS or email SAN, or the subject CN) and sends no token is
    # this user, as NATS's verify_and_map and Kafka's SSL principals do.
    tls_names: tuple[str, ...] = ()
    # A user kept in the metadata log (log/users.py, server/metadata_users.py)
    # is known by its token's SHA-256 (hex) instead of the token itself.
    token_sha256: str | None = None
    # From this wall-clock instant (ms since the epoch) the user's token and
    # certificate names are refused, at hellos and on open connections
    # (server/listener.py). None: never.
    expires_at_ms: int | None = None

    @classmethod
    def from_record(cls, name: str, record: dict[str, Any]) -> User:
        """A user kept in the metadata log; ``record`` passed
        ``log.users.user_record_problem`` when it was applied."""
        return cls(
            name=name,
            token=None,
            read=tuple(record.get("read", ())),
            write=tuple(record.get("write", ())),
            admin=tuple(record.get("admin", ())),
            groups=tuple(record.get("groups", ())),
            deny_read=tuple(record.get("deny_read", ())),
            deny_write=tuple(record.get("deny_write", ())),
            deny_admin=tuple(record.get("deny_admin", ())),
            deny_groups=tuple(record.get("deny_groups", ())),
            cluster=record.get("cluster", False),
            requests_per_sec=record.get("requests_per_sec"),
            produce_bytes_per_sec=record.get("produce_bytes_per_sec"),
            fetch_bytes_per_sec=record.get("fetch_bytes_per_sec"),
            max_connections=record.get("max_connections"),
            tls_names=tuple(record.get("tls_names", ())),
            token_sha256=record.get("token_sha256"),
            expires_at_ms=record.get("expires_at_ms"),
        )

    def expired(self, now_ms: float) -> bool:
        return self.expires_at_ms is not None and now_ms >= self.expires_at_ms

    def expiry_text(self) -> str:
        """When the user expires, in UTC ISO 8601 (for messages and listings)."""
        if self.expires_at_ms is None:
            return "never"
        when = datetime.fromtimestamp(self.expires_at_ms / 1000, tz=UTC)
        spec = "seconds" if self.expires_at_ms % 1000 == 0 else "milliseconds"
        return when.isoformat(timespec=spec).replace("+00:00", "Z")

    def may(self, permission: Permission, topic: str) -> bool:
        """Granted and not denied."""
        return self.denial(permission, topic) is None and matches(self.patterns(permission), topic)

    # A Permission's value names its grant field, and "deny_" + it the deny field.

    def patterns(self, permission: Permission) -> tuple[str, ...]:
        return getattr(self, permission.value)  # type: ignore[no-any-return]

    def deny_patterns(self, permission: Permission) -> tuple[str, ...]:
        return getattr(self, f"deny_{permission.value}")  # type: ignore[no-any-return]

    def denial(self, permission: Permission, topic: str) -> str | None:
        """The deny pattern that takes ``permission`` on ``topic`` away, or None."""
        return first_match(self.deny_patterns(permission), topic)

    def sees_topic(self, topic: str) -> bool:
        """Any permission on ``topic``, granted and not denied, makes it visible
        (metadata, describe)."""
        return any(self.may(p, topic) for p in Permission)

    def group_denial(self, group: str) -> str | None:
        return first_match(self.deny_groups, group)

    def sees_group(self, group: str) -> bool:
        return self.group_denial(group) is None and matches(self.groups, group)


class Denied(Exception):
    """A request the user may not make; the message says who, what and which resource."""


# ---------------------------------------------------------------- rules

Rule = Callable[[User, dict[str, Any]], None]


def _topic(permission: Permission) -> Rule:
    def rule(user: User, fields: dict[str, Any]) -> None:
        _need_topic(user, permission, fields["topic"])

    return rule


def _topic_and_group(user: User, fields: dict[str, Any]) -> None:
    _need_topic(user, Permission.READ, fields["topic"])
    _need_group(user, fields["group"])


def _group(user: User, fields: dict[str, Any]) -> None:
    _need_group(user, fields["group"])


def _visible_topic(user: User, fields: dict[str, Any]) -> None:
    _need_visible(user, fields["topic"])


def _named_topics(user: User, fields: dict[str, Any]) -> None:
    """``metadata``: every topic it names must be visible; unnamed: filtered later."""
    for topic in fields.get("topics") or ():
        if isinstance(topic, str):
            _need_visible(user, topic)


def _any_write(user: User, fields: dict[str, Any]) -> None:
    if not user.write:
        raise Denied(f"user {user.name!r} may not produce (no write permission)")
    # Every grant fenced off by a deny: no produce could pass, so no producer id
    # either (each produce is checked against its topic all the same).
    if all(covers(user.deny_write, grant) for grant in user.write):
        raise Denied(
            f"user {user.name!r} may not produce (denied by a deny rule: deny_write "
            f"patterns {list(user.deny_write)} leave no write grant)"
        )


def _cluster(user: User, fields: dict[str, Any]) -> None:
    if not user.cluster:
        raise Denied(f"user {user.name!r} may not operate the cluster (cluster = false)")


def _everyone(user: User, fields: dict[str, Any]) -> None:
    """Allowed; what the reply lists is filtered to the user (``visible``)."""


def _need_visible(user: User, topic: str) -> None:
    if user.sees_topic(topic):
        return
    # Invisible: each grant that matches is denied, or none matches. Name the
    # deny patterns, if any, so that a refusal by a deny is told from a missing grant.
    denials = [
        f"deny_{p.value} pattern {user.denial(p, topic)!r}"
        for p in Permission
        if user.denial(p, topic) is not None and matches(user.patterns(p), topic)
    ]
    if denials:
        raise Denied(
            f"user {user.name!r} may not see topic {topic!r} "
            f"(denied by a deny rule: {', '.join(denials)})"
        )
    raise Denied(f"user {user.name!r} has no permission on topic {topic!r}")


def _need_topic(user: User, permission: Permission, topic: str) -> None:
    # The deny first: it decides whatever the grants say, and is the more useful
    # thing to tell (a grant added later would not help).
    denied_by = user.denial(permission, topic)
    if denied_by is not None:
        raise Denied(
            f"user {user.name!r} may not {_VERB[permission]} topic {topic!r} "
            f"(denied by a deny rule: deny_{permission.value} pattern {denied_by!r})"
        )
    if not user.may(permission, topic):
        raise Denied(
            f"user {user.name!r} may not {_VERB[permission]} topic {topic!r} "
            f"(no {permission.value} permission on it)"
        )


def _need_group(user: User, group: str) -> None:
    denied_by = user.group_denial(group)
    if denied_by is not None:
        raise Denied(
            f"user {user.name!r} may not use consumer group {group!r} "
            f"(denied by a deny rule: deny_groups pattern {denied_by!r})"
        )
    if not user.sees_group(group):
        raise Denied(f"user {user.name!r} may not use consumer group {group!r}")


_VERB = {Permission.READ: "read", Permission.WRITE: "produce to", Permission.ADMIN: "administer"}

# The rule of every request type (client/protocol.py REQUESTS).
RULES: dict[str, Rule] = {
    "metadata": _named_topics,
    "list_topics": _everyone,
    "describe_topic": _visible_topic,
    "create_topic": _topic(Permission.ADMIN),
    "alter_topic": _topic(Permission.ADMIN),
    "delete_topic": _topic(Permission.ADMIN),
    # A producer id is cluster-wide; what it may be used for is checked per produce.
    "init_producer": _any_write,
    "produce": _topic(Permission.WRITE),
    "fetch": _topic(Permission.READ),
    "list_offsets": _topic(Permission.READ),
    "commit_offset": _topic_and_group,
    "fetch_committed": _topic_and_group,
    "delete_offset": _topic_and_group,
    "group_join": _topic_and_group,
    "group_heartbeat": _group,
    "group_leave": _group,
    "group_describe": _group,
    "group_list": _everyone,
    "group_delete": _group,
    "cluster_status": _cluster,
    "config_reload": _cluster,
    "member_list": _cluster,
    "member_add": _cluster,
    "member_remove": _cluster,
    "leader_transfer": _cluster,
    "metadata_leader_transfer": _cluster,
    "partition_reassign": _cluster,
    # Users kept in the metadata log: like Kafka's ALTER on the cluster resource.
    "user_create": _cluster,
    "user_alter": _cluster,
    "user_delete": _cluster,
    "user_list": _cluster,
    # Only another node's snapshot transfer may use it; the handler checks that
    # (server/snapshot_transfer.py), whoever the user is.
    "replica_fetch": _everyone,
}


def check(user: User | None, op: str, fields: dict[str, Any]) -> str | None:
    """None if ``user`` may make this (validated) request, else why not.

    ``user`` None: no users are configured for this connection (no [auth], a
    ``client_tokens`` token, or a node's snapshot transfer): everything is allowed.
    """
    if user is None:
        return None
    rule = RULES.get(op)
    if rule is None:
        return f"request type {op!r} has no authorization rule"
    try:
        rule(user, fields)
    except Denied as exc:
        return str(exc)
    return None


def visible_topics(user: User | None, topics: Iterable[str]) -> list[str]:
    """The topics of ``topics`` that ``user`` may see (all of them without a user)."""
    if user is None:
        return list(topics)
    return [t for t in topics if user.sees_topic(t)]


def visible_group(user: User | None, group: str) -> bool:
    return user is None or user.sees_group(group)
