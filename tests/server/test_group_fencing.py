"""Offset commits fenced by group generation, on three in-process nodes (real
coordinator, real partition Raft groups): a member dropped from the group (a
zombie) cannot commit once the partition's new owner has claimed it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from raftlog.client.errors import ErrorCode
from raftlog.server.errors import HandlerError

from .inproc_cluster import InProcCluster, running_with_topic
from .test_group_ops import join_stable as group_ops_join_stable

SESSION_MS = 400


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcCluster]:
    async with running_with_topic(tmp_path, partitions=2) as c:
        yield c


async def join_stable(c: InProcCluster, at: str, member: str) -> dict[str, Any]:
    """test_group_ops.join_stable with a rebalance timeout of one session: a silent
    member is dropped quickly."""
    return await group_ops_join_stable(c, at, member, rebalance_timeout_ms=SESSION_MS)


class Partition0:
    """Commits and reads of group "g" on partition 0, at its leader."""

    def __init__(self, c: InProcCluster) -> None:
        self.c = c
        self.node = ""

    async def find_leader(self) -> None:
        meta = self.c.driver(self.c.node_ids[0]).metadata
        gid = meta.topics["t"].partitions[0].group_id
        self.node = await self.c.wait_leader(gid)

    async def commit(self, offset: int, generation: int | None) -> ErrorCode | None:
        fields: dict[str, Any] = {"group": "g", "topic": "t", "partition": 0, "offset": offset}
        if generation is not None:
            fields["generation"] = generation
        try:
            await self.c.call(self.node, "commit_offset", **fields)
        except HandlerError as exc:
            return exc.code
        return None

    async def committed(self) -> int | None:
        reply = await self.c.call(self.node, "fetch_committed", group="g", topic="t", partition=0)
        return reply["offset"]


async def test_a_zombie_cannot_commit_after_the_new_owner_claimed_the_partition(
    cluster: InProcCluster,
):
    leader = await cluster.wait_leader(0)
    p0 = Partition0(cluster)
    await p0.find_leader()
    old = (await join_stable(cluster, leader, "a"))["generation"]
    assert await p0.commit(0, old) is None  # a claims partition 0 ...
    assert await p0.commit(5, old) is None  # ... consumes and commits
    b = await join_stable(cluster, leader, "b")  # a is silent: dropped, b owns all
    new = b["generation"]
    assert new > old and 0 in b["partitions"]
    start = await p0.committed()
    assert start == 5
    assert await p0.commit(start, new) is None  # b's claim: where it resumes
    # a, the zombie, still consumes and commits with its generation: refused,
    # whether it moves the offset back or forward, and so is a commit of it
    # without a generation (an old client).
    for offset in (3, 9):
        assert await p0.commit(offset, old) is ErrorCode.FENCED
    assert await p0.commit(9, None) is ErrorCode.FENCED
    assert await p0.committed() == 5
    assert await p0.commit(7, new) is None  # the owner commits as usual
    assert await p0.committed() == 7
    # The fence is in every replica's state machine, not only the leader's.
    gid = cluster.driver(leader).metadata.topics["t"].partitions[0].group_id
    await cluster.wait_for(
        lambda: all(
            cluster.driver(n).groups[gid].sm.fenced_generation("g") == new for n in cluster.node_ids
        ),
        what="the fence on every replica",
    )


async def test_a_zombie_commit_before_the_claim_costs_duplicates_not_loss(
    cluster: InProcCluster,
):
    # The race of client/consumer.py's claim: the new owner read the committed
    # offset, then the zombie's commit (still of the newest generation that
    # committed here) lands, then the claim. The claim wins: the committed offset
    # is where the new owner resumes, so what the zombie processed is read again.
    leader = await cluster.wait_leader(0)
    p0 = Partition0(cluster)
    await p0.find_leader()
    old = (await join_stable(cluster, leader, "a"))["generation"]
    assert await p0.commit(4, old) is None
    new = (await join_stable(cluster, leader, "b"))["generation"]
    start = await p0.committed()  # b reads 4 ...
    assert await p0.commit(9, old) is None  # ... a's commit slips in ...
    assert await p0.commit(start, new) is None  # ... b claims where it resumes
    assert await p0.committed() == start == 4
    assert await p0.commit(10, old) is ErrorCode.FENCED
