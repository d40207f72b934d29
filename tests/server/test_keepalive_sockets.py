"""Keepalive on every TCP socket a node owns (``[limits] tcp_keepalive_s``),
read back from the kernel (tests/tcp_sockets.py): the connections it accepts
on its address and its peer_address, the peer links and snapshot transfer
connections it dials, and a whole in-process cluster's with a client's."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest
import trio
from raftlog.client import AsyncClient
from raftlog.server.config import ClusterConfig, Limits
from raftlog.server.snapshot_transfer import PeerConnection

from tests.tcp_sockets import (
    DEFAULT_KEEPALIVE,
    TIMER_KEEPALIVE,
    TIMER_NONE,
    KeepaliveOptions,
    TcpEntry,
    dialled_to,
    established,
    keepalive_on,
    served_on,
    system_defaults,
)

from .cluster_harness import make_config
from .conftest import start_fake_node
from .rawclient import RawConn, wait_until
from .test_peer_address import peer_port, with_peer_addresses
from .test_tls_cluster import DEADLINE_S, FAST, running
from .test_transport import start_transport, wait_connected

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "TCP_USER_TIMEOUT"), reason="reads Linux's TCP options and timers back"
)


def with_keepalive(cfg: ClusterConfig, tcp_keepalive_s: int) -> ClusterConfig:
    return dataclasses.replace(cfg, limits=Limits(tcp_keepalive_s=tcp_keepalive_s))


# ---------------------------------------------------------------- what a node accepts


@pytest.mark.parametrize("tcp_keepalive_s", [30, 0])
async def test_connections_accepted_on_the_address_and_the_peer_address(
    tmp_path: Path, nursery: trio.Nursery, tcp_keepalive_s: int
) -> None:
    """A client's connection and a peer's link, each after its hello; the
    timer column shows the kernel counting down to the first probe."""
    cfg = with_keepalive(with_peer_addresses(make_config(tmp_path, 2)), tcp_keepalive_s)
    node = await start_fake_node(nursery, cfg)
    ports = (node.port, peer_port(cfg))
    async with (
        await trio.open_tcp_stream("127.0.0.1", ports[0]) as to_address,
        await trio.open_tcp_stream("127.0.0.1", ports[1]) as to_peer_address,
    ):
        assert (await RawConn(to_address).hello("client", "app-1"))["type"] == "hello_ok"
        link = RawConn(to_peer_address)
        hello = await link.hello("peer", "n2", incarnation="i-2", cluster=cfg.name)
        assert hello["type"] == "hello_ok"
        expected = DEFAULT_KEEPALIVE if tcp_keepalive_s else system_defaults()
        for port in ports:
            assert keepalive_on(served_on(port)) == [expected], port
            # The test's own end, dialled without the helper, stays as it was.
            assert keepalive_on(dialled_to(port)) == [system_defaults()], port
        timer = TIMER_KEEPALIVE if tcp_keepalive_s else TIMER_NONE

        def accepted() -> list[TcpEntry]:
            return established(lambda e: e.local_port in ports)

        def timers_settled() -> bool:  # a reply's retransmission timer ends at its ack
            return len(accepted()) == 2 and all(e.timer == timer for e in accepted())

        await wait_until(timers_settled, f"timer {timer} on both accepted sockets")
        for entry in accepted():
            assert (0 < entry.when_s <= 30) if tcp_keepalive_s else entry.when_s == 0


# ---------------------------------------------------------------- what a node dials


@pytest.mark.parametrize("tcp_keepalive_s", [30, 0])
async def test_a_peer_link_the_node_dials(
    tmp_path: Path, nursery: trio.Nursery, tcp_keepalive_s: int
) -> None:
    """The receiving fake node has keepalive off, so only the transport's end has it."""
    cfg = make_config(tmp_path, 2)
    receiver = await start_fake_node(nursery, with_keepalive(cfg, 0), "n2")
    transport = await start_transport(nursery, with_keepalive(cfg, tcp_keepalive_s))
    await wait_connected(transport, "n2")
    expected = DEFAULT_KEEPALIVE if tcp_keepalive_s else system_defaults()
    assert keepalive_on(dialled_to(receiver.port)) == [expected]
    assert keepalive_on(served_on(receiver.port)) == [system_defaults()]


@pytest.mark.parametrize("tcp_keepalive_s", [30, 0])
async def test_a_snapshot_transfer_connection(
    tmp_path: Path, nursery: trio.Nursery, tcp_keepalive_s: int
) -> None:
    cfg = make_config(tmp_path, 2)
    sender = await start_fake_node(nursery, with_keepalive(cfg, 0))
    conn = await PeerConnection.open(
        cfg.node("n1").address,
        node_id="n2",
        cfg=with_keepalive(cfg, tcp_keepalive_s),
        timeout_s=DEADLINE_S,
    )
    try:
        expected = DEFAULT_KEEPALIVE if tcp_keepalive_s else system_defaults()
        assert keepalive_on(dialled_to(sender.port)) == [expected]
    finally:
        await conn.aclose()


# ---------------------------------------------------------------- a cluster


async def test_every_connection_of_a_cluster_and_its_client_has_keepalive(
    tmp_path: Path,
) -> None:
    """Three in-process nodes with peer addresses and ``tcp_keepalive_s = 12``,
    and a client with ``tcp_keepalive=5``: both ends of every peer link carry
    the nodes' setting, the nodes' ends of the client's connections too, and
    the client's ends its own."""
    cfg = with_keepalive(with_peer_addresses(make_config(tmp_path, 3, **FAST)), 12)
    client_ports = {n.port for n in cfg.nodes}
    peer_ports = {peer_port(cfg, n.id) for n in cfg.nodes}
    nodes_setting = KeepaliveOptions(True, 12, 4, 3, 24_000)
    clients_setting = KeepaliveOptions(True, 5, 1, 3, 8_000)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient([n.address for n in cfg.nodes], tcp_keepalive=5) as client:
                await client.create_topic("t", partitions=1, replicas=3)
                await client.produce("t", b"v", partition=0)

                def linked() -> bool:  # each node dialled both others
                    return len(established(lambda e: e.remote_port in peer_ports)) >= 6

                await wait_until(linked, "six peer links")
                peer_ends = keepalive_on(
                    lambda e: e.local_port in peer_ports or e.remote_port in peer_ports
                )
                assert len(peer_ends) >= 12
                assert peer_ends == [nodes_setting] * len(peer_ends)
                served = keepalive_on(lambda e: e.local_port in client_ports)
                assert served and served == [nodes_setting] * len(served)
                dialled = keepalive_on(lambda e: e.remote_port in client_ports)
                assert dialled == [clients_setting] * len(served)
