"""Snapshot metrics move when snapshots are taken, sent, fetched, failed, resumed, installed.

Three in-process nodes (test_snapshot_inproc.SnapCluster: tiny thresholds, real
TCP for the record transfers). Each node's SnapshotManager has its own registry
here (the in-process drivers get no Metrics), read through ``snapshots.metrics``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from raftlog.server.metrics import Metrics
from raftlog.server.snapshot_metrics import SnapshotMetrics
from raftlog.server.snapshots import SnapshotManager

from .cluster_harness import free_ports
from .inproc_cluster import small_config
from .test_snapshot_inproc import SNAP, SnapCluster, topic_group


@pytest.fixture
async def cluster(tmp_path: Any, nursery: trio.Nursery) -> AsyncIterator[SnapCluster]:
    async with SnapCluster(small_config(tmp_path), nursery).running() as c:
        yield c


def metrics_of(c: SnapCluster, node: str) -> SnapshotMetrics:
    return c.driver(node).snapshots.metrics


def test_metrics_join_the_node_registry_and_may_be_registered_twice() -> None:
    node_metrics = Metrics()
    first = SnapshotManager(SimpleNamespace(cfg=None, metrics=node_metrics))
    second = SnapshotManager(SimpleNamespace(cfg=None, metrics=node_metrics))
    first.note_served(100)
    second.note_served(20)
    text = node_metrics.registry.render()
    assert 'raftlog_snapshot_transfer_bytes_total{direction="out"} 120' in text
    for name in ("raftlog_snapshots_taken_total", "raftlog_snapshot_take_seconds",
                 "raftlog_snapshots_sent_total", "raftlog_snapshots_installed_total",
                 "raftlog_snapshot_transfers_total", "raftlog_snapshot_index"):  # fmt: skip
        assert f"# TYPE {name} " in text


async def test_taking_a_snapshot_moves_the_taker_metrics(cluster: SnapCluster) -> None:
    gid, leader = await topic_group(cluster, "t")
    m = metrics_of(cluster, leader)
    assert m.taken.value(kind="partition") == 0
    for i in range(3 * SNAP.entries):
        await cluster.produce(leader, "t", [f"v{i}".encode()])
    storage = cluster.stores[leader].group(gid)
    await cluster.wait_for(
        lambda: m.taken.value(kind="partition") >= 2 and m.compactions.value() >= 2,
        what="two snapshots and compactions on the leader",
    )
    assert m.take_seconds.count() >= 2
    # The per-group gauge follows each snapshot as it is taken.
    await cluster.wait_for(
        lambda: m.index.value(group=gid) == storage.snapshot_meta().index > 0,
        what="snapshot index gauge",
    )
    text = m.registry.render()
    assert f'raftlog_snapshot_index{{group="{gid}"}} {storage.snapshot_meta().index}' in text

    driver = cluster.driver(leader)
    driver.snapshots.refresh_gauges()
    behind = {
        g: group.applied - cluster.stores[leader].group(g).snapshot_meta().index
        for g, group in driver.groups.items()
    }
    assert m.max_behind.value() == max(behind.values())


async def test_a_snapshot_due_while_another_is_taken_follows_it_without_new_writes(
    cluster: SnapCluster,
) -> None:
    """Applies that cross the threshold while a snapshot is being written start
    nothing; the take that finishes must check again, or an idle group keeps its
    whole log until it is written to again."""
    gid, leader = await topic_group(cluster, "t")
    m = metrics_of(cluster, leader)
    store = cluster.stores[leader]
    release = threading.Event()
    real_create = store.create_snapshot

    def held_create(*args: Any) -> Any:  # runs in the snapshot's worker thread
        release.wait(10)
        return real_create(*args)

    store.create_snapshot = held_create  # type: ignore[method-assign]
    for i in range(SNAP.entries):
        await cluster.produce(leader, "t", [f"a{i}".encode()])
    await cluster.wait_for(lambda: cluster.driver(leader).snapshots._state(gid).taking,
                           what="the first take is under way")  # fmt: skip
    for i in range(2 * SNAP.entries):  # due again, but one take at a time
        await cluster.produce(leader, "t", [f"b{i}".encode()])
    assert m.taken.value(kind="partition") == 0
    release.set()  # no produce after this point
    await cluster.wait_for(
        lambda: m.taken.value(kind="partition") >= 2,
        what="a second snapshot right after the first",
    )
    applied = cluster.driver(leader).groups[gid].applied
    assert store.group(gid).snapshot_meta().index == applied


async def test_a_failed_transfer_is_counted_and_resumed_then_installed(cluster: SnapCluster):
    gid, leader = await topic_group(cluster, "t")
    follower = next(n for n in cluster.node_ids if n != leader)
    # The follower reaches the leader's records through this (refused) address:
    # its transfers fail until the override goes.
    (closed_port,) = free_ports(1)
    dial = cluster.cfg.node(follower).dial
    dial[leader] = f"127.0.0.1:{closed_port}"
    cluster.net.isolate(follower, [n for n in cluster.node_ids if n != follower])
    for i in range(4 * SNAP.entries):
        await cluster.produce(leader, "t", [f"r{i}".encode()])
    lstore = cluster.stores[leader].group(gid)
    fstore = cluster.stores[follower].group(gid)
    await cluster.wait_for(
        lambda: lstore.first_index() > fstore.last_index() + 1, what="leader compacted past"
    )
    fm, lm = metrics_of(cluster, follower), metrics_of(cluster, leader)
    cluster.net.heal()
    await cluster.wait_for(
        lambda: fm.transfers.value(result="failed") >= 1, within=20, what="a failed transfer"
    )
    assert fm.installed.value(kind="partition") == 0
    assert fm.transfer_bytes.value(direction="in") == 0
    assert lm.sent.value(kind="partition") >= 1
    assert fm.received.value(kind="partition") >= 1

    del dial[leader]
    fdriver, ldriver = cluster.driver(follower), cluster.driver(leader)
    await cluster.wait_for(
        lambda: fdriver.groups[gid].sm.next_offset == ldriver.groups[gid].sm.next_offset
        and fm.installed.value(kind="partition") >= 1,
        within=20,
        what="follower caught up by snapshot",
    )
    assert fm.resumes.value() >= 1
    assert fm.transfers.value(result="ok") >= 1
    assert fm.active.value() == 0
    # The leader sent the snapshot again after the failure (its snapshot timeout).
    assert lm.sent.value(kind="partition") >= 2
    fetched = fm.transfer_bytes.value(direction="in")
    served = sum(metrics_of(cluster, n).transfer_bytes.value(direction="out")
                 for n in cluster.node_ids)  # fmt: skip
    assert fetched > 0 and served >= fetched
    assert fm.index.value(group=gid) == fstore.snapshot_meta().index > 0


def test_refresh_drops_the_index_series_of_groups_no_longer_hosted() -> None:
    metas = {1: 40, 2: 7}  # gid -> snapshot index
    store = SimpleNamespace(
        has_group=lambda gid: gid in metas,
        group=lambda gid: SimpleNamespace(snapshot_meta=lambda: SimpleNamespace(index=metas[gid])),
    )
    driver = SimpleNamespace(
        cfg=None,
        metrics=None,
        store=store,
        groups={1: SimpleNamespace(applied=45), 2: SimpleNamespace(applied=30)},
    )
    manager = SnapshotManager(driver)
    manager.refresh_gauges()
    m = manager.metrics
    assert (m.index.value(group=1), m.index.value(group=2), m.max_behind.value()) == (40, 7, 23)
    del driver.groups[2], metas[2]  # topic deleted
    manager.refresh_gauges()
    assert 'group="2"' not in m.registry.render()
    assert (m.index.value(group=1), m.max_behind.value()) == (40, 5)
