"""alter_topic through the handlers of an in-process cluster: more partitions
(each gets a leader and takes produces), config changes, bad input, and a
consumer group spreading over the new partitions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from raftlog.client.errors import ErrorCode

from .inproc_cluster import InProcCluster, running_with_topic
from .test_group_ops import heartbeat, join_stable


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcCluster]:
    async with running_with_topic(tmp_path, partitions=2) as c:
        yield c


async def test_new_partitions_get_leaders_and_take_produces(cluster: InProcCluster) -> None:
    meta_leader = await cluster.wait_leader(0)
    reply = await cluster.call(meta_leader, "alter_topic", topic="t", partitions=4)
    parts = reply["topic"]["partitions"]
    assert [p["partition"] for p in parts] == [0, 1, 2, 3]
    for p in parts[2:]:
        leader = await cluster.wait_leader(p["group"])
        assert leader in p["replicas"]
        produced = await cluster.produce(leader, "t", [b"on a new partition"], p["partition"])
        assert produced["base_offset"] == 0
    described = await cluster.call(meta_leader, "describe_topic", topic="t")
    assert len(described["topic"]["partitions"]) == 4
    # The same target again is a no-op (the client may retry an alter).
    again = await cluster.call(meta_leader, "alter_topic", topic="t", partitions=4)
    assert [p["group"] for p in again["topic"]["partitions"]] == [p["group"] for p in parts]


async def test_config_changes_and_bad_input(cluster: InProcCluster) -> None:
    meta_leader = await cluster.wait_leader(0)
    reply = await cluster.call(
        meta_leader, "alter_topic", topic="t", config={"retention_ms": 60_000}
    )
    assert reply["topic"]["config"] == {"retention_ms": 60_000}
    reply = await cluster.call(meta_leader, "alter_topic", topic="t", config={"retention_ms": None})
    assert reply["topic"]["config"] == {}
    bad = [
        ({"topic": "t", "partitions": 1}, ErrorCode.INVALID_REQUEST, "never shrink"),
        ({"topic": "t"}, ErrorCode.INVALID_REQUEST, "no partitions, no config"),
        ({"topic": "t", "config": {"retentionms": 5}}, ErrorCode.INVALID_REQUEST, "unknown"),
        ({"topic": "nope", "partitions": 3}, ErrorCode.UNKNOWN_TOPIC, "nope"),
    ]
    for fields, code, words in bad:
        err = await cluster.call_error(meta_leader, "alter_topic", **fields)
        assert err.code is code and words in err.message, (fields, err)
    # create_topic checks its config the same way (before, a typo was ignored).
    err = await cluster.call_error(
        meta_leader, "create_topic", topic="u", partitions=1, replicas=3,
        config={"retention_ms": -1},
    )  # fmt: skip
    assert err.code is ErrorCode.INVALID_REQUEST and "positive" in err.message
    follower = next(n for n in cluster.node_ids if n != meta_leader)
    await cluster.wait_for(lambda: cluster.driver(follower).groups[0].leader == meta_leader)
    err = await cluster.call_error(follower, "alter_topic", topic="t", partitions=3)
    assert err.code is ErrorCode.NOT_LEADER


async def _join_both(cluster: InProcCluster, at: str) -> dict[str, dict]:
    """Members a and b join together; their replies once the group is stable."""
    replies: dict[str, dict] = {}

    async def join_as(member: str) -> None:
        replies[member] = await join_stable(cluster, at, member)

    async with trio.open_nursery() as n:
        for member in ("a", "b"):
            n.start_soon(join_as, member)
    return replies


async def test_a_stable_group_rebalances_over_the_new_partitions(cluster: InProcCluster) -> None:
    meta_leader = await cluster.wait_leader(0)
    before = await _join_both(cluster, meta_leader)
    assert sorted(p for r in before.values() for p in r["partitions"]) == [0, 1]
    generation = before["a"]["generation"]
    assert before["b"]["generation"] == generation
    await cluster.call(meta_leader, "alter_topic", topic="t", partitions=4)
    # The next heartbeat of a member sees the grown topic and starts a rebalance.
    assert await heartbeat(cluster, meta_leader, "a", generation) is ErrorCode.REBALANCE_IN_PROGRESS
    after = await _join_both(cluster, meta_leader)
    assert sorted(p for r in after.values() for p in r["partitions"]) == [0, 1, 2, 3]
    assert {r["generation"] for r in after.values()} == {generation + 1}
