"""The audit log (server/audit.py): a line per answered request that changes the
cluster or its tenants, with who, what and the outcome; refusals included,
the data path left out. On one in-process node over real sockets on 127.0.0.1,
reading the ``raftlog.audit`` logger through a handler of the test's own."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
from raftlog.client.errors import ForbiddenError
from raftlog.client.protocol import REQUESTS
from raftlog.client.users import generate_token, token_sha256
from raftlog.server import acl
from raftlog.server.acl import User
from raftlog.server.audit import AUDITED_OPS, MAX_VALUE_CHARS, audit, is_audited
from raftlog.server.config import AuthConfig

from .cluster_harness import make_config
from .test_acl_cluster import client
from .test_tls_cluster import DEADLINE_S, FAST, running

OPS = User("ops", "tok-ops", read=("*",), write=("*",), admin=("*",), groups=("*",), cluster=True)
VIEWER = User("viewer", "tok-viewer", read=("*",), write=("*",))


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, op: str) -> list[logging.LogRecord]:
        """``op``'s lines at INFO and above (a NOT_LEADER redirect is DEBUG)."""
        return [
            r for r in self.records
            if f" op={op} " in r.getMessage() and r.levelno >= logging.INFO
        ]  # fmt: skip


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger("raftlog.audit")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def context(user: User | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        user=user, client_id="app", peer_address="127.0.0.1:5000", connection_id=7
    )


def test_a_line_shows_the_target_and_only_the_keys_of_maps(lines: Lines) -> None:
    digest = token_sha256("secret-token")
    fields = {
        "name": "billing", "user": {"token_sha256": digest, "read": ["b.*"]}, "timeout_ms": 9,
    }  # fmt: skip
    audit(context(OPS), "user_create", fields, "OK", None, 0.0042)
    (record,) = lines.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "event=audit op=user_create outcome=OK user='ops' client_id='app' "
        "remote=127.0.0.1:5000 conn=7 name='billing' user=['read', 'token_sha256'] ms=4.2"
    )
    assert digest not in record.getMessage()


def test_a_client_cannot_forge_or_flood_a_line(lines: Lines) -> None:
    forged = "t\nevent=audit op=delete_topic outcome=OK user='ops'"
    audit(context(None), "create_topic", {"topic": forged, "partitions": 1}, "OK", None, 0)
    audit(
        context(None), "create_topic", {"topic": "x" * 10_000}, "INVALID_REQUEST", "y" * 10_000, 0
    )
    first, second = (r.getMessage() for r in lines.records)
    assert "\n" not in first and "user=- " in first
    assert len(second) < 3 * MAX_VALUE_CHARS + 200 and second.count("...") == 2


def test_levels_follow_what_the_outcome_means(lines: Lines) -> None:
    for outcome in ("OK", "NOT_LEADER", "FORBIDDEN", "UNAUTHORIZED", "TIMEOUT"):
        audit(context(VIEWER), "delete_topic", {"topic": "t"}, outcome, None, 0)
    levels = [r.levelno for r in lines.records]
    assert levels == [logging.INFO, logging.DEBUG, logging.WARNING, logging.WARNING, logging.INFO]


def test_every_audited_op_is_a_request_and_every_cluster_changing_one_is_audited() -> None:
    assert AUDITED_OPS.issubset(REQUESTS)
    # What only an operator may do changes the cluster, unless it only reads.
    read_only = {"cluster_status", "member_list", "user_list"}
    operator_ops = {op for op, rule in acl.RULES.items() if rule is acl.RULES["member_add"]}
    assert operator_ops - read_only <= AUDITED_OPS
    for op in ("create_topic", "alter_topic", "delete_topic", "group_delete", "delete_offset"):
        assert op in AUDITED_OPS
    for op in ("produce", "fetch", "commit_offset", "metadata", "group_heartbeat"):
        assert op not in AUDITED_OPS
    assert is_audited("commit_offset", {"reset": True})
    assert not is_audited("commit_offset", {}) and not is_audited("produce", {"reset": True})


async def test_a_node_audits_changes_and_refusals_but_not_the_data_path(
    tmp_path: Path, lines: Lines
) -> None:
    cfg = make_config(tmp_path, 1, **FAST, auth=AuthConfig(peer_token="p", users=(OPS, VIEWER)))
    token = generate_token()
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, OPS.token, client_id="operator") as ops:
                await ops.create_topic("orders", partitions=1, replicas=1)
                await ops.produce("orders", b"r", partition=0)
                await ops.fetch("orders", 0, 0, max_wait=0)
                await ops.create_user("billing", token=token, read=["orders"])
            async with client(cfg, VIEWER.token, client_id="intruder") as viewer:
                with pytest.raises(ForbiddenError):
                    await viewer.delete_topic("orders")
    (created,) = lines.of("create_topic")
    assert created.levelno == logging.INFO
    text = created.getMessage()
    assert "outcome=OK user='ops' client_id='operator'" in text
    assert "topic='orders' partitions=1 replicas=1" in text
    (user,) = lines.of("user_create")
    assert "name='billing' user=['admin', 'cluster', 'groups', 'read'," in user.getMessage()
    assert token_sha256(token) not in user.getMessage()
    (refused,) = lines.of("delete_topic")
    assert refused.levelno == logging.WARNING
    assert "outcome=FORBIDDEN user='viewer' client_id='intruder'" in refused.getMessage()
    assert "reason=\"user 'viewer' may not administer topic 'orders'" in refused.getMessage()
    assert not lines.of("produce") and not lines.of("fetch")


async def test_an_offset_reset_is_audited_and_a_consumers_commit_is_not(
    tmp_path: Path, lines: Lines
) -> None:
    cfg = make_config(tmp_path, 1, **FAST, auth=AuthConfig(peer_token="p", users=(OPS,)))
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, OPS.token, client_id="operator") as ops:
                await ops.create_topic("orders", partitions=1, replicas=1)
                await ops.produce("orders", b"r", partition=0)
                await ops.commit_offset("billing", "orders", 0, 1)
                await ops.commit_offset("billing", "orders", 0, 0, reset=True)
                assert await ops.committed("billing", "orders", 0) == 0
    (reset,) = lines.of("commit_offset")
    assert reset.levelno == logging.INFO
    assert "outcome=OK user='ops' client_id='operator'" in reset.getMessage()
    assert "topic='orders' partition=0 group='billing' offset=0 reset=True" in reset.getMessage()
