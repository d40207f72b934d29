"""A whole cluster inside one trio run: real NodeStores and Raft cores, real
MultiRaft drivers and RequestHandlers, an in-memory transport between them.

Fast and deterministic enough to test the driver's data path without
processes or sockets; the subprocess tests (test_node_processes.py) cover
the real wiring.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import encode_records
from raftlog.log.store import NodeStore
from raftlog.raft.types import Role
from raftlog.server.config import ClusterConfig
from raftlog.server.driver import MultiRaft
from raftlog.server.errors import HandlerError
from raftlog.server.handlers import RequestHandlers
from raftlog.server.membership_ops import NodeIdentity

from .cluster_harness import make_config

_C = TypeVar("_C", bound="InProcCluster")


@dataclass(slots=True)
class Ctx:
    client_id: str = "test"
    peer_address: str = "memory"
    connection_id: int = 0
    node_id: str = ""
    user: Any = None  # no [[auth.user]]: everything allowed


class MemNet:
    """Delivers each send straight into the receiver's inbox, unless the link is cut."""

    def __init__(self) -> None:
        self.drivers: dict[str, MultiRaft] = {}
        self.cut: set[tuple[str, str]] = set()
        self.sent = 0

    def isolate(self, node: str, others: list[str]) -> None:
        for other in others:
            self.cut.add((node, other))
            self.cut.add((other, node))

    def heal(self) -> None:
        self.cut.clear()


@dataclass(slots=True)
class MemTransport:
    net: MemNet
    node_id: str

    def send(
        self, peer: str, msgs: list[tuple[int, bytes]], *, flush_follows: bool = False
    ) -> None:
        if (self.node_id, peer) in self.net.cut:
            return
        driver = self.net.drivers.get(peer)
        if driver is not None and driver._running:
            self.net.sent += 1
            driver.on_peer_msgs(self.node_id, list(msgs))

    def flush(self) -> None:
        pass  # send() delivers at once

    def undelivered(self) -> bool:
        return False

    async def deliver(self) -> None:
        pass

    def is_connected(self, peer: str) -> bool:
        return (self.node_id, peer) not in self.net.cut and peer in self.net.drivers


@dataclass
class InProcCluster:
    cfg: ClusterConfig
    nursery: trio.Nursery
    net: MemNet = field(default_factory=MemNet)
    stores: dict[str, NodeStore] = field(default_factory=dict)
    handlers: dict[str, RequestHandlers] = field(default_factory=dict)
    scopes: dict[str, trio.CancelScope] = field(default_factory=dict)
    stopped: dict[str, trio.Event] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def node_ids(self) -> list[str]:
        return [n.id for n in self.cfg.nodes]

    def driver(self, node: str) -> MultiRaft:
        return self.net.drivers[node]

    async def start(self, node: str) -> None:
        ncfg = self.cfg.node(node)
        store = NodeStore.open(
            ncfg.data_dir, cluster=self.cfg.name, node_id=node, fsync=self.cfg.fsync
        )
        driver = MultiRaft(self.cfg, node, store, MemTransport(self.net, node), debug=True)
        driver.start()
        self.stores[node] = store
        self.net.drivers[node] = driver
        self.handlers[node] = RequestHandlers(self.cfg, node, driver)
        # No sockets in process: `member add` asks the node's store who it is.
        self.handlers[node].membership.ask_identity = self._ask_identity
        self.stopped[node] = trio.Event()
        await self.nursery.start(self._run, node, driver)

    async def _ask_identity(self, node: str, address: str, timeout_s: float) -> NodeIdentity:
        store = self.stores.get(node)
        if store is None or self.stopped[node].is_set():
            raise HandlerError(ErrorCode.NOT_AVAILABLE, f"{node} is not running")
        return NodeIdentity(store.identity.incarnation, self.cfg.node(node).peer_address)

    async def _run(self, node: str, driver: MultiRaft, task_status: Any) -> None:
        try:
            with trio.CancelScope() as scope:
                self.scopes[node] = scope
                await driver.run(task_status=task_status)
        finally:
            self.stopped[node].set()

    async def stop(self, node: str) -> None:
        self.scopes[node].cancel()
        await self.stopped[node].wait()
        self.net.drivers.pop(node, None)
        self.stores.pop(node).close()

    async def stop_all(self) -> None:
        for node in list(self.stores):
            await self.stop(node)

    @contextlib.asynccontextmanager
    async def running(self: _C) -> AsyncIterator[_C]:
        """Every node started; every node stopped on exit (the fixtures' shape)."""
        for node in self.node_ids:
            await self.start(node)
        try:
            yield self
        finally:
            await self.stop_all()

    async def call(self, at: str, op: str, **fields: Any) -> dict[str, Any]:
        return await self.handlers[at].handle(Ctx(node_id=at), op, fields)

    async def call_error(self, at: str, op: str, **fields: Any) -> HandlerError:
        try:
            reply = await self.call(at, op, **fields)
        except HandlerError as exc:
            return exc
        raise AssertionError(f"{op} on {at} succeeded unexpectedly: {reply}")

    async def wait_for(self, predicate: Any, within: float = 10.0, what: str = "") -> Any:
        """Poll ``predicate`` after every driver turn of any node, bounded by ``timeout``."""
        deadline = trio.current_time() + within
        while True:
            value = predicate()
            if value:
                return value
            if trio.current_time() >= deadline:
                raise AssertionError(f"timed out waiting for {what or predicate}")
            with trio.move_on_at(min(deadline, trio.current_time() + 0.05)):
                drivers = list(self.net.drivers.values())
                if drivers:
                    await drivers[0].wait_changed(deadline)

    def leader(self, gid: int) -> str | None:
        for node, driver in self.net.drivers.items():
            group = driver.groups.get(gid)
            if group is not None and group.role is Role.LEADER:
                return node
        return None

    async def wait_leader(self, gid: int, within: float = 10.0) -> str:
        return await self.wait_for(lambda: self.leader(gid), within, f"leader of group {gid}")

    async def create_topic(self, name: str, partitions: int = 1, replicas: int = 3) -> dict:
        meta_leader = await self.wait_leader(0)
        await self.wait_for(
            lambda: len(self.driver(meta_leader).metadata.nodes) == len(self.node_ids),
            what="all nodes registered",
        )
        reply = await self.call(
            meta_leader, "create_topic", topic=name, partitions=partitions, replicas=replicas
        )
        return reply["topic"]

    async def produce(
        self, node: str, topic: str, values: list[bytes], partition: int = 0, **extra: Any
    ) -> dict[str, Any]:
        blob, count, crc = encode_records([(None, v, None, None) for v in values])
        return await self.call(
            node,
            "produce",
            topic=topic,
            partition=partition,
            records=blob,
            count=count,
            crc=crc,
            **extra,
        )


@contextlib.asynccontextmanager
async def running_with_topic(
    tmp_path: Path, topic: str = "t", partitions: int = 1
) -> AsyncIterator[InProcCluster]:
    """A running 3-node cluster (``small_config``) that has ``topic``; for fixtures."""
    async with trio.open_nursery() as nursery:
        c = InProcCluster(small_config(tmp_path), nursery)
        async with c.running():
            await c.create_topic(topic, partitions=partitions)
            yield c
        nursery.cancel_scope.cancel()


def small_config(tmp_path: Path, nodes: int = 3, **overrides: Any) -> ClusterConfig:
    overrides.setdefault("fsync", False)
    overrides.setdefault("tick_ms", 10)
    overrides.setdefault("election_ticks", 10)
    return make_config(tmp_path, nodes, **overrides)
