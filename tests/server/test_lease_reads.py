"""Lease reads (cluster.toml ``lease_reads = true``) on a cluster in one trio run.

A leader holding a lease answers linearizable reads with no heartbeat round;
once cut off, it must stop before the rest of the group can elect another
leader and commit past what it would return.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from raftlog.client.errors import ErrorCode
from raftlog.server.config import ConfigError, parse_config, render_config
from raftlog.server.metrics import Metrics

from .inproc_cluster import InProcCluster, small_config
from .test_serializable_reads import _values


@pytest.fixture
async def cluster(tmp_path: Any, nursery: trio.Nursery) -> AsyncIterator[InProcCluster]:
    # A long election timeout makes a long lease (24 ticks of 10 ms).
    config = small_config(tmp_path, lease_reads=True, election_ticks=30)
    async with InProcCluster(config, nursery).running() as c:
        yield c


async def _leased_topic(c: InProcCluster) -> tuple[int, str, list[str]]:
    topic = await c.create_topic("t", partitions=1)
    gid = topic["partitions"][0]["group"]
    leader = await c.wait_leader(gid)
    await c.produce(leader, "t", [b"a"])
    await c.wait_for(lambda: c.driver(leader).groups[gid].raft.has_lease, what="a lease")
    return gid, leader, [n for n in c.node_ids if n != leader]


async def test_a_leader_with_a_lease_reads_without_a_heartbeat_round(cluster):
    _, leader, followers = await _leased_topic(cluster)
    # Cut off, the leader cannot finish a ReadIndex round; within its lease
    # (24 ticks here) it still answers, from its commit index.
    cluster.net.isolate(leader, followers)
    reply = await cluster.call(leader, "fetch", topic="t", partition=0, offset=0)
    assert _values(reply) == [(0, b"a")]
    cluster.net.heal()


async def test_reads_are_counted_by_path(cluster):
    gid, leader, _ = await _leased_topic(cluster)
    metrics = Metrics()
    cluster.driver(leader).metrics = metrics
    await cluster.call(leader, "fetch", topic="t", partition=0, offset=0)
    assert metrics.reads.value(path="lease") == 1
    cluster.driver(leader).groups[gid].raft.expire_lease()
    await cluster.call(leader, "fetch", topic="t", partition=0, offset=0)
    assert metrics.reads.value(path="read_index") == 1


async def test_a_cut_off_leader_never_serves_a_read_the_majority_has_moved_past(cluster):
    gid, old, others = await _leased_topic(cluster)
    cluster.net.isolate(old, others)
    new = await cluster.wait_for(
        lambda: next((n for n in others if cluster.leader(gid) == n), None),
        what="a new leader on the majority side",
    )
    await cluster.produce(new, "t", [b"b"])
    # The old leader may not yet know it was deposed, but its lease is gone:
    # it must not answer from its copy, which lacks b.
    assert not cluster.driver(old).groups[gid].raft.has_lease
    with trio.move_on_after(2.0):
        try:
            reply = await cluster.call(old, "fetch", topic="t", partition=0, offset=0)
        except Exception as exc:  # NOT_LEADER or TIMEOUT: refusing is fine
            code = getattr(exc, "code", None)
            assert code in (ErrorCode.NOT_LEADER, ErrorCode.TIMEOUT), exc
        else:
            assert _values(reply) == [(0, b"a"), (1, b"b")], reply
    cluster.net.heal()


def test_lease_reads_need_room_between_heartbeats_and_the_election_timeout() -> None:
    doc = {
        "cluster": {"name": "c", "election_ticks": 6, "heartbeat_ticks": 2, "lease_reads": True},
        "node": [{"id": "n1", "address": "127.0.0.1:1", "data_dir": "d"}],
    }
    with pytest.raises(ConfigError, match="lease_reads"):
        parse_config(doc)
    doc["cluster"]["election_ticks"] = 20
    cfg = parse_config(doc)
    assert cfg.lease_reads
    assert "lease_reads = true" in render_config(cfg)
