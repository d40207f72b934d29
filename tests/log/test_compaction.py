"""Log compaction: planning a sweep (log/compaction.py) and applying its chunks
(PartitionStateMachine, CompactRecords), checked against a model of every record."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import decode_batch, encode_record_rows
from raftlog.log.commands import CompactRecords, Produce, TruncatePrefix
from raftlog.log.compaction import SweepPlan, map_cost, plan_sweep, produced_batch_problem
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState
from raftlog.server.compaction import LastSweep, sweep_due, sweep_end

from .test_partition import GID, Log

DAY_MS = 86_400_000


def kv(
    pairs: list[tuple[bytes | None, bytes | None]], ts: int = 1000, compression: str | None = None
) -> Produce:
    """One batch of (key, value) records; a None value is a tombstone."""
    blob, count, crc = encode_record_rows([[None, k, v, None] for k, v in pairs], compression)
    return Produce(blob, count, crc, None, None, ts)


def records(plog: Log) -> list[tuple[int, bytes | None, bytes | None]]:
    """(offset, key, value) of every record a reader sees from the start offset."""
    sm = plog.sm
    out = []
    for base, ts, _, blob in sm.read(sm.start_offset, 1 << 30):
        out += [(r.offset, r.key, r.value) for r in decode_batch(base, ts, blob, sm.start_offset)]
    return out


def plan_whole(
    plog: Log,
    *,
    tombstones_before_ms: int | None = None,
    chunk_bytes: int = 1 << 20,
    map_bytes: int | None = None,
) -> SweepPlan:
    """Plan a sweep of the whole partition (it may stop short at ``map_bytes``)."""
    sm = plog.sm
    return plan_sweep(
        sm,
        start=sm.start_offset,
        end=sm.next_offset,
        tombstones_before_ms=tombstones_before_ms,
        chunk_bytes=chunk_bytes,
        map_bytes=map_bytes,
    )


def apply_plan(plog: Log, plan: SweepPlan) -> int:
    """Apply a plan's chunks, each of which must succeed; records removed."""
    removed = 0
    for chunk in plan.chunks:
        (result,) = plog.run(chunk)
        assert result.ok, result.message
        removed += result.compacted
    return removed


def sweep(plog: Log, *, tombstones_before_ms: int | None = None, chunk_bytes: int = 1 << 20) -> int:
    """Plan a sweep of the whole partition and apply its chunks; records removed."""
    plan = plan_whole(plog, tombstones_before_ms=tombstones_before_ms, chunk_bytes=chunk_bytes)
    return apply_plan(plog, plan)


@pytest.fixture
def plog(store: NodeStore) -> Iterator[Log]:
    store.create_group(GID, ConfState(voters=("n1",)))
    yield Log(store)


def test_keeps_the_latest_record_of_each_key_at_its_offset(plog: Log) -> None:
    plog.run(kv([(b"a", b"1"), (b"b", b"1"), (b"a", b"2")]))  # 0-2
    plog.run(kv([(None, b"no key"), (b"c", b"1")]))  # 3-4
    plog.run(kv([(b"b", b"2"), (b"a", b"3")]))  # 5-6
    assert sweep(plog) == 3  # a@0, b@1, a@2
    assert records(plog) == [
        (3, None, b"no key"),
        (4, b"c", b"1"),
        (5, b"b", b"2"),
        (6, b"a", b"3"),
    ]
    # Offsets, the range and the batch layout are unchanged.
    assert (plog.sm.start_offset, plog.sm.next_offset) == (0, 7)
    assert [(b[0], b[2]) for b in plog.sm.read(0, 1 << 30)] == [(0, 3), (3, 2), (5, 2)]
    assert (plog.sm.compactions, plog.sm.compacted_below) == (1, 7)
    assert sweep(plog) == 0  # nothing more to remove


def test_a_sweep_maps_only_the_keys_of_records_not_swept_yet(plog: Log) -> None:
    """The offset map is the sweep's memory: after a sweep to the end, the next one
    maps the new records' keys only, and still removes the older records of those
    keys below compacted_below."""
    plog.run(kv([(b"k%d" % i, b"old") for i in range(50)]))  # 0-49
    assert sweep(plog) == 0
    plog.run(kv([(b"k7", b"new"), (b"fresh", b"1")]))  # 50-51
    plan = plan_whole(plog)
    assert (plan.mapped_keys, plan.map_bytes) == (2, map_cost(b"k7") + map_cost(b"fresh"))
    assert (plan.records, plan.removable, plan.map_full) == (52, 1, False)
    assert apply_plan(plog, plan) == 1
    assert [(o, k) for o, k, _ in records(plog) if k in (b"k7", b"fresh")] == [
        (50, b"k7"),
        (51, b"fresh"),
    ]


def test_a_sweep_ends_after_the_batch_that_fills_its_map(plog: Log) -> None:
    """The map stops at the first batch boundary at or past its bound: that batch's
    keys all go in, the next batch is left to the next sweep."""
    plog.run(kv([(b"a", b"1"), (b"b", b"1")]))  # 0-1
    plog.run(kv([(b"a", b"2"), (b"c", b"1")]))  # 2-3
    plog.run(kv([(b"b", b"2")]))  # 4
    first = plan_whole(plog, map_bytes=map_cost(b"a") + 1)  # full after batch 0's two keys
    assert (first.end, first.map_full, first.mapped_keys) == (2, True, 2)
    assert apply_plan(plog, first) == 0  # nothing below 2 has a later record in the map
    second = plan_whole(plog, map_bytes=3 * map_cost(b"a"))  # holds a and c, then b
    assert (second.end, second.map_full, second.mapped_keys) == (5, False, 3)
    assert apply_plan(plog, second) == 2  # a@0 and b@1
    assert [(o, k) for o, k, _ in records(plog)] == [(2, b"a"), (3, b"c"), (4, b"b")]


def test_a_reader_from_inside_a_removed_run_gets_the_next_record(plog: Log) -> None:
    plog.run(kv([(b"k", str(i).encode()) for i in range(10)]))
    sweep(plog)
    (base, ts, count, blob) = plog.sm.read(4, 1 << 20)[0]
    assert (base, count) == (0, 10)
    assert [(r.offset, r.value) for r in decode_batch(base, ts, blob, 4)] == [(9, b"9")]
    assert decode_batch(base, ts, blob, 10) == []


def test_compressed_batches_stay_compressed_and_readable(plog: Log) -> None:
    plog.run(kv([(b"k%d" % (i % 3), b"x" * 200) for i in range(30)], compression="zstd"))
    before = len(plog.sm.read(0, 1 << 30)[0][3])
    assert sweep(plog) == 27
    blob = plog.sm.read(0, 1 << 30)[0][3]
    assert blob[0] == 0xC1  # still a compressed batch (client/compression.py)
    assert len(blob) < before
    assert [o for o, _, _ in records(plog)] == [27, 28, 29]


def test_tombstones_stay_until_delete_retention_then_go_with_their_key(plog: Log) -> None:
    plog.run(kv([(b"a", b"1"), (b"b", b"1")], ts=1000))
    plog.run(kv([(b"a", None)], ts=2000))  # delete a
    sweep(plog, tombstones_before_ms=2000)  # the tombstone is not old enough
    assert records(plog) == [(1, b"b", b"1"), (2, b"a", None)]
    sweep(plog, tombstones_before_ms=2001)
    assert records(plog) == [(1, b"b", b"1")]


def test_a_key_written_again_after_its_tombstone_keeps_the_new_value(plog: Log) -> None:
    plog.run(kv([(b"a", b"1"), (b"a", None), (b"a", b"2")], ts=1000))
    sweep(plog, tombstones_before_ms=5000)
    assert records(plog) == [(2, b"a", b"2")]


def test_records_beyond_the_sweep_end_are_not_touched(plog: Log) -> None:
    plog.run(kv([(b"a", b"1")]))
    plog.run(kv([(b"a", b"2")]))
    plan = plan_sweep(plog.sm, start=0, end=1, tombstones_before_ms=None)
    for chunk in plan.chunks:
        plog.run(chunk)
    assert [o for o, _, _ in records(plog)] == [0, 1]  # a@0 is the latest below end=1


def test_undecodable_batches_are_kept_whole(plog: Log) -> None:
    plog.run(Produce(b"\xc1\x09junk", 2, 0, None, None, 1000))  # unknown codec id
    plog.run(Produce(b"not msgpack at all", 1, 0, None, None, 1000))
    plog.run(kv([(b"a", b"1"), (b"a", b"2")]))
    plan = plan_sweep(plog.sm, start=0, end=5, tombstones_before_ms=None)
    assert plan.undecodable == 2 and plan.removable == 1  # a@3
    # A leader that names the junk batches' offsets anyway changes nothing there.
    (r,) = plog.run(CompactRecords(0, 5, [0, 4]))
    assert r.ok and r.compacted == 1  # only a@3, in the decodable batch
    stored = plog.sm.read(0, 1 << 30)
    assert [b[3] for b in stored[:2]] == [b"\xc1\x09junk", b"not msgpack at all"]


@pytest.mark.parametrize(
    ("lo", "hi", "removed", "why"),
    [
        (0, 9, [], "outside"),  # beyond the high watermark (4)
        (2, 1, [], "outside"),
        (0, 4, [1], "even"),
        (0, 4, [2, 3, 0, 1], "not sorted"),
        (1, 4, [0, 1], "not sorted"),  # below lo
        (0, 4, [2, 2], "not sorted"),  # empty range
    ],
)
def test_bad_chunks_are_refused_and_change_nothing(
    plog: Log, lo: int, hi: int, removed: list[int], why: str
) -> None:
    plog.run(kv([(b"a", b"1"), (b"a", b"2"), (b"a", b"3"), (b"a", b"4")]))
    (r,) = plog.run(CompactRecords(lo, hi, removed))
    assert r.error is ErrorCode.INVALID_REQUEST and why in r.message
    assert len(records(plog)) == 4 and plog.sm.compactions == 0


def test_progress_survives_a_restart_and_travels_in_snapshots(plog: Log) -> None:
    plog.run(kv([(b"a", b"1"), (b"a", b"2")]))
    sweep(plog)
    reopened = Log(plog.store)
    assert (reopened.sm.compactions, reopened.sm.compacted_below) == (1, 2)
    state = plog.sm.snapshot_state()
    other = Log(plog.store, gid=GID + 1)
    plog.store.create_group(GID + 1, ConfState(voters=("n1",)))
    wb = plog.store.new_batch()
    other.sm.restore_state(state, wb)
    plog.store.write(wb, sync=False)
    assert (Log(plog.store, gid=GID + 1).sm.compactions, other.sm.compacted_below) == (1, 2)


def test_a_chunk_sees_batches_produced_earlier_in_the_same_apply_call(plog: Log) -> None:
    """Replay after a crash, or a follower catching up, applies many entries in one
    call: a chunk must rewrite batches not yet in RocksDB exactly as it would
    rewrite them one call later, or replicas would differ by how they batched."""
    plog.run(kv([(b"a", b"1"), (b"a", b"2")]))
    one_call = plog.apply(
        plog.entry(kv([(b"a", b"3")])), plog.entry(CompactRecords(0, 3, [0, 2]))
    )
    assert one_call[1][0].compacted == 2
    assert records(plog) == [(2, b"a", b"3")]


# ---------------------------------------------------------------- against a model

KEYS = [b"a", b"b", b"c", b"d", None]
record = st.tuples(st.sampled_from(KEYS), st.one_of(st.none(), st.binary(max_size=3)))
step = st.one_of(
    st.tuples(st.just("produce"), st.lists(record, min_size=1, max_size=5), st.booleans()),
    # (chunk size in units of 8 bytes, the offset map's bound: None for none, 1 for
    # one batch per sweep, else a few one-byte keys), the tombstone horizon
    st.tuples(
        st.just("sweep"),
        st.tuples(st.integers(1, 3), st.sampled_from([None, 1, 260, 390])),
        st.integers(0, 10),
    ),
    st.tuples(st.just("truncate"), st.integers(0, 40), st.just(0)),
)


@settings(max_examples=80, deadline=None)
@given(steps=st.lists(step, max_size=25))
def test_replicas_agree_and_every_key_keeps_its_latest_record(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple]
) -> None:
    """Random produces (keys, keyless records, tombstones, compressed or not), sweeps
    in small chunks, retention cuts. After every step:
    - each record read back is exactly the one produced at that offset;
    - every keyless record and each key's latest record stay, except a tombstone
      past its retention;
    - below ``compacted_below`` no key appears twice, also after sweeps whose
      offset map filled up and stopped them short (``map_bytes``);
    - a second replica, fed the same entries in differently sized apply calls,
      stores exactly the same batches."""
    dirs = [tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")]
    stores = [NodeStore.open(d, cluster="test", node_id="n1") for d in dirs]
    try:
        for s in stores:
            s.create_group(GID, ConfState(voters=("n1",)))
        leader, follower = Log(stores[0]), Log(stores[1])
        held: list = []  # entries the follower has not applied yet
        produced: dict[int, tuple[bytes | None, bytes | None, int]] = {}
        ts = 0
        horizon = -1  # the latest tombstone horizon any sweep used

        def run(cmd: object) -> None:
            leader.run(cmd)
            held.append(cmd)
            if len(held) >= 3:  # the follower applies several entries per call
                follower.apply(*(follower.entry(c) for c in held))
                held.clear()

        for kind, a, b in steps:
            if kind == "produce":
                ts += 10
                base = leader.sm.next_offset
                for i, (k, v) in enumerate(a):
                    produced[base + i] = (k, v, ts)
                run(kv(a, ts=ts, compression="zstd" if b else None))
            elif kind == "truncate":
                run(TruncatePrefix(a))
            else:
                before = ts - b * 10 if b else None
                horizon = max(horizon, before or -1)
                chunk_units, map_bytes = a
                plan = plan_sweep(
                    leader.sm,
                    start=leader.sm.start_offset,
                    end=leader.sm.next_offset,
                    tombstones_before_ms=before,
                    chunk_bytes=chunk_units * 8,
                    map_bytes=map_bytes,
                )
                assert plan.map_full == (plan.end < leader.sm.next_offset)
                for chunk in plan.chunks:
                    run(chunk)
                assert leader.sm.compacted_below >= plan.end
            got = records(leader)
            start = leader.sm.start_offset
            for offset, k, v in got:
                assert produced[offset][:2] == (k, v)
            present = {offset for offset, _, _ in got}
            latest: dict[bytes, int] = {}
            for offset in range(start, leader.sm.next_offset):
                k, v, _ = produced[offset]
                if k is None:
                    assert offset in present, f"keyless record {offset} lost"
                else:
                    latest[k] = offset
            for k, offset in latest.items():
                _, v, stamp = produced[offset]
                expired = v is None and stamp < horizon
                assert offset in present or expired, f"latest record of {k!r} at {offset} lost"
            # What the planner relies on to map only the records above compacted_below.
            clean = leader.sm.compacted_below
            below = [k for offset, k, _ in got if k is not None and offset < clean]
            assert len(below) == len(set(below)), "a key twice below compacted_below"
        if held:
            follower.apply(*(follower.entry(c) for c in held))
        assert follower.sm.read(0, 1 << 30) == leader.sm.read(0, 1 << 30)
        assert (follower.sm.compactions, follower.sm.compacted_below) == (
            leader.sm.compactions,
            leader.sm.compacted_below,
        )
    finally:
        for s in stores:
            s.close()


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(record, min_size=1, max_size=5), min_size=1, max_size=12),
    swept_first=st.integers(0, 12),
    map_bytes=st.sampled_from([1, 130, 260, 600]),
    horizon=st.one_of(st.none(), st.integers(0, 130)),
)
def test_sweeps_with_a_bounded_map_end_where_one_unbounded_sweep_does(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[tuple[bytes | None, bytes | None]]],
    swept_first: int,
    map_bytes: int,
    horizon: int | None,
) -> None:
    """The same batches on two stores, some of them swept beforehand on both. One
    store is then swept once with no bound on its offset map; the other sweep
    after sweep with a small bound, each going on where the last stopped. Both
    end with the same records, and every bounded sweep but the last stopped
    short (map_full) and mapped no more than its bound plus one batch's keys."""
    logs = []
    for name in ("whole", "bounded"):
        store = NodeStore.open(tmp_path_factory.mktemp(name), cluster="test", node_id="n1")
        store.create_group(GID, ConfState(voters=("n1",)))
        logs.append(Log(store))
    whole, bounded = logs
    try:
        for i, pairs in enumerate(batches):
            for plog in logs:
                plog.run(kv(pairs, ts=10 * (i + 1)))
            if i + 1 == swept_first:
                for plog in logs:
                    sweep(plog, tombstones_before_ms=horizon)
        sweep(whole, tombstones_before_ms=horizon)
        sm = bounded.sm
        rounds = 0
        while True:
            rounds += 1
            assert rounds <= len(batches) + 1, "bounded sweeps did not move on"
            plan = plan_whole(bounded, tombstones_before_ms=horizon, map_bytes=map_bytes)
            largest_batch = max(map_cost(b"k") * len(pairs) for pairs in batches)
            assert plan.map_bytes < map_bytes + largest_batch
            apply_plan(bounded, plan)
            assert sm.compacted_below == plan.end
            if not plan.map_full:
                assert plan.end == sm.next_offset
                break
            assert plan.end < sm.next_offset
        assert records(bounded) == records(whole)
    finally:
        for plog in logs:
            plog.store.close()


# ---------------------------------------------------------------- when the leader sweeps


def test_sweep_end_leaves_out_records_younger_than_the_lag(plog: Log) -> None:
    plog.run(kv([(b"a", b"1"), (b"b", b"1")], ts=1000))  # 0-1
    plog.run(kv([(b"a", b"2"), (b"b", b"2")], ts=2000))  # 2-3
    plog.run(kv([(b"a", b"3")], ts=3000))  # 4
    sm = plog.sm
    assert sweep_end(sm, {}, now_ms=3600) == 5
    assert sweep_end(sm, {"min_compaction_lag_ms": 1500}, now_ms=3600) == 4  # 3000 > 2100
    assert sweep_end(sm, {"min_compaction_lag_ms": 1600}, now_ms=3600) == 4  # 2000: old enough
    assert sweep_end(sm, {"min_compaction_lag_ms": 1601}, now_ms=3600) == 2  # 2000 is not
    assert sweep_end(sm, {"min_compaction_lag_ms": 500}, now_ms=3600) == 5  # all old enough
    assert sweep_end(sm, {"min_compaction_lag_ms": 2700}, now_ms=3600) == 0  # none is


def test_a_sweep_is_due_by_dirty_ratio_or_an_expiring_tombstone(plog: Log) -> None:
    plog.run(kv([(b"k", b"%d" % i) for i in range(8)]))
    sm = plog.sm
    assert sweep_due(sm, 8, 0.5, None, now_ms=0) == "new_leader"  # anything new
    sweep(plog)
    last = LastSweep(end=8, live=1, tombstone_due_ms=None)
    assert sweep_due(sm, 8, 0.5, last, now_ms=0) is None  # nothing new
    plog.run(kv([(b"k", b"x")]))  # 1 new against 1 live: ratio 0.5
    assert sweep_due(sm, 9, 0.5, last, now_ms=0) == "dirty_ratio"
    assert sweep_due(sm, 9, 0.6, last, now_ms=0) is None
    waiting = LastSweep(end=9, live=1, tombstone_due_ms=5000)
    assert sweep_due(sm, 8, 0.5, waiting, now_ms=4999) is None
    # Nothing new, but a delete expires.
    assert sweep_due(sm, 8, 0.5, waiting, now_ms=5000) == "tombstone_expiry"
    # The last sweep stopped where its map filled: the next goes on whatever the
    # ratio, as long as anything is left above it.
    cut_short = LastSweep(end=8, live=1, tombstone_due_ms=None, map_full=True)
    assert sweep_due(sm, 9, 0.99, cut_short, now_ms=0) == "map_full"
    assert sweep_due(sm, 8, 0.99, cut_short, now_ms=0) is None


def test_a_sweep_is_due_once_the_oldest_unswept_record_reaches_the_max_lag(plog: Log) -> None:
    plog.run(kv([(b"k", b"%d" % i) for i in range(100)], ts=1000))
    sweep(plog)  # everything below 100 swept: one live record
    sm = plog.sm
    last = LastSweep(end=100, live=1, tombstone_due_ms=None)
    plog.run(kv([(b"k", b"new")], ts=5000))  # 100
    plog.run(kv([(b"k", b"newer")], ts=9000))  # 101
    # 2 dirty against 1 live is under a 0.9 ratio: only the max lag can make it due,
    # and it counts from the oldest unswept record (5000), not the newest.
    assert sweep_due(sm, 102, 0.9, last, now_ms=20_000) is None
    assert sweep_due(sm, 102, 0.9, last, now_ms=14_999, max_lag_ms=10_000) is None
    assert sweep_due(sm, 102, 0.9, last, now_ms=15_000, max_lag_ms=10_000) == "max_lag"
    # A sweep that reaches the end leaves nothing to wait for, however old.
    sweep(plog)
    assert sm.compacted_below == 102
    swept = LastSweep(end=102, live=1, tombstone_due_ms=None)
    assert sweep_due(sm, 102, 0.9, swept, now_ms=10**9, max_lag_ms=1) is None


# ---------------------------------------------------------------- what a compacted topic takes


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(
        st.tuples(st.one_of(st.none(), st.binary(max_size=8)), st.one_of(st.none(), st.binary())),
        min_size=1,
        max_size=30,
    ),
    compression=st.sampled_from([None, "gzip", "lz4", "zstd"]),
)
def test_a_produced_batch_is_refused_exactly_when_a_record_lacks_a_key(
    records: list[tuple[bytes | None, bytes | None]], compression: str | None
) -> None:
    produce = kv(records, compression=compression)
    problem = produced_batch_problem(produce.records, produce.count, 1 << 20)
    keyless = [i for i, (key, _) in enumerate(records) if key is None]
    if keyless:
        assert problem == (
            f"record {keyless[0]} has no key; every record of a compacted topic needs one"
        )
    else:
        assert problem is None
        # ... and the count is part of the batch's truth.
        assert produced_batch_problem(produce.records, produce.count + 1, 1 << 20) is not None
