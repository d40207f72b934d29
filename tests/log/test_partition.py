"""PartitionStateMachine: batches, idempotent producers, offsets, snapshots, restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import decode_batch, encode_records
from raftlog.log.commands import (
    CommitOffset,
    CreateTopic,
    Produce,
    TruncatePrefix,
    encode_entry_commands,
)
from raftlog.log.partition import PRODUCER_WINDOW, ApplyResult, PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState, Entry, EntryType

GID = 5


def produce(
    n: int, tag: str = "v", pid: int | None = None, seq: int | None = None, ts: int = 1000
) -> Produce:
    blob, count, crc = encode_records([(None, f"{tag}{i}".encode(), None, None) for i in range(n)])
    return Produce(blob, count, crc, pid, seq, ts)


class Log:
    """Feeds commands to a state machine as consecutive Raft entries."""

    def __init__(self, store: NodeStore, gid: int = GID) -> None:
        self.store = store
        self.gid = gid
        self.sm = PartitionStateMachine(store, gid)
        self.index = self.sm.applied_index

    def entry(self, *cmds: object, typ: EntryType = EntryType.NORMAL) -> Entry:
        self.index += 1
        data = encode_entry_commands(list(cmds)) if typ is EntryType.NORMAL else b"cc"
        return Entry(term=1, index=self.index, type=typ, data=data)

    def apply(self, *entries: Entry) -> list[list[ApplyResult]]:
        batch = self.store.new_batch()
        results = self.sm.apply(list(entries), batch)
        self.store.write(batch)
        return results

    def run(self, *cmds: object) -> list[ApplyResult]:
        """One entry holding ``cmds``; its results."""
        return self.apply(self.entry(*cmds))[0]


@pytest.fixture
def plog(store: NodeStore) -> Iterator[Log]:
    store.create_group(GID, ConfState(voters=("n1",)))
    yield Log(store)


def values(batches: list[tuple[int, int, int, bytes]], from_offset: int = 0) -> list[bytes]:
    out = []
    for base, ts, _, blob in batches:
        out += [r.value for r in decode_batch(base, ts, blob, from_offset)]
    return out


def test_produce_assigns_dense_offsets_and_stores_one_value_per_batch(plog: Log) -> None:
    r1, r2 = plog.run(produce(3, "a"), produce(2, "b"))
    (r3,) = plog.run(produce(4, "c"))
    assert [r.base_offset for r in (r1, r2, r3)] == [0, 3, 5]
    assert plog.sm.next_offset == 9
    batches = plog.sm.read(0, 1 << 20)
    assert [(b[0], b[2]) for b in batches] == [(0, 3), (3, 2), (5, 4)]
    assert values(batches) == [b"a0", b"a1", b"a2", b"b0", b"b1", b"c0", b"c1", b"c2", b"c3"]


def test_read_starts_with_the_batch_holding_the_offset(plog: Log) -> None:
    for tag in "abc":
        plog.run(produce(10, tag))
    batches = plog.sm.read(14, 1 << 20)
    assert batches[0][0] == 10
    assert values(batches, 14)[0] == b"b4"
    assert plog.sm.read(30, 1 << 20) == []  # offset == end: nothing yet


def test_read_limits_return_at_least_one_batch(plog: Log) -> None:
    for tag in "abcd":
        plog.run(produce(10, tag))
    assert len(plog.sm.read(0, max_bytes=1)) == 1
    # max_records counts from the requested offset: 5 left in batch 0, then 10 more.
    assert [b[0] for b in plog.sm.read(5, 1 << 20, max_records=6)] == [0, 10]
    assert [b[0] for b in plog.sm.read(5, 1 << 20, max_records=5)] == [0]


def test_timestamps_come_from_the_entry_and_never_go_backwards(plog: Log) -> None:
    plog.run(produce(1, ts=5000))
    (r,) = plog.run(produce(1, ts=4000))
    assert r.timestamp_ms == 5000
    assert [b[1] for b in plog.sm.read(0, 1 << 20)] == [5000, 5000]


def test_retry_of_a_recent_batch_is_a_duplicate_with_the_original_offset(plog: Log) -> None:
    plog.run(produce(2, pid=7, seq=0))
    plog.run(produce(3, pid=7, seq=2))
    (dup,) = plog.run(produce(2, pid=7, seq=0))
    assert dup == ApplyResult(base_offset=0, duplicate=True)
    assert plog.sm.next_offset == 5
    (nxt,) = plog.run(produce(1, pid=7, seq=5))
    assert nxt.base_offset == 5 and not nxt.duplicate


def test_sequence_gap_is_out_of_order_and_appends_nothing(plog: Log) -> None:
    plog.run(produce(2, pid=7, seq=0))
    (r,) = plog.run(produce(1, pid=7, seq=3))
    assert r.error is ErrorCode.OUT_OF_ORDER_SEQUENCE
    assert plog.sm.next_offset == 2


def test_unknown_producer_must_start_at_sequence_zero(plog: Log) -> None:
    (r,) = plog.run(produce(1, pid=9, seq=4))
    assert r.error is ErrorCode.OUT_OF_ORDER_SEQUENCE
    assert plog.sm.next_offset == 0


def test_retry_older_than_the_window_is_duplicate_sequence(plog: Log) -> None:
    for i in range(PRODUCER_WINDOW + 1):
        plog.run(produce(1, pid=7, seq=i))
    (oldest,) = plog.run(produce(1, pid=7, seq=0))
    assert oldest.error is ErrorCode.DUPLICATE_SEQUENCE
    (in_window,) = plog.run(produce(1, pid=7, seq=1))
    assert in_window == ApplyResult(base_offset=1, duplicate=True)
    assert plog.sm.next_offset == PRODUCER_WINDOW + 1


def test_producers_are_independent_and_non_idempotent_batches_always_append(plog: Log) -> None:
    a, b, c, d = plog.run(
        produce(1, pid=1, seq=0), produce(1, pid=2, seq=0), produce(1), produce(1)
    )
    assert [r.base_offset for r in (a, b, c, d)] == [0, 1, 2, 3]
    assert not any(r.duplicate for r in (a, b, c, d))


def test_invalid_commands_are_error_results_not_crashes(plog: Log) -> None:
    bad_count, wrong_group, no_seq = plog.run(
        Produce(b"", 0, 0), CreateTopic("t", 1, 1), Produce(b"x", 1, 0, producer_id=3)
    )
    assert bad_count.error is ErrorCode.INVALID_REQUEST
    out_of_range = plog.run(
        Produce(b"x", 2**32, 0),
        Produce(b"x", 1, 0, producer_id=-1, sequence=0),
        Produce(b"x", 1, 0, producer_id=2**64 - 1, sequence=0),
        Produce(b"x", 1, 0, producer_id=1, sequence=-5),
    )
    assert [r.error for r in out_of_range] == [ErrorCode.INVALID_REQUEST] * 4
    assert wrong_group.error is ErrorCode.INVALID_REQUEST
    assert no_seq.error is ErrorCode.INVALID_REQUEST
    plog.index += 1
    (garbage,) = plog.apply(Entry(term=1, index=plog.index, data=b"\xc1garbage"))
    assert garbage[0].error is ErrorCode.INVALID_REQUEST
    assert plog.sm.applied_index == plog.index
    assert plog.sm.next_offset == 0


def test_noop_and_conf_change_entries_advance_applied_index(plog: Log) -> None:
    noop = plog.entry()
    cc = plog.entry(typ=EntryType.CONF_CHANGE)
    assert plog.apply(noop, cc) == [[], []]
    assert plog.sm.applied_index == 2


def test_commit_offset_is_stored_per_group(plog: Log) -> None:
    assert plog.sm.committed_offset("g1") is None
    (r,) = plog.run(CommitOffset("g1", 42, "meta"))
    plog.run(CommitOffset("g2", 7))
    assert r.ok
    assert plog.sm.committed_offset("g1") == (42, "meta")
    assert plog.sm.committed_offset("g2") == (7, "")
    (neg,) = plog.run(CommitOffset("g1", -1))
    assert neg.error is ErrorCode.INVALID_REQUEST
    assert plog.sm.committed_offset("g1") == (42, "meta")


def test_restart_restores_state_and_skips_replayed_entries(
    store: NodeStore, data_dir: Path, plog: Log
) -> None:
    entries = [plog.entry(produce(2, "a", pid=1, seq=0)), plog.entry(CommitOffset("g", 1, "m"))]
    plog.apply(*entries)
    store.close()
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as reopened:
        again = Log(reopened)
        assert (again.sm.applied_index, again.sm.next_offset) == (2, 2)
        assert again.sm.committed_offset("g") == (1, "m")
        # The driver may hand already-applied entries again after a restart.
        assert again.apply(*entries) == [[], []]
        assert again.sm.next_offset == 2
        (dup,) = again.run(produce(2, "a", pid=1, seq=0))
        assert dup.duplicate and dup.base_offset == 0


def test_offset_in_range(plog: Log) -> None:
    plog.run(produce(3))
    assert [plog.sm.offset_in_range(o) for o in (-1, 0, 3, 4)] == [False, True, True, False]


def test_snapshot_restores_small_state_into_another_replica(plog: Log, tmp_path: Path) -> None:
    plog.run(produce(2, pid=4, seq=0), CommitOffset("g", 1))
    data = plog.sm.snapshot_state()
    with NodeStore.open(tmp_path / "n2", cluster="test", node_id="n2") as other:
        other.create_group(GID, ConfState(voters=("n1",)))
        follower = Log(other)
        batch = other.new_batch()
        follower.sm.restore_state(data, batch)
        other.write(batch)
        sm = PartitionStateMachine(other, GID)  # reload from disk
        assert (sm.applied_index, sm.next_offset, sm.start_offset) == (1, 2, 0)
        assert sm.committed_offset("g") == (1, "")
        follower.index = 1
        (dup,) = follower.run(produce(2, pid=4, seq=0))
        assert dup.duplicate and dup.base_offset == 0


def test_truncate_prefix_drops_whole_batches_below_the_new_start(plog: Log) -> None:
    for tag in "abc":
        plog.run(produce(10, tag))
    batch = plog.store.new_batch()
    plog.sm.truncate_prefix(15, batch)
    plog.store.write(batch)
    assert plog.sm.start_offset == 15
    assert [b[0] for b in plog.sm.read(0, 1 << 20)] == [10, 20]
    assert not plog.sm.offset_in_range(14)


# ---------------------------------------------------------------- determinism

cmds = st.lists(
    st.one_of(
        st.builds(
            lambda n, pid, seq: produce(n, pid=pid, seq=seq),
            st.integers(1, 3),
            st.sampled_from([None, 1, 2]),
            st.integers(0, 8),
        ),
        st.builds(
            lambda o, gen: CommitOffset("g", o, generation=gen),
            st.integers(0, 50),
            st.none() | st.integers(0, 3),
        ),
        st.builds(TruncatePrefix, st.integers(0, 40)),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=20, deadline=None)
@given(cmds=cmds, split=st.integers(1, 5), crash_at=st.integers(0, 30))
def test_apply_is_deterministic_across_chunking_and_restart(
    tmp_path_factory: pytest.TempPathFactory, cmds: list, split: int, crash_at: int
) -> None:
    """One command per entry applied in one call vs. in chunks, each by a state machine
    reloaded from disk, with a lost apply batch midway: identical results and stored state
    (also after reopening the database)."""
    base = tmp_path_factory.mktemp("det")
    entries = [
        Entry(term=1, index=i + 1, data=encode_entry_commands([c])) for i, c in enumerate(cmds)
    ]
    with NodeStore.open(base / "a", cluster="t", node_id="n1", fsync=False) as a:
        a.create_group(GID, ConfState(voters=("n1",)))
        sm_a = PartitionStateMachine(a, GID)
        batch = a.new_batch()
        results_a = sm_a.apply(entries, batch)
        a.write(batch)
        state_a = (sm_a.snapshot_state(), sm_a.read(0, 1 << 30))

    results_b: list[list[ApplyResult]] = []
    path_b = base / "b"
    with NodeStore.open(path_b, cluster="t", node_id="n1", fsync=False) as b:
        b.create_group(GID, ConfState(voters=("n1",)))
        for pos in range(0, len(entries), split):
            # A fresh state machine per chunk: its state must come back from disk.
            sm_b = PartitionStateMachine(b, GID)
            chunk = entries[pos : pos + split]
            batch = b.new_batch()
            got = sm_b.apply(chunk, batch)
            if pos <= crash_at < pos + split:
                # A crash before the apply batch was written: re-apply the chunk.
                sm_b = PartitionStateMachine(b, GID)
                batch = b.new_batch()
                got = sm_b.apply(chunk, batch)
            b.write(batch)
            results_b += got
    with NodeStore.open(path_b, cluster="t", node_id="n1", fsync=False) as b:
        sm_b = PartitionStateMachine(b, GID)
        state_b = (sm_b.snapshot_state(), sm_b.read(0, 1 << 30))
    assert results_a == results_b
    assert state_a == state_b
