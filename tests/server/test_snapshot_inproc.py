"""Snapshots, compaction and catch-up by snapshot, three nodes in one trio run.

The in-memory transport of inproc_cluster.py carries Raft messages; each node
also runs its real listener on a free 127.0.0.1 port (the ``replica_fetch``
transfers go over TCP) and its snapshot task with tiny thresholds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import decode_batch
from raftlog.log.commands import SetLogFormat, SetUser
from raftlog.log.features import DYNAMIC_USERS
from raftlog.raft.types import Role
from raftlog.server.compaction import CompactionManager
from raftlog.server.config import AuthConfig, Limits
from raftlog.server.driver import MultiRaft
from raftlog.server.listener import serve
from raftlog.server.metrics import Metrics
from raftlog.server.retention import RetentionManager
from raftlog.server.snapshots import SnapshotConfig

from .inproc_cluster import InProcCluster, small_config
from .rawclient import RawConn

SNAP = SnapshotConfig(entries=20, entry_bytes=1 << 30, trailing=5, chunk_bytes=200, transfers=1)


class SnapCluster(InProcCluster):
    """InProcCluster whose nodes also serve TCP and run snapshots (and retention, and
    log compaction, when their intervals are set)."""

    retention_interval_s: float | None = None
    compaction_interval_s: float | None = None
    snapshot_config: SnapshotConfig = SNAP

    async def _run(self, node: str, driver: MultiRaft, task_status: Any) -> None:
        driver.snapshots.config = self.snapshot_config
        try:
            with trio.CancelScope() as scope:
                self.scopes[node] = scope
                async with trio.open_nursery() as inner:
                    await inner.start(driver.run)
                    await inner.start(driver.snapshots.run)
                    await inner.start(
                        lambda task_status: serve(
                            self.cfg,
                            node,
                            store_incarnations=self.stores[node],
                            on_request=self.handlers[node].handle,
                            on_peer_msgs=driver.on_peer_msgs,
                            metrics=Metrics(),
                            task_status=task_status,
                        )
                    )
                    if self.retention_interval_s is not None:
                        retention = RetentionManager(driver, interval_s=self.retention_interval_s)
                        await inner.start(retention.run)
                    if self.compaction_interval_s is not None:
                        compaction = CompactionManager(
                            driver, interval_s=self.compaction_interval_s, chunk_bytes=300,
                            dirty_ratio=0.0,  # sweep whenever anything is new
                        )
                        await inner.start(compaction.run)
                    task_status.started()
        finally:
            self.stopped[node].set()


@pytest.fixture
async def cluster(tmp_path: Any, nursery: trio.Nursery) -> AsyncIterator[SnapCluster]:
    async with SnapCluster(small_config(tmp_path), nursery).running() as c:
        yield c


async def fetch_values(c: InProcCluster, node: str, topic: str) -> list[bytes]:
    values: list[bytes] = []
    offset = 0
    for _ in range(10_000):
        reply = await c.call(node, "fetch", topic=topic, partition=0, offset=offset)
        if not reply["batches"]:
            break
        for base, ts, _count, blob in reply["batches"]:
            for record in decode_batch(base, ts, blob, offset):
                assert record.offset == offset
                values.append(record.value)
                offset += 1
    return values


async def topic_group(c: SnapCluster, name: str, **config: Any) -> tuple[int, str]:
    meta_leader = await c.wait_leader(0)
    await c.wait_for(
        lambda: len(c.driver(meta_leader).metadata.nodes) == 3, what="all nodes registered"
    )
    reply = await c.call(
        meta_leader, "create_topic", topic=name, partitions=1, replicas=3, config=config
    )
    gid = reply["topic"]["partitions"][0]["group"]
    return gid, await c.wait_leader(gid)


async def test_leader_snapshots_and_compacts_keeping_trailing_entries(cluster: SnapCluster):
    gid, leader = await topic_group(cluster, "t")
    for i in range(60):
        await cluster.produce(leader, "t", [f"v{i}".encode()])
    storage = cluster.stores[leader].group(gid)

    def compacted_behind_snapshot() -> bool:
        index = storage.snapshot_meta().index
        return index >= 2 * SNAP.entries and storage.first_index() == index - SNAP.trailing + 1

    await cluster.wait_for(compacted_behind_snapshot, what="snapshot + compaction on the leader")
    snap = storage.snapshot()
    status = await cluster.call(leader, "cluster_status")
    (mine,) = [g for g in status["groups"] if g["group"] == gid]
    assert (mine["snapshot_index"], mine["first_index"]) == (
        storage.snapshot_meta().index,
        storage.first_index(),
    )
    sm = cluster.driver(leader).groups[gid].sm
    # The snapshot's data is the state machine's small state at its index.
    assert b"next_offset" in snap.data and sm.applied_index >= snap.meta.index
    # Records are not in the Raft log any more but still readable.
    assert await fetch_values(cluster, leader, "t") == [f"v{i}".encode() for i in range(60)]


async def test_big_entries_keep_only_trailing_bytes_behind_the_snapshot(
    tmp_path: Any, nursery: trio.Nursery
):
    # trailing = 50 entries, but entries of ~1 KB and trailing_bytes = 4000:
    # the byte cap keeps 3 (a batching producer's 1,000 trailing entries were
    # ~100 MiB of log that RocksDB compacted before deleting it).
    c = SnapCluster(small_config(tmp_path), nursery)
    c.snapshot_config = SnapshotConfig(
        entries=20, entry_bytes=1 << 30, trailing=50, trailing_bytes=4000, chunk_bytes=200
    )
    for node in c.node_ids:
        await c.start(node)
    try:
        gid, leader = await topic_group(c, "big")
        values = [bytes([i]) * 1000 for i in range(60)]
        for value in values:
            await c.produce(leader, "big", [value])
        storage = c.stores[leader].group(gid)
        seen: list[tuple[int, int]] = []  # (snapshot index, entries kept behind it)

        def compacted() -> bool:
            # Read together: a new snapshot's index shows before its compaction.
            index, first = storage.snapshot_meta().index, storage.first_index()
            seen.append((index, index - first + 1))
            return index >= 40 and index - first + 1 <= 4  # 4000 bytes of ~1 KB entries

        # Without the byte cap the log keeps `trailing` = 50 entries: this times out.
        await c.wait_for(compacted, what="compaction capped by trailing_bytes")
        assert seen[-1][1] >= 1, seen  # the cap leaves some entries, not none
        assert await fetch_values(c, leader, "big") == values
    finally:
        await c.stop_all()


async def test_cut_off_follower_catches_up_by_snapshot_with_every_record(cluster: SnapCluster):
    await cut_off_and_catch_up(cluster)


async def test_catch_up_with_peer_and_client_tokens(tmp_path: Any, nursery: trio.Nursery):
    auth = AuthConfig(client_tokens=("client-secret",), peer_token="peer-secret")
    c = SnapCluster(small_config(tmp_path, auth=auth), nursery)
    for node in c.node_ids:
        await c.start(node)
    try:
        gid = await cut_off_and_catch_up(c)
        leader = c.leader(gid)
        assert leader is not None
        args = {"group": gid, "offset": 0, "node": "n1"}
        for token in (None, "wrong", "p\u00e9er"):
            err = await c.call_error(leader, "replica_fetch", **args, token=token)
            assert err.code is ErrorCode.UNAUTHORIZED
        reply = await c.call(leader, "replica_fetch", **args, token="peer-secret")
        assert reply["batches"][0][0] == 0
    finally:
        await c.stop_all()


async def test_catch_up_while_every_node_is_full_of_clients(tmp_path: Any, nursery: trio.Nursery):
    """The snapshot transfer's connection is not a client: a node whose
    max_client_connections are all taken still serves a follower's catch-up."""
    auth = AuthConfig(peer_token="peer-secret")
    cfg = small_config(tmp_path, auth=auth, limits=Limits(max_client_connections=1))
    c = SnapCluster(cfg, nursery)
    for node in c.node_ids:
        await c.start(node)
    hogs = []
    try:
        for node in c.node_ids:
            hog = await RawConn.open(cfg.node(node).port)
            assert (await hog.hello("client", f"hog-{node}"))["type"] == "hello_ok"
            hogs.append(hog)
        await cut_off_and_catch_up(c)
        late = await RawConn.open(cfg.node(c.node_ids[0]).port)
        assert (await late.hello("client", "late"))["error"] == "NOT_AVAILABLE"  # still full
        await late.aclose()
    finally:
        for hog in hogs:
            await hog.aclose()
        await c.stop_all()


async def cut_off_and_catch_up(cluster: SnapCluster) -> int:
    gid, leader = await topic_group(cluster, "t")
    follower = next(n for n in cluster.node_ids if n != leader)
    cluster.net.isolate(follower, [n for n in cluster.node_ids if n != follower])
    acked = []
    for i in range(80):
        value = f"r{i}".encode()
        await cluster.produce(leader, "t", [value])
        acked.append(value)
    lstore = cluster.stores[leader].group(gid)
    fstore = cluster.stores[follower].group(gid)
    await cluster.wait_for(
        lambda: lstore.first_index() > fstore.last_index() + 1,
        what="leader compacted past the follower's log",
    )
    cluster.net.heal()
    fdriver = cluster.driver(follower)
    ldriver = cluster.driver(leader)
    await cluster.wait_for(
        lambda: fdriver.groups[gid].sm.next_offset == ldriver.groups[gid].sm.next_offset,
        within=20,
        what="follower caught up",
    )
    assert fdriver.snapshots.stats.get("snapshots_installed", 0) >= 1
    assert fdriver.snapshots.stats.get("transfer_chunks", 0) > 1  # chunked (200 bytes)
    fsm, lsm = fdriver.groups[gid].sm, ldriver.groups[gid].sm
    assert fsm.read(0, 1 << 30) == lsm.read(0, 1 << 30)
    # Served by the follower itself once it leads: every acked record exactly once.
    await cluster.call(leader, "leader_transfer", topic="t", partition=0, to=follower)
    assert await fetch_values(cluster, follower, "t") == acked
    return gid


async def test_replica_fetch_is_refused_to_non_members(cluster: SnapCluster):
    gid, leader = await topic_group(cluster, "t")
    err = await cluster.call_error(leader, "replica_fetch", group=gid, offset=0, node="intruder")
    assert err.code is ErrorCode.UNAUTHORIZED


async def test_retention_moves_start_offset_on_every_replica(tmp_path: Any, nursery):
    c = SnapCluster(small_config(tmp_path), nursery)
    c.retention_interval_s = 0.05
    for node in c.node_ids:
        await c.start(node)
    try:
        gid, leader = await topic_group(c, "r", retention_bytes=300)
        for i in range(40):
            await c.produce(leader, "r", [f"value-{i:04d}".encode()])
        lsm = c.driver(leader).groups[gid].sm

        def converged() -> bool:
            starts = {c.driver(n).groups[gid].sm.start_offset for n in c.node_ids}
            kept = sum(size for *_, size in lsm.batch_headers())
            return len(starts) == 1 and starts.pop() > 0 and kept <= 300

        await c.wait_for(converged, within=10, what="retention applied everywhere")
        start = lsm.start_offset
        # Only whole batches go, and no more than needed: one more would exceed.
        sizes = {base: size for base, _, _, size in lsm.batch_headers()}
        assert start in sizes and lsm.next_offset == 40
        one = sizes[start]  # every batch has the same size here
        assert sum(sizes.values()) + one > 300
        err = await c.call_error(leader, "fetch", topic="r", partition=0, offset=0)
        assert err.code is ErrorCode.OUT_OF_RANGE
        assert err.details["start_offset"] == start
        reply = await c.call(leader, "fetch", topic="r", partition=0, offset=start)
        assert reply["batches"][0][0] == start
    finally:
        await c.stop_all()


async def test_cut_off_node_learns_the_metadata_by_snapshot(cluster: SnapCluster):
    meta_leader = await cluster.wait_leader(0)
    await cluster.wait_for(
        lambda: len(cluster.driver(meta_leader).metadata.nodes) == 3, what="registered"
    )
    other = next(n for n in cluster.node_ids if n != meta_leader)
    cluster.net.isolate(other, [n for n in cluster.node_ids if n != other])
    # A user kept in the metadata log (log/users.py), created before the entries the
    # snapshot replaces: the node learns it from the snapshot, as its listener sees
    # it (server/metadata_users.py).
    ldriver = cluster.driver(meta_leader)
    for command in (SetLogFormat(DYNAMIC_USERS), SetUser("late", {"token_sha256": "a" * 64}, True)):
        outcome = await ldriver.submit(0, command).wait(trio.current_time() + 10)
        assert outcome.error is None and outcome.value.ok
    names = [f"topic{i}" for i in range(3 * SNAP.entries)]
    for name in names:
        await cluster.call(meta_leader, "create_topic", topic=name, partitions=1, replicas=1)
    lstore = cluster.stores[meta_leader].group(0)
    ostore = cluster.stores[other].group(0)
    await cluster.wait_for(
        lambda: lstore.first_index() > ostore.last_index() + 1, what="metadata compacted"
    )
    cluster.net.heal()
    odriver = cluster.driver(other)
    await cluster.wait_for(
        lambda: set(names) <= set(odriver.metadata.topics), within=20, what="metadata caught up"
    )
    assert odriver.snapshots.stats.get("snapshots_installed", 0) >= 1
    assert odriver.snapshots.stats.get("transfer_chunks", 0) == 0  # metadata has no records
    assert [u.name for u in odriver.metadata_users.users] == ["late"]
    # The groups placed on it by the restored metadata exist here now.
    mine = set(odriver.metadata.groups_for(other))
    assert mine and mine <= set(odriver.groups)


async def test_replicas_converge_through_rounds_of_isolation(cluster: SnapCluster):
    """Each round cuts a different node off while the others produce past compaction;
    after every heal all replicas hold the same batches and state."""
    gid, _ = await topic_group(cluster, "t")
    acked: list[bytes] = []
    for round_no, node in enumerate(["n1", "n2", "n3", "n2"]):
        others = [n for n in cluster.node_ids if n != node]
        cluster.net.isolate(node, others)

        def leader_of_the_majority(others: list[str] = others) -> str | None:
            for n in others:
                if cluster.driver(n).groups[gid].role is Role.LEADER:
                    return n
            return None

        leader = await cluster.wait_for(leader_of_the_majority, within=20, what="a leader")
        for i in range(3 * SNAP.entries):
            value = f"r{round_no}-{i}".encode()
            await cluster.produce(leader, "t", [value])
            acked.append(value)
        cluster.net.heal()

        def converged() -> bool:
            sms = [cluster.driver(n).groups[gid].sm for n in cluster.node_ids]
            return len({(sm.applied_index, sm.next_offset) for sm in sms}) == 1

        await cluster.wait_for(converged, within=20, what=f"convergence after round {round_no}")
        sms = [cluster.driver(n).groups[gid].sm for n in cluster.node_ids]
        assert len({sm.snapshot_state() for sm in sms}) == 1
        assert all(sm.read(0, 1 << 30) == sms[0].read(0, 1 << 30) for sm in sms)
    leader = await cluster.wait_leader(gid)
    assert await fetch_values(cluster, leader, "t") == acked
    installed = sum(cluster.driver(n).snapshots.stats.get("snapshots_installed", 0)
                    for n in cluster.node_ids)  # fmt: skip
    assert installed >= 3


async def test_catch_up_by_snapshot_under_retention(tmp_path: Any, nursery: trio.Nursery):
    """The snapshot the leader sends may predate truncations it applied since: the
    transfer skips what the leader no longer has, the log brings the truncation."""
    c = SnapCluster(small_config(tmp_path), nursery)
    c.retention_interval_s = 0.02
    for node in c.node_ids:
        await c.start(node)
    try:
        gid, leader = await topic_group(c, "r", retention_bytes=500)
        follower = next(n for n in c.node_ids if n != leader)
        c.net.isolate(follower, [n for n in c.node_ids if n != follower])
        for i in range(4 * SNAP.entries):
            await c.produce(leader, "r", [f"value-{i:04d}".encode()])
        lsm = c.driver(leader).groups[gid].sm
        await c.wait_for(
            lambda: (
                c.stores[leader].group(gid).first_index()
                > c.stores[follower].group(gid).last_index() + 1
            ),
            what="compaction past the follower",
        )
        c.net.heal()

        def converged() -> bool:
            sms = [c.driver(n).groups[gid].sm for n in c.node_ids]
            marks = {(sm.applied_index, sm.start_offset, sm.next_offset) for sm in sms}
            return len(marks) == 1 and lsm.start_offset > 0

        await c.wait_for(converged, within=20, what="convergence under retention")
        sms = [c.driver(n).groups[gid].sm for n in c.node_ids]
        assert all(sm.read(lsm.start_offset, 1 << 30) == lsm.read(lsm.start_offset, 1 << 30)
                   for sm in sms)  # fmt: skip
        assert c.driver(follower).snapshots.stats.get("snapshots_installed", 0) >= 1
    finally:
        await c.stop_all()
