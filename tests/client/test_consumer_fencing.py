"""Group-managed Consumer and generation-fenced commits, against the fake cluster
(the real coordinator core; the fake applies the partition's fencing rules)."""

from __future__ import annotations

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer
from raftlog.client.errors import FencedError

from .fake_server import FakeCluster

SESSION_S = 0.6
DEADLINE_S = 10.0


def commits(fake: FakeCluster, group: str) -> list[dict]:
    """The commit_offset requests of ``group`` the leader got, in order."""
    return [
        f
        for node, op, f in fake.requests
        if node == fake.leader and op == "commit_offset" and f["group"] == group
    ]


async def test_a_member_claims_its_partitions_before_reading_and_commits_with_its_generation(
    fake: FakeCluster,
):
    async with AsyncClient(fake.bootstrap()) as client:
        await client.produce_batch("t", 0, [b"a", b"b"])
        c = Consumer(client, "g", "t", session_timeout=SESSION_S, max_wait=0.0)
        await c.start()
        gen = c.generation
        assert gen is not None and c.partitions == [0, 1]
        claims = [(f["partition"], f["offset"], f.get("generation")) for f in commits(fake, "g")]
        assert sorted(claims) == [(0, 0, gen), (1, 0, gen)]
        assert fake.fences == {("g", "t", 0): gen, ("g", "t", 1): gen}
        ops = [op for node, op, _ in fake.requests if node == fake.leader]
        last_claim = max(i for i, op in enumerate(ops) if op == "commit_offset")
        assert "fetch" not in ops[:last_claim]  # claimed before anything was read
        got = await c.poll()
        assert [r.value for _, r in got] == [b"a", b"b"]
        await c.commit()
        assert commits(fake, "g")[-1] == {
            "group": "g", "topic": "t", "partition": 0, "offset": 2, "metadata": "",
            "generation": gen,
        }  # fmt: skip
        await c.close()
        # A manual-assignment consumer commits unfenced, as before.
        m = Consumer(client, "m", "t", [1])
        await m.commit({1: 0})
        assert "generation" not in commits(fake, "m")[-1]


async def test_a_fenced_commit_stops_the_partition_and_the_member_rejoins(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        for p in (0, 1):
            await client.produce_batch("t", p, [b"%d-%d" % (p, i) for i in range(4)])
        # a heartbeats only every 5 s: within this test it never learns from the
        # coordinator that it was dropped (a zombie), only from the fence.
        a = Consumer(client, "g", "t", session_timeout=15.0, rebalance_timeout=0.2, max_wait=0.0)
        await a.start()
        old = a.generation
        assert old is not None and a.partitions == [0, 1]
        await a._fill(0.0)  # records of both partitions fetched, none handed out
        taken = a._take()
        assert taken is not None and taken[0] == 0
        # b joins; a does not rejoin within the rebalance timeout: the next
        # generation is b alone, and b claims both partitions.
        b = Consumer(client, "g", "t", session_timeout=1.5, rebalance_timeout=1.0)
        with trio.fail_after(DEADLINE_S):
            await b.start()
        new = b.generation
        assert new is not None and new > old and b.partitions == [0, 1]
        assert a.generation == old and 0 in a.partitions  # a has not noticed
        with pytest.raises(FencedError):
            await a.commit()  # partition 0's position moved: refused
        assert fake.committed[("g", "t", 0)][0] == 0  # b's claim stands
        assert 0 not in a.partitions
        # a stops handing out partition 0 at once (its buffer held records of
        # it), and rejoins by itself: a newer generation splits the partitions.
        with trio.fail_after(DEADLINE_S):
            while True:
                got = await a.poll(0.05)
                if a.generation in (None, old):
                    assert [r for p, r in got if p == 0] == []
                await b.poll(0.0)
                if a.generation == b.generation and a.generation not in (None, old, new):
                    break
        assert sorted(a.partitions + b.partitions) == [0, 1]
        assert a.partitions and b.partitions
        await a.close()
        await b.close()


async def test_a_claim_that_stays_fenced_hands_out_nothing(fake: FakeCluster):
    # A newer generation than any this coordinator forms holds partition 1: the
    # claim is refused at every join, so start() gives up with FencedError.
    fake.fences[("g", "t", 1)] = 1000
    async with AsyncClient(fake.bootstrap()) as client:
        await client.produce_batch("t", 1, [b"x"])
        c = Consumer(client, "g", "t", session_timeout=SESSION_S, max_wait=0.0)
        with trio.fail_after(DEADLINE_S), pytest.raises(FencedError):
            await c.start()
        assert not any(op == "fetch" for _, op, _ in fake.requests)
        assert ("g", "t", 1) not in fake.committed  # the refused claim changed nothing


async def test_commits_outside_the_assignment_are_refused_without_asking(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        a = Consumer(client, "g", "t", session_timeout=SESSION_S)
        b = Consumer(client, "g", "t", session_timeout=SESSION_S)
        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.start)
                nursery.start_soon(b.start)
            while not (a.generation == b.generation and a.partitions and b.partitions):
                await a.poll(0.05)
        (theirs,) = b.partitions
        sent = len(commits(fake, "g"))
        with pytest.raises(FencedError, match="not assigned"):
            await a.commit({theirs: 1})
        assert len(commits(fake, "g")) == sent
        await a.close()
        await b.close()
