"""Cooperative rebalancing with three whole nodes (server.node.run_node) in this
trio run on 127.0.0.1: members joining one after another never pause the
partitions that stay, no partition is held by two members at once, moved
partitions resume at the committed offsets, and a controller change in the
middle of the two rebalances still settles with nothing lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer

from tests.client.test_consumer_cooperative import Watch
from tests.client.test_consumer_group import (
    PARTITIONS,
    Reader,
    expected,
    nodes_running,
    produce_round,
    start_reading,
)
from tests.server.cluster_harness import make_config

SESSION_S = 3.0
DEADLINE_S = 30.0


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    with trio.move_on_after(DEADLINE_S):
        while True:
            if predicate():
                return
            await trio.sleep(0.02)
    raise AssertionError(f"timed out waiting until {what}")


def settled(readers: list[Reader], rounds: int) -> Callable[[], bool]:
    """One generation, the partitions split evenly and once each, and every
    record of ``rounds`` rounds read by someone."""

    def check() -> bool:
        consumers = [r.consumer for r in readers]
        sizes = sorted(len(c.partitions) for c in consumers)
        held = sorted(p for c in consumers for p in c.partitions)
        base, extra = divmod(PARTITIONS, len(consumers))
        return (
            len({c.generation for c in consumers}) == 1
            and consumers[0].generation is not None
            and held == list(range(PARTITIONS))
            and sizes == [base] * (len(consumers) - extra) + [base + 1] * extra
            and set().union(*(r.got for r in readers)) >= expected(rounds)
        )

    return check


async def test_joining_members_never_pause_partitions_that_stay(tmp_path: Path):
    cfg = make_config(tmp_path, 3, fsync=False, tick_ms=10, election_ticks=10)
    bootstrap = [n.address for n in cfg.nodes]
    async with nodes_running(cfg), trio.open_nursery() as nursery:
        clients = [AsyncClient(bootstrap, client_id=name) for name in "abcd"]
        async with clients[0], clients[1], clients[2], clients[3]:
            ca = clients[0]
            await ca.create_topic("t", partitions=PARTITIONS, replicas=3)
            await produce_round(ca, 0)
            a, b, c, d = (
                Consumer(cl, "g", "t", session_timeout=SESSION_S, rebalance="cooperative")
                for cl in clients
            )
            readers = await start_reading(nursery, [a, b], DEADLINE_S)
            await wait_until(settled(readers, 1), "a and b split 3/3 and read round 0")
            watch = Watch({"a": a, "b": b, "c": c, "d": d})
            before = {"a": set(a.partitions), "b": set(b.partitions)}

            # c joins: a and b each hand one partition over, and keep the rest.
            readers += await start_reading(nursery, [c], DEADLINE_S)
            await produce_round(ca, 1)
            await wait_until(settled(readers, 2), "a, b and c split 2/2/2 and read round 1")
            assert set(a.partitions) <= before["a"] and set(b.partitions) <= before["b"]
            assert sorted(watch.revoked["a"] + watch.revoked["b"]) == sorted(c.partitions)

            # d joins and the controller moves while the rebalances run.
            old = (await ca.request("group_describe", group="g"))["coordinator"]
            target = next(n.id for n in cfg.nodes if n.id != old)
            async with trio.open_nursery() as both:
                both.start_soon(ca.metadata_leader_transfer, target)
                readers.append(Reader(d))
                with trio.fail_after(DEADLINE_S):
                    await d.start()
            nursery.start_soon(readers[-1].run)
            await produce_round(ca, 2)
            await wait_until(settled(readers, 3), "four members hold 2/2/1/1 and read round 2")
            assert (await ca.request("group_describe", group="g"))["coordinator"] != old

            # Nobody ever gave up everything: no pause of a partition that stayed.
            assert watch.full_revokes == {"a": 0, "b": 0, "c": 0, "d": 0}
            # Nothing lost; a moved partition resumes where its old owner committed,
            # so each record is read at most twice (a batch handed out, not yet
            # processed, when its partition moved).
            got = [o for r in readers for o in r.got]
            assert set(got) == expected(3)
            for reader in readers:
                reader.scope.cancel()
            for consumer in (a, b, c, d):
                await consumer.close()
        nursery.cancel_scope.cancel()
