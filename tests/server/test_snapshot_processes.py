"""Catch-up by snapshot through real `raftlog node start` processes, with crashes.

The scenario (issue 4): a 3-node cluster with tiny snapshot thresholds; a
follower of the partition is stopped while records are produced until the
leader has compacted its Raft log past the follower's last entry; the follower
comes back and must catch up by snapshot (its records pulled with
``replica_fetch``). With a failpoint armed (RAFTLOG_FAILPOINTS) the follower
is SIGKILLed at that point of taking or installing a snapshot and restarted
without it. In every case, read offline from the follower's own store after
it stopped, every acknowledged record is present exactly once at its offset.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from raftlog.client.protocol import decode_batch
from raftlog.client.sync import Client
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.server.config import SnapshotConfig

from .cluster_harness import LocalCluster

pytestmark = pytest.mark.integration

WAIT_S = 40.0
SNAPSHOT_ENV = {
    "RAFTLOG_SNAPSHOT_ENTRIES": "40",
    "RAFTLOG_SNAPSHOT_TRAILING": "10",
    "RAFTLOG_SNAPSHOT_CHUNK_BYTES": "1024",  # many chunks: a mid-transfer crash is possible
}
# The same thresholds through cluster.toml's [snapshots] (the crash scenarios use the env).
SNAPSHOT_FILE = SnapshotConfig(entries=40, trailing=10, chunk_bytes=1024)


def wait_until(predicate: Callable[[], Any], what: str, within: float = WAIT_S) -> Any:
    end = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "c", nodes=3, env=SNAPSHOT_ENV)
    try:
        c.start_all()
        c.wait_for_leaders(deadline=WAIT_S)
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def file_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "c", nodes=3, metrics=True, snapshots=SNAPSHOT_FILE)
    try:
        c.start_all()
        c.wait_for_leaders(deadline=WAIT_S)
        yield c
    finally:
        c.stop_all()


def scrape(c: LocalCluster, node: str) -> dict[str, float]:
    """``node``'s /metrics as {'name{labels}': value}."""
    address = c.cfg.node(node).metrics_address
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def offline_store(c: LocalCluster, node: str) -> NodeStore:
    return NodeStore.open(c.cfg.node(node).data_dir, cluster=c.cfg.name, node_id=node)


def offline_log(c: LocalCluster, node: str, gid: int) -> list[tuple[int, bytes]]:
    """Every record of the partition in ``node``'s store (the node is stopped)."""
    with offline_store(c, node) as store:
        sm = PartitionStateMachine(store, gid)
        out = []
        for base, ts, _count, blob in sm.read(0, 1 << 40):
            out += [(r.offset, r.value) for r in decode_batch(base, ts, blob)]
        return out


def last_index(c: LocalCluster, node: str, gid: int) -> int:
    with offline_store(c, node) as store:
        return store.group(gid).last_index()


def status_of(c: LocalCluster, node: str, gid: int) -> dict[str, Any] | None:
    try:
        groups = c.status(node)["groups"]
    except Exception:
        return None
    return next((g for g in groups if g["group"] == gid), None)


def compacted_upto(c: LocalCluster, node: str, gid: int) -> int:
    found = re.findall(rf"log compacted group={gid} upto=(\d+)", c.log_text(node))
    return max((int(n) for n in found), default=0)


def produce_many(client: Client, n: int, tag: str) -> list[tuple[int, bytes]]:
    acked = []
    for i in range(n):
        value = f"{tag}{i}".encode()
        acked.append((client.produce("s", value, partition=0).offset, value))
    return acked


def start_armed(c: LocalCluster, node: str, point: str) -> None:
    """Start ``node`` with ``point`` armed (only this start), without waiting."""
    c.env = {**c.env, "RAFTLOG_FAILPOINTS": point}
    try:
        c.start(node, wait=False)
    finally:
        c.env = {k: v for k, v in c.env.items() if k != "RAFTLOG_FAILPOINTS"}


def wait_for_failpoint(c: LocalCluster, node: str, point: str) -> None:
    proc = c.procs[node]
    wait_until(lambda: proc.poll() is not None, f"{node} to die at {point}")
    assert proc.returncode == -9, c.tail(node)
    assert f"event=failpoint_hit name={point}" in c.log_text(node)


def start_until_failpoint(c: LocalCluster, node: str, point: str) -> None:
    """Start ``node`` with ``point`` armed and wait until it killed itself there."""
    start_armed(c, node, point)
    wait_for_failpoint(c, node, point)


def check_exactly_once(log: list[tuple[int, bytes]], acked: list[tuple[int, bytes]]) -> None:
    assert [o for o, _ in log] == list(range(len(log))), "offsets dense from 0"
    values = [v for _, v in log]
    assert len(values) == len(set(values)), "no record twice"
    by_offset = dict(log)
    for offset, value in acked:
        assert by_offset.get(offset) == value, f"acknowledged {value!r}@{offset} missing"


def run_scenario(
    c: LocalCluster,
    failpoint: str | None,
    caught_up: Callable[[int, str, str], None] | None = None,
) -> None:
    """... ``caught_up(gid, leader, follower)`` runs once the follower caught up."""
    with Client(c.addresses(), request_timeout=30.0) as client:
        client.create_topic("s", partitions=1, replicas=3)
        gid = client.describe_topic("s")["partitions"][0]["group"]
        leader = c.leader_of(gid)
        follower = next(n for n in c.node_ids() if n != leader and c.leader_of(0) != n)
        acked = produce_many(client, 20, "a")
        wait_until(
            lambda: (
                (status_of(c, follower, gid) or {}).get("applied", 0)
                >= (status_of(c, leader, gid) or {}).get("commit", 1)
            ),
            "follower has the first records",
        )
        c.terminate(follower)
        cut_at = last_index(c, follower, gid)
        # More APPENDs than the leader keeps in flight to a silent follower
        # (raft Config.max_inflight_msgs = 256): the rest is never queued for it,
        # so once the leader compacted past them only a snapshot can help.
        acked += produce_many(client, 400, "b")
        wait_until(
            lambda: compacted_upto(c, leader, gid) > cut_at + 300,
            "leader compaction past what the follower could have been sent",
        )
        if failpoint == "snapshot_before_compact":
            # The follower must take a snapshot of its own: it dies as soon as it
            # applied enough entries (replayed, sent, or produced here).
            start_armed(c, follower, failpoint)
            proc = c.procs[follower]
            for i in range(20):
                if proc.poll() is not None:
                    break
                acked += produce_many(client, 20, f"c{i}-")
            wait_for_failpoint(c, follower, failpoint)
        elif failpoint is not None:
            start_until_failpoint(c, follower, failpoint)
        c.start(follower)
        acked += produce_many(client, 5, "d")
        commit = status_of(c, leader, gid)["commit"]
        wait_until(
            lambda: (status_of(c, follower, gid) or {}).get("applied", 0) >= commit,
            "follower caught up",
        )
        if caught_up is not None:
            caught_up(gid, leader, follower)
    assert f"event=snapshot_installed group={gid}" in c.log_text(follower)
    c.terminate(follower)
    check_exactly_once(offline_log(c, follower, gid), acked)
    with offline_store(c, follower) as store:
        # The restarted follower's Raft log starts after a snapshot, not at 1.
        assert store.group(gid).first_index() > cut_at


def test_cut_off_follower_catches_up_by_snapshot(file_cluster: LocalCluster) -> None:
    """Thresholds from cluster.toml; the snapshot metrics show on /metrics."""
    c = file_cluster

    def check_metrics(gid: int, leader: str, follower: str) -> None:
        for node in (leader, follower):
            assert (
                "event=snapshots_enabled entries=40 entry_bytes=2097152 trailing=10 "
                "trailing_bytes=1048576 chunk_bytes=1024 transfers=2"
            ) in c.log_text(node)
        lm, fm = scrape(c, leader), scrape(c, follower)
        assert lm['raftlog_snapshots_taken_total{kind="partition"}'] >= 1
        assert lm['raftlog_snapshots_sent_total{kind="partition"}'] >= 1
        assert lm[f'raftlog_snapshot_index{{group="{gid}"}}'] > 0
        assert fm['raftlog_snapshots_received_total{kind="partition"}'] >= 1
        assert fm['raftlog_snapshots_installed_total{kind="partition"}'] >= 1
        assert fm['raftlog_snapshot_transfers_total{result="ok"}'] >= 1
        fetched = fm['raftlog_snapshot_transfer_bytes_total{direction="in"}']
        out = 'raftlog_snapshot_transfer_bytes_total{direction="out"}'
        served = sum(scrape(c, n).get(out, 0.0) for n in c.node_ids())
        assert 0 < fetched <= served

    run_scenario(c, None, check_metrics)


@pytest.mark.parametrize(
    "failpoint",
    ["snapshot_mid_transfer", "snapshot_after_restore", "snapshot_before_compact"],
)
def test_crash_during_snapshot_then_recover(cluster: LocalCluster, failpoint: str) -> None:
    run_scenario(cluster, failpoint)
