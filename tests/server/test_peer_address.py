"""A node's ``peer_address`` (cluster.toml): a listener for the other nodes only.

The config (parsing, clashes, where peers dial), the listener over real sockets
on 127.0.0.1 (who is served there, and that the node address's per-address
rate and pending bound do not reach it), and a cluster whose peer links all
run over the peer addresses, read from the kernel's socket table.
"""

from __future__ import annotations

import dataclasses
import functools
import socket
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from raftlog.client import AsyncClient
from raftlog.client.protocol import ErrorCode
from raftlog.jepsen.ports import free_ports
from raftlog.log.features import LOG_FORMAT
from raftlog.server import listener as listener_module
from raftlog.server.address_limits import ConnectionRate
from raftlog.server.cli import main
from raftlog.server.config import (
    AuthConfig,
    ClusterConfig,
    ConfigError,
    Limits,
    NodeConfig,
    load_config,
    render_config,
)

from tests.tcp_sockets import TCP_ESTABLISHED, tcp_table

from .cluster_harness import make_config
from .conftest import FakeNode, start_fake_node
from .manual_clock import FakeClock
from .rawclient import RawConn, wait_until
from .test_log_format import wait_cluster_format
from .test_tls_cluster import DEADLINE_S, FAST, Nodes, running

TWO_NODES = """
[cluster]
name = "local"

[[node]]
id = "n1"
address = "127.0.0.1:7101"
peer_address = "127.0.0.1:7201"

[[node]]
id = "n2"
address = "127.0.0.1:7102"
{n2_extra}
"""


def load(tmp_path: Path, n2_extra: str = "") -> ClusterConfig:
    path = tmp_path / "cluster.toml"
    path.write_text(TWO_NODES.format(n2_extra=n2_extra))
    return load_config(path)


def load_error(tmp_path: Path, n2_extra: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, n2_extra)
    return str(info.value)


def with_peer_addresses(cfg: ClusterConfig) -> ClusterConfig:
    """``cfg`` with a free loopback peer_address for every node."""
    # Not one of the addresses' ports: those are picked, not bound yet.
    ports = free_ports(len(cfg.nodes), avoid={n.port for n in cfg.nodes})
    nodes = [
        dataclasses.replace(n, peer_address=f"127.0.0.1:{port}")
        for n, port in zip(cfg.nodes, ports, strict=True)
    ]
    return dataclasses.replace(cfg, nodes=nodes)


def peer_port(cfg: ClusterConfig, node_id: str = "n1") -> int:
    address = cfg.node(node_id).peer_address
    assert address is not None
    return int(address.rpartition(":")[2])


# ---------------------------------------------------------------- config


def test_peers_dial_the_peer_address_unless_a_dial_entry_says_otherwise(tmp_path: Path) -> None:
    cfg = load(tmp_path, 'dial = { n1 = "127.0.0.1:9999" }')
    assert cfg.node("n1").peer_address == "127.0.0.1:7201"
    assert cfg.node("n2").peer_address is None
    assert cfg.dial_address("n2", "n1") == "127.0.0.1:9999"  # the dial table wins
    assert cfg.dial_address("n1", "n2") == "127.0.0.1:7102"  # no peer_address: its address
    assert load(tmp_path).dial_address("n2", "n1") == "127.0.0.1:7201"


def test_the_peer_address_survives_a_render_round_trip(tmp_path: Path) -> None:
    cfg = load(tmp_path, 'peer_address = "127.0.0.1:7202"')
    again = tmp_path / "again.toml"
    again.write_text(render_config(cfg))
    reloaded = load_config(again)
    assert [n.peer_address for n in reloaded.nodes] == ["127.0.0.1:7201", "127.0.0.1:7202"]


@pytest.mark.parametrize(
    ("n2_extra", "expected"),
    [
        ('peer_address = "127.0.0.1:7102"', "node[1].peer_address '127.0.0.1:7102' duplicates "
                                            "node[1].address"),
        ('peer_address = "127.0.0.1:7201"', "node[1].peer_address '127.0.0.1:7201' duplicates "
                                            "node[0].peer_address"),
        ('peer_address = "127.0.0.1:7101"', "node[1].peer_address '127.0.0.1:7101' duplicates "
                                            "node[0].address"),
        ('peer_address = "127.0.0.1"', "node[1].peer_address '127.0.0.1'"),
        ("peer_address = 7202", "node[1].peer_address"),
    ],
)  # fmt: skip
def test_a_peer_address_that_clashes_or_is_malformed_is_refused(
    tmp_path: Path, n2_extra: str, expected: str
) -> None:
    assert expected in load_error(tmp_path, n2_extra)


def test_cluster_up_refuses_a_taken_peer_address_before_starting_anything(
    tmp_path: Path,
) -> None:
    cfg = with_peer_addresses(make_config(tmp_path, 3))
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(cfg))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", peer_port(cfg, "n3")))
        squatter.listen()
        result = CliRunner().invoke(main, ["cluster", "up", "--config", str(path)])
    assert result.exit_code == 1
    taken = cfg.node("n3").peer_address
    assert f"node n3 peer_address {taken} is already in use" in result.output
    assert not any(n.data_dir.exists() for n in cfg.nodes)  # no node was started


# ---------------------------------------------------------------- the listener


async def start_with_peer_address(
    nursery: trio.Nursery, tmp_path: Path, **overrides: object
) -> FakeNode:
    cfg = with_peer_addresses(make_config(tmp_path, 2, **overrides))  # type: ignore[arg-type]
    return await start_fake_node(nursery, cfg)


async def test_the_peer_address_serves_peers_and_refuses_clients_naming_the_address(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    node = await start_with_peer_address(nursery, tmp_path)
    port = peer_port(node.cfg)
    stray = await RawConn.open(port)
    reply = await stray.hello("client", "app-1")
    assert reply["ok"] is False and reply["error"] == ErrorCode.INVALID_REQUEST.value
    assert node.cfg.node("n1").address in reply["message"]  # where clients belong
    assert "peer_address" in reply["message"]
    assert await stray.closed()

    link = await RawConn.open(port)
    assert (await link.hello("peer", "n2", incarnation="i-2", cluster=node.cfg.name))[
        "type"
    ] == "hello_ok"
    # A follower's snapshot transfer is another node too: served there.
    transfer = await RawConn.open(port)
    hello = await transfer.hello("client", "replica:n2", cluster=node.cfg.name)
    assert hello["type"] == "hello_ok", hello
    accepted = node.metrics.connections_accepted
    assert accepted.value(listener="peer_address") == 3
    assert accepted.value(listener="address") == 0
    # The node's address still serves clients and peers alike.
    client = await RawConn.open(node.port)
    assert (await client.hello("client", "app-1"))["type"] == "hello_ok"
    assert accepted.value(listener="address") == 1


async def test_a_snapshot_transfer_needs_the_peer_token_on_the_peer_address(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """With ``[auth] peer_token`` a client calling itself ``replica:n2`` without
    the token is a client, and clients are refused on the peer address."""
    node = await start_with_peer_address(
        nursery, tmp_path, auth=AuthConfig(peer_token="s3cret", client_tokens=("app",))
    )
    port = peer_port(node.cfg)
    impostor = await RawConn.open(port)
    reply = await impostor.hello("client", "replica:n2", cluster=node.cfg.name, credential="app")
    assert reply["ok"] is False and reply["error"] == ErrorCode.INVALID_REQUEST.value
    proven = await RawConn.open(port)
    reply = await proven.hello(
        "client", "replica:n2", cluster=node.cfg.name, peer_credential="s3cret"
    )
    assert reply["type"] == "hello_ok", reply


async def test_the_addresss_connection_rate_does_not_reach_the_peer_address(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """127.0.0.1 used up its connection rate on the node's address (a client
    flood from a peer's host): a peer's redial on the peer address still gets in."""
    clock = FakeClock()  # no refill during the test
    monkeypatch.setattr(
        listener_module, "ConnectionRate", functools.partial(ConnectionRate, clock=clock)
    )
    node = await start_with_peer_address(
        nursery, tmp_path, limits=Limits(max_connection_rate_per_address=1)
    )
    first = await RawConn.open(node.port)
    refused = await RawConn.open(node.port)
    assert await refused.closed() and refused.frames == []
    assert node.metrics.connections_rate_limited.value() == 1
    for i in range(3):
        link = await RawConn.open(peer_port(node.cfg))
        assert (await link.hello("peer", "n2", incarnation="i-2", cluster=node.cfg.name))[
            "type"
        ] == "hello_ok", i
    assert node.metrics.connections_rate_limited.value() == 1
    assert (await first.hello("client", "c1"))["type"] == "hello_ok"


async def test_silent_connections_on_the_address_never_push_out_a_peers_handshake(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The two addresses keep separate pending books: a flood that fills the
    address's bound closes its own oldest, not a peer's slow hello."""
    node = await start_with_peer_address(
        nursery, tmp_path, limits=Limits(max_pending_connections=2)
    )
    slow_peer = await RawConn.open(peer_port(node.cfg))
    await wait_until(lambda: node.metrics.peer_pending_connections.value() == 1, "peer pending")
    flood = [await RawConn.open(node.port) for _ in range(5)]
    await wait_until(lambda: node.metrics.pending_connections.value() == 2, "flood at the bound")
    assert await flood[0].closed()
    assert node.metrics.peer_pending_connections.value() == 1
    reply = await slow_peer.hello("peer", "n2", incarnation="i-2", cluster=node.cfg.name)
    assert reply["type"] == "hello_ok"
    await wait_until(lambda: node.metrics.peer_pending_connections.value() == 0, "peer admitted")


# ---------------------------------------------------------------- a cluster


def established_local_ports() -> list[int]:
    """Local ports of the established IPv4 TCP connections (this network namespace's)."""
    return [e.local_port for e in tcp_table() if e.state == TCP_ESTABLISHED]


async def test_a_cluster_links_its_nodes_over_their_peer_addresses_only(tmp_path: Path) -> None:
    cfg = with_peer_addresses(make_config(tmp_path, 3, **FAST))
    client_ports = {n.port for n in cfg.nodes}
    peer_ports = {peer_port(cfg, n.id) for n in cfg.nodes}
    addresses = [n.address for n in cfg.nodes]
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient(addresses) as client:
                await client.create_topic("t", partitions=1, replicas=3)
                record = await client.produce("t", b"v", partition=0)
                assert (record.partition, record.offset) == (0, 0)
                # Every node of a 3-replica group is linked to both others.
                linked = {p for p in established_local_ports() if p in peer_ports}
                assert linked == peer_ports
                served = [p for p in established_local_ports() if p in client_ports]
                # Only this client's connections reach the nodes' addresses.
                assert 0 < len(served) <= len(client_ports)


def n4_outside_the_files(
    tmp_path: Path,
) -> tuple[ClusterConfig, NodeConfig, ClusterConfig, dict[str, ClusterConfig]]:
    """Four nodes with peer addresses, n4 joining: the four's config (n4's file), n4,
    the three's, and a config object for each of n1..n3, which learns n4 into its
    own (membership.sync_peers)."""
    four = with_peer_addresses(make_config(tmp_path, 4, **FAST))
    n4 = dataclasses.replace(four.node("n4"), join=True)
    four = dataclasses.replace(four, nodes=[*four.nodes[:3], n4])
    three = dataclasses.replace(four, nodes=four.nodes[:3])
    own = {n.id: dataclasses.replace(three, nodes=list(three.nodes)) for n in three.nodes}
    return four, n4, three, own


async def add_n4(nodes: Nodes, four: ClusterConfig, three: ClusterConfig) -> None:
    """Start n4 (n4_outside_the_files) and add it with `member add`, once the format
    lets its record carry its peer address."""
    await nodes.start("n4", four)
    # The controller raises the format straight to the highest every node reads,
    # this build's (NODE_PEER_ADDRESS or later): records carry it.
    await wait_cluster_format(three, LOG_FORMAT)
    async with AsyncClient([n.address for n in three.nodes]) as client:
        await client.member_add("n4", four.node("n4").address)


async def three_linked_to(port: int, what: str) -> None:
    await wait_until(
        lambda: established_local_ports().count(port) == 3,
        f"n1, n2 and n3 linked to {what}",
        limit_s=DEADLINE_S / 2,
    )


async def test_a_node_added_by_member_add_is_dialled_at_the_peer_address_it_reports(
    tmp_path: Path,
) -> None:
    """n1..n3's files do not list n4: they learn it from the metadata record that
    `member add` writes, which carries the peer address n4 reported itself."""
    four, n4, three, own = n4_outside_the_files(tmp_path)
    async with running(three, own) as nodes:
        with trio.fail_after(DEADLINE_S):
            await add_n4(nodes, four, three)
            await three_linked_to(peer_port(four, "n4"), "n4's peer address")
            for node_id in ("n1", "n2", "n3"):
                assert own[node_id].dial_address(node_id, "n4") == n4.peer_address


async def test_a_joined_node_restarted_with_another_peer_address_is_recorded_and_redialled(
    tmp_path: Path,
) -> None:
    """n4 says its own peer address in the hello of each peer link: once it moves
    (or drops) it in its own file and restarts, the controller records that, and
    n1..n3, whose files do not list n4, redial it there."""
    four, n4, three, own = n4_outside_the_files(tmp_path)

    def n4_as(peer_address: str | None) -> ClusterConfig:
        moved = dataclasses.replace(n4, peer_address=peer_address)
        return dataclasses.replace(four, nodes=[*four.nodes[:3], moved])

    def dialled_at(address: str) -> bool:
        return all(own[n].dial_address(n, "n4") == address for n in own)

    async with running(three, own) as nodes:
        with trio.fail_after(DEADLINE_S):
            await add_n4(nodes, four, three)
            await wait_until(lambda: dialled_at(n4.peer_address), "n4 learned")
            taken = {n.port for n in four.nodes} | {peer_port(four, n.id) for n in four.nodes}
            moved_to = f"127.0.0.1:{free_ports(1, avoid=taken)[0]}"
            await nodes.stop("n4")
            await nodes.start("n4", n4_as(moved_to))
            await three_linked_to(int(moved_to.rpartition(":")[2]), "n4's new peer address")
            assert dialled_at(moved_to)
            # Dropped from its file: back to its address, which still serves peers.
            await nodes.stop("n4")
            await nodes.start("n4", n4_as(None))
            await wait_until(lambda: dialled_at(n4.address), "n4 learned at its address")
            # No client dials n4: its address's connections are the three links.
            await three_linked_to(n4.port, "n4's address")
