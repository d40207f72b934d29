"""The audit log: who changed the cluster, what, and with what outcome.

A multi-tenant cluster must answer "who deleted this topic?" and "who gave
billing write on payments?" after the fact. Every request that changes the
cluster's shape or its tenants (``AUDITED_OPS``: topics, users, membership,
leadership, reassignments, reloads, group and offset deletions), and every
offset commit marked as an operator's reset (``is_audited``), is logged once
it is answered, by the node that answered it, as one line of the logger
``raftlog.audit``::

    event=audit op=delete_topic outcome=OK user='ops' client_id='raftlog-cli'
        remote=127.0.0.1:51012 conn=17 topic='billing.orders' ms=4.2

Refusals are logged too, and those a tenant could be probing with
(``FORBIDDEN``, ``UNAUTHORIZED``) at WARNING. A ``NOT_LEADER`` answer is only
a redirect (the client retries at the leader, whose line has the outcome), so
it is logged at DEBUG. Like Kafka's authorizer log (``kafka.authorizer.logger``)
and etcd's, it is a logger of its own, which an embedding application can
route to its own file; the nodes write it with the rest of their log
(``grep event=audit``).

What a line carries of the request: its target (topic, partition, group,
node, user name, ...) and, for a map such as a user's record or a topic's
config, only its keys: a user's grants are not secret, but its token's
SHA-256 is not for logs either, and keys say what changed. Strings are
``repr``-quoted and cut at ``MAX_VALUE_CHARS``, so a client cannot forge a
line or flood one.

Read-only requests (``cluster_status``, ``user_list``, ``metadata``) and the
data path (produce, fetch, a consumer's offset commits) are not audited: the request
metrics count them (``raftlog_requests_total{op,code}``), and
``raftlog_forbidden_total{user,op}`` counts refusals of every op.
"""

from __future__ import annotations

import logging
from typing import Any

from raftlog.client.errors import ErrorCode

audit_log = logging.getLogger("raftlog.audit")

AUDITED_OPS = frozenset({
    "create_topic", "alter_topic", "delete_topic",
    "group_delete", "delete_offset",
    "config_reload",
    "member_add", "member_remove",
    "leader_transfer", "metadata_leader_transfer", "partition_reassign",
    "user_create", "user_alter", "user_delete",
})  # fmt: skip

# The request fields a line shows, in this order (the others are timeouts and
# the like). A map shows its keys only (see the module docstring).
TARGET_FIELDS = (
    "topic", "partition", "partitions", "replicas", "group", "node", "address", "to",
    "name", "phase", "config", "user", "offset", "reset",
)  # fmt: skip


def is_audited(op: str, fields: dict[str, Any]) -> bool:
    """Whether ``op``'s answer gets a line: an ``AUDITED_OPS`` op, or an offset commit
    marked as an operator's reset (``raftlog group reset-offsets``). Commits are the
    data path otherwise; a reset moves a whole group, as deleting its offsets does."""
    return op in AUDITED_OPS or (op == "commit_offset" and fields.get("reset") is True)
MAX_VALUE_CHARS = 200
# Outcomes a tenant probing for what it may do would produce.
SECURITY_OUTCOMES = frozenset({ErrorCode.FORBIDDEN.value, ErrorCode.UNAUTHORIZED.value})


def audit(
    ctx: Any, op: str, fields: dict[str, Any], outcome: str, message: str | None, seconds: float
) -> None:
    """Log one answered request of ``AUDITED_OPS`` (``ctx``: the connection's
    server.listener.RequestContext; ``outcome``: "OK" or an error code)."""
    if outcome == ErrorCode.NOT_LEADER.value:
        level = logging.DEBUG
    elif outcome in SECURITY_OUTCOMES:
        level = logging.WARNING
    else:
        level = logging.INFO
    if not audit_log.isEnabledFor(level):
        return
    user = ctx.user.name if ctx.user is not None else None
    parts = [
        f"event=audit op={op} outcome={outcome} user={_show(user) if user else '-'}",
        f"client_id={_show(ctx.client_id)} remote={ctx.peer_address} conn={ctx.connection_id}",
        *(f"{key}={_show(fields[key])}" for key in TARGET_FIELDS if key in fields),
        f"ms={seconds * 1000:.1f}",
    ]
    if message:
        parts.append(f"reason={_show(message)}")
    audit_log.log(level, " ".join(parts))


def _show(value: Any) -> str:
    """A field for one log line: a map by its keys, anything else by its repr, cut short."""
    if isinstance(value, dict):
        value = sorted(str(k) for k in value)
    text = repr(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 3] + "..."
    return text
