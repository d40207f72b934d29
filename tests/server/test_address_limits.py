"""Limits per remote address (server/address_limits.py): the connection rate,
the pending share and the client connections of one address. The bookkeeping
with many addresses in memory, the wiring over real sockets on 127.0.0.1 (one
address: the rules that tell addresses apart are the unit tests')."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.server import listener as listener_module
from raftlog.server.address_limits import AddressTable, ConnectionRate
from raftlog.server.config import Limits
from raftlog.server.metrics import Metrics
from raftlog.server.pending_connections import PendingConnections

from .cluster_harness import make_config
from .conftest import FakeNode, start_fake_node
from .manual_clock import FakeClock
from .rawclient import RawConn, wait_until

NODE_LIMIT = "max_pending_connections"
SHARE_LIMIT = "max_pending_connections_per_address"


# ---------------------------------------------------------------- connection rate


def test_the_rate_admits_a_seconds_worth_then_refuses_until_tokens_refill() -> None:
    clock = FakeClock()
    rate = ConnectionRate(3, clock)
    assert [rate.admit("10.0.0.1") for _ in range(4)] == [True, True, True, False]
    assert rate.admit("10.0.0.2")  # another address has its own bucket
    clock.now += 0.4  # 1.2 tokens
    assert rate.admit("10.0.0.1") and not rate.admit("10.0.0.1")


def test_refused_connections_cost_no_tokens_so_a_flood_that_stops_gets_its_rate_back() -> None:
    clock = FakeClock()
    rate = ConnectionRate(2, clock)
    admitted = 0
    for _ in range(1000):  # a flood within one instant: only the burst gets in
        admitted += rate.admit("10.0.0.1")
        clock.now += 0.0001
    assert admitted == 2
    clock.now += 0.5  # a token refilled: the flood built no debt to pay first
    assert rate.admit("10.0.0.1")


def test_buckets_that_refilled_are_swept_and_zero_means_no_limit() -> None:
    clock = FakeClock()
    rate = ConnectionRate(5, clock)
    for i in range(100):
        assert rate.admit(f"10.0.1.{i}")
    assert len(rate) == 100
    clock.now += ConnectionRate.SWEEP_INTERVAL_S
    assert rate.admit("10.0.2.1") and len(rate) == 1  # the full ones are gone
    unlimited = ConnectionRate(0, clock)
    assert all(unlimited.admit("10.0.0.1") for _ in range(10_000))
    assert len(unlimited) == 0


def test_an_address_or_its_network_can_have_its_own_rate() -> None:
    """``max_connection_rate_per_address_overrides``: an address's own entry, else its
    most specific network's, else the node's rate; 0 exempts an address."""
    clock = FakeClock()
    table = AddressTable.of({"10.0.0.0/8": 5, "10.2.0.0/16": 1, "10.0.0.1": 0})
    rate = ConnectionRate(2, clock, overrides=table)
    assert sum(rate.admit("10.9.0.1") for _ in range(10)) == 5  # the /8's burst
    assert sum(rate.admit("10.2.0.1") for _ in range(10)) == 1  # the /16 is narrower
    assert all(rate.admit("10.0.0.1") for _ in range(1000))  # exempt
    assert sum(rate.admit("192.0.2.1") for _ in range(10)) == 2  # the node's rate
    assert [rate.rate_for(a) for a in ("10.9.0.1", "10.0.0.1", "192.0.2.1")] == [5, 0, 2]
    clock.now += ConnectionRate.SWEEP_INTERVAL_S
    assert rate.admit("192.0.2.9") and len(rate) == 1  # the exempt address's entry is swept too
    # With no rate of its own, the node still holds the overridden addresses to theirs.
    only_some = ConnectionRate(0, clock, overrides=AddressTable.of({"10.0.0.0/8": 1}))
    assert [only_some.admit("10.0.0.7") for _ in range(2)] == [True, False]
    assert all(only_some.admit("192.0.2.1") for _ in range(100))


# ---------------------------------------------------------------- pending share


async def test_an_address_over_its_share_pushes_out_its_own_oldest_not_an_older_one() -> None:
    metrics = Metrics()
    book = PendingConnections(limit=10, metrics=metrics, per_address=2)
    scopes: dict[int, trio.CancelScope] = {}
    finish = trio.Event()

    async def connection(conn_id: int, address: str) -> None:
        with book.hold(conn_id, address) as scope:
            scopes[conn_id] = scope
            await finish.wait()

    async with trio.open_nursery() as nursery:
        for conn_id, address in [(1, "10.0.0.2"), (2, "10.0.0.1"), (3, "10.0.0.1")]:
            nursery.start_soon(connection, conn_id, address)
            await trio.testing.wait_all_tasks_blocked()
        assert len(book) == 3 and book.from_address("10.0.0.1") == 2
        nursery.start_soon(connection, 4, "10.0.0.1")  # the flooder's third
        await trio.testing.wait_all_tasks_blocked()
        assert scopes[2].cancelled_caught  # its own oldest, not conn 1 (older)
        assert not scopes[1].cancelled_caught and not scopes[3].cancelled_caught
        assert book.from_address("10.0.0.1") == 2 and book.from_address("10.0.0.2") == 1
        assert metrics.pending_connections_evicted.value(limit=SHARE_LIMIT) == 1
        assert metrics.pending_connections_evicted.value(limit=NODE_LIMIT) == 0
        finish.set()
    assert len(book) == 0 and book.from_address("10.0.0.1") == 0
    assert metrics.pending_connections.value() == 0


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 6),
    share=st.integers(0, 4),
    override=st.one_of(st.none(), st.integers(0, 4)),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 2)), max_size=40),
)
def test_pending_connections_match_a_model_of_both_bounds(
    limit: int, share: int, override: int | None, steps: list[tuple[bool, int]]
) -> None:
    """Open (True) a connection from address ``n``, or finish (False) the
    oldest live one from it; after each step the book equals a model that
    pushes out the address's oldest beyond its share (address 10.0.0.2's own
    when ``override`` gives it one), else the node's oldest beyond the limit,
    and the evictions are counted by that limit."""
    table = AddressTable.of({} if override is None else {"10.0.0.2": override})

    def share_of(address: str) -> int:
        return override if override is not None and address == "10.0.0.2" else share

    async def run() -> None:
        metrics = Metrics()
        book = PendingConnections(limit, metrics, share, share_overrides=table)
        model: list[tuple[int, str]] = []  # live, oldest first
        expected_evictions = {NODE_LIMIT: 0, SHARE_LIMIT: 0}
        finishers: dict[int, trio.Event] = {}
        cut: set[int] = set()

        async def connection(conn_id: int, address: str) -> None:
            with book.hold(conn_id, address) as scope:
                await finishers[conn_id].wait()
            if scope.cancelled_caught:
                cut.add(conn_id)

        async with trio.open_nursery() as nursery:
            for conn_id, (opens, n) in enumerate(steps, start=1):
                address = f"10.0.0.{n}"
                mine = [c for c, a in model if a == address]
                if opens:
                    finishers[conn_id] = trio.Event()
                    nursery.start_soon(connection, conn_id, address)
                    model.append((conn_id, address))
                    if share_of(address) and len(mine) + 1 > share_of(address):
                        model.remove((mine[0], address))
                        expected_evictions[SHARE_LIMIT] += 1
                    elif len(model) > limit:
                        del model[0]
                        expected_evictions[NODE_LIMIT] += 1
                elif mine:
                    finishers[mine[0]].set()
                    model.remove((mine[0], address))
                await trio.testing.wait_all_tasks_blocked()
                assert len(book) == len(model) == metrics.pending_connections.value()
                assert len(model) <= limit
                for a in {a for _, a in model} | {address}:
                    live = sum(1 for _, b in model if b == a)
                    assert book.from_address(a) == live
                    assert not share_of(a) or live <= share_of(a)
                for name, count in expected_evictions.items():
                    assert metrics.pending_connections_evicted.value(limit=name) == count
                assert len(cut) == sum(expected_evictions.values())
            for event in finishers.values():
                event.set()

    trio.run(run)


# ---------------------------------------------------------------- over real sockets


async def test_client_connections_per_address_are_refused_at_the_hello_and_peers_never(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cfg = make_config(tmp_path, 3, limits=Limits(max_client_connections_per_address=2))
    node = await start_fake_node(nursery, cfg)
    first, second, third = [await RawConn.open(node.port) for _ in range(3)]
    assert (await first.hello("client", "c1"))["type"] == "hello_ok"
    assert (await second.hello("client", "c2"))["type"] == "hello_ok"
    refused = await third.hello("client", "c3")
    assert refused["error"] == "NOT_AVAILABLE", refused
    assert "2 client connections from 127.0.0.1" in refused["message"]
    assert "max_client_connections_per_address" in refused["message"]
    assert await third.closed()

    peer = await RawConn.open(node.port)  # the same address, but a peer
    linked = await peer.hello("peer", "n2", incarnation="i2", cluster=node.cfg.name)
    assert linked["type"] == "hello_ok", linked
    assert (await first.request(1, "metadata"))["ok"] is True  # the others are served

    await first.aclose()  # gives its slot back when the node sees it end
    await wait_until(lambda: node.metrics.client_connections.value() == 1, "slot released")
    again = await RawConn.open(node.port)
    assert (await again.hello("client", "c4"))["type"] == "hello_ok"


async def test_an_override_gives_an_address_its_own_client_limit(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cfg = make_config(
        tmp_path,
        1,
        limits=Limits(
            max_client_connections_per_address=1,
            max_client_connections_per_address_overrides={"127.0.0.1": 3},
        ),
    )
    node = await start_fake_node(nursery, cfg)
    conns = [await RawConn.open(node.port) for _ in range(4)]
    replies = [await conn.hello("client", f"c{i}") for i, conn in enumerate(conns)]
    assert [r["type"] for r in replies[:3]] == ["hello_ok"] * 3
    assert replies[3]["error"] == "NOT_AVAILABLE", replies[3]
    assert node.metrics.client_connections_refused.value() == 1


async def test_connections_over_the_rate_are_closed_at_their_accept(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()  # the node's buckets refill only when the test says so
    monkeypatch.setattr(
        listener_module, "ConnectionRate", functools.partial(ConnectionRate, clock=clock)
    )
    cfg = make_config(tmp_path, 1, limits=Limits(max_connection_rate_per_address=3))
    node = await start_fake_node(nursery, cfg)
    rate_limited = node.metrics.connections_rate_limited

    admitted = [await RawConn.open(node.port) for _ in range(3)]
    refused = await RawConn.open(node.port)
    assert await refused.closed() and refused.frames == []  # no handshake, no reply
    assert rate_limited.value() == 1
    for i, conn in enumerate(admitted):  # the burst's connections are served
        assert (await conn.hello("client", f"c{i}"))["type"] == "hello_ok"

    clock.now += 0.4  # one connection's worth of tokens (1.2)
    later = await RawConn.open(node.port)
    assert (await later.hello("client", "later"))["type"] == "hello_ok"
    assert rate_limited.value() == 1


async def test_a_silent_flood_from_one_address_is_held_to_its_share(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cfg = make_config(
        tmp_path,
        1,
        limits=Limits(max_pending_connections=50, max_pending_connections_per_address=2),
    )
    node: FakeNode = await start_fake_node(nursery, cfg)
    evicted = node.metrics.pending_connections_evicted
    silent = [await RawConn.open(node.port) for _ in range(2)]
    await wait_until(lambda: node.metrics.pending_connections.value() == 2, "both pending")
    newest = await RawConn.open(node.port)
    assert await silent[0].closed()  # the address's oldest made room
    await wait_until(lambda: evicted.value(limit=SHARE_LIMIT) == 1, "counted by the share")
    assert evicted.value(limit=NODE_LIMIT) == 0
    assert node.metrics.pending_connections.value() == 2
    assert (await newest.hello("client", "c1"))["type"] == "hello_ok"


async def test_overrides_reach_the_rate_and_the_pending_share(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """127.0.0.1 under a network entry exempting it from a rate of 1, and an entry
    raising its pending share from 1 to 3: five connections in one instant all
    get in, and three of them stay pending together before the fourth silent one
    pushes out the oldest."""
    clock = FakeClock()  # no refill: only the override lets the burst through
    monkeypatch.setattr(
        listener_module, "ConnectionRate", functools.partial(ConnectionRate, clock=clock)
    )
    limits = Limits(
        max_pending_connections=50,
        max_pending_connections_per_address=1,
        max_connection_rate_per_address=1,
        max_connection_rate_per_address_overrides={"127.0.0.0/8": 0},
        max_pending_connections_per_address_overrides={"127.0.0.1": 3},
    )
    node: FakeNode = await start_fake_node(nursery, make_config(tmp_path, 1, limits=limits))
    evicted = node.metrics.pending_connections_evicted
    silent = [await RawConn.open(node.port) for _ in range(3)]
    await wait_until(lambda: node.metrics.pending_connections.value() == 3, "three pending")
    assert evicted.value(limit=SHARE_LIMIT) == 0
    fourth = await RawConn.open(node.port)
    assert await silent[0].closed()  # the share of 3 is full: the oldest gives way
    await wait_until(lambda: evicted.value(limit=SHARE_LIMIT) == 1, "counted by the share")
    for i, conn in enumerate([*silent[1:], fourth]):
        assert (await conn.hello("client", f"c{i}"))["type"] == "hello_ok"
    fifth = await RawConn.open(node.port)  # past the rate of 1 a second, in the same instant
    assert (await fifth.hello("client", "c5"))["type"] == "hello_ok"
    assert node.metrics.connections_rate_limited.value() == 0
