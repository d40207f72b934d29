"""The generated cluster.toml is what the node loader expects, links through proxies."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from raftlog.jepsen.cluster import ClusterSettings, JepsenCluster
from raftlog.server.config import load_config


async def test_generated_config_routes_every_peer_link_through_its_proxy(tmp_path: Path) -> None:
    cluster = JepsenCluster(tmp_path, ClusterSettings(nodes=3, fsync=False,
                                                      unsafe_ack_before_commit=True))
    await cluster.prepare()
    cfg = load_config(cluster.config_path)
    assert [n.id for n in cfg.nodes] == ["n1", "n2", "n3"]
    assert cfg.fsync is False and cfg.unsafe_ack_before_commit is True
    assert cfg.unsafe_follower_reads is False
    assert cluster.mesh is not None
    for node in cfg.nodes:
        assert node.data_dir == (tmp_path / "data" / node.id).resolve()
        assert set(node.dial) == {"n1", "n2", "n3"} - {node.id}
        for peer, address in node.dial.items():
            link = cluster.mesh.links[(node.id, peer)]
            assert address == link.address and link.port > 0
            assert link.target == tuple_address(cluster.nodes[peer].address)
    # Nothing may be shared: node ports and proxy ports are all distinct.
    ports = [n.port for n in cfg.nodes] + [link.port for link in cluster.mesh.links.values()]
    assert len(set(ports)) == len(ports) == 3 + 6


async def test_peer_ports_give_every_node_a_peer_address_behind_its_proxies(
    tmp_path: Path,
) -> None:
    """--peer-ports: the proxies forward to the peer addresses; the clients'
    bootstrap stays on the nodes' addresses."""
    cluster = JepsenCluster(tmp_path, ClusterSettings(nodes=3, peer_ports=True))
    await cluster.prepare()
    cfg = load_config(cluster.config_path)
    assert cluster.mesh is not None
    for node in cfg.nodes:
        assert node.peer_address is not None and node.peer_address != node.address
        assert node.peer_address == cluster.nodes[node.id].peer_address
        for peer in node.dial:
            target = cluster.mesh.links[(node.id, peer)].target
            assert target == tuple_address(cluster.nodes[peer].peer_address or "")
    assert cluster.addresses == [n.address for n in cfg.nodes]
    unproxied = JepsenCluster(tmp_path / "direct", ClusterSettings(nodes=3, proxied=False,
                                                                   peer_ports=True))
    await unproxied.prepare()
    direct = load_config(unproxied.config_path)
    assert all(direct.dial_address("n1", n.id) == n.peer_address for n in direct.nodes[1:])


def tuple_address(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


async def test_unproxied_cluster_has_no_dial_tables(tmp_path: Path) -> None:
    cluster = JepsenCluster(tmp_path, ClusterSettings(nodes=5, proxied=False))
    await cluster.prepare()
    cfg = load_config(cluster.config_path)
    assert len(cfg.nodes) == 5 and all(not n.dial for n in cfg.nodes)


def test_readiness_counts_only_the_current_start(tmp_path: Path) -> None:
    cluster = JepsenCluster(tmp_path, ClusterSettings(nodes=1, proxied=False))
    node = cluster.nodes["n1"]
    node.log_path.write_bytes(b"=== start 1\nraftlog node ready node=n1\n=== start 2\nTraceback\n")
    node.log_offset = node.log_path.read_bytes().index(b"=== start 2")
    assert not cluster.is_ready("n1")  # the first start's ready line does not count
    with node.log_path.open("ab") as fh:
        fh.write(b"raftlog node ready node=n1\n")
    assert cluster.is_ready("n1")


async def test_spares_are_in_the_config_and_the_proxy_mesh_from_the_start(tmp_path: Path) -> None:
    cluster = JepsenCluster(tmp_path, ClusterSettings(nodes=3, spares=2))
    await cluster.prepare()
    cfg = load_config(cluster.config_path)
    assert cluster.initial_ids == ["n1", "n2", "n3"] and cluster.spare_ids == ["n4", "n5"]
    assert {n.id: n.join for n in cfg.nodes} == {
        "n1": False, "n2": False, "n3": False, "n4": True, "n5": True}
    assert cluster.mesh is not None and len(cluster.mesh.links) == 5 * 4
    for node in cfg.nodes:  # every node reaches every other one through a proxy
        assert set(node.dial) == {n.id for n in cfg.nodes} - {node.id}
    # Clients bootstrap from the initial nodes only (spares are not running).
    assert cluster.addresses == [cluster.address(n) for n in ("n1", "n2", "n3")]
    # A removed initial node comes back as a joiner: the file says so from then on.
    cluster.set_join("n2")
    assert load_config(cluster.config_path).node("n2").join is True


async def test_a_node_that_exits_at_start_says_why(tmp_path: Path) -> None:
    """The error names the node's own last words (here, a taken port), so a CI
    log that shows only the exception still says what happened."""
    cluster = JepsenCluster(tmp_path, ClusterSettings(nodes=1, proxied=False))
    await cluster.prepare()
    host, port = tuple_address(cluster.nodes["n1"].address)
    try:
        with socket.socket() as squatter:
            squatter.bind((host, port))
            squatter.listen()
            with pytest.raises(RuntimeError, match="already in use"):
                await cluster.start_all(deadline=30.0)
    finally:
        cluster.stop_all()
