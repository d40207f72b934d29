"""An in-memory ``Storage`` for tests, the simulator and bootstrapping.

It holds exactly what a driver persisted from ``Ready`` objects: the driver
calls the writers (``append``, ``set_hard_state``, ``apply_snapshot`` ...) and
the core reads back through the ``Storage`` protocol.

Layout: ``_ents[0]`` is a dummy entry carrying the index and term of the last
compacted entry (the snapshot point, initially 0/0), so ``term(first_index()-1)``
is always answerable -- the AppendEntries consistency check of Raft §5.3 needs
the term of the entry just before the first one sent.
"""

from __future__ import annotations

from .storage import CompactedError, StorageError, UnavailableError, limit_size
from .types import ConfState, Entry, HardState, Snapshot, SnapshotMeta


class SnapshotOutOfDateError(StorageError):
    """A snapshot older than the one already held was offered."""


class MemoryStorage:
    def __init__(
        self,
        conf_state: ConfState | None = None,
        hard_state: HardState | None = None,
    ) -> None:
        self._hard_state = hard_state or HardState()
        self._snapshot = Snapshot(SnapshotMeta(0, 0, conf_state or ConfState()))
        self._ents: list[Entry] = [Entry(term=0, index=0)]

    # ---- Storage protocol -------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} compacted (first={offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries [{lo},{hi}) beyond last={self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_bytes)

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError(f"index {index} compacted (first={offset + 1})")
        if index - offset >= len(self._ents):
            raise UnavailableError(f"index {index} beyond last={self.last_index()}")
        return self._ents[index - offset].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # ---- writers used by drivers and tests ----------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def conf_state(self) -> ConfState:
        return self._snapshot.meta.conf_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def set_conf_state(self, cs: ConfState) -> None:
        """Record the configuration to restart with (normally carried by snapshots).

        A driver that applies a conf change without taking a snapshot calls
        this so that a restart sees the membership the core had applied.
        """
        meta = self._snapshot.meta
        self._snapshot = Snapshot(SnapshotMeta(meta.index, meta.term, cs), self._snapshot.data)

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Store ``entries`` (consecutive), replacing any stored suffix from the first one.

        Entries at or below the compaction point are already covered by the
        snapshot and are skipped.
        """
        if not entries:
            return
        first = self.first_index()
        last_new = entries[-1].index
        if last_new < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = self._ents[0].index
        start = entries[0].index - offset
        if start > len(self._ents):
            raise UnavailableError(
                f"append at {entries[0].index} leaves a gap after last={self.last_index()}"
            )
        del self._ents[start:]
        self._ents.extend(entries)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log with ``snap`` (a follower receiving InstallSnapshot, §7)."""
        if snap.meta.index < self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot {snap.meta.index} older than held {self._snapshot.meta.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(term=snap.meta.term, index=snap.meta.index)]

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        """Record a state-machine snapshot taken at applied ``index`` (does not compact)."""
        if index <= self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} not newer than held {self._snapshot.meta.index}"
            )
        if index > self.last_index():
            raise UnavailableError(f"snapshot at {index} beyond last={self.last_index()}")
        cs = conf_state if conf_state is not None else self._snapshot.meta.conf_state
        self._snapshot = Snapshot(SnapshotMeta(index, self.term(index), cs), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Discard entries up to and including ``index`` (log compaction, §7).

        The caller must have a snapshot covering ``index`` or the discarded
        entries are lost for lagging followers.
        """
        offset = self._ents[0].index
        if index <= offset:
            raise CompactedError(f"index {index} already compacted (first={offset + 1})")
        if index > self.last_index():
            raise UnavailableError(f"compact {index} beyond last={self.last_index()}")
        term = self._ents[index - offset].term
        self._ents = [Entry(term=term, index=index), *self._ents[index - offset + 1 :]]

    def all_entries(self) -> list[Entry]:
        """Every stored entry (tests and invariant checkers)."""
        return self._ents[1:]
