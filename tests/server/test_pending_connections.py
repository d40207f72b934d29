"""Connections that never say hello are bounded: the oldest gives way to a new
one, so a node full of silent connections still admits peers and clients
(server/pending_connections.py). Real sockets on 127.0.0.1, the listener with
fake handlers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import trio
from raftlog.server.config import ClusterConfig, Limits
from raftlog.server.metrics import Metrics
from raftlog.server.pending_connections import PendingConnections

from .cluster_harness import make_config
from .conftest import FakeNode, start_fake_node
from .rawclient import RawConn, wait_until

LIMIT = 4


def with_pending_limit(cfg: ClusterConfig, limit: int) -> ClusterConfig:
    return dataclasses.replace(cfg, limits=Limits(max_pending_connections=limit))


def pending(node: FakeNode) -> float:
    return node.metrics.pending_connections.value()


def evicted(node: FakeNode) -> float:
    return node.metrics.pending_connections_evicted.value(limit="max_pending_connections")


async def open_silent(node: FakeNode, count: int) -> list[RawConn]:
    """``count`` connections that say nothing, each seen by the node before the next."""
    conns = []
    seen = pending(node) + evicted(node)  # every accept adds one to either
    for _ in range(count):
        conns.append(await RawConn.open(node.port))
        seen += 1
        await wait_until(lambda: pending(node) + evicted(node) == seen, "accepted")  # noqa: B023
    return conns


async def test_a_node_full_of_silent_connections_still_admits_a_peer_and_a_client(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    node = await start_fake_node(nursery, with_pending_limit(make_config(tmp_path, 3), LIMIT))
    silent = await open_silent(node, LIMIT)
    assert pending(node) == LIMIT and evicted(node) == 0

    peer, client = await open_silent(node, 2)  # both dial, then both say hello
    linked = await peer.hello("peer", "n2", incarnation="i2", cluster=node.cfg.name)
    assert linked["type"] == "hello_ok", linked
    assert (await client.hello("client", "c1"))["type"] == "hello_ok"

    # Each newcomer pushed out the oldest silent connection, and only that one.
    assert await silent[0].closed() and await silent[1].closed()
    await wait_until(lambda: evicted(node) == 2, "both counted")
    await wait_until(lambda: pending(node) == LIMIT - 2, "the admitted ones no longer pending")
    assert (await silent[2].hello("client", "late"))["type"] == "hello_ok"  # still served
    assert (await client.request(1, "metadata"))["ok"] is True
    await peer.send({"type": "raft", "msgs": [[1, b"linked"]]})
    await node.wait_peer_msgs(1)
    assert node.peer_msgs == [("n2", [(1, b"linked")])]


async def test_admitted_connections_are_not_pending_and_never_pushed_out(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    node = await start_fake_node(nursery, with_pending_limit(make_config(tmp_path, 1), LIMIT))
    clients = [await RawConn.open(node.port) for _ in range(LIMIT)]
    for i, conn in enumerate(clients):
        assert (await conn.hello("client", f"c{i}"))["type"] == "hello_ok"
    await wait_until(lambda: pending(node) == 0, "all admitted")

    await open_silent(node, 2 * LIMIT)  # a flood twice the limit
    await wait_until(lambda: evicted(node) == LIMIT, "the oldest half pushed out")
    assert pending(node) == LIMIT
    for conn in clients:
        assert (await conn.request(1, "metadata"))["ok"] is True
    assert node.metrics.client_connections.value() == LIMIT


async def test_a_stop_passes_through_and_is_not_counted_as_a_push_out() -> None:
    metrics = Metrics()
    book = PendingConnections(1, metrics)
    with trio.CancelScope() as stop, book.hold(1) as scope:
        assert len(book) == 1 and metrics.pending_connections.value() == 1
        stop.cancel()
        await trio.sleep_forever()
    assert stop.cancelled_caught and not scope.cancelled_caught
    assert len(book) == 0 and metrics.pending_connections.value() == 0
    assert metrics.pending_connections_evicted.value(limit="max_pending_connections") == 0
