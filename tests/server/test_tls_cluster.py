"""Whole nodes (server.node.run_node) with [tls], in this process, on 127.0.0.1:
clients produce and fetch through AsyncClient, and Raft traffic between the
nodes crosses only TLS links, so a committed produce proves they replicate."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import TLSError, UnauthorizedError
from raftlog.client.tls import TLSConfig
from raftlog.server.config import ClusterConfig, SnapshotConfig
from raftlog.server.node import run_node

from .cluster_harness import make_config
from .test_tls import TLSFiles, with_tls

FAST = {"fsync": False, "tick_ms": 10, "election_ticks": 10}
DEADLINE_S = 30.0


class Nodes:
    """run_node for each node of ``cfg`` in this trio run, each stoppable on its own."""

    def __init__(self, cfg: ClusterConfig, nursery: trio.Nursery) -> None:
        self.cfg = cfg
        self.nursery = nursery
        self.scopes: dict[str, trio.CancelScope] = {}
        self.stopped: dict[str, trio.Event] = {}

    async def start(self, node: str, cfg: ClusterConfig | None = None) -> None:
        """Start ``node``, with ``cfg`` instead of the cluster's when given (a node
        whose own cluster.toml says something else)."""
        self.stopped[node] = trio.Event()
        await self.nursery.start(self._run, node, cfg or self.cfg)

    async def _run(self, node: str, cfg: ClusterConfig, task_status: trio.TaskStatus) -> None:
        try:
            with trio.CancelScope() as self.scopes[node]:
                await run_node(cfg, node, task_status=task_status)
        finally:
            self.stopped[node].set()

    async def stop(self, node: str) -> None:
        self.scopes[node].cancel()
        await self.stopped[node].wait()


@contextlib.asynccontextmanager
async def running(
    cfg: ClusterConfig, own: dict[str, ClusterConfig] | None = None
) -> AsyncIterator[Nodes]:
    """Every node of ``cfg`` running in this trio run; all stopped on exit.
    ``own``: node id -> the config that node starts with instead of ``cfg``."""
    async with trio.open_nursery() as nursery:
        nodes = Nodes(cfg, nursery)
        for node in cfg.nodes:
            await nodes.start(node.id, (own or {}).get(node.id))
        try:
            yield nodes
        finally:
            nursery.cancel_scope.cancel()


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return TLSFiles.create(tmp_path / "tls")


async def test_one_node_produce_and_fetch_over_tls(tmp_path: Path, files: TLSFiles) -> None:
    cfg = with_tls(make_config(tmp_path, 1, **FAST), files, client_auth=True)
    addresses = [n.address for n in cfg.nodes]
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient(addresses, tls=files.client()) as client:
                await client.create_topic("t", partitions=1, replicas=1)
                sent = [f"v{i}".encode() for i in range(20)]
                for value in sent:
                    await client.produce("t", value, partition=0)
                fetched = await client.fetch("t", 0, 0)
                assert [r.value for r in fetched.records] == sent
            # Refused at the TLS layer, before any request: it had no certificate.
            async with AsyncClient(
                addresses, tls=TLSConfig(ca_file=files.ca_file), request_timeout=5
            ) as anonymous:
                with pytest.raises(TLSError, match="requires a client certificate"):
                    await anonymous.produce("t", b"nope", partition=0)
            async with AsyncClient(addresses, tls=files.client("again")) as client:
                offsets = await client.list_offsets("t", 0)
                assert offsets.end_offset == len(sent)  # the refused produce appended nothing


async def test_three_nodes_replicate_over_tls_and_refuse_plaintext(
    tmp_path: Path, files: TLSFiles
) -> None:
    cfg = with_tls(make_config(tmp_path, 3, **FAST), files)
    # n3 has a certificate of its own ([[node]] tls_cert_file / tls_key_file).
    n3_cert, n3_key = files.issue("n3", "127.0.0.1")
    cfg.nodes[2] = replace(cfg.nodes[2], tls_cert_file=n3_cert, tls_key_file=n3_key)
    addresses = [n.address for n in cfg.nodes]
    tls = TLSConfig(ca_file=files.ca_file)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient(addresses, tls=tls) as client:
                await client.create_topic("r", partitions=1, replicas=3)
                # Acknowledged = committed = on a majority: the leader and at
                # least one follower, reached over a TLS peer link.
                offsets = [
                    (await client.produce("r", b"x%d" % i, partition=0)).offset for i in range(10)
                ]
                assert offsets == list(range(10))
                # Every replica catches up, each status read over TLS from that node.
                views = await client.cluster_status()
                leader = next(v for v in views.values() if _group(v, "r")["role"] == "leader")
                await _wait_all_applied(client, "r", _group(leader, "r")["commit"])
            async with AsyncClient(addresses, request_timeout=2) as plaintext:
                # The node's own answer, at once: not a timeout, not "unreachable".
                with pytest.raises(UnauthorizedError, match="requires TLS"):
                    await plaintext.list_topics()


def _group(view: dict, topic: str) -> dict:
    return next(g for g in view["groups"] if g.get("topic") == topic)


async def _wait_all_applied(client: AsyncClient, topic: str, index: int) -> None:
    """Until every node's own copy of ``topic``/0 has applied Raft index ``index``."""
    while True:
        views = await client.cluster_status()
        applied = [_group(v, topic)["applied"] for v in views.values() if "error" not in v]
        if len(applied) == len(views) and min(applied) >= index:
            return
        await trio.sleep(0.05)  # bounded by the caller's fail_after


async def test_a_follower_catches_up_by_snapshot_transfer_over_tls(
    tmp_path: Path, files: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """The transfer (server/snapshot_transfer.py) dials with the node's certificate;
    replica_fetch over TLS is served only to it."""
    snapshots = SnapshotConfig(entries=20, trailing=5, chunk_bytes=1024)
    cfg = with_tls(make_config(tmp_path, 3, snapshots=snapshots, **FAST), files)
    addresses = [n.address for n in cfg.nodes]
    tls = TLSConfig(ca_file=files.ca_file)
    caplog.set_level(logging.INFO, logger="raftlog.snapshots")
    async with running(cfg) as nodes, AsyncClient(addresses, tls=tls) as client:
        with trio.fail_after(DEADLINE_S):
            await client.create_topic("s", partitions=1, replicas=3)
            await client.produce("s", b"first", partition=0)
            await nodes.stop("n3")

            async def produce(worker: int) -> None:
                for i in range(50):
                    await client.produce("s", b"w%d-%d" % (worker, i), partition=0)

            # More entries than the leader sends a silent follower (raft
            # max_inflight_msgs = 256), compacted away: only a snapshot helps.
            async with trio.open_nursery() as producers:
                for worker in range(8):
                    producers.start_soon(produce, worker)
            views = await client.cluster_status()
            leader = next(v for v in views.values() if _group(v, "s")["role"] == "leader")
            commit = _group(leader, "s")["commit"]
            await nodes.start("n3")
            await _wait_all_applied(client, "s", commit)
            assert (await client.list_offsets("s", 0)).end_offset == 401
    gid = _group(leader, "s")["group"]
    events = [r.getMessage() for r in caplog.records]
    assert any(f"event=snapshot_transfer_done group={gid} " in e for e in events), events
    assert not any("snapshot_transfer_failed" in e for e in events), events
