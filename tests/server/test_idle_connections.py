"""Idle and revoked client connections are closed by the node, and the client
library retires idle ones before the node would: real sockets on 127.0.0.1,
the listener with fake handlers (server/connection_sweeper.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.connection import _idle_limit
from raftlog.server.auth_reload import reload_auth_and_report
from raftlog.server.config import AuthConfig, ClusterConfig, Limits, load_config, render_config

from .cluster_harness import make_config
from .conftest import FakeNode, start_fake_node
from .rawclient import WAIT_S, RawConn, wait_until
from .test_tls import serve_fake

LIMIT_MS = 300


def with_idle_limit(cfg: ClusterConfig, ms: int) -> ClusterConfig:
    return dataclasses.replace(cfg, limits=Limits(connections_max_idle_ms=ms))


async def open_client(node: FakeNode, ident: str, **hello_fields: object) -> RawConn:
    conn = await RawConn.open(node.port)
    reply = await conn.hello("client", ident, **hello_fields)
    assert reply["type"] == "hello_ok", reply
    return conn


async def test_the_node_closes_an_idle_client_connection_and_frees_its_slot(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Only the connection with nothing in flight is closed: one waiting on a
    request for longer than the limit, and a peer link, are kept."""
    node = await start_fake_node(nursery, with_idle_limit(make_config(tmp_path, 3), LIMIT_MS))
    opened = trio.current_time()
    idle = await RawConn.open(node.port)
    welcome = await idle.hello("client", "idle")
    assert welcome["limits"]["connections_max_idle_ms"] == LIMIT_MS  # for the client library
    waiting = await open_client(node, "waiting")
    await waiting.send({"type": "fetch", "id": 1, "topic": "t", "partition": 0, "offset": 7})
    peer = await RawConn.open(node.port)
    linked = await peer.hello("peer", "n2", incarnation="i2", cluster=node.cfg.name)
    assert linked["type"] == "hello_ok", linked
    assert node.metrics.client_connections.value() == 2

    assert await idle.closed()
    assert trio.current_time() - opened >= LIMIT_MS / 1000
    closed = node.metrics.client_connections_closed
    assert closed.value(reason="idle") == 1 and closed.value(reason="revoked") == 0
    await wait_until(lambda: node.metrics.client_connections.value() == 1, "the slot freed")

    # Open as long as the closed one, yet its request is answered and it serves on.
    node.gate(7).set()
    assert (await waiting.recv())["offset"] == 7
    assert (await waiting.request(2, "metadata"))["ok"] is True
    await peer.send({"type": "raft", "msgs": [[1, b"still linked"]]})
    await node.wait_peer_msgs(1)
    assert node.peer_msgs == [("n2", [(1, b"still linked")])]


async def test_with_the_limit_at_zero_nothing_is_announced_or_closed_for_idleness(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    node = await start_fake_node(nursery, with_idle_limit(make_config(tmp_path, 1), 0))
    conn = await RawConn.open(node.port)
    welcome = await conn.hello("client", "c")
    assert "connections_max_idle_ms" not in welcome["limits"]
    assert (await conn.request(1, "metadata"))["ok"] is True


async def test_an_idle_connection_whose_token_a_reload_revoked_is_closed(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Its slot is freed without waiting for it to send (or for the idle limit,
    switched off here); the connection with a token still valid serves on."""
    auth = AuthConfig(client_tokens=("kept", "leaked"), revoked_grace_s=0.2)
    cfg = dataclasses.replace(with_idle_limit(make_config(tmp_path, 1), 0), auth=auth)
    node = await start_fake_node(nursery, cfg)
    kept = await open_client(node, "kept", credential="kept")
    leaked = await open_client(node, "leaked", credential="leaked")
    assert (await leaked.request(1, "metadata"))["ok"] is True

    cfg.auth.replace_clients(("kept",), ())  # what an [auth] reload does
    assert await leaked.closed()
    assert node.metrics.client_connections_closed.value(reason="revoked") == 1
    assert (await kept.request(1, "metadata"))["ok"] is True
    assert node.metrics.client_connections.value() == 1


async def test_a_reload_applies_a_new_revoked_grace(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """``[auth] revoked_grace_s`` is the listener's grace, and an [auth] reload
    (what ``cluster reload`` and SIGHUP do) re-reads it: lowered from a minute
    to 0.2 s in the same reload that revokes a token, the revoked idle
    connection is closed well within the minute."""
    path = tmp_path / "cluster.toml"
    base = with_idle_limit(make_config(tmp_path, 1), 0)

    def write(grace: float, *tokens: str) -> None:
        auth = AuthConfig(client_tokens=tokens, revoked_grace_s=grace)
        path.write_text(render_config(dataclasses.replace(base, auth=auth)))

    write(60.0, "kept", "leaked")
    cfg = load_config(path)  # read from a file, as a node started by the CLI is
    served = await serve_fake(nursery, cfg)
    sweeper = served.listener.sweeper
    assert sweeper is not None and sweeper.revoked_grace_s == 60.0
    nursery.start_soon(sweeper.run)
    leaked = await RawConn.open(served.node.port)
    assert (await leaked.hello("client", "leaked", credential="leaked"))["type"] == "hello_ok"

    write(0.2, "kept")
    assert reload_auth_and_report(cfg, "n1", served.metrics) is None
    assert sweeper.revoked_grace_s == 0.2
    assert await leaked.closed()  # within WAIT_S: far less than the old grace
    assert served.metrics.client_connections_closed.value(reason="revoked") == 1


# ------------------------------------------------------------------ the client


def test_the_client_keeps_a_connection_at_most_ninety_percent_of_the_nodes_limit() -> None:
    assert _idle_limit(540.0, 600_000) == 540.0
    assert _idle_limit(540.0, LIMIT_MS) == pytest.approx(0.27)
    assert _idle_limit(None, 1_000) == pytest.approx(0.9)
    assert _idle_limit(0.1, None) == 0.1
    assert _idle_limit(None, None) is None
    with pytest.raises(ValueError, match="connections_max_idle must be > 0 or None"):
        AsyncClient("127.0.0.1:1", connections_max_idle=0)


async def test_the_client_dials_again_after_the_node_closed_its_idle_connection(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    node = await start_fake_node(nursery, with_idle_limit(make_config(tmp_path, 1), LIMIT_MS))
    address = f"127.0.0.1:{node.port}"
    with trio.fail_after(WAIT_S):
        async with AsyncClient(address, connections_max_idle=None) as client:
            assert (await client.cluster_status(address))["node"] == "n1"
            first = client._conns[address]
            assert first.max_idle == pytest.approx(LIMIT_MS / 1000 * 0.9)
            await wait_until(lambda: first.closed, "the node to close the idle connection")
            assert (await client.cluster_status(address))["node"] == "n1"
            assert client._conns[address] is not first
    assert node.metrics.client_connections_closed.value(reason="idle") >= 1


async def test_the_client_retires_a_connection_idle_past_its_own_limit(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The node keeps idle connections here (limit 0); the client's own limit
    makes it close its connection and dial a new one at the next call."""
    node = await start_fake_node(nursery, with_idle_limit(make_config(tmp_path, 1), 0))
    address = f"127.0.0.1:{node.port}"
    with trio.fail_after(WAIT_S):
        async with AsyncClient(address, connections_max_idle=0.2) as client:
            await client.cluster_status(address)
            first = client._conns[address]
            assert first.max_idle == 0.2 and not first.expired(trio.current_time())
            await trio.sleep_until(first.last_active + first.max_idle)  # the limit is time
            assert first.expired(trio.current_time()) and not first.closed
            await client.cluster_status(address)
            assert first.closed and client._conns[address] is not first
            await wait_until(
                lambda: node.metrics.client_connections.value() == 1, "the old one to end"
            )
    assert node.metrics.client_connections_closed.value(reason="idle") == 0
