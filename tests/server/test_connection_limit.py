"""[limits] max_client_connections over real sockets: refusal, peers exempt, release."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing
from raftlog.client.aio import AsyncClient
from raftlog.client.protocol import encode_frame, hello
from raftlog.server.config import AuthConfig, ClusterConfig, Limits, QuotaConfig
from raftlog.server.metrics import Metrics

from .cluster_harness import make_config
from .conftest import FakeNode, start_fake_node
from .rawclient import RawConn, wait_until
from .test_listener import memory_listener, read_frames


def limited(tmp_path: Path, limit: int, nodes: int = 3, **overrides: object) -> ClusterConfig:
    return make_config(tmp_path, nodes, limits=Limits(max_client_connections=limit), **overrides)


def gauge(node: FakeNode) -> float:
    return node.metrics.client_connections.value()


def refused(node: FakeNode) -> float:
    return node.metrics.client_connections_refused.value()


async def admitted_client(node: FakeNode, ident: str) -> RawConn:
    conn = await RawConn.open(node.port)
    reply = await conn.hello("client", ident)
    assert reply["type"] == "hello_ok", reply
    return conn


async def served(conn: RawConn, req_id: int) -> bool:
    reply = await conn.request(req_id, "metadata")
    return reply["id"] == req_id and reply["ok"] is True


def test_fresh_metrics_render_both_at_zero() -> None:
    text = Metrics().registry.render()
    assert "# TYPE raftlog_client_connections gauge" in text
    assert "\nraftlog_client_connections 0\n" in text
    assert "# TYPE raftlog_client_connections_refused_total counter" in text
    assert "\nraftlog_client_connections_refused_total 0\n" in text


async def test_limit_refuses_clients_only_and_frees_a_slot_on_close(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    node = await start_fake_node(nursery, limited(tmp_path, 2))
    c1 = await admitted_client(node, "c1")
    c2 = await admitted_client(node, "c2")
    assert await served(c1, 1) and await served(c2, 1)
    assert gauge(node) == 2 and refused(node) == 0

    c3 = await RawConn.open(node.port)
    reply = await c3.hello("client", "c3")
    assert reply["ok"] is False and reply["error"] == "NOT_AVAILABLE", reply
    assert "node n1 has 2 client connections (max_client_connections)" in reply["message"]
    assert await c3.closed()
    assert refused(node) == 1 and gauge(node) == 2
    assert node.metrics.hello_rejected.value(code="NOT_AVAILABLE") == 1
    assert [c[0] for c in node.calls] == ["c1", "c2"]  # c3 reached no handler

    # Node-to-node Raft traffic is never counted nor refused by the client limit.
    peer = await RawConn.open(node.port)
    ok = await peer.hello("peer", "n2", cluster=node.cfg.name, incarnation="i")
    assert ok["type"] == "hello_ok", ok
    await peer.send({"type": "raft", "msgs": [[0, b"m"]]})
    await node.wait_peer_msgs(1)
    assert gauge(node) == 2 and node.metrics.connections.value(role="peer") == 1

    # The refusal closed c3 only: the admitted clients are still served.
    assert await served(c1, 2) and await served(c2, 2)

    await c1.aclose()
    await wait_until(lambda: gauge(node) == 1, "c1's slot to be given back")
    c4 = await admitted_client(node, "c4")
    assert await served(c4, 1)
    assert gauge(node) == 2 and refused(node) == 1
    text = node.metrics.registry.render()
    assert "\nraftlog_client_connections 2\n" in text
    assert "\nraftlog_client_connections_refused_total 1\n" in text


async def test_simultaneous_hellos_cannot_overshoot_the_limit(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    node = await start_fake_node(nursery, limited(tmp_path, 2))
    conns = [await RawConn.open(node.port) for _ in range(6)]
    # All six hellos are on the wire before the server answers any of them.
    for i, conn in enumerate(conns):
        await conn.send(hello("client", f"c{i}"))
    replies = [await conn.recv() for conn in conns]
    codes = sorted(r["error"] if r.get("ok") is False else r["type"] for r in replies)
    assert codes == ["NOT_AVAILABLE"] * 4 + ["hello_ok"] * 2, replies
    assert gauge(node) == 2 and refused(node) == 4


async def test_slot_is_given_back_however_the_connection_ends(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    node = await start_fake_node(nursery, limited(tmp_path, 1))
    # A framing error closes the connection from the server side.
    bad = await admitted_client(node, "bad")
    await bad.send_raw(b"\xc1")  # 0xc1 is never valid msgpack
    assert await bad.closed()
    await wait_until(lambda: gauge(node) == 0, "slot back after a framing error")
    # A client that vanishes with a request still in its handler: the server
    # finishes the request (its reply finds a closed socket), then lets go.
    gone = await admitted_client(node, "gone")
    await gone.send({"type": "fetch", "id": 1, "topic": "t", "partition": 0, "offset": 5})
    await wait_until(lambda: node.entered == 1, "the fetch to be running")
    await gone.aclose()
    node.gate(5).set()
    await wait_until(lambda: gauge(node) == 0, "slot back after EOF mid-request")
    last = await admitted_client(node, "last")
    assert await served(last, 1)


async def test_cancelled_connection_gives_its_slot_back(tmp_path: Path) -> None:
    cfg = limited(tmp_path, 1)
    node = FakeNode(cfg)
    listener = memory_listener(cfg, node)
    client_end, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.handle_stream, server_end)
        await client_end.send_all(encode_frame(hello("client", "c")))
        assert (await read_frames(client_end, 1))[0]["type"] == "hello_ok"
        assert listener.client_connections == 1 and gauge(node) == 1
        nursery.cancel_scope.cancel()  # e.g. the node shutting down
    assert listener.client_connections == 0 and gauge(node) == 0


async def test_client_library_retries_a_hello_refused_for_the_limit(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """NOT_AVAILABLE at hello is retriable: the call waits out the full node."""
    node = await start_fake_node(nursery, limited(tmp_path, 1))
    hog = await admitted_client(node, "hog")

    async def free_slot_after_first_refusal() -> None:
        await wait_until(lambda: refused(node) >= 1, "the library's hello refused")
        await hog.aclose()

    address = node.cfg.node("n1").address
    async with AsyncClient(address, request_timeout=10.0) as client, trio.open_nursery() as inner:
        inner.start_soon(free_slot_after_first_refusal)
        reply = await client.request("cluster_status", idempotent=True)
    assert reply["node"] == "n1"
    assert refused(node) >= 1


async def replica_hello(node: FakeNode, ident: str, **kw: object) -> tuple[RawConn, dict]:
    conn = await RawConn.open(node.port)
    return conn, await conn.hello("client", ident, cluster=node.cfg.name, **kw)


async def test_snapshot_transfer_connections_are_not_counted(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A node full of clients still serves a follower's catch-up (replica_fetch)."""
    node = await start_fake_node(nursery, limited(tmp_path, 1))
    hog = await admitted_client(node, "hog")
    replica, reply = await replica_hello(node, "replica:n2")
    assert reply["type"] == "hello_ok", reply
    assert await served(replica, 1)
    assert gauge(node) == 1 and refused(node) == 0
    assert node.metrics.connections.value(role="replica") == 1
    # Ordinary clients are still held to the limit.
    late = await RawConn.open(node.port)
    assert (await late.hello("client", "late"))["error"] == "NOT_AVAILABLE"
    await replica.aclose()
    await wait_until(
        lambda: node.metrics.connections.value(role="replica") == 0, "the replica to be gone"
    )
    assert gauge(node) == 1 and await served(hog, 1)


async def test_with_a_peer_token_only_a_proven_node_skips_the_limit(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    auth = AuthConfig(peer_token="s3cret")
    node = await start_fake_node(nursery, limited(tmp_path, 1, auth=auth))
    hog = await admitted_client(node, "hog")
    proven, reply = await replica_hello(node, "replica:n2", peer_credential="s3cret")
    assert reply["type"] == "hello_ok", reply
    # The name alone, or a wrong proof, makes an ordinary client: refused when full.
    for kw in ({}, {"peer_credential": "guess"}):
        _, reply = await replica_hello(node, "replica:n2", **kw)
        assert reply.get("error") == "NOT_AVAILABLE", (kw, reply)
    assert refused(node) == 2 and await served(proven, 1) and await served(hog, 1)


async def test_snapshot_transfer_connections_skip_client_quotas(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cfg = limited(tmp_path, 10, quotas=QuotaConfig(requests_per_sec=1.0))
    node = await start_fake_node(nursery, cfg)
    replica, _ = await replica_hello(node, "replica:n2")
    for req_id in range(1, 6):
        assert await served(replica, req_id)
    # The same burst from a client is throttled (the bucket holds one request).
    app = await admitted_client(node, "app")
    replies = [await app.request(i, "metadata") for i in range(1, 6)]
    assert any(r.get("error") == "THROTTLED" for r in replies), replies
    assert node.metrics.throttled.value(quota="requests_per_sec") >= 1
