"""Storage half of snapshots: retention commands, pre-fetched batches, compaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from raftlog.client.errors import ErrorCode
from raftlog.log.commands import (
    TruncatePrefix,
    decode_entry_commands,
    encode_entry_commands,
)
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.storage import CompactedError
from raftlog.raft.types import ConfState, Entry, HardState, Ready

from .test_partition import GID, Log, produce, values


@pytest.fixture
def plog(store: NodeStore) -> Iterator[Log]:
    store.create_group(GID, ConfState(voters=("n1",)))
    yield Log(store)


@pytest.fixture
def other(tmp_path: Path) -> Iterator[NodeStore]:
    s = NodeStore.open(tmp_path / "n2", cluster="test", node_id="n2")
    s.create_group(GID, ConfState(voters=("n1",)))
    try:
        yield s
    finally:
        s.close()


def test_truncate_prefix_command_round_trips() -> None:
    data = encode_entry_commands([TruncatePrefix(42)])
    assert decode_entry_commands(data) == [TruncatePrefix(42)]


def test_truncate_prefix_command_moves_start_on_apply(plog: Log) -> None:
    for tag in "abc":
        plog.run(produce(10, tag))
    (r,) = plog.run(TruncatePrefix(15))
    assert r.ok and r.base_offset == 15
    assert plog.sm.start_offset == 15
    # The batch straddling the new start stays whole; the one before is gone.
    assert [b[0] for b in plog.sm.read(0, 1 << 20)] == [10, 20]
    # Never backwards, never beyond the end.
    plog.run(TruncatePrefix(3))
    assert plog.sm.start_offset == 15
    plog.run(TruncatePrefix(1000))
    assert plog.sm.start_offset == 30
    assert plog.sm.read(0, 1 << 20) == []


def test_negative_truncate_is_an_error_result(plog: Log) -> None:
    plog.run(produce(2))
    (r,) = plog.run(TruncatePrefix(-1))
    assert r.error is ErrorCode.INVALID_REQUEST
    assert plog.sm.start_offset == 0


def test_truncate_survives_restart(plog: Log, store: NodeStore) -> None:
    for tag in "ab":
        plog.run(produce(5, tag))
    plog.run(TruncatePrefix(5))
    again = PartitionStateMachine(store, GID)
    assert again.start_offset == 5
    assert values(again.read(5, 1 << 20)) == [f"b{i}".encode() for i in range(5)]


def copy_batches(
    src: PartitionStateMachine, dst: PartitionStateMachine, lo: int, hi: int, chunk: int
) -> int:
    """Fetch [lo, hi) from src into dst in chunks of ``chunk`` bytes; returns chunks used."""
    pos = dst.contiguous_end(lo, hi)
    chunks = 0
    while pos < hi:
        batches = [b for b in src.read(pos, chunk) if b[0] < hi]
        wb = dst.store.new_batch()
        pos = dst.put_fetched(batches, wb)
        dst.store.write(wb)
        chunks += 1
    return chunks


def test_prefetched_batches_plus_restored_state_equal_the_source(
    plog: Log, other: NodeStore
) -> None:
    for i in range(6):
        plog.run(produce(4, f"t{i}-", pid=9, seq=4 * i))
    plog.run(TruncatePrefix(6))
    state = plog.sm.snapshot_state()
    dst = PartitionStateMachine(other, GID)
    chunks = copy_batches(plog.sm, dst, plog.sm.start_offset, plog.sm.next_offset, chunk=40)
    assert chunks > 1  # the chunk bound was honoured
    # Not applied yet: invisible to readers (the high watermark is still 0).
    assert dst.read(0, 1 << 20) == []
    wb = other.new_batch()
    dst.restore_state(state, wb)
    other.write(wb)
    assert (dst.start_offset, dst.next_offset) == (plog.sm.start_offset, plog.sm.next_offset)
    assert dst.read(0, 1 << 20) == plog.sm.read(0, 1 << 20)
    assert dst.producers == plog.sm.producers
    assert dst.snapshot_state() == state


def test_transfer_resumes_from_what_is_present(plog: Log, other: NodeStore) -> None:
    for i in range(5):
        plog.run(produce(3, f"r{i}-"))
    dst = PartitionStateMachine(other, GID)
    wb = other.new_batch()
    dst.put_fetched(plog.sm.read(0, 1 << 20)[:2], wb)  # a first attempt got 2 batches
    other.write(wb)
    assert dst.contiguous_end(0, 15) == 6
    assert dst.contiguous_end(4, 15) == 6  # from inside a present batch
    assert dst.contiguous_end(0, 5) == 5  # bounded by hi
    assert copy_batches(plog.sm, dst, 0, 15, chunk=1 << 20) == 1


def test_a_hole_stops_the_contiguous_scan(plog: Log, other: NodeStore) -> None:
    for i in range(4):
        plog.run(produce(2, f"h{i}-"))
    batches = plog.sm.read(0, 1 << 20)
    dst = PartitionStateMachine(other, GID)
    wb = other.new_batch()
    dst.put_fetched(batches[:1], wb)
    dst.put_fetched(batches[2:], wb)
    other.write(wb)
    assert dst.contiguous_end(0, 8) == 2


def test_non_contiguous_fetched_batches_are_refused(plog: Log, other: NodeStore) -> None:
    for i in range(3):
        plog.run(produce(2, f"x{i}-"))
    b0, _, b2 = plog.sm.read(0, 1 << 20)
    dst = PartitionStateMachine(other, GID)
    with pytest.raises(ValueError):
        dst.put_fetched([b0, b2], other.new_batch())


def _append(store: NodeStore, gid: int, first: int, last: int) -> None:
    ents = [Entry(term=1, index=i, data=b"x") for i in range(first, last + 1)]
    store.save([(gid, Ready(entries=ents, hard_state=HardState(1, "n1", last)))])


def test_compaction_without_blocking_gives_way_to_a_writer(store: NodeStore) -> None:
    store.create_group(3, ConfState(voters=("n1",)))
    _append(store, 3, 1, 20)
    store.create_snapshot(3, 15, None, b"state")
    with store._write_lock:  # a save in flight on another thread
        assert store.compact_log(3, 10, sync=False, blocking=False) is False
    assert store.group(3).first_index() == 1
    assert store.compact_log(3, 10, sync=False, blocking=False) is True
    g = store.group(3)
    assert g.first_index() == 11 and g.term(10) == 1
    with pytest.raises(CompactedError):
        g.entries(5, 12)
    assert [e.index for e in g.entries(11, 21)] == list(range(11, 21))


def test_compaction_and_snapshot_survive_reopen(data_dir: Path) -> None:
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as s:
        s.create_group(3, ConfState(voters=("n1", "n2")))
        _append(s, 3, 1, 30)
        s.create_snapshot(3, 25, None, b"state@25")
        s.compact_log(3, 20, sync=False)
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as s:
        g = s.group(3)
        assert g.first_index() == 21 and g.last_index() == 30
        snap = g.snapshot()
        assert (snap.meta.index, snap.data) == (25, b"state@25")
        assert snap.meta.conf_state.voters == ("n1", "n2")


def test_local_snapshot_never_rolls_back_the_live_membership(store: NodeStore) -> None:
    store.create_group(3, ConfState(voters=("n1", "n2", "n3")))
    _append(store, 3, 1, 10)
    # A conf change applied after the capture (membership writes it at apply).
    store.set_conf_state(3, ConfState(voters=("n1", "n2")))
    snap = store.create_snapshot(3, 8, ConfState(voters=("n1", "n2", "n3")), b"s")
    assert snap.meta.conf_state.voters == ("n1", "n2", "n3")
    assert store.group(3).conf_state.voters == ("n1", "n2")


def test_local_snapshot_older_than_an_installed_one_is_refused(store: NodeStore) -> None:
    from raftlog.raft.memory_storage import SnapshotOutOfDateError
    from raftlog.raft.types import Snapshot, SnapshotMeta

    store.create_group(3, ConfState(voters=("n1",)))
    _append(store, 3, 1, 10)
    installed = Snapshot(SnapshotMeta(50, 2, ConfState(voters=("n1",))), b"leader")
    store.save([(3, Ready(snapshot=installed, hard_state=HardState(2, None, 50)))])
    with pytest.raises(SnapshotOutOfDateError):
        store.create_snapshot(3, 9, None, b"stale")
    assert store.group(3).snapshot().data == b"leader"


def test_truncate_in_the_same_apply_as_the_batches_it_cuts(plog: Log) -> None:
    """Batches produced earlier in the SAME apply call (not yet in RocksDB) count too:
    a replica applying in one chunk must store what one applying entry by entry does."""
    plog.apply(
        plog.entry(produce(3, "a")), plog.entry(produce(3, "b")), plog.entry(TruncatePrefix(4))
    )
    assert plog.sm.start_offset == 4
    assert [b[0] for b in plog.sm.read(0, 1 << 20)] == [3]
    assert values(plog.sm.read(4, 1 << 20), 4) == [b"b1", b"b2"]
