"""One RocksDB per node holding every Raft group's log and hard state.

Sharing one database lets ``NodeStore.save`` persist the Readies of all groups
of one driver turn in ONE WriteBatch and ONE fsync (group commit, DESIGN.md
§9). ``GroupStorage`` is the read side the Raft core sees (``raft.storage
.Storage``), with the same semantics as ``raft.memory_storage.MemoryStorage``;
it serves the hot path (term lookups, the leader re-reading just-appended
entries to replicate them) from memory and falls back to RocksDB for older
entries.

Threading: the driver may run ``save`` in a worker thread while the event loop
reads a GroupStorage. The in-memory view is only changed after the batch is
written, under ``NodeStore._lock``, and readers take the same lock, so a
reader sees either the view before a save or after it, never half of one.
Writers (save, create_group, delete_group, create_snapshot, compact_log) are
serialized by ``NodeStore._write_lock``, so e.g. deleting a group while a save
is in flight on another thread waits for that save instead of racing it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from raftlog.raft.memory_storage import SnapshotOutOfDateError
from raftlog.raft.storage import CompactedError, StorageError, UnavailableError, limit_size
from raftlog.raft.types import ConfState, Entry, HardState, NodeId, Ready, Snapshot, SnapshotMeta
from rocksdict import (
    DBCompactionStyle,
    Options,
    Rdict,
    UniversalCompactOptions,
    WriteBatch,
    WriteOptions,
)

from . import codec, keys
from .identity import DataDirError, NodeIdentity

log = logging.getLogger(__name__)

__all__ = ["DataDirError", "GroupExistsError", "GroupStorage", "NodeStore", "PeerIncarnations"]

# Bounds of each group's in-memory tail of recent entries. The leader re-reads
# entries it appended moments ago to send them to followers; a follower that
# lags by more than this is served from RocksDB instead.
TAIL_MAX_ENTRIES = 4096
TAIL_MAX_BYTES = 4 * 1024 * 1024


class GroupExistsError(StorageError):
    """create_group for a group that already has state on this node."""


class GroupStorage:
    """A Raft group's persisted state, as the core reads it (``raft.storage.Storage``).

    Writes go through ``NodeStore`` (``save``, ``create_snapshot`` ...), never here.
    """

    def __init__(self, store: NodeStore, group_id: int) -> None:
        self._store = store
        self._db = store.db
        self._lock = store._lock
        self.group_id = group_id
        self._hard_state = HardState()
        self._conf_state = ConfState()
        self._snap_meta = SnapshotMeta()
        # The last compacted entry (Raft §7): term(first_index-1) must stay answerable
        # for the AppendEntries consistency check (§5.3).
        self._offset_index = 0
        self._offset_term = 0
        self._last_index = 0
        # Entries [_tail_start, _last_index] when non-empty.
        self._tail: list[Entry] = []
        self._tail_start = 1
        self._tail_bytes = 0

    # ---- loading -------------------------------------------------------------

    def _load(self) -> None:
        db, gid = self._db, self.group_id
        value = db.get(keys.raft_meta(gid, keys.RaftField.HARD_STATE))
        if value is not None:
            self._hard_state = codec.decode_hard_state(value)
        value = db.get(keys.raft_meta(gid, keys.RaftField.CONF_STATE))
        if value is not None:
            self._conf_state = codec.decode_conf_state(value)
        value = db.get(keys.raft_meta(gid, keys.RaftField.SNAPSHOT))
        if value is not None:
            self._snap_meta = codec.decode_snapshot(value).meta
        value = db.get(keys.raft_meta(gid, keys.RaftField.LOG_START))
        if value is not None:
            self._offset_index, self._offset_term = codec.decode_index_term(value)
        self._last_index = self._offset_index
        it = db.iter()
        it.seek_for_prev(keys.group_prefix(keys.NS.LOG, gid + 1))
        if it.valid():
            key = it.key()
            if key.startswith(keys.group_prefix(keys.NS.LOG, gid)):
                self._last_index = max(keys.index_of_log_key(key), self._offset_index)
        self._tail_start = self._last_index + 1

    # ---- Storage protocol ------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        with self._lock:
            return self._hard_state, self._conf_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        with self._lock:
            if lo <= self._offset_index:
                raise CompactedError(
                    f"group {self.group_id}: index {lo} compacted (first={self._offset_index + 1})"
                )
            if hi > self._last_index + 1:
                raise UnavailableError(
                    f"group {self.group_id}: entries [{lo},{hi}) beyond last={self._last_index}"
                )
            if lo >= hi:
                return []
            if self._tail and lo >= self._tail_start:
                ents = self._tail[lo - self._tail_start : hi - self._tail_start]
                return limit_size(ents, max_bytes)
            # Older than the tail: read RocksDB (still under the lock, so a
            # concurrent truncation cannot give us a mix of two logs).
            return self._read_entries(lo, hi, max_bytes)

    def _read_entries(self, lo: int, hi: int, max_bytes: int | None) -> list[Entry]:
        out: list[Entry] = []
        size = 0
        end_key = keys.log_key(self.group_id, hi)
        # A RocksDB iterator reads one consistent snapshot of the database.
        it = self._db.iter()
        it.seek(keys.log_key(self.group_id, lo))
        expect = lo
        while expect < hi and it.valid():
            key = it.key()
            if key >= end_key or keys.index_of_log_key(key) != expect:
                break
            entry = codec.decode_entry(expect, it.value())
            size += entry.size()
            if out and max_bytes is not None and size > max_bytes:
                return out
            out.append(entry)
            expect += 1
            it.next()
        if expect < hi:
            raise StorageError(f"group {self.group_id}: log hole at index {expect}")
        return out

    def term(self, index: int) -> int:
        with self._lock:
            if index == self._offset_index:
                return self._offset_term
            if index < self._offset_index:
                raise CompactedError(
                    f"group {self.group_id}: index {index} compacted "
                    f"(first={self._offset_index + 1})"
                )
            if index > self._last_index:
                raise UnavailableError(
                    f"group {self.group_id}: index {index} beyond last={self._last_index}"
                )
            if self._tail and index >= self._tail_start:
                return self._tail[index - self._tail_start].term
            value = self._db.get(keys.log_key(self.group_id, index))
            if value is None:
                raise StorageError(f"group {self.group_id}: log hole at index {index}")
            return codec.decode_entry(index, value).term

    def first_index(self) -> int:
        with self._lock:
            return self._offset_index + 1

    def last_index(self) -> int:
        with self._lock:
            return self._last_index

    def snapshot(self) -> Snapshot:
        with self._lock:
            value = self._db.get(keys.raft_meta(self.group_id, keys.RaftField.SNAPSHOT))
            if value is None:
                return Snapshot(SnapshotMeta(0, 0, self._conf_state))
            return codec.decode_snapshot(value)

    # ---- extras for the driver and tests ------------------------------------------

    @property
    def hard_state(self) -> HardState:
        with self._lock:
            return self._hard_state

    @property
    def conf_state(self) -> ConfState:
        with self._lock:
            return self._conf_state

    def snapshot_meta(self) -> SnapshotMeta:
        with self._lock:
            return self._snap_meta

    def tail_cache_len(self) -> int:
        """Entries currently served from memory (observability and tests)."""
        with self._lock:
            return len(self._tail)

    # ---- in-memory updates, called by NodeStore under the lock after a write --------

    def _mem_apply_snapshot(self, snap: Snapshot) -> None:
        self._snap_meta = snap.meta
        self._conf_state = snap.meta.conf_state
        self._offset_index = snap.meta.index
        self._offset_term = snap.meta.term
        self._last_index = snap.meta.index
        self._tail = []
        self._tail_start = self._last_index + 1
        self._tail_bytes = 0

    def _mem_append(self, ents: Sequence[Entry]) -> None:
        first = ents[0].index
        tail = self._tail
        if tail and self._tail_start <= first <= self._tail_start + len(tail):
            cut = first - self._tail_start
            self._tail_bytes -= sum(e.size() for e in tail[cut:])
            del tail[cut:]
            tail.extend(ents)
        else:
            # Appending below the cached tail (a conflicting suffix older than the
            # cache): the new entries become the whole tail.
            self._tail = tail = list(ents)
            self._tail_start = first
            self._tail_bytes = 0
        self._tail_bytes += sum(e.size() for e in ents)
        self._last_index = ents[-1].index
        self._trim_tail()

    def _trim_tail(self) -> None:
        tail = self._tail
        drop = 0
        if len(tail) > TAIL_MAX_ENTRIES:
            # Trim to half the bound so trimming (an O(n) list shift) is rare.
            drop = len(tail) - TAIL_MAX_ENTRIES // 2
        bytes_left = self._tail_bytes - sum(e.size() for e in tail[:drop])
        while bytes_left > TAIL_MAX_BYTES and drop < len(tail) - 1:
            bytes_left -= tail[drop].size()
            drop += 1
        if drop:
            del tail[:drop]
            self._tail_start += drop
            self._tail_bytes = bytes_left

    def _mem_compact(self, index: int, term: int) -> None:
        self._offset_index = index
        self._offset_term = term
        if self._tail and index >= self._tail_start:
            drop = index - self._tail_start + 1
            self._tail_bytes -= sum(e.size() for e in self._tail[:drop])
            del self._tail[:drop]
            self._tail_start = index + 1


# What RocksDB (and rocksdict) write while creating a database, before CURRENT
# names its first MANIFEST: a creation that failed there (a full disk, a crash)
# leaves only these, and no data (the identity record and everything else
# would be in the database). Table and WAL files are never in this list.
_CREATION_DEBRIS = re.compile(
    r"LOCK|LOG(\.old\.\d+)?|IDENTITY|rocksdict-config\.json"
    r"|MANIFEST-\d+|OPTIONS-\d+(\.dbtmp)?|\d+\.dbtmp"
)


def _foreign_files(path: Path) -> list[str]:
    """Files in a directory without a RocksDB, except a fresh mount point's
    lost+found and what a failed creation of the database left behind (so a node
    whose first start failed, e.g. on a full disk, can start once there is room)."""
    return [
        p.name
        for p in path.iterdir()
        if p.name != "lost+found" and not _CREATION_DEBRIS.fullmatch(p.name)
    ]


class _Staged:
    """A group's log bounds as a save() batch is being built (several Readies may
    touch one group in one save)."""

    __slots__ = ("group", "last", "offset", "snap_index")

    def __init__(self, g: GroupStorage) -> None:
        self.group = g
        self.offset = g._offset_index
        self.last = g._last_index
        self.snap_index = g._snap_meta.index


class PeerIncarnations:
    """The ``IncarnationBook`` the listener uses: get/set over NodeStore."""

    def __init__(self, store: NodeStore) -> None:
        self._store = store

    def get(self, node_id: NodeId) -> str | None:
        return self._store.peer_incarnation(node_id)

    def set(self, node_id: NodeId, incarnation: str) -> None:
        self._store.set_peer_incarnation(node_id, incarnation)


# RocksDB's default memtable size, the middle of the staggered range.
DEFAULT_WRITE_BUFFER_BYTES = 64 * 1024 * 1024
# Nodes' memtable sizes spread over the default +- this fraction.
WRITE_BUFFER_SPREAD = 0.25


def staggered_write_buffer_bytes(position: int, count: int) -> int:
    """The memtable size of the node at ``position`` of ``count`` (cluster.toml order).

    The replicas of a partition receive the same bytes, so with equal memtables
    every node flushed (and then compacted) at the same moment: three flushes at
    once on a shared disk stalled every WAL fsync behind them, which made the
    worst tail of the batch bench. Sizes spread evenly over 48-80 MiB make the
    nodes flush at different moments, like Kafka's ``log.roll.jitter.ms`` for
    segment rolls. Deterministic, so a node keeps its size across restarts.
    """
    if count <= 1:
        return DEFAULT_WRITE_BUFFER_BYTES
    step = 2 * WRITE_BUFFER_SPREAD / (count - 1)
    factor = 1 - WRITE_BUFFER_SPREAD + step * min(max(position, 0), count - 1)
    return int(DEFAULT_WRITE_BUFFER_BYTES * factor) // 4096 * 4096


# Table files RocksDB keeps open at once by default (cluster.toml [storage]
# rocksdb_max_open_files); beyond, the least recently read is closed and
# reopened when read again (about 24 GB of tables at 64 MB each, so only reads
# of old data ever pay it). Its logs and manifest come on top.
ROCKSDB_MAX_OPEN_FILES = 384
# RocksDB raises any smaller max_open_files to 20 (its SanitizeOptions).
MIN_ROCKSDB_MAX_OPEN_FILES = 20

# How a node's RocksDB merges its files (cluster.toml [storage] rocksdb_compaction).
ROCKSDB_COMPACTION_STYLES = ("level", "universal")
DEFAULT_ROCKSDB_COMPACTION = "level"
# Universal compaction only: how far the files may outgrow the live data before
# a full merge, as a percentage of the live data (RocksDB's
# max_size_amplification_percent, whose own default is 200).
DEFAULT_SPACE_AMPLIFICATION_PERCENT = 100


def set_compaction_style(opts: Options, style: str, space_amplification_percent: int) -> None:
    """Make ``opts`` compact as ``style`` says ("level" or "universal").

    Every group's keys share one key space (keys.py), so a memtable flushed to
    level 0 spans the Raft log entries and the batches of every partition at
    once. Under leveled compaction (RocksDB's default, and ours) such a file
    overlaps every file of the level below, so each level-0 compaction rewrites
    all of that level, never a cheap move of whole files. Universal compaction
    merges runs of similar size instead. Measured (docs/performance-history.md,
    twenty-sixth session): on the batch bench's compressible records it held
    its throughput over six runs on one cluster where leveled lost about 30 %;
    on incompressible records it did no better; and it leaves deleted data
    (retention, the Raft log behind a snapshot) on disk until runs merge, up to
    ``space_amplification_percent`` more than the live data. So it is a choice
    for the operator, not the default. Either style opens a store written under
    the other.
    """
    if style == "level":
        return  # RocksDB's default
    if style != "universal":
        raise ValueError(f"rocksdb compaction style must be one of {ROCKSDB_COMPACTION_STYLES}")
    opts.set_compaction_style(DBCompactionStyle.universal())
    universal = UniversalCompactOptions()
    universal.max_size_amplification_percent = space_amplification_percent
    opts.set_universal_compaction_options(universal)


class NodeStore:
    """A node's RocksDB: identity, peers' incarnations and every group's Raft state."""

    def __init__(self, db: Rdict, path: Path, identity: NodeIdentity, fsync: bool) -> None:
        self.db = db
        self.path = path
        self.identity = identity
        self.fsync = fsync
        # Guards the GroupStorages' in-memory views (readers vs. the saver thread).
        self._lock = threading.Lock()
        # Serializes writers (save in a worker thread vs. create/delete/compact on
        # the event loop), so e.g. a group deleted mid-save leaves no orphan keys.
        self._write_lock = threading.Lock()
        self._sync_opts = WriteOptions()
        self._sync_opts.sync = True
        self._nosync_opts = WriteOptions()
        self._nosync_opts.sync = False
        self._groups: dict[int, GroupStorage] = {}
        self._closed = False

    def rocksdb_stats(self, names: Iterable[str]) -> dict[str, int]:
        """RocksDB's integer properties ``rocksdb.<name>`` for ``names`` (0 when
        one is not available, or once the store is closed)."""
        if self._closed:
            return dict.fromkeys(names, 0)
        return {name: self.db.property_int_value(f"rocksdb.{name}") or 0 for name in names}

    # ---- opening -----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        cluster: str,
        node_id: str,
        fsync: bool = True,
        write_buffer_bytes: int = DEFAULT_WRITE_BUFFER_BYTES,
        rocksdb_compaction: str = DEFAULT_ROCKSDB_COMPACTION,
        space_amplification_percent: int = DEFAULT_SPACE_AMPLIFICATION_PERCENT,
        max_open_files: int = ROCKSDB_MAX_OPEN_FILES,
    ) -> NodeStore:
        """Open (or create) a node's store; ``write_buffer_bytes``: the memtable
        size (see ``staggered_write_buffer_bytes``); the compaction arguments: see
        ``set_compaction_style``; ``max_open_files``: RocksDB's table cache."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise DataDirError(f"data dir {path} exists and is not a directory")
        if path.is_dir() and not (path / "CURRENT").exists() and _foreign_files(path):
            raise DataDirError(
                f"data dir {path} is not empty and is not a raftlog (RocksDB) directory"
            )
        path.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        # RocksDB's own info logs: keep a few, not one per restart forever.
        opts.set_keep_log_file_num(5)
        # The memtable absorbs a burst of appends before a flush; every group
        # shares it. Nodes differ in size on purpose (staggered_write_buffer_bytes).
        opts.set_write_buffer_size(write_buffer_bytes)
        # Reuse obsolete WAL files instead of creating new ones: an fdatasync
        # of an append that grows a file must also journal its new size (ext4,
        # xfs), one overwriting a recycled file's blocks need not. Measured on
        # this VM with three processes syncing at once: p50 0.25 -> 0.16 ms.
        # Safe with the default point-in-time WAL recovery since RocksDB 9.1
        # (records carry their log number, so a recycled file's stale tail is
        # recognised); pyproject pins rocksdict >= 0.3.29, which ships 9.8.4.
        opts.set_recycle_log_file_num(4)
        # A bounded table cache instead of every table file open for good:
        # connections share the process's descriptors, and a RocksDB that
        # cannot open a file stops the node's writes (server/open_files.py
        # keeps this many free of connections).
        opts.set_max_open_files(max_open_files)
        set_compaction_style(opts, rocksdb_compaction, space_amplification_percent)
        try:
            # column_families too: given only ``options``, rocksdict reopens an
            # existing store with the column family options of its OPTIONS file
            # (the memtable size, the compaction style), not these.
            db = Rdict(str(path), options=opts, column_families={"default": opts})
        except Exception as exc:  # rocksdict raises a bare Exception for IO/lock errors
            raise DataDirError(f"data dir {path} cannot be opened: {exc}") from exc
        try:
            identity = cls._check_identity(db, path, cluster, node_id)
            store = cls(db, path, identity, fsync)
            store._load_groups()
        except BaseException:
            db.close()
            raise
        log.info(
            "store opened path=%s cluster=%s node=%s incarnation=%s groups=%d",
            path,
            cluster,
            node_id,
            identity.incarnation,
            len(store._groups),
        )
        return store

    @staticmethod
    def _check_identity(db: Rdict, path: Path, cluster: str, node_id: str) -> NodeIdentity:
        value = db.get(keys.IDENTITY_KEY)
        if value is None:
            it = db.iter()
            it.seek_to_first()
            if it.valid():
                raise DataDirError(
                    f"data dir {path} holds data but no identity record; refusing to use it"
                )
            identity = NodeIdentity.new(cluster, node_id)
            opts = WriteOptions()
            opts.sync = True
            db.put(keys.IDENTITY_KEY, identity.encode(), opts)
            log.info("store created path=%s cluster=%s node=%s", path, cluster, node_id)
            return identity
        identity = NodeIdentity.decode(value, str(path))
        identity.check(cluster, node_id, str(path))
        return identity

    def _load_groups(self) -> None:
        for gid in self.scan_group_ids():
            g = GroupStorage(self, gid)
            try:
                g._load()
            except codec.StoreCorruptionError as exc:
                raise DataDirError(f"data dir {self.path}: group {gid}: {exc}") from exc
            self._groups[gid] = g

    def scan_group_ids(self) -> list[int]:
        """Group ids from the group markers in RocksDB (not the loaded view)."""
        out: list[int] = []
        it = self.db.iter()
        it.seek(bytes([keys.NS.GROUP]))
        while it.valid():
            key = it.key()
            if key[0] != keys.NS.GROUP:
                break
            out.append(keys.parse_group_marker(key))
            it.next()
        return out

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._groups.clear()
            self.db.close()

    def abandon(self) -> None:
        """Close after a failed write (a full disk): RocksDB's background work is
        stopped first, or closing waits a second or more on its retries of the
        failed flush. Errors are swallowed; the WAL keeps what it holds."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._groups.clear()
            self.db.cancel_all_background(False)
            with contextlib.suppress(Exception):  # "Shutdown in progress", the old error
                self.db.close()

    def __enter__(self) -> NodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- groups --------------------------------------------------------------------

    def group_ids(self) -> list[int]:
        return sorted(self._groups)

    def has_group(self, group_id: int) -> bool:
        return group_id in self._groups

    def group(self, group_id: int) -> GroupStorage:
        try:
            return self._groups[group_id]
        except KeyError:
            raise KeyError(f"group {group_id} has no state on this node") from None

    def create_group(self, group_id: int, conf_state: ConfState) -> GroupStorage:
        """Bootstrap a group (durably) with its initial membership and an empty log."""
        if group_id in self._groups:
            raise GroupExistsError(f"group {group_id} already exists on this node")
        batch = self.new_batch()
        batch.put(keys.group_marker(group_id), b"")
        batch.put(
            keys.raft_meta(group_id, keys.RaftField.CONF_STATE), codec.encode_conf_state(conf_state)
        )
        g = GroupStorage(self, group_id)
        g._conf_state = conf_state
        with self._write_lock, self._lock:
            self.db.write(batch, self._sync_opts)
            self._groups[group_id] = g
        log.info("group created group=%d voters=%s", group_id, ",".join(conf_state.voters))
        return g

    def delete_group(self, group_id: int) -> None:
        """Remove every key of the group: Raft state, log and state machine data."""
        batch = self.new_batch()
        for ns in keys.GROUP_NAMESPACES:
            begin, end = keys.group_range(ns, group_id)
            batch.delete_range(begin, end)
        with self._write_lock, self._lock:
            self.db.write(batch, self._sync_opts)
            self._groups.pop(group_id, None)
        log.info("group deleted group=%d", group_id)

    # ---- the Ready write path ---------------------------------------------------------

    def save(self, readies: Sequence[tuple[int, Ready]], *, sync: bool = True) -> None:
        """Persist snapshot, entries and hard state of many groups: one batch, one fsync.

        This is step 1 of the Ready contract (raft/types.py): it must be durable
        before the Readies' ``persisted_messages`` (vote grants, append acks) are
        sent (Raft Figure 2, "respond after persisting"). ``sync=False`` skips the
        fsync for Readies that need none (only the commit index moved); the node's
        ``fsync = false`` setting turns it off for every save.
        """
        with self._write_lock:
            batch = self.new_batch()
            staged: dict[int, _Staged] = {}
            for gid, rd in readies:
                st = staged.get(gid)
                if st is None:
                    g = self._groups.get(gid)
                    if g is None:
                        # Deleted (topic deleted) after the core produced this Ready.
                        log.warning("save skipped group=%d reason=unknown_group", gid)
                        continue
                    st = staged[gid] = _Staged(g)
                self._stage(gid, st, rd, batch)
            if batch.is_empty():
                return
            # Write (and fsync) outside the reader lock so that readers on the event
            # loop are not blocked for the fsync; the in-memory view changes only
            # afterwards, so it never promises entries that are not yet in RocksDB.
            # Readers only ask for indexes the core considers stable, which this
            # write does not touch except by replacing them with identical entries.
            durable = sync and self.fsync
            #
            # Write, then sync the WAL as a separate call: rocksdict holds the GIL
            # for all of a synced write (fsync included), which stalled the event
            # loop for every fsync (measured: a busy main thread ran at ~50 % speed
            # next to a thread doing synced writes, ~100 % with flush_wal). The
            # durability is the same: FlushWAL(sync) fsyncs every live WAL file
            # up to this write before it returns, and nothing reads these entries
            # as durable before then (the in-memory view below moves afterwards).
            self.db.write(batch, self._nosync_opts)
            if durable:
                self.db.flush_wal(True)
            with self._lock:
                self._save_in_memory(readies, staged)

    def _save_in_memory(
        self, readies: Sequence[tuple[int, Ready]], staged: dict[int, _Staged]
    ) -> None:
        for gid, rd in readies:
            if gid not in staged:
                continue
            g = staged[gid].group
            if rd.snapshot is not None and not rd.snapshot.is_empty():
                g._mem_apply_snapshot(rd.snapshot)
            ents = self._live_entries(rd.entries, g._offset_index)
            if ents:
                g._mem_append(ents)
            if rd.hard_state is not None:
                g._hard_state = rd.hard_state

    @staticmethod
    def _live_entries(entries: Sequence[Entry], offset: int) -> Sequence[Entry]:
        """Drop entries already covered by the snapshot/compaction point."""
        if not entries or entries[0].index > offset:
            return entries
        return entries[offset - entries[0].index + 1 :]

    def _stage(self, gid: int, st: _Staged, rd: Ready, batch: WriteBatch) -> None:
        snap = rd.snapshot
        if snap is not None and not snap.is_empty():
            if snap.meta.index < st.snap_index:
                raise SnapshotOutOfDateError(
                    f"group {gid}: snapshot {snap.meta.index} older than held {st.snap_index}"
                )
            # Installing a snapshot replaces the whole log (Raft §7).
            begin, end = keys.group_range(keys.NS.LOG, gid)
            batch.delete_range(begin, end)
            batch.put(keys.raft_meta(gid, keys.RaftField.SNAPSHOT), codec.encode_snapshot(snap))
            batch.put(
                keys.raft_meta(gid, keys.RaftField.CONF_STATE),
                codec.encode_conf_state(snap.meta.conf_state),
            )
            batch.put(
                keys.raft_meta(gid, keys.RaftField.LOG_START),
                codec.encode_index_term(snap.meta.index, snap.meta.term),
            )
            st.offset = st.last = st.snap_index = snap.meta.index
        ents = self._live_entries(rd.entries, st.offset)
        if ents:
            first, new_last = ents[0].index, ents[-1].index
            if first > st.last + 1:
                raise UnavailableError(
                    f"group {gid}: append at {first} leaves a gap after last={st.last}"
                )
            # Hot path: the same bytes as keys.log_key / codec.encode_entry, inlined.
            prefix = keys.group_prefix(keys.NS.LOG, gid)
            pack_index = keys.U64.pack
            pack_header = codec.ENTRY_HEADER.pack
            put = batch.put
            for e in ents:
                put(prefix + pack_index(e.index), pack_header(e.term, e.type) + e.data)
            if st.last > new_last:
                # Truncate the conflicting suffix beyond the new entries (Raft §5.3:
                # "delete the existing entry and all that follow it").
                batch.delete_range(keys.log_key(gid, new_last + 1), keys.log_key(gid, st.last + 1))
            st.last = new_last
        if rd.hard_state is not None:
            batch.put(
                keys.raft_meta(gid, keys.RaftField.HARD_STATE),
                codec.encode_hard_state(rd.hard_state),
            )

    # ---- membership, snapshots, compaction -----------------------------------------------

    def set_conf_state(
        self, group_id: int, conf_state: ConfState, batch: WriteBatch | None = None
    ) -> None:
        """Record the membership to restart with after the driver applied a conf change.

        Pass the apply batch to make it atomic with the state machine's applied
        index; without one it is written (synced) at once.
        """
        g = self.group(group_id)
        key = keys.raft_meta(group_id, keys.RaftField.CONF_STATE)
        value = codec.encode_conf_state(conf_state)
        if batch is not None:
            batch.put(key, value)
        else:
            with self._write_lock:
                self.db.put(key, value, self._sync_opts)
        with self._lock:
            g._conf_state = conf_state

    def create_snapshot(
        self, group_id: int, index: int, conf_state: ConfState | None, data: bytes
    ) -> Snapshot:
        """Record a state-machine snapshot taken at applied ``index`` (does not compact).

        The checks run under the writer lock: a snapshot installed from the
        leader by a concurrent save (another thread) must never be replaced by
        this older local one.
        """
        g = self.group(group_id)
        with self._write_lock:
            held = g.snapshot_meta().index
            if index <= held:
                raise SnapshotOutOfDateError(
                    f"group {group_id}: snapshot at {index} not newer than held {held}"
                )
            if index > g.last_index() or index < g.first_index() - 1:
                raise UnavailableError(
                    f"group {group_id}: snapshot at {index} outside the log "
                    f"[{g.first_index() - 1}, {g.last_index()}]"
                )
            cs = conf_state if conf_state is not None else g.conf_state
            snap = Snapshot(SnapshotMeta(index, g.term(index), cs), data)
            batch = self.new_batch()
            batch.put(
                keys.raft_meta(group_id, keys.RaftField.SNAPSHOT), codec.encode_snapshot(snap)
            )
            # The live membership (CONF_STATE) is NOT rewritten here: the apply
            # path keeps it (set_conf_state), and a conf change applied after
            # this snapshot was captured must not be rolled back by it.
            with self._lock:
                self.db.write(batch, self._sync_opts)
                g._snap_meta = snap.meta
        log.info("snapshot created group=%d index=%d term=%d", group_id, index, snap.meta.term)
        return snap

    def compact_log(
        self, group_id: int, upto_index: int, *, sync: bool = True, blocking: bool = True
    ) -> bool:
        """Discard entries up to and including ``upto_index`` (log compaction, Raft §7).

        The caller must hold a snapshot covering ``upto_index``, or lagging
        followers can no longer be caught up. ``sync=False`` is safe once the
        snapshot record is durable: a compaction lost in a crash only leaves
        entries that are already covered. ``blocking=False`` returns False
        instead of waiting for a writer (a save in flight on another thread),
        so the event loop never waits for someone else's fsync.
        """
        if not self._write_lock.acquire(blocking=blocking):
            return False
        try:
            self._compact_locked(group_id, upto_index, sync)
        finally:
            self._write_lock.release()
        return True

    def _compact_locked(self, group_id: int, upto_index: int, sync: bool) -> None:
        g = self.group(group_id)
        first = g.first_index()
        if upto_index < first:
            raise CompactedError(
                f"group {group_id}: index {upto_index} already compacted (first={first})"
            )
        term = g.term(upto_index)  # raises UnavailableError beyond last
        batch = self.new_batch()
        batch.delete_range(keys.log_key(group_id, 0), keys.log_key(group_id, upto_index + 1))
        batch.put(
            keys.raft_meta(group_id, keys.RaftField.LOG_START),
            codec.encode_index_term(upto_index, term),
        )
        with self._lock:
            self.db.write(batch, self._sync_opts if sync else self._nosync_opts)
            g._mem_compact(upto_index, term)
        log.info("log compacted group=%d upto=%d", group_id, upto_index)

    # ---- state machine batches ----------------------------------------------------------

    def new_batch(self) -> WriteBatch:
        return WriteBatch(raw_mode=True)

    def write(self, batch: WriteBatch, *, sync: bool = False) -> None:
        """Write a state-machine batch. Unsynced is fine for applies: a lost apply
        is redone from the Raft log on restart (the applied index is in the batch).

        It keeps the WAL: a partition's applies written without it were tried
        (to fsync produced bytes once) and jepsen's kill nemesis caught
        duplicated and reordered records. A WAL-less apply lost in a crash can
        be followed by a WAL-logged write of the same state machine (a conf
        change, a snapshot install, a batch that also held metadata applies)
        whose applied index then claims the lost records. Storing records once
        needs the Raft log itself to be the record log, not this shortcut.
        """
        if batch.is_empty():
            return
        self.db.write(batch, self._sync_opts if (sync and self.fsync) else self._nosync_opts)

    # ---- peers' incarnations (trust on first use, DESIGN.md §3 rule 7) -------------------

    def peer_incarnation(self, node_id: NodeId) -> str | None:
        value = self.db.get(keys.peer_key(node_id))
        return None if value is None else value.decode()

    def set_peer_incarnation(self, node_id: NodeId, incarnation: str) -> None:
        self.db.put(keys.peer_key(node_id), incarnation.encode(), self._sync_opts)

    def incarnation_book(self) -> PeerIncarnations:
        return PeerIncarnations(self)
