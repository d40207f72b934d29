"""Requests served without a task (Listener.start_request): answered from a later
callback, over real sockets. The handlers' side is in test_node_driver.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing
from raftlog.server.listener import Done, RequestContext, serve
from raftlog.server.metrics import Metrics

from .cluster_harness import make_config
from .conftest import FakeNode
from .rawclient import RawConn, wait_until


class Starter:
    """Takes every "metadata" request and keeps its callback for the test to call."""

    def __init__(self) -> None:
        self.dones: list[Done] = []

    def __call__(self, ctx: RequestContext, op: str, fields: dict[str, Any], done: Done) -> bool:
        if op != "metadata":
            return False
        self.dones.append(done)
        return True


async def start(tmp_path: Path, nursery: trio.Nursery) -> tuple[Starter, FakeNode, int]:
    cfg = make_config(tmp_path, 1)
    node = FakeNode(cfg)
    starter = Starter()
    await nursery.start(
        lambda task_status: serve(
            cfg,
            "n1",
            store_incarnations=node.book,
            on_request=node.on_request,
            on_peer_msgs=node.on_peer,
            metrics=Metrics(),
            start_request=starter,
            task_status=task_status,
        )
    )
    return starter, node, cfg.node("n1").port


async def connect(port: int) -> RawConn:
    conn = await RawConn.open(port)
    assert (await conn.hello("client", "c1"))["type"] == "hello_ok"
    return conn


async def send_taken(conn: RawConn, starter: Starter, req_id: int) -> None:
    """Send a request the starter takes; return once it holds its callback."""
    taken = len(starter.dones) + 1
    await conn.send({"type": "metadata", "id": req_id})
    await wait_until(lambda: len(starter.dones) == taken, f"request {req_id} was taken")


async def test_a_taskless_request_is_answered_by_its_callback(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    starter, node, port = await start(tmp_path, nursery)
    conn = await connect(port)
    await send_taken(conn, starter, 1)
    # Not taken: a handler task serves it.
    await conn.send({"type": "list_offsets", "id": 2, "topic": "t", "partition": 0})
    second = await conn.recv()
    assert second["id"] == 2 and second["op"] == "list_offsets"
    starter.dones[0]({"answer": 42}, None)
    first = await conn.recv()
    assert (first["id"], first["ok"], first["answer"]) == (1, True, 42)
    assert [op for _c, op, _f in node.calls] == ["list_offsets"]


async def test_eof_waits_for_taskless_requests_before_closing(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    starter, _node, port = await start(tmp_path, nursery)
    conn = await connect(port)
    await send_taken(conn, starter, 7)
    await conn.stream.send_eof()  # the client is done sending, still reading
    await trio.testing.wait_all_tasks_blocked()
    starter.dones[0]({"late": True}, None)
    reply = await conn.recv()
    assert reply["id"] == 7 and reply["late"] is True
    assert await conn.closed()


async def test_an_answer_after_the_connection_ended_goes_nowhere(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A connection dropped for a bad frame does not wait for its requests; their
    descriptor is closed and may already belong to a new connection."""
    starter, _node, port = await start(tmp_path, nursery)
    old = await connect(port)
    await send_taken(old, starter, 1)
    await old.send_raw(b"\xc1")  # undecodable: the server drops this connection now
    assert await old.closed()
    await old.stream.aclose()
    new = await connect(port)  # may get the old connection's descriptor number
    await send_taken(new, starter, 99)
    await trio.testing.wait_all_tasks_blocked()
    starter.dones[0]({"stale": True}, None)  # no exception, nothing written anywhere
    starter.dones[1]({"fresh": True}, None)
    reply = await new.recv()
    assert reply["id"] == 99 and reply["fresh"] is True
    assert new.frames == []
