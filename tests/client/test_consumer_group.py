"""Group-managed consumers against three whole nodes (server.node.run_node) in
this trio run, on 127.0.0.1: two members split a 6-partition topic 3/3; when
one closes the other takes all 6 and resumes at the committed offsets; after
a controller (group 0) leadership transfer the member rejoins the new
coordinator and keeps consuming. Nothing is lost at any step."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer
from raftlog.server.config import ClusterConfig
from raftlog.server.node import run_node

from tests.server.cluster_harness import make_config

PARTITIONS = 6
PER_ROUND = 5  # records per partition per round
SESSION_S = 1.0
DEADLINE_S = 30.0


@contextlib.asynccontextmanager
async def nodes_running(cfg: ClusterConfig) -> AsyncIterator[None]:
    """Every node of ``cfg`` running in this trio run; all stopped on exit."""
    async with trio.open_nursery() as nursery:
        for node in cfg.nodes:
            await nursery.start(
                lambda task_status, n=node.id: run_node(cfg, n, task_status=task_status)
            )
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


async def _run_node(cfg: ClusterConfig, node: str, task_status: trio.TaskStatus) -> None:
    await run_node(cfg, node, task_status=task_status)


class Reader:
    """Polls one consumer, records what it got, commits after each batch."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.got: list[tuple[int, int]] = []  # (partition, offset) in delivery order
        self.changed = trio.Event()
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        with self.scope:
            while True:
                batch = await self.consumer.poll(0.2)
                self.got += [(p, r.offset) for p, r in batch]
                if batch:
                    await self.consumer.commit()
                self.changed.set()
                self.changed = trio.Event()

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait (bounded) until ``predicate`` holds, re-checked after every poll."""
        with trio.move_on_after(DEADLINE_S):
            while not predicate():
                await self.changed.wait()
            return
        raise AssertionError(f"timed out waiting until {what}")


async def produce_round(client: AsyncClient, round_no: int) -> None:
    for p in range(PARTITIONS):
        await client.produce_batch("t", p, [b"r%d-%d" % (round_no, i) for i in range(PER_ROUND)])


async def start_reading(
    nursery: trio.Nursery, consumers: list[Consumer], within: float
) -> list[Reader]:
    """Start the group members together (so they form one generation, bounded by
    ``within``), then a Reader per member in ``nursery``."""
    with trio.fail_after(within):
        async with trio.open_nursery() as joins:
            for consumer in consumers:
                joins.start_soon(consumer.start)
    readers = [Reader(c) for c in consumers]
    for reader in readers:
        nursery.start_soon(reader.run)
    return readers


@dataclass
class TwoReading:
    cfg: ClusterConfig
    client: AsyncClient  # a's client
    a: Consumer
    b: Consumer
    ra: Reader
    rb: Reader


@contextlib.asynccontextmanager
async def two_members_reading(
    tmp_path: Path, session_s: float, **a_options: Any
) -> AsyncIterator[TwoReading]:
    """Three nodes in this trio run; topic "t" with round 0 produced; members a and
    b of group "g" (one client each) formed one generation and are reading.
    ``a_options``: more Consumer options for a."""
    cfg = make_config(tmp_path, 3, fsync=False, tick_ms=10, election_ticks=10)
    bootstrap = [n.address for n in cfg.nodes]
    async with nodes_running(cfg), trio.open_nursery() as nursery:
        async with (
            AsyncClient(bootstrap, client_id="a") as ca,
            AsyncClient(bootstrap, client_id="b") as cb,
        ):
            await ca.create_topic("t", partitions=PARTITIONS, replicas=3)
            await produce_round(ca, 0)
            a = Consumer(ca, "g", "t", session_timeout=session_s, **a_options)
            b = Consumer(cb, "g", "t", session_timeout=session_s)
            ra, rb = await start_reading(nursery, [a, b], DEADLINE_S)
            yield TwoReading(cfg, ca, a, b, ra, rb)
        nursery.cancel_scope.cancel()


def expected(rounds: int) -> set[tuple[int, int]]:
    return {(p, o) for p in range(PARTITIONS) for o in range(rounds * PER_ROUND)}


async def test_members_split_reassign_on_close_and_follow_a_new_coordinator(tmp_path: Path):
    async with two_members_reading(tmp_path, SESSION_S) as t:
        cfg, ca, a, b, ra, rb = t.cfg, t.client, t.a, t.b, t.ra, t.rb

        # 1. split 3/3 in one generation, and between them everything is read
        def split() -> bool:
            return (
                a.generation is not None
                and a.generation == b.generation
                and len(a.partitions) == len(b.partitions) == PARTITIONS // 2
                and not set(a.partitions) & set(b.partitions)
                and set(ra.got) | set(rb.got) == expected(1)
            )

        await ra.until(split, "3/3 split")
        described = await ca.request("group_describe", group="g")
        assert sorted(len(m["partitions"]) for m in described["members"]) == [3, 3]
        assert described["generation"] == a.generation

        # 2. b stops and closes: a gets all six, from b's committed positions
        rb.scope.cancel()
        b_positions = {p: b.position(p) for p in b.partitions}
        await b.close()
        a_seen_before = len(ra.got)
        await produce_round(ca, 1)
        await ra.until(
            lambda: (
                a.partitions == list(range(PARTITIONS)) and set(ra.got) | set(rb.got) == expected(2)
            ),
            "a owns all six and read round 1",
        )
        after = ra.got[a_seen_before:]
        for p, pos in b_positions.items():
            first = min(o for q, o in after if q == p)
            assert first == pos, f"partition {p}: a resumed at {first}, b committed {pos}"

        # 3. the controller moves: a rejoins the new coordinator and keeps reading
        old = described["coordinator"]
        target = next(n.id for n in cfg.nodes if n.id != old)
        await ca.metadata_leader_transfer(target)

        with trio.fail_after(DEADLINE_S):
            while True:  # the new coordinator knows a once it rejoined and was assigned
                described = await ca.request("group_describe", group="g")
                if described["state"] == "stable" and a.generation == described["generation"]:
                    break
                await ra.changed.wait()
        assert described["coordinator"] == target
        assert [(m["member_id"], m["partitions"]) for m in described["members"]] == [
            (a.member_id, list(range(PARTITIONS)))
        ]
        await produce_round(ca, 2)
        await ra.until(
            lambda: set(ra.got) | set(rb.got) == expected(3), "a read round 2 after rejoining"
        )
        ra.scope.cancel()
        await a.close()
