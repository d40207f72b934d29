"""NodeStore / GroupStorage: persistence of Readies, restart, identity checks."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.log import keys
from raftlog.log import store as store_mod
from raftlog.log.identity import FORMAT_VERSION
from raftlog.log.store import DataDirError, GroupExistsError, NodeStore
from raftlog.raft.memory_storage import MemoryStorage
from raftlog.raft.storage import CompactedError, UnavailableError
from raftlog.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Ready,
    Snapshot,
    SnapshotMeta,
)

CS3 = ConfState(voters=("n1", "n2", "n3"))


def ents(lo: int, hi: int, term: int, tag: str = "") -> list[Entry]:
    return [Entry(term=term, index=i, data=f"{tag}{term}:{i}".encode()) for i in range(lo, hi)]


def reopen(store: NodeStore, path: Path) -> NodeStore:
    store.close()
    return NodeStore.open(path, cluster="test", node_id="n1")


# ---------------------------------------------------------------- compaction style


def _recorded_option(path: Path, name: str) -> str:
    """What RocksDB itself recorded for option ``name`` (its newest OPTIONS file
    in the data dir): proof the option reached it."""
    newest = max(path.glob("OPTIONS-*"), key=lambda p: int(p.name.split("-")[1]))
    for line in newest.read_text().splitlines():
        if line.strip().startswith(f"{name}="):
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"no {name} in {newest}")


def _options_compaction_style(path: Path) -> str:
    return _recorded_option(path, "compaction_style")


def test_compaction_style_reaches_rocksdb_and_either_opens_the_others_data(
    data_dir: Path,
) -> None:
    """Switching [storage] rocksdb_compaction on a node with data keeps it all."""
    styles = ["level", "universal", "level"]
    for round_, style in enumerate(styles):
        with NodeStore.open(data_dir, cluster="test", node_id="n1", rocksdb_compaction=style) as s:
            if round_ == 0:
                s.create_group(7, CS3)
            g = s.group(7)
            assert g.last_index() == 10 * round_  # every earlier round's entries
            lo = 10 * round_ + 1
            s.save([(7, Ready(entries=ents(lo, lo + 10, term=1)))])
            s.db.flush()  # into files that the next style must read
        want = "kCompactionStyleUniversal" if style == "universal" else "kCompactionStyleLevel"
        assert _options_compaction_style(data_dir) == want
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as s:
        assert [e.index for e in s.group(7).entries(1, 31)] == list(range(1, 31))


def test_the_table_cache_size_reaches_rocksdb(data_dir: Path) -> None:
    with NodeStore.open(data_dir, cluster="test", node_id="n1"):
        pass
    assert _recorded_option(data_dir, "max_open_files") == "384"
    with NodeStore.open(data_dir, cluster="test", node_id="n1", max_open_files=1000):
        pass
    assert _recorded_option(data_dir, "max_open_files") == "1000"


def test_an_unknown_compaction_style_is_refused(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="compaction style"):
        NodeStore.open(data_dir, cluster="test", node_id="n1", rocksdb_compaction="fifo")


# ---------------------------------------------------------------- identity


def test_first_open_writes_identity_and_reopen_keeps_incarnation(data_dir: Path) -> None:
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as s:
        first = s.identity
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as s:
        assert s.identity == first
    assert first.cluster == "test" and first.node_id == "n1"
    assert first.format_version == FORMAT_VERSION


def test_wiped_dir_gets_a_new_incarnation(tmp_path: Path) -> None:
    with NodeStore.open(tmp_path / "a", cluster="test", node_id="n1") as s:
        a = s.identity.incarnation
    with NodeStore.open(tmp_path / "b", cluster="test", node_id="n1") as s:
        b = s.identity.incarnation
    assert a != b


def test_other_cluster_dir_is_refused(data_dir: Path) -> None:
    NodeStore.open(data_dir, cluster="test", node_id="n1").close()
    with pytest.raises(DataDirError, match="belongs to cluster 'test', not 'prod'"):
        NodeStore.open(data_dir, cluster="prod", node_id="n1")


def test_other_node_dir_is_refused(data_dir: Path) -> None:
    NodeStore.open(data_dir, cluster="test", node_id="n1").close()
    with pytest.raises(DataDirError, match="belongs to node 'n1', not 'n2'"):
        NodeStore.open(data_dir, cluster="test", node_id="n2")


def _overwrite_identity(data_dir: Path, value: bytes) -> None:
    s = NodeStore.open(data_dir, cluster="test", node_id="n1")
    s.db.put(keys.IDENTITY_KEY, value)
    s.close()


def test_future_format_is_refused(data_dir: Path) -> None:
    future = {
        "cluster": "test",
        "node_id": "n1",
        "incarnation": "x",
        "format_version": FORMAT_VERSION + 1,
    }
    _overwrite_identity(data_dir, msgpack.packb(future))
    with pytest.raises(DataDirError, match="newer than this raftlog supports"):
        NodeStore.open(data_dir, cluster="test", node_id="n1")


@pytest.mark.parametrize("garbage", [b"\xc1\xff\x00garbage", msgpack.packb([1, 2]), b""])
def test_garbage_identity_is_refused(data_dir: Path, garbage: bytes) -> None:
    _overwrite_identity(data_dir, garbage)
    with pytest.raises(DataDirError, match="identity record is corrupt"):
        NodeStore.open(data_dir, cluster="test", node_id="n1")


# What a creation that failed before CURRENT was written leaves (seen after a
# jepsen disk-full window: ENOSPC on 000001.dbtmp).
CREATION_DEBRIS = ("IDENTITY", "LOCK", "LOG", "MANIFEST-000001", "rocksdict-config.json",
                   "000001.dbtmp")  # fmt: skip


def test_a_failed_creation_does_not_block_the_next_start(data_dir: Path) -> None:
    data_dir.mkdir()
    for name in CREATION_DEBRIS:
        (data_dir / name).write_bytes(b"half written")
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as s:
        s.create_group(1, CS3)
        incarnation = s.identity.incarnation
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as s:
        assert s.identity.incarnation == incarnation and s.scan_group_ids() == [1]


@pytest.mark.parametrize("data_file", ["000009.sst", "000012.log", "notes.txt"])
def test_a_dir_with_data_files_but_no_database_is_still_refused(
    data_dir: Path, data_file: str
) -> None:
    data_dir.mkdir()
    for name in (*CREATION_DEBRIS, data_file):
        (data_dir / name).write_bytes(b"x")
    with pytest.raises(DataDirError, match="is not a raftlog"):
        NodeStore.open(data_dir, cluster="test", node_id="n1")


def test_dir_with_data_but_no_identity_is_refused(data_dir: Path) -> None:
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as s:
        s.create_group(1, CS3)
        s.db.delete(keys.IDENTITY_KEY)
    with pytest.raises(DataDirError, match="holds data but no identity"):
        NodeStore.open(data_dir, cluster="test", node_id="n1")


def test_non_rocksdb_dir_is_refused(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "notes.txt").write_text("someone else's files")
    with pytest.raises(DataDirError, match="not a raftlog"):
        NodeStore.open(data_dir, cluster="test", node_id="n1")


def test_dir_open_twice_is_refused(store: NodeStore, data_dir: Path) -> None:
    with pytest.raises(DataDirError, match="cannot be opened"):
        NodeStore.open(data_dir, cluster="test", node_id="n1")


def test_peer_incarnations_persist(store: NodeStore, data_dir: Path) -> None:
    assert store.peer_incarnation("n2") is None
    book = store.incarnation_book()
    book.set("n2", "inc-a")
    store = reopen(store, data_dir)
    try:
        assert store.peer_incarnation("n2") == "inc-a"
        assert store.incarnation_book().get("n3") is None
    finally:
        store.close()


# ---------------------------------------------------------------- groups and Readies


def test_created_group_starts_empty_and_survives_restart(store: NodeStore, data_dir: Path) -> None:
    g = store.create_group(7, CS3)
    assert (g.first_index(), g.last_index(), g.term(0)) == (1, 0, 0)
    with pytest.raises(GroupExistsError):
        store.create_group(7, CS3)
    store = reopen(store, data_dir)
    try:
        assert store.group_ids() == [7]
        assert store.group(7).initial_state() == (HardState(), CS3)
    finally:
        store.close()


def test_save_then_restart_restores_entries_hard_state_conf_state(
    store: NodeStore, data_dir: Path
) -> None:
    store.create_group(1, CS3)
    store.create_group(2, ConfState(voters=("n1",)))
    hs1 = HardState(term=2, vote="n2", commit=3)
    store.save(
        [
            (1, Ready(hard_state=hs1, entries=ents(1, 6, 2))),
            (2, Ready(hard_state=HardState(term=1, vote="n1"), entries=ents(1, 3, 1))),
        ]
    )
    g1 = store.group(1)
    assert g1.entries(1, 6) == ents(1, 6, 2)
    store = reopen(store, data_dir)
    try:
        g1, g2 = store.group(1), store.group(2)
        assert g1.initial_state() == (hs1, CS3)
        assert g2.initial_state() == (HardState(term=1, vote="n1"), ConfState(voters=("n1",)))
        assert g1.tail_cache_len() == 0  # the reads below come from RocksDB
        assert (g1.first_index(), g1.last_index()) == (1, 5)
        assert g1.entries(1, 6) == ents(1, 6, 2)
        assert [g1.term(i) for i in range(0, 6)] == [0, 2, 2, 2, 2, 2]
        assert g2.entries(1, 3) == ents(1, 3, 1)
    finally:
        store.close()


def test_conflicting_suffix_is_truncated(store: NodeStore, data_dir: Path) -> None:
    store.create_group(1, CS3)
    store.save([(1, Ready(entries=ents(1, 11, 1)))])
    # A new leader's entries at 6..7 replace 6..10 (Raft §5.3).
    store.save([(1, Ready(entries=ents(6, 8, 2, "new")))])
    expected = ents(1, 6, 1) + ents(6, 8, 2, "new")
    g = store.group(1)
    assert g.last_index() == 7
    assert g.entries(1, 8) == expected
    with pytest.raises(UnavailableError):
        g.entries(1, 9)
    store = reopen(store, data_dir)
    try:
        g = store.group(1)
        assert g.last_index() == 7
        assert g.entries(1, 8) == expected
        assert store.db.get(keys.log_key(1, 8)) is None
    finally:
        store.close()


def test_entries_respects_max_bytes_but_returns_at_least_one(store: NodeStore) -> None:
    store.create_group(1, CS3)
    big = [Entry(term=1, index=i, data=b"x" * 100) for i in range(1, 11)]
    store.save([(1, Ready(entries=big))])
    g = store.group(1)
    assert g.entries(1, 11, max_bytes=1) == big[:1]
    assert g.entries(1, 11, max_bytes=3 * big[0].size()) == big[:3]
    # The same limits from RocksDB, once the tail cache is bypassed.
    assert g._read_entries(1, 11, 1) == big[:1]
    assert g._read_entries(1, 11, 3 * big[0].size()) == big[:3]


def test_gap_is_refused_and_nothing_is_written(store: NodeStore) -> None:
    store.create_group(1, CS3)
    store.save([(1, Ready(entries=ents(1, 3, 1)))])
    with pytest.raises(UnavailableError, match="gap"):
        store.save([(1, Ready(entries=ents(5, 6, 1), hard_state=HardState(term=9)))])
    assert store.group(1).last_index() == 2
    assert store.group(1).hard_state == HardState()


def test_tail_cache_is_bounded_and_old_entries_come_from_disk(
    store: NodeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "TAIL_MAX_ENTRIES", 10)
    store.create_group(1, CS3)
    for lo in range(1, 41, 4):
        store.save([(1, Ready(entries=ents(lo, lo + 4, 1)))])
    g = store.group(1)
    assert g.tail_cache_len() <= 10
    assert g.entries(1, 41) == ents(1, 41, 1)
    assert [g.term(i) for i in (1, 40)] == [1, 1]


def test_snapshot_in_ready_replaces_the_log(store: NodeStore, data_dir: Path) -> None:
    store.create_group(1, CS3)
    store.save([(1, Ready(entries=ents(1, 6, 1)))])
    cs = ConfState(voters=("n1", "n2"))
    snap = Snapshot(SnapshotMeta(index=20, term=4, conf_state=cs), b"state")
    store.save([(1, Ready(snapshot=snap, entries=ents(21, 23, 4)))])
    g = store.group(1)
    assert (g.first_index(), g.last_index(), g.term(20)) == (21, 22, 4)
    with pytest.raises(CompactedError):
        g.entries(5, 6)
    store = reopen(store, data_dir)
    try:
        g = store.group(1)
        assert g.snapshot() == snap
        assert g.initial_state()[1] == cs
        assert (g.first_index(), g.last_index(), g.term(20)) == (21, 22, 4)
        assert g.entries(21, 23) == ents(21, 23, 4)
        assert store.db.get(keys.log_key(1, 3)) is None
    finally:
        store.close()


def test_create_snapshot_and_compact(store: NodeStore, data_dir: Path) -> None:
    store.create_group(1, CS3)
    store.save([(1, Ready(entries=ents(1, 11, 2)))])
    snap = store.create_snapshot(1, 8, None, b"sm")
    assert snap.meta == SnapshotMeta(8, 2, CS3)
    store.compact_log(1, 8)
    g = store.group(1)
    assert (g.first_index(), g.term(8)) == (9, 2)
    with pytest.raises(CompactedError):
        g.term(7)
    store = reopen(store, data_dir)
    try:
        g = store.group(1)
        assert (g.first_index(), g.last_index(), g.term(8)) == (9, 10, 2)
        assert g.snapshot() == snap
        assert g.entries(9, 11) == ents(9, 11, 2)
    finally:
        store.close()


def test_set_conf_state_survives_restart(store: NodeStore, data_dir: Path) -> None:
    store.create_group(1, CS3)
    cs = ConfState(voters=("n1", "n2", "n3", "n4"))
    batch = store.new_batch()
    store.set_conf_state(1, cs, batch)
    store.write(batch, sync=True)
    store = reopen(store, data_dir)
    try:
        assert store.group(1).initial_state()[1] == cs
    finally:
        store.close()


def _has_keys(store: NodeStore, begin: bytes, end: bytes) -> bool:
    # A live iterator pins the database open, so keep it local to this function.
    it = store.db.iter()
    it.seek(begin)
    return it.valid() and it.key() < end


def test_delete_group_removes_all_its_keys(store: NodeStore, data_dir: Path) -> None:
    store.create_group(1, CS3)
    store.create_group(2, CS3)
    store.save([(g, Ready(entries=ents(1, 4, 1), hard_state=HardState(term=1))) for g in (1, 2)])
    batch = store.new_batch()
    batch.put(keys.batch_key(1, 0), b"records")
    store.write(batch)
    store.delete_group(1)
    assert store.group_ids() == [2]
    for ns in keys.GROUP_NAMESPACES:
        assert not _has_keys(store, *keys.group_range(ns, 1)), f"namespace {ns!r} left keys"
    store = reopen(store, data_dir)
    try:
        assert store.group_ids() == [2]
        assert store.group(2).entries(1, 4) == ents(1, 4, 1)
    finally:
        store.close()


def test_fsync_off_store_still_persists_on_clean_close(data_dir: Path) -> None:
    s = NodeStore.open(data_dir, cluster="test", node_id="n1", fsync=False)
    s.create_group(1, CS3)
    s.save([(1, Ready(entries=ents(1, 3, 1)))])
    s.close()
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as s:
        assert s.group(1).entries(1, 3) == ents(1, 3, 1)


# ---------------------------------------------------------------- equivalence with MemoryStorage

# An operation: ("append", first index offset from last+1 (<= 0 = overwrite), count, term)
# or ("compact", fraction of the log).
ops = st.lists(
    st.one_of(
        # (kind, first index relative to last+1 (<= 0 overwrites), count, term)
        st.tuples(st.just("append"), st.integers(-6, 0), st.integers(1, 5), st.integers(1, 4)),
        # (kind, fraction of the log to compact)
        st.tuples(st.just("compact"), st.floats(0, 1), st.just(0), st.just(0)),
        # (kind, snapshot index relative to last, voters, term): InstallSnapshot
        st.tuples(st.just("snapshot"), st.integers(-3, 3), st.integers(1, 4), st.integers(1, 4)),
        # a restart: the store must come back exactly as it was
        st.tuples(st.just("reopen"), st.just(0), st.just(0), st.just(0)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, deadline=None)
@given(ops=ops)
def test_matches_memory_storage(tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:
    path = tmp_path_factory.mktemp("equiv")
    mem = MemoryStorage(conf_state=CS3)
    s = NodeStore.open(path, cluster="test", node_id="n1", fsync=False)
    try:
        s.create_group(1, CS3)
        for kind, offset, count, term in ops:
            if kind == "append":
                lo = max(mem.first_index(), mem.last_index() + 1 + offset)
                new = [
                    Entry(term=term, index=i, type=EntryType(i % 2), data=b"%d" % i)
                    for i in range(lo, lo + count)
                ]
                mem.append(new)
                s.save([(1, Ready(entries=new))])
            elif kind == "compact":
                if mem.last_index() >= mem.first_index():
                    upto = mem.first_index() + int(offset * (mem.last_index() - mem.first_index()))
                    mem.compact(upto)
                    s.compact_log(1, upto)
            elif kind == "snapshot":
                index = max(mem.last_index() + offset, mem.snapshot().meta.index, 1)
                cs = ConfState(voters=tuple(f"n{i}" for i in range(1, count + 1)))
                snap = Snapshot(SnapshotMeta(index, term, cs), b"sm%d" % index)
                mem.apply_snapshot(snap)
                s.save([(1, Ready(snapshot=snap))])
            else:
                s.close()
                s = NodeStore.open(path, cluster="test", node_id="n1", fsync=False)
            g = s.group(1)
            assert (g.first_index(), g.last_index()) == (mem.first_index(), mem.last_index())
            assert g.initial_state()[1] == mem.initial_state()[1]
        g = s.group(1)
        assert g.snapshot().meta.index == mem.snapshot().meta.index
        lo, hi = mem.first_index(), mem.last_index() + 1
        assert g.entries(lo, hi) == mem.entries(lo, hi)
        assert g._read_entries(lo, hi, None) == mem.entries(lo, hi)
        for i in range(lo - 1, hi):
            assert g.term(i) == mem.term(i)
    finally:
        s.close()


def test_save_skips_a_group_deleted_after_its_ready_was_made(store: NodeStore) -> None:
    store.create_group(1, CS3)
    store.create_group(2, CS3)
    store.delete_group(2)
    store.save([(2, Ready(entries=ents(1, 3, 1))), (1, Ready(entries=ents(1, 3, 1)))])
    assert store.group(1).entries(1, 3) == ents(1, 3, 1)
    assert store.group_ids() == [1]
    assert not _has_keys(store, *keys.group_range(keys.NS.LOG, 2))


def test_reads_during_saves_in_another_thread_stay_consistent(
    store: NodeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver saves in a worker thread while the event loop reads; reads must
    always see a contiguous log with the right entries (half of a save never shows)."""
    monkeypatch.setattr(store_mod, "TAIL_MAX_ENTRIES", 16)  # mix tail and RocksDB reads
    store.create_group(1, CS3)
    g = store.group(1)
    total = 600
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for lo in range(1, total + 1, 3):
                store.save([(1, Ready(entries=ents(lo, lo + 3, 1)))])
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    deadline = time.monotonic() + 30
    try:
        while thread.is_alive() or reads == 0:
            assert time.monotonic() < deadline, "writer did not finish"
            last = g.last_index()
            if last == 0:
                continue
            lo = max(1, last - 40)
            assert g.entries(lo, last + 1) == ents(lo, last + 1, 1)
            assert g.term(last) == 1
            reads += 1
    finally:
        thread.join(timeout=30)
    assert not errors
    assert g.last_index() == total


class _WriteSpy:
    """Stands in for the RocksDB handle: records whether each write was made
    durable, by a synced write or by a WAL sync (flush_wal(True)) right after."""

    def __init__(self, db: object) -> None:
        self._db = db
        self.synced: list[bool] = []

    def write(self, batch: object, opts: object) -> None:
        self.synced.append(opts is self.sync_opts)
        self._db.write(batch, opts)  # type: ignore[attr-defined]

    def flush_wal(self, sync: bool = True) -> None:
        if sync and self.synced:
            self.synced[-1] = True
        self._db.flush_wal(sync)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


@pytest.mark.parametrize(
    ("node_fsync", "sync", "expected"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_save_fsyncs_only_when_asked_and_the_node_allows_it(
    data_dir: Path, node_fsync: bool, sync: bool, expected: bool
) -> None:
    with NodeStore.open(data_dir, cluster="test", node_id="n1", fsync=node_fsync) as s:
        s.create_group(1, ConfState(voters=("n1",)))
        spy = _WriteSpy(s.db)
        spy.sync_opts = s._sync_opts
        s.db = spy  # type: ignore[assignment]
        s.save([(1, Ready(entries=ents(1, 2, 1), hard_state=HardState(1, "n1", 0)))], sync=sync)
        s.db = spy._db  # type: ignore[assignment]
        assert spy.synced == [expected]
        assert s.group(1).last_index() == 1


def test_abandon_keeps_what_the_wal_holds_and_is_idempotent(data_dir: Path) -> None:
    """``abandon`` (the close after a failed write) stops RocksDB's background work
    and swallows the close error; a synced write before it is there after reopen."""
    store = NodeStore.open(data_dir, cluster="test", node_id="n1")
    store.set_peer_incarnation("n2", "before-abandon")  # synced
    store.abandon()
    store.abandon()
    store.close()  # also a no-op now
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as reopened:
        assert reopened.peer_incarnation("n2") == "before-abandon"


# ---------------------------------------------------------------- memtable size


def _options_write_buffer_size(path: Path) -> int:
    return int(_recorded_option(path, "write_buffer_size"))


def test_nodes_get_distinct_memtable_sizes_around_the_default() -> None:
    default = store_mod.DEFAULT_WRITE_BUFFER_BYTES
    assert store_mod.staggered_write_buffer_bytes(0, 1) == default
    for count in (2, 3, 5, 7):
        sizes = [store_mod.staggered_write_buffer_bytes(i, count) for i in range(count)]
        assert len(set(sizes)) == count, sizes  # no two replicas flush in step
        assert sizes == sorted(sizes)
        assert sizes[0] >= 0.75 * default and sizes[-1] <= 1.25 * default
        assert all(s % 4096 == 0 for s in sizes)
    assert store_mod.staggered_write_buffer_bytes(1, 3) == default


def test_open_gives_rocksdb_the_memtable_size(tmp_path: Path) -> None:
    size = store_mod.staggered_write_buffer_bytes(0, 3)
    s = NodeStore.open(tmp_path / "d", cluster="test", node_id="n1", write_buffer_bytes=size)
    s.close()
    assert _options_write_buffer_size(tmp_path / "d") == size == 48 * 1024 * 1024


def test_rocksdb_keeps_a_bounded_number_of_table_files_open(tmp_path: Path) -> None:
    """Connections share the node's descriptors with RocksDB; the table cache
    bound is what server/open_files.py keeps free of them."""
    s = NodeStore.open(tmp_path / "d", cluster="test", node_id="n1")
    s.close()
    recorded = int(_recorded_option(tmp_path / "d", "max_open_files"))
    assert recorded == store_mod.ROCKSDB_MAX_OPEN_FILES == 384
