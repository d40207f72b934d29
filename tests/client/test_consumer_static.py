"""Static group members (``group_instance_id``, Kafka KIP-345) against three
whole nodes in this trio run, on 127.0.0.1: a static member that closes and
starts again under the same instance id gets its partitions back in the same
generation, resumes at its committed offsets, and the other member is never
interrupted; a second consumer with the same instance id takes the partitions
over and the first one's reads raise FencedInstanceIdError."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer
from raftlog.client.errors import FencedInstanceIdError

from .test_consumer_group import (
    DEADLINE_S,
    PARTITIONS,
    expected,
    produce_round,
    two_members_reading,
)

# Long enough that a restart fits in it; nothing in the test waits for it to pass.
SESSION_S = 6.0


async def read_until(consumer: Consumer, got: list[tuple[int, int]], want: set) -> None:
    """Poll (and commit) until ``got`` covers ``want``; bounded."""
    with trio.fail_after(DEADLINE_S):
        while not want <= set(got):
            batch = await consumer.poll(0.2)
            got += [(p, r.offset) for p, r in batch]
            if batch:
                await consumer.commit()


async def test_a_static_member_restarts_into_its_place_and_a_duplicate_fences_it(
    tmp_path: Path,
):
    async with two_members_reading(tmp_path, SESSION_S, group_instance_id="host-a") as t:
        ca, a, b, rb = t.client, t.a, t.b, t.rb
        bootstrap = [n.address for n in t.cfg.nodes]
        t.ra.scope.cancel()  # a is polled by hand below
        a_got: list[tuple[int, int]] = []
        mine = {(p, o) for p, o in expected(1) if p in a.partitions}
        await read_until(a, a_got, mine)
        generation, a_parts = a.generation, list(a.partitions)
        b_parts = list(b.partitions)
        assert generation == b.generation and len(a_parts) == PARTITIONS // 2

        # 1. a closes: it commits but does not leave; the group stays as it is.
        await a.close()
        described = await ca.request("group_describe", group="g")
        assert described["state"] == "stable" and described["generation"] == generation
        assert {m["instance_id"] for m in described["members"]} == {"host-a", None}

        # 2. a restarts (a new client, a new member id, the same instance id).
        await produce_round(ca, 1)
        async with AsyncClient(bootstrap, client_id="a2") as ca2:
            a2 = Consumer(ca2, "g", "t", session_timeout=SESSION_S, group_instance_id="host-a")
            with trio.fail_after(DEADLINE_S):
                await a2.start()
            assert a2.member_id != a.member_id
            assert (a2.generation, a2.partitions) == (generation, a_parts)
            a2_got: list[tuple[int, int]] = []
            mine = {(p, o) for p, o in expected(2) if p in a_parts}
            await read_until(a2, a2_got, mine - set(a_got))
            # It resumed at a's committed positions: round 0 is not read again.
            assert set(a2_got) == mine - set(a_got)
            # b was never interrupted: same generation, same partitions, and it
            # read round 1 of its own partitions meanwhile.
            await rb.until(
                lambda: {(p, o) for p, o in expected(2) if p in b_parts} <= set(rb.got),
                "b read round 1",
            )
            assert (b.generation, b.partitions) == (generation, b_parts)

            # 3. a second process with the same instance id takes the place over;
            # a2 learns at its next heartbeat and its reads fail from then on.
            async with AsyncClient(bootstrap, client_id="a3") as ca3:
                a3 = Consumer(ca3, "g", "t", session_timeout=SESSION_S, group_instance_id="host-a")
                with trio.fail_after(DEADLINE_S):
                    await a3.start()
                assert (a3.generation, a3.partitions) == (generation, a_parts)
                with trio.fail_after(DEADLINE_S), pytest.raises(FencedInstanceIdError):
                    while True:
                        await a2.poll(0.2)
                assert a2.partitions == []
                assert (b.generation, b.partitions) == (generation, b_parts)
                await a3.close()
            await a2.close()
        rb.scope.cancel()
        await b.close()
