"""Fixtures of the server tests: a listener with fake handlers, and local clusters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from raftlog.client.errors import ErrorCode
from raftlog.server.config import ClusterConfig
from raftlog.server.errors import HandlerError
from raftlog.server.listener import MemoryIncarnationBook, RequestContext, serve
from raftlog.server.log_format import LogFormats
from raftlog.server.metrics import Metrics

from .cluster_harness import local_cluster, make_config

__all__ = ["FakeNode", "local_cluster", "start_fake_node"]


@dataclass
class FakeNode:
    """What the listener sees of a node: a request handler and a peer-message sink."""

    cfg: ClusterConfig
    node_id: str = "n1"
    metrics: Metrics = field(default_factory=Metrics)
    book: MemoryIncarnationBook = field(default_factory=MemoryIncarnationBook)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    peer_msgs: list[tuple[str, list[tuple[int, bytes]]]] = field(default_factory=list)
    gates: dict[int, trio.Event] = field(default_factory=dict)
    entered: int = 0
    port: int = 0
    peer_event: trio.Event = field(default_factory=trio.Event)
    status_groups: list[dict[str, Any]] = field(default_factory=list)
    status_nodes: list[dict[str, str]] | None = None  # cluster_status's "nodes", if any

    async def wait_peer_msgs(self, count: int) -> None:
        with trio.fail_after(5):
            while len(self.peer_msgs) < count:
                await self.peer_event.wait()
                self.peer_event = trio.Event()

    def gate(self, offset: int) -> trio.Event:
        return self.gates.setdefault(offset, trio.Event())

    async def on_request(self, ctx: RequestContext, op: str, fields: dict[str, Any]) -> dict:
        self.calls.append((ctx.client_id, op, fields))
        self.entered += 1
        if op == "fetch":  # blocks until the test opens the gate of that offset
            await self.gate(fields["offset"]).wait()
            return {"offset": fields["offset"]}
        if op == "describe_topic":
            raise HandlerError(ErrorCode.UNKNOWN_TOPIC, "no such topic", topic=fields["topic"])
        if op == "delete_topic":
            raise RuntimeError("handler bug")
        if op == "cluster_status":
            reply: dict[str, Any] = {"node": self.node_id, "groups": self.status_groups}
            if self.status_nodes is not None:
                reply["nodes"] = self.status_nodes
            return reply
        if op == "list_topics":
            return {"topics": {1, 2}}  # not msgpack-encodable: a handler bug
        return {"op": op, "client": ctx.client_id, "node": ctx.node_id, "fields": fields}

    async def wait_peer_msgs_total(self, count: int) -> None:
        """Until ``count`` messages (over all frames) have arrived, bounded."""
        with trio.fail_after(10):
            while sum(len(m) for _, m in self.peer_msgs) < count:
                await self.peer_event.wait()
                self.peer_event = trio.Event()

    def on_peer(self, from_node: str, msgs: list[tuple[int, bytes]]) -> None:
        self.peer_msgs.append((from_node, msgs))
        self.peer_event.set()


async def start_fake_node(
    nursery: trio.Nursery,
    cfg: ClusterConfig,
    node_id: str = "n1",
    book: MemoryIncarnationBook | None = None,
    on_peer_connected: Callable[[str], None] | None = None,
    log_formats: LogFormats | None = None,
) -> FakeNode:
    node = FakeNode(cfg, node_id)
    if book is not None:
        node.book = book
    await nursery.start(
        lambda task_status: serve(
            cfg,
            node_id,
            store_incarnations=node.book,
            on_request=node.on_request,
            on_peer_msgs=node.on_peer,
            metrics=node.metrics,
            on_peer_connected=on_peer_connected,
            log_formats=log_formats,
            task_status=task_status,
        )
    )
    node.port = cfg.node(node_id).port
    return node


@pytest.fixture
def cfg(tmp_path: Path) -> ClusterConfig:
    return make_config(tmp_path, 3)


@pytest.fixture
async def fake_node(cfg: ClusterConfig, nursery: trio.Nursery) -> AsyncIterator[FakeNode]:
    yield await start_fake_node(nursery, cfg)
