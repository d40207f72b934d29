"""Retention decisions (server/retention.py) on a real partition state machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.client.protocol import encode_records
from raftlog.log.commands import Produce, TruncatePrefix, encode_entry_commands
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState, Entry
from raftlog.server.retention import RetentionPolicy, decide_start_offset

GID = 7


class Part:
    def __init__(self, store: NodeStore) -> None:
        self.store = store
        self.sm = PartitionStateMachine(store, GID)
        self.index = 0

    def run(self, cmd: Any) -> None:
        self.index += 1
        batch = self.store.new_batch()
        self.sm.apply([Entry(1, self.index, data=encode_entry_commands([cmd]))], batch)
        self.store.write(batch)

    def produce(self, count: int, ts: int, size: int = 10) -> None:
        blob, n, crc = encode_records([(None, b"x" * size, None, None)] * count)
        self.run(Produce(blob, n, crc, append_timestamp_ms=ts))


@pytest.fixture
def part(tmp_path: Path) -> Iterator[Part]:
    store = NodeStore.open(tmp_path / "n1", cluster="test", node_id="n1", fsync=False)
    store.create_group(GID, ConfState(voters=("n1",)))
    try:
        yield Part(store)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, RetentionPolicy(None, None)),
        ({"retention_ms": 1000}, RetentionPolicy(1000, None)),
        ({"retention_bytes": 5, "retention_ms": -1}, RetentionPolicy(None, 5)),
        ({"retention_ms": True, "retention_bytes": "9"}, RetentionPolicy(None, None)),
        ({"retention_ms": 0}, RetentionPolicy(None, None)),
    ],
)
def test_policy_from_topic_config(config: dict, expected: RetentionPolicy) -> None:
    assert RetentionPolicy.of(config) == expected
    assert RetentionPolicy.of(config).unlimited == (expected == RetentionPolicy())


def test_time_retention_drops_whole_batches_older_than_the_cutoff(part: Part) -> None:
    for i, ts in enumerate([1000, 2000, 3000, 4000]):
        part.produce(3, ts)
        assert part.sm.next_offset == 3 * (i + 1)
    policy = RetentionPolicy(retention_ms=1500)
    # now=4600: cutoff 3100, batches at 1000, 2000, 3000 are older.
    assert decide_start_offset(part.sm, policy, now_ms=4600) == 9
    # now=3400: cutoff 1900: only the first batch.
    assert decide_start_offset(part.sm, policy, now_ms=3400) == 3
    # Nothing old yet: the start stays.
    assert decide_start_offset(part.sm, policy, now_ms=1200) == 0


def test_size_retention_keeps_the_newest_bytes(part: Part) -> None:
    for ts in range(5):
        part.produce(2, 1000 + ts)
    sizes = [size for *_, size in part.sm.batch_headers()]
    assert len(set(sizes)) == 1
    one = sizes[0]
    # Room for exactly two batches: the three oldest go.
    assert decide_start_offset(part.sm, RetentionPolicy(retention_bytes=2 * one), 0) == 6
    assert decide_start_offset(part.sm, RetentionPolicy(retention_bytes=2 * one + 1), 0) == 6
    assert decide_start_offset(part.sm, RetentionPolicy(retention_bytes=5 * one), 0) == 0


def test_decisions_start_from_the_current_start_offset(part: Part) -> None:
    for ts in (1000, 1000, 5000):
        part.produce(4, ts)
    part.run(TruncatePrefix(4))
    assert [h[0] for h in part.sm.batch_headers()] == [4, 8]
    assert [h[0] for h in part.sm.batch_headers(newest_first=True)] == [8, 4]
    assert decide_start_offset(part.sm, RetentionPolicy(retention_ms=100), 2000) == 8


def test_the_rule_that_deletes_more_wins(part: Part) -> None:
    for ts in (1000, 2000, 3000, 4000):
        part.produce(1, ts)
    one = next(part.sm.batch_headers())[3]
    both = RetentionPolicy(retention_ms=2500, retention_bytes=one)
    assert decide_start_offset(part.sm, both, now_ms=4000) == 3


def test_scan_bound_limits_one_round(part: Part) -> None:
    for _ in range(10):
        part.produce(1, 1000)
    policy = RetentionPolicy(retention_ms=1)
    assert decide_start_offset(part.sm, policy, now_ms=10_000, max_scan=4) == 4


def brute_force_cut(sm: PartitionStateMachine, keep: int) -> int:
    """Reference: keep the newest batches while they fit in ``keep`` bytes."""
    kept, cut = 0, sm.start_offset
    for base, _, count, size in sm.batch_headers(newest_first=True):
        kept += size
        if kept > keep:
            cut = base + count
            break
    return cut


@settings(max_examples=25, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("produce"), st.integers(1, 4), st.integers(1, 120)),
            st.tuples(st.just("truncate"), st.integers(0, 30), st.just(0)),
        ),
        min_size=1,
        max_size=40,
    ),
    keep=st.integers(0, 3000),
)
def test_size_index_tracks_applies_and_cuts_like_a_full_scan(
    tmp_path_factory: pytest.TempPathFactory, ops: list, keep: int
) -> None:
    path = tmp_path_factory.mktemp("sizes")
    with NodeStore.open(path / "n1", cluster="test", node_id="n1", fsync=False) as store:
        store.create_group(GID, ConfState(voters=("n1",)))
        part = Part(store)
        index = part.sm.install_sizes(part.sm.measure_sizes())
        index.segment_bytes = 300  # small segments: cuts inside segments happen
        for op, a, b in ops:
            if op == "produce":
                part.produce(a, 1000, size=b)
            else:
                part.run(TruncatePrefix(part.sm.start_offset + a))
        fresh = part.sm.measure_sizes()
        assert index.total == fresh.total or not index.exact
        cut = index.cut_for(keep, part.sm.headers_from)
        assert index.total == fresh.total
        expected = brute_force_cut(part.sm, keep)
        assert (cut if cut is not None else part.sm.start_offset) == expected


@pytest.mark.integration
def test_retention_in_real_processes(tmp_path: Path) -> None:
    """retention_ms through `raftlog node start`: the leader's task truncates, every
    replica follows, a fetch below the start is OUT_OF_RANGE."""
    import time

    from raftlog.client.errors import OutOfRangeError
    from raftlog.client.sync import Client

    from .cluster_harness import LocalCluster

    c = LocalCluster(tmp_path / "c", nodes=3, env={"RAFTLOG_RETENTION_INTERVAL_MS": "100"})
    try:
        c.start_all()
        c.wait_for_leaders(deadline=40)
        with Client(c.addresses(), request_timeout=30.0) as client:
            client.create_topic("old", partitions=1, replicas=3, config={"retention_ms": 300})
            for i in range(10):
                client.produce("old", f"v{i}".encode(), partition=0)
            end = time.monotonic() + 30
            while client.list_offsets("old", 0).start_offset < 10:
                assert time.monotonic() < end, "retention did not run"
                time.sleep(0.1)
            offsets = client.list_offsets("old", 0)
            assert (offsets.start_offset, offsets.end_offset) == (10, 10)
            with pytest.raises(OutOfRangeError):
                client.fetch("old", 0, 0)
            gid = client.describe_topic("old")["partitions"][0]["group"]
        # Every replica applied the same TruncatePrefix: stop them, read their stores.
        for node in c.node_ids():
            c.terminate(node)
        for node in c.node_ids():
            with NodeStore.open(c.cfg.node(node).data_dir, cluster="test", node_id=node) as s:
                sm = PartitionStateMachine(s, gid)
                assert (sm.start_offset, sm.next_offset) == (10, 10)
                assert sm.read(0, 1 << 20) == []
    finally:
        c.stop_all()


@pytest.mark.integration
def test_a_leader_whose_clock_runs_an_hour_ahead_deletes_nothing_by_time(tmp_path: Path) -> None:
    """Records stamped by a leader with a right clock, then a leader an hour ahead
    (RAFTLOG_TEST_WALL_CLOCK_OFFSET_S): with retention_ms = 10 min it would delete
    them all, on every replica. It must refuse, say so in its metrics, and the
    records stay readable."""
    import time

    from raftlog.client.sync import Client

    from .cluster_harness import LocalCluster
    from .test_snapshot_processes import scrape

    c = LocalCluster(
        tmp_path / "c", nodes=3, metrics=True, env={"RAFTLOG_RETENTION_INTERVAL_MS": "100"}
    )
    c.node_env["n1"] = {"RAFTLOG_TEST_WALL_CLOCK_OFFSET_S": "3600"}
    try:
        c.start_all()
        c.wait_for_leaders(deadline=40)
        with Client(c.addresses(), request_timeout=30.0) as client:
            client.create_topic("t", partitions=1, replicas=3, config={"retention_ms": 600_000})
            client.leader_transfer("t", 0, "n2")
            for i in range(10):
                client.produce("t", f"v{i}".encode(), partition=0)
            client.leader_transfer("t", 0, "n1")

            def refusals() -> float:
                return scrape(c, "n1").get("raftlog_retention_clock_refusals_total", 0)

            # Until n1 has run a few retention rounds as leader: refused, or truncated.
            end = time.monotonic() + 30
            while refusals() < 3 and client.list_offsets("t", 0).start_offset == 0:
                assert time.monotonic() < end, "n1 ran no retention round"
                time.sleep(0.1)
            assert client.describe_topic("t")["partitions"][0]["leader"] == "n1"
            offsets = client.list_offsets("t", 0)
            assert (offsets.start_offset, offsets.end_offset) == (0, 10)
            values = [r.value for r in client.fetch("t", 0, 0).records]
            assert values == [f"v{i}".encode() for i in range(10)]
            offset = scrape(c, "n1")['raftlog_peer_clock_offset_seconds{peer="n2"}']
            assert -3700 < offset < -3500
    finally:
        c.stop_all()


@pytest.mark.integration
def test_a_leader_whose_clock_runs_behind_stamps_with_the_nodes_median(tmp_path: Path) -> None:
    """A leader an hour slow would stamp its batches an hour old, and a later leader
    with retention_ms = 10 min would delete them at once. It stamps with the median
    clock of the nodes instead. The skew is applied at run time through
    RAFTLOG_TEST_WALL_CLOCK_FILE, as jepsen's clock nemesis does."""
    import time

    from raftlog.client.sync import Client

    from .cluster_harness import LocalCluster
    from .test_snapshot_processes import scrape

    clock_file = tmp_path / "n1.clock"
    clock_file.write_text("0")
    c = LocalCluster(tmp_path / "c", nodes=3, metrics=True)
    c.node_env["n1"] = {"RAFTLOG_TEST_WALL_CLOCK_FILE": str(clock_file)}
    try:
        c.start_all()
        c.wait_for_leaders(deadline=40)
        clock_file.write_text("-3600")
        end = time.monotonic() + 30
        # n1 sees both peers an hour ahead of it, from fresh clock frames.
        while not all(
            scrape(c, "n1").get(f'raftlog_peer_clock_offset_seconds{{peer="{p}"}}', 0) > 3500
            for p in ("n2", "n3")
        ):
            assert time.monotonic() < end, "n1 never saw its peers an hour ahead"
            time.sleep(0.1)
        with Client(c.addresses(), request_timeout=30.0) as client:
            client.create_topic("t", partitions=1, replicas=3)
            client.leader_transfer("t", 0, "n1")
            client.produce("t", b"v", partition=0)
            (record,) = client.fetch("t", 0, 0).records
            assert abs(record.timestamp_ms - time.time() * 1000) < 60_000
    finally:
        c.stop_all()
