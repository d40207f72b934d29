"""Serializable reads (server/replica_reads.py) on a cluster in one trio run.

What they must keep: only committed records, at their final offsets, and never
another log's records. What they may lose: recency.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import decode_batch, encode_records

from .inproc_cluster import InProcCluster, small_config

S = "serializable"


@pytest.fixture
async def cluster(tmp_path: Any, nursery: trio.Nursery) -> AsyncIterator[InProcCluster]:
    async with InProcCluster(small_config(tmp_path), nursery).running() as c:
        yield c


def _values(reply: dict[str, Any]) -> list[tuple[int, bytes]]:
    out = []
    for base, ts, _count, blob in reply["batches"]:
        out.extend((r.offset, r.value) for r in decode_batch(base, ts, blob))
    return out


async def _topic(c: InProcCluster, name: str = "t") -> tuple[int, str, list[str]]:
    """(group id, leader, followers) of the topic's one partition."""
    topic = await c.create_topic(name, partitions=1)
    gid = topic["partitions"][0]["group"]
    leader = await c.wait_leader(gid)
    return gid, leader, [n for n in c.node_ids if n != leader]


async def _produce(c: InProcCluster, leader: str, *values: bytes) -> None:
    for v in values:
        await c.produce(leader, "t", [v])


async def _applied(c: InProcCluster, node: str, gid: int, end: int) -> None:
    await c.wait_for(
        lambda: c.driver(node).groups[gid].sm.next_offset >= end,
        what=f"{node} applied up to {end}",
    )


async def _long_poll(
    c: InProcCluster, node: str, offset: int, meanwhile: Callable[[], Awaitable[None]]
) -> list[tuple[int, bytes]]:
    """A serializable long poll at ``node`` from ``offset``, with ``meanwhile``
    run once it waits; what it returned. It must still be waiting when
    ``meanwhile`` begins."""
    got: dict[str, Any] = {}

    async def poll() -> None:
        got["reply"] = await c.call(node, "fetch", topic="t", partition=0, offset=offset,
                                    consistency=S, max_wait_ms=10_000)  # fmt: skip

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        assert "reply" not in got
        await meanwhile()
    return _values(got["reply"])


async def test_a_follower_serves_what_it_applied_without_the_leader(cluster):
    gid, leader, followers = await _topic(cluster)
    await _produce(cluster, leader, b"a", b"b", b"c")
    for node in followers:
        await _applied(cluster, node, gid, 3)
        reply = await cluster.call(node, "fetch", topic="t", partition=0, offset=1,
                                   consistency=S, raft_group=gid)  # fmt: skip
        assert _values(reply) == [(1, b"b"), (2, b"c")]
        assert (reply["start_offset"], reply["end_offset"]) == (0, 3)
        offsets = await cluster.call(node, "list_offsets", topic="t", partition=0, consistency=S)
        assert offsets == {"start_offset": 0, "end_offset": 3}
        # Without the flag a follower still refuses: linearizable reads need the leader.
        err = await cluster.call_error(node, "fetch", topic="t", partition=0, offset=0)
        assert err.code is ErrorCode.NOT_LEADER


async def test_unknown_consistency_is_refused(cluster):
    _, leader, _ = await _topic(cluster)
    for op, extra in (("fetch", {"offset": 0}), ("list_offsets", {})):
        err = await cluster.call_error(leader, op, topic="t", partition=0,
                                       consistency="eventual", **extra)  # fmt: skip
        assert err.code is ErrorCode.INVALID_REQUEST
        assert "linearizable, serializable" in err.message


async def test_an_isolated_follower_serves_its_stale_prefix_and_says_when_it_is_behind(cluster):
    gid, leader, followers = await _topic(cluster)
    await _produce(cluster, leader, b"a", b"b")
    cut = followers[0]
    await _applied(cluster, cut, gid, 2)
    cluster.net.isolate(cut, [n for n in cluster.node_ids if n != cut])
    await _produce(cluster, leader, b"c", b"d")  # the other two commit without it

    # Reads stay available on the cut-off node, from its committed prefix.
    reply = await cluster.call(cut, "fetch", topic="t", partition=0, offset=0, consistency=S)
    assert _values(reply) == [(0, b"a"), (1, b"b")]
    assert reply["end_offset"] == 2
    # Past its copy's end it cannot say whether the offset exists: NOT_AVAILABLE
    # with its end, after waiting max_wait for it to catch up.
    err = await cluster.call_error(cut, "fetch", topic="t", partition=0, offset=3,
                                   consistency=S, max_wait_ms=50)  # fmt: skip
    assert err.code is ErrorCode.NOT_AVAILABLE
    assert err.details["replica_end_offset"] == 2
    # Below the start is final on every replica.
    err = await cluster.call_error(cut, "fetch", topic="t", partition=0, offset=-1, consistency=S)
    assert err.code is ErrorCode.OUT_OF_RANGE

    # A poll past its end, then the heal: it returns once the copy catches up.
    async def heal() -> None:
        cluster.net.heal()

    assert await _long_poll(cluster, cut, 3, heal) == [(3, b"d")]


async def test_a_deposed_leader_never_serves_an_entry_it_could_not_commit(cluster):
    """The safety point: an isolated leader appends a produce it cannot commit;
    a serializable read there must not see it (a replica applies only committed
    entries), and the majority's record at that offset is what everyone reads."""
    gid, old, followers = await _topic(cluster)
    await _produce(cluster, old, b"a")
    cluster.net.isolate(old, followers)
    raft = cluster.driver(old).groups[gid].raft
    appended_before = raft.last_index
    async with trio.open_nursery() as nursery:

        async def doomed_produce() -> None:
            err = await cluster.call_error(old, "produce", topic="t", partition=0,
                                           **_records(b"doomed"), timeout_ms=3_000)
            assert err.code in (ErrorCode.TIMEOUT, ErrorCode.NOT_LEADER)

        nursery.start_soon(doomed_produce)
        await cluster.wait_for(lambda: raft.last_index > appended_before,
                               what="the isolated leader appended the produce")  # fmt: skip
        reply = await cluster.call(old, "fetch", topic="t", partition=0, offset=0, consistency=S)
        assert _values(reply) == [(0, b"a")] and reply["end_offset"] == 1
        reply = await cluster.call(old, "fetch", topic="t", partition=0, offset=1,
                                   consistency=S, max_wait_ms=100)  # fmt: skip
        assert reply["batches"] == []

        new = await cluster.wait_for(
            lambda: next((n for n in followers if cluster.leader(gid) == n), None),
            within=20, what="a leader among the majority",
        )  # fmt: skip
        await _produce(cluster, new, b"b")
        cluster.net.heal()
    # The deposed leader's entry was replaced; its copy now holds the majority's record.
    await _applied(cluster, old, gid, 2)
    reply = await cluster.call(old, "fetch", topic="t", partition=0, offset=0, consistency=S)
    assert _values(reply) == [(0, b"a"), (1, b"b")]


def _records(*values: bytes) -> dict[str, Any]:
    blob, count, crc = encode_records([(None, v, None, None) for v in values])
    return {"records": blob, "count": count, "crc": crc}


async def test_a_replica_with_other_metadata_refuses_instead_of_serving_another_log(cluster):
    gid, leader, followers = await _topic(cluster)
    await _produce(cluster, leader, b"old")
    node = followers[0]
    # The client's metadata names another group: say the topic was deleted and
    # created again and one side has not seen it.
    err = await cluster.call_error(node, "fetch", topic="t", partition=0, offset=0,
                                   consistency=S, raft_group=gid + 100)  # fmt: skip
    assert err.code is ErrorCode.NOT_AVAILABLE
    assert f"Raft group {gid}" in err.message
    # A topic the client knows (it names a group) and this node does not: behind.
    err = await cluster.call_error(node, "list_offsets", topic="fresh", partition=0,
                                   consistency=S, raft_group=gid + 1)  # fmt: skip
    assert err.code is ErrorCode.NOT_AVAILABLE
    err = await cluster.call_error(node, "fetch", topic="t", partition=5, offset=0,
                                   consistency=S, raft_group=gid + 1)  # fmt: skip
    assert err.code is ErrorCode.NOT_AVAILABLE
    # Naming no group, an unknown topic is confirmed by a metadata read.
    err = await cluster.call_error(node, "fetch", topic="fresh", partition=0, offset=0,
                                   consistency=S)  # fmt: skip
    assert err.code is ErrorCode.UNKNOWN_TOPIC


async def test_a_follower_long_poll_returns_the_next_record(cluster):
    gid, leader, followers = await _topic(cluster)
    await _produce(cluster, leader, b"a")
    node = followers[1]
    await _applied(cluster, node, gid, 1)
    assert await _long_poll(cluster, node, 1, lambda: _produce(cluster, leader, b"b")) == [
        (1, b"b")
    ]


async def test_a_node_that_holds_no_replica_redirects(tmp_path, nursery):
    async with InProcCluster(small_config(tmp_path, nodes=4), nursery).running() as c:
        topic = await c.create_topic("t", partitions=1, replicas=3)
        part = topic["partitions"][0]
        await c.wait_leader(part["group"])
        outsider = next(n for n in c.node_ids if n not in part["replicas"])
        err = await c.call_error(outsider, "fetch", topic="t", partition=0, offset=0,
                                 consistency=S, raft_group=part["group"])  # fmt: skip
        assert err.code is ErrorCode.NOT_LEADER
        assert "does not host" in err.message
