"""Connection: hello, pipelining, and failing every pending request on a drop."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from raftlog.client.connection import Connection
from raftlog.client.errors import ConnectionLostError, NotLeaderError, RequestTimeoutError
from raftlog.client.protocol import encode_records

from .fake_server import FakeCluster


async def test_dropped_connection_fails_every_pending_request(fake: FakeCluster, nursery):
    fake.blackhole.add("list_offsets")  # requests that stay pending
    conn = await Connection.open(nursery, fake.address("n2"), client_id="c1")
    assert conn.node == "n2"
    errors: list[BaseException] = []

    async def pending() -> None:
        try:
            await conn.request("list_offsets", {"topic": "t", "partition": 0}, 10.0)
        except ConnectionLostError as exc:
            errors.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as inner:
            for _ in range(3):
                inner.start_soon(pending)
            # Until every task (ours and the fake server's) is idle: the three
            # requests have reached the server and wait there.
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert [op for _n, op, _f in fake.requests].count("list_offsets") == 3
            await fake.nodes["n2"].drop_all()
    assert len(errors) == 3
    assert conn.closed
    with pytest.raises(ConnectionLostError) as info:
        await conn.request("list_topics", {}, 1.0)
    assert info.value.details["sent"] is False  # nothing left: safe to retry anywhere


async def test_request_timeout_and_error_reply(fake: FakeCluster, nursery):
    conn = await Connection.open(nursery, fake.address("n1"), client_id="c2")
    with pytest.raises(NotLeaderError) as info:  # n1 is not the leader
        await conn.request("list_offsets", {"topic": "t", "partition": 0}, 5.0)
    assert info.value.leader_address == fake.address("n2")
    fake.blackhole.add("list_topics")
    with pytest.raises(RequestTimeoutError):
        await conn.request("list_topics", {}, 0.1)
    assert conn.pending == 0  # the timed-out request no longer waits
    reply = await conn.request("metadata", {}, 5.0)  # the connection is still usable
    assert reply["node"] == "n1"
    assert fake.hellos[-1]["id"] == "c2" and fake.hellos[-1]["role"] == "client"


async def test_requests_larger_than_the_socket_buffer_arrive_whole_and_in_order(
    fake: FakeCluster, nursery
):
    """A request is first written with one non-blocking write; a frame the kernel
    takes only part of is finished by _flush, and requests made meanwhile queue
    behind it, so the server decodes every frame whole."""
    conn = await Connection.open(nursery, fake.address("n2"), client_id="c3")
    values = [bytes([i]) * (3 * 1024 * 1024) for i in range(3)]  # each far over the buffers

    async def produce(value: bytes) -> None:
        blob, count, crc = encode_records([(None, value, None, None)])
        fields = {"topic": "t", "partition": 0, "records": blob, "count": count, "crc": crc}
        await conn.request("produce", fields, 10.0)

    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            for value in values:
                inner.start_soon(produce, value)
                inner.start_soon(conn.request, "metadata", {}, 10.0)
    assert sorted(fake.values("t", 0)) == values
    assert [op for _n, op, _f in fake.requests].count("metadata") == 3
