"""A controller change under two consuming group members, with three whole nodes
(server.node.run_node) in this trio run on 127.0.0.1: the new controller
restores the persisted generation, the members' heartbeats follow NOT_LEADER
to it, and they keep their generation and partitions and keep consuming
without a rebalance (before generations were persisted, every member had to
rejoin and nothing was consumed for a session timeout or more)."""

from __future__ import annotations

from pathlib import Path

import trio
from raftlog.client.consumer import Consumer

from tests.client.test_consumer_group import (
    PARTITIONS,
    expected,
    produce_round,
    two_members_reading,
)

# Long enough that "well under a session" is far from anything the path needs.
SESSION_S = 4.5
DEADLINE_S = 30.0


def count_heartbeats(*consumers: Consumer) -> dict[str, int]:
    """Successful heartbeats per consumer ("a", "b", ... in order), counted live."""
    beats: dict[str, int] = {}
    for name, consumer in zip("abcdef", consumers):
        member = consumer._member
        assert member is not None
        beats[name] = 0
        real = member.heartbeat

        async def counted(generation: int, real=real, name=name) -> None:
            await real(generation)
            beats[name] += 1

        member.heartbeat = counted  # type: ignore[method-assign]
    return beats


async def test_members_keep_generation_and_partitions_across_a_controller_transfer(
    tmp_path: Path,
):
    async with two_members_reading(tmp_path, SESSION_S) as t:
        cfg, ca, a, b, ra, rb = t.cfg, t.client, t.a, t.b, t.ra, t.rb

        def split_and_read(rounds: int) -> bool:
            return (
                a.generation is not None
                and a.generation == b.generation
                and len(a.partitions) == len(b.partitions) == PARTITIONS // 2
                and set(ra.got) | set(rb.got) == expected(rounds)
            )

        await ra.until(lambda: split_and_read(1), "a 3/3 split that read round 0")
        before = {m: (c.generation, list(c.partitions), c._epoch) for m, c in (("a", a), ("b", b))}
        old = (await ca.request("group_describe", group="g"))["coordinator"]
        target = next(n.id for n in cfg.nodes if n.id != old)
        beats = count_heartbeats(a, b)
        await ca.metadata_leader_transfer(target)
        beats.update(a=0, b=0)  # successful heartbeats from now on

        # Consuming goes on: a round produced now is read well under a session.
        described = await ca.request("group_describe", group="g")
        assert described["coordinator"] == target
        await produce_round(ca, 1)
        with trio.fail_after(SESSION_S / 2):
            await ra.until(lambda: split_and_read(2), "round 1 read after the transfer")
        # And the members' heartbeats succeed at the new controller with their
        # generation: wait for two of each (bounded), then nothing has changed.
        with trio.fail_after(DEADLINE_S):
            while min(beats.values()) < 2:
                await ra.changed.wait()
        described = await ca.request("group_describe", group="g")
        assert described["generation"] == before["a"][0]
        assert {m["member_id"]: m["partitions"] for m in described["members"]} == {
            a.member_id: before["a"][1],
            b.member_id: before["b"][1],
        }
        # No revoke/assign happened on either member (the epoch counts them).
        after = {m: (c.generation, list(c.partitions), c._epoch) for m, c in (("a", a), ("b", b))}
        assert after == before
        await produce_round(ca, 2)
        await ra.until(lambda: split_and_read(3), "round 2 read")
        ra.scope.cancel()
        rb.scope.cancel()
        await a.close()
        await b.close()
