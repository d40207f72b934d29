"""The node-wide accept rate (server/accept_loop.py): the bucket's arithmetic,
and over real sockets on 127.0.0.1 that a node past its rate stops accepting
while the connections it holds keep being served."""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from raftlog.client.protocol import hello
from raftlog.server import listener as listener_module
from raftlog.server.accept_loop import AcceptRate
from raftlog.server.config import Limits

from .cluster_harness import make_config
from .conftest import start_fake_node
from .manual_clock import FakeClock
from .rawclient import RawConn, wait_until


def test_the_rate_allows_a_seconds_worth_then_says_how_long_to_wait() -> None:
    clock = FakeClock()
    rate = AcceptRate(4, clock)
    for _ in range(4):
        assert rate.delay() == 0.0
        rate.accepted()
    assert rate.delay() == pytest.approx(0.25)  # one token at 4/s
    clock.now += 0.1  # 0.4 of a token
    assert rate.delay() == pytest.approx(0.15)
    clock.now += 0.15
    assert rate.delay() == 0.0


def test_the_burst_is_capped_at_a_seconds_worth_and_zero_means_no_limit() -> None:
    clock = FakeClock()
    rate = AcceptRate(2, clock)
    clock.now += 3600.0  # a quiet hour banks no more than a second's worth
    for _ in range(2):
        assert rate.delay() == 0.0
        rate.accepted()
    assert rate.delay() > 0
    unlimited = AcceptRate(0, clock)
    for _ in range(10_000):
        unlimited.accepted()
    assert unlimited.delay() == 0.0
    with pytest.raises(ValueError, match="max_connection_rate"):
        AcceptRate(-1, clock)


def _nothing_received(conn: RawConn) -> bool:
    """True if no byte has arrived on ``conn`` (a non-blocking read: no wait)."""
    try:
        data = os.read(conn.stream.socket.fileno(), 1)
    except BlockingIOError:
        return True
    raise AssertionError(f"expected no reply yet, got {data!r}")


async def test_past_its_rate_the_node_stops_accepting_and_serves_what_it_holds(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()  # no token refills until the test moves it
    monkeypatch.setattr(listener_module, "AcceptRate", functools.partial(AcceptRate, clock=clock))
    cfg = make_config(tmp_path, 1, limits=Limits(max_connection_rate=20))
    node = await start_fake_node(nursery, cfg)
    throttled = node.metrics.accept_throttled_seconds

    burst = [await RawConn.open(node.port) for _ in range(20)]
    for i, conn in enumerate(burst):
        assert (await conn.hello("client", f"c{i}"))["type"] == "hello_ok"
    # The kernel completes the handshake of the next connection (it sits in the
    # accept queue), so it can send its hello; the node has not accepted it.
    waiting = await RawConn.open(node.port)
    await waiting.send(hello("client", "waiting"))
    before = throttled.value()
    # Two more rounds of the paused loop (each waits one token, 0.05 s): with
    # the clock stopped no token came, so the connection is still queued...
    await wait_until(lambda: throttled.value() >= before + 0.1, "the loop to pause again")
    assert _nothing_received(waiting)
    # ...while a connection the node holds is served as before.
    assert (await burst[0].request(1, "metadata"))["ok"] is True

    clock.now += 0.1  # two tokens
    reply: dict[str, Any] = await waiting.recv()
    assert reply["type"] == "hello_ok", reply


async def test_the_listen_backlog_reaches_listen(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int | None] = []
    real_open = trio.open_tcp_listeners

    async def recording_open(port: int, **kwargs: Any) -> list[trio.SocketListener]:
        asked.append(kwargs.get("backlog"))
        return await real_open(port, **kwargs)

    monkeypatch.setattr(listener_module.trio, "open_tcp_listeners", recording_open)
    cfg = make_config(tmp_path, 2)
    await start_fake_node(nursery, dataclasses.replace(cfg, limits=Limits(listen_backlog=64)), "n1")
    await start_fake_node(nursery, cfg, "n2")  # the default: 0, the system's largest
    assert asked == [64, None]
