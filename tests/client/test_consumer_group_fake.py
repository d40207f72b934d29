"""Group-managed Consumer against the fake cluster (the real coordinator core, no
start-up grace): more members than partitions, and what a rebalance commits."""

from __future__ import annotations

import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer

from .fake_server import FakeCluster

SESSION_S = 0.6
DEADLINE_S = 10.0


async def settled(consumers: list[Consumer]) -> None:
    """Wait (bounded) until every consumer holds an assignment of one generation."""
    with trio.fail_after(DEADLINE_S):
        while len({c.generation for c in consumers}) != 1 or consumers[0].generation is None:
            await consumers[0].poll(0.05)  # drives nothing: the group tasks rebalance


async def test_a_member_without_partitions_waits_instead_of_spinning(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        members = [Consumer(client, "g", "t", session_timeout=SESSION_S) for _ in range(3)]
        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                for c in members:
                    nursery.start_soon(c.start)
        await settled(members)
        owned = sorted(p for c in members for p in c.partitions)
        assert owned == [0, 1]  # 2 partitions: once each, one member idle
        idle = next(c for c in members if not c.partitions)
        started = trio.current_time()
        with trio.fail_after(2.0):
            assert await idle.poll(0.3) == []
        assert trio.current_time() - started >= 0.3  # it waited like an empty long poll
        for c in members:
            await c.close()


async def test_a_rebalance_commits_only_what_was_processed(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        await client.produce_batch("t", 0, [b"v%d" % i for i in range(6)])
        a = Consumer(client, "g", "t", max_records=2, session_timeout=SESSION_S, max_wait=0.0)
        first = await a.poll()
        second = await a.poll()  # the first batch is processed now; this one is not
        assert first and second
        b = Consumer(client, "g", "t", session_timeout=SESSION_S)
        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.start)  # b's join makes a revoke and rejoin
        committed = fake.committed[("g", "t", 0)][0]
        assert committed == first[-1][1].offset + 1 == second[0][1].offset
        await a.close()
        await b.close()


async def test_a_rebalance_never_commits_below_what_the_application_committed(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        await client.produce_batch("t", 0, [b"v%d" % i for i in range(6)])
        a = Consumer(client, "g", "t", max_records=3, session_timeout=SESSION_S, max_wait=0.0)
        batch = await a.poll()  # handed out, not yet "processed" by a next poll ...
        assert [r.offset for _, r in batch] == [0, 1, 2]
        await a.commit({0: 3})  # ... but the application says it is
        b = Consumer(client, "g", "t", session_timeout=SESSION_S)
        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.start)  # b's join makes a revoke and rejoin
        assert fake.committed[("g", "t", 0)][0] == 3  # not moved back to 0
        await a.close()
        await b.close()
