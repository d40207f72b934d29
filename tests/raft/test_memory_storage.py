"""MemoryStorage: the in-memory Storage the simulator and tests persist into."""

from __future__ import annotations

import pytest
from raftlog.raft.memory_storage import MemoryStorage, SnapshotOutOfDateError
from raftlog.raft.storage import CompactedError, UnavailableError
from raftlog.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta


def _ents(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(term=t, index=start + i, data=b"x" * 10) for i, t in enumerate(terms)]


def test_bootstrap_conf_state_is_initial_state() -> None:
    cs = ConfState(voters=("a", "b", "c"))
    hs, got = MemoryStorage(conf_state=cs).initial_state()
    assert got == cs
    assert hs == HardState()


def test_append_truncates_conflicting_suffix() -> None:
    s = MemoryStorage()
    s.append(_ents(1, 1, 1, 1))
    s.append(_ents(2, 2, start=3))
    assert [(e.index, e.term) for e in s.all_entries()] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    s.append(_ents(3, start=2))
    assert s.last_index() == 2
    assert s.term(2) == 3


def test_append_with_gap_raises() -> None:
    s = MemoryStorage()
    s.append(_ents(1))
    with pytest.raises(UnavailableError):
        s.append(_ents(1, start=5))


def test_entries_respects_max_bytes_but_returns_at_least_one() -> None:
    s = MemoryStorage()
    s.append(_ents(1, 1, 1, 1))
    one = s.entries(1, 5, max_bytes=1)
    assert len(one) == 1
    size = s.all_entries()[0].size()
    assert len(s.entries(1, 5, max_bytes=2 * size)) == 2
    assert len(s.entries(1, 5)) == 4


def test_compact_keeps_term_of_compaction_point() -> None:
    s = MemoryStorage()
    s.append(_ents(1, 2, 3, 4))
    s.compact(2)
    assert s.first_index() == 3
    assert s.term(2) == 2
    with pytest.raises(CompactedError):
        s.term(1)
    with pytest.raises(CompactedError):
        s.entries(2, 4)
    assert [e.index for e in s.entries(3, 5)] == [3, 4]
    with pytest.raises(UnavailableError):
        s.term(5)


def test_create_and_apply_snapshot() -> None:
    s = MemoryStorage(conf_state=ConfState(voters=("a",)))
    s.append(_ents(1, 1, 2))
    snap = s.create_snapshot(2, ConfState(voters=("a", "b")), b"state")
    assert snap.meta.term == 1
    assert s.snapshot() == snap
    other = MemoryStorage()
    other.append(_ents(5, 5, 5, 5, 5))
    other.apply_snapshot(snap)
    assert other.last_index() == 2
    assert other.first_index() == 3
    assert other.initial_state()[1] == ConfState(voters=("a", "b"))
    with pytest.raises(SnapshotOutOfDateError):
        other.apply_snapshot(Snapshot(SnapshotMeta(1, 1)))


def test_append_skips_entries_already_in_snapshot() -> None:
    s = MemoryStorage()
    s.apply_snapshot(Snapshot(SnapshotMeta(5, 2)))
    s.append(_ents(2, 2, 3, start=4))
    assert [(e.index, e.term) for e in s.all_entries()] == [(6, 3)]
