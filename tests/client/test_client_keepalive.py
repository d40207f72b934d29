"""The client's ``tcp_keepalive``: on every connection it dials, read back with
getsockopt (tests/tcp_sockets.py), and refused when it is not a setting."""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest
import trio
from raftlog.client import AsyncClient, Client
from raftlog.client.connection import Connection
from raftlog.client.keepalive import DEFAULT_TCP_KEEPALIVE_S

from tests.tcp_sockets import DEFAULT_KEEPALIVE, KeepaliveOptions, dialled_to, keepalive_on

from .fake_server import FakeCluster

linux_only = pytest.mark.skipif(
    not hasattr(socket, "TCP_USER_TIMEOUT"), reason="reads Linux's TCP options back"
)


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


@linux_only
async def test_a_connection_has_the_default_keepalive(fake: FakeCluster, nursery: Any) -> None:
    assert DEFAULT_TCP_KEEPALIVE_S == 30
    await Connection.open(nursery, fake.address("n1"), client_id="c1")
    assert keepalive_on(dialled_to(port_of(fake.address("n1")))) == [DEFAULT_KEEPALIVE]


@linux_only
@pytest.mark.parametrize(
    ("tcp_keepalive", "expected"),
    [(9, KeepaliveOptions(True, 9, 3, 3, 18_000)), (0, None)],
)
async def test_the_client_option_reaches_every_connection(
    fake: FakeCluster, tcp_keepalive: int, expected: KeepaliveOptions | None
) -> None:
    async with AsyncClient(fake.bootstrap(), tcp_keepalive=tcp_keepalive) as client:
        with trio.fail_after(10):
            await client.produce("t", b"v", partition=0)  # bootstrap n1, then leader n2
        # The leader's connection at least; the bootstrap node's too, unless
        # the client happened to ask the leader first.
        ports = {port_of(fake.address(n)) for n in ("n1", "n2")}
        found = keepalive_on(lambda entry: entry.remote_port in ports)
    assert found
    for options in found:
        if expected is None:
            assert not options.enabled and options.user_timeout_ms == 0
        else:
            assert options == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-1, "must be from 0 (off) to 32767 seconds, got -1"),
        (32768, "must be from 0 (off) to 32767 seconds, got 32768"),
        (1.5, "must be an int, got float 1.5"),
        ("30", "must be an int, got str '30'"),
    ],
)
def test_a_bad_tcp_keepalive_is_refused_by_both_clients(value: object, problem: str) -> None:
    message = re.escape(f"tcp_keepalive {problem}")
    with pytest.raises(ValueError, match=message):
        AsyncClient("127.0.0.1:1", tcp_keepalive=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        Client("127.0.0.1:1", tcp_keepalive=value)
