"""Cooperative rebalancing (Consumer(rebalance="cooperative"), Kafka KIP-429)
against the fake cluster, which runs the real coordinator core.

What is checked: partitions that stay with a member are never paused (the
member never gives everything up, unlike the eager protocol, which is the
control), a partition is never held by two consumers at once (checked at
every assignment change), moved partitions end with their new owner, and a
member whose hold on its partitions is not confirmed gives them all up
after its session timeout, as an eager one does.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer
from raftlog.client.group_member import GroupMember

from .fake_server import FakeCluster

SESSION_S = 0.6
DEADLINE_S = 10.0


class Watch:
    """Spies on consumers: every full give-up (``_revoke``) and, at every
    assignment change, that no other consumer holds a partition it was given."""

    def __init__(self, consumers: dict[str, Consumer]) -> None:
        self.consumers = consumers
        self.full_revokes: dict[str, int] = dict.fromkeys(consumers, 0)
        self.revoked: dict[str, list[int]] = {name: [] for name in consumers}
        for name, c in consumers.items():
            self._wrap(name, c)

    def _wrap(self, name: str, c: Consumer) -> None:
        revoke, revoke_some = c._revoke, c._revoke_partitions
        assign, assign_some = c._assign, c._assign_cooperatively

        async def full(**kw: Any) -> None:
            self.full_revokes[name] += 1
            await revoke(**kw)

        async def some(lost: set[int]) -> None:
            self.revoked[name].extend(sorted(lost))
            await revoke_some(lost)

        async def assigned(a: Any) -> Any:
            result = await assign(a)
            self.check_exclusive()
            return result

        async def assigned_some(a: Any) -> Any:
            result = await assign_some(a)
            self.check_exclusive()
            return result

        c._revoke, c._revoke_partitions = full, some  # type: ignore[method-assign]
        c._assign, c._assign_cooperatively = assigned, assigned_some  # type: ignore[method-assign]

    def check_exclusive(self) -> None:
        holder: dict[int, str] = {}
        for name, c in self.consumers.items():
            for p in c._assigned or []:
                assert p not in holder, f"partition {p} held by {holder[p]} and {name}"
                holder[p] = name


async def held_by_all(consumers: list[Consumer], partitions: int) -> None:
    """Wait (bounded) until the consumers hold every partition once, in one generation."""
    with trio.fail_after(DEADLINE_S):
        while True:
            held = sorted(p for c in consumers for p in (c._assigned or []))
            gens = {c.generation for c in consumers}
            if held == list(range(partitions)) and len(gens) == 1 and None not in gens:
                return
            await trio.sleep(0.01)


@pytest.mark.parametrize("protocol", ["cooperative", "eager"])
async def test_partitions_that_stay_are_never_paused(fake: FakeCluster, protocol: str):
    fake.add_topic("c6", partitions=6)
    async with AsyncClient(fake.bootstrap()) as client:
        a, b, c = (
            Consumer(client, "g", "c6", session_timeout=SESSION_S, rebalance=protocol)
            for _ in range(3)
        )
        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.start)
                nursery.start_soon(b.start)
        await held_by_all([a, b], 6)
        before = {"a": set(a.partitions), "b": set(b.partitions)}
        watch = Watch({"a": a, "b": b, "c": c})
        with trio.fail_after(DEADLINE_S):
            await c.start()
        await held_by_all([a, b, c], 6)
        after = {"a": set(a.partitions), "b": set(b.partitions), "c": set(c.partitions)}
        assert [len(after[n]) for n in "abc"] == [2, 2, 2]
        if protocol == "eager":
            # The control: eager members give everything up on a rebalance.
            assert watch.full_revokes["a"] >= 1 and watch.full_revokes["b"] >= 1
        else:
            assert watch.full_revokes == {"a": 0, "b": 0, "c": 0}
            # Each old member gave up exactly what moved to c, and kept the rest.
            assert after["a"] <= before["a"] and after["b"] <= before["b"]
            assert sorted(watch.revoked["a"] + watch.revoked["b"]) == sorted(after["c"])
        for consumer in (a, b, c):
            await consumer.close()


async def test_records_of_kept_partitions_keep_flowing_while_a_member_joins(fake: FakeCluster):
    fake.add_topic("c2", partitions=2)
    async with AsyncClient(fake.bootstrap()) as client:
        a = Consumer(client, "g", "c2", session_timeout=SESSION_S, rebalance="cooperative",
                     max_wait=0.05)  # fmt: skip
        await a.start()
        b = Consumer(client, "g", "c2", session_timeout=SESSION_S, rebalance="cooperative")
        watch = Watch({"a": a, "b": b})
        with trio.fail_after(DEADLINE_S):
            await b.start()
        await held_by_all([a, b], 2)
        kept, moved = a.partitions[0], b.partitions[0]
        assert watch.revoked["a"] == [moved] and watch.full_revokes["a"] == 0
        # Everything produced to both partitions is read once each, by its owner.
        await client.produce_batch("c2", kept, [b"k%d" % i for i in range(5)])
        await client.produce_batch("c2", moved, [b"m%d" % i for i in range(5)])
        got: dict[str, list[bytes]] = {"a": [], "b": []}
        with trio.fail_after(DEADLINE_S):
            while len(got["a"]) < 5 or len(got["b"]) < 5:
                for name, consumer in (("a", a), ("b", b)):
                    got[name] += [r.value for _, r in await consumer.poll(0.05)]
        assert got == {"a": [b"k%d" % i for i in range(5)], "b": [b"m%d" % i for i in range(5)]}
        await a.close()
        await b.close()


@pytest.mark.parametrize("confirmed", [True, False])
async def test_a_member_keeps_its_partitions_only_while_the_coordinator_confirms(
    fake: FakeCluster, confirmed: bool
):
    """A rebalance that cannot finish (a member that never rejoins holds it up for
    its long session): with confirmed join answers a cooperative member keeps
    consuming throughout; without them it gives everything up after its own
    session timeout, because the coordinator may have given its partitions away."""
    fake.confirm_joins = confirmed
    fake.add_topic("c4", partitions=4)
    async with AsyncClient(fake.bootstrap()) as client:
        a = Consumer(client, "g", "c4", session_timeout=SESSION_S, rebalance="cooperative")
        await a.start()
        slow = GroupMember(client, "g", "c4", session_timeout=5.0, rebalance_timeout=5.0)
        with trio.fail_after(DEADLINE_S):
            while not (await slow.join()).partitions:
                pass  # withheld at first (a owned them): joins again once a let go
        assert a.partitions == [0, 1]
        watch = Watch({"a": a})
        newcomer = GroupMember(client, "g", "c4", session_timeout=5.0, rebalance_timeout=5.0)
        async with trio.open_nursery() as nursery:
            # The newcomer's join starts a rebalance that waits for ``slow``, which
            # never rejoins: for its 5 s session, far longer than a's.
            nursery.start_soon(newcomer.join)
            if confirmed:
                # Nothing to wait for: a must NOT let go, over several of its sessions.
                await trio.sleep(4 * SESSION_S)
                assert a.partitions == [0, 1] and watch.full_revokes["a"] == 0
            else:
                with trio.fail_after(3 * SESSION_S):  # well before slow expires
                    while True:
                        if not a._assigned:
                            break
                        await trio.sleep(0.01)
                assert watch.full_revokes["a"] >= 1
            nursery.cancel_scope.cancel()
        await a.close()
