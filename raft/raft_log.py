"""The Raft log as the core sees it: durable entries (Storage) plus an unstable tail.

Entries the core appended but the driver has not yet reported durable (via
``advance``) live in ``Unstable``. The log also tracks three cursors:

    applied <= applying <= committed

``applying`` is how far committed entries were handed out in a Ready,
``applied`` how far the driver confirmed applying them. Committed entries are
only handed out once durable locally (``persisted_last``), which is what the
Ready contract promises.

Every lookup is O(1) or O(entries returned); nothing walks the whole log.
"""

from __future__ import annotations

import logging

from .storage import CompactedError, Storage, StorageError, UnavailableError
from .types import Entry, Snapshot

log = logging.getLogger("raftlog.raft")

# Bound on the per-message walk of find_conflict_by_term.
MAX_BACKTRACK_STEPS = 1024


class Unstable:
    """Entries (and possibly a snapshot) not yet durable.

    ``offset`` is the index of ``entries[0]`` (or where the next entry goes).
    ``offset_in_progress`` is one past the last entry handed to the driver
    in a Ready that has not been advanced yet, so a second ``ready()`` does
    not hand the same entries out twice.
    """

    __slots__ = ("entries", "offset", "offset_in_progress", "snapshot", "snapshot_in_progress")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.snapshot_in_progress = False
        self.entries: list[Entry] = []
        self.offset = offset
        self.offset_in_progress = offset

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            snap = self.snapshot
            if snap is not None and snap.meta.index == index:
                return snap.meta.term
            return None
        pos = index - self.offset
        if pos >= len(self.entries):
            return None
        return self.entries[pos].term

    def next_entries(self) -> list[Entry]:
        pos = self.offset_in_progress - self.offset
        if pos >= len(self.entries):
            return []
        return self.entries[pos:]

    def has_next_entries(self) -> bool:
        return self.offset_in_progress < self.offset + len(self.entries)

    def next_snapshot(self) -> Snapshot | None:
        if self.snapshot is None or self.snapshot_in_progress:
            return None
        return self.snapshot

    def accept_in_progress(self) -> None:
        if self.entries:
            self.offset_in_progress = self.offset + len(self.entries)
        if self.snapshot is not None:
            self.snapshot_in_progress = True

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (of ``term``) are durable; drop them from here.

        Ignored if the entry at ``index`` was since replaced (a newer leader
        overwrote it while the write was in flight): that write is stale.
        """
        got = self.maybe_term(index)
        if got is None or got != term or index < self.offset:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1
        self.offset_in_progress = max(self.offset_in_progress, self.offset)

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None
            self.snapshot_in_progress = False

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.meta.index + 1
        self.offset_in_progress = self.offset
        self.entries = []
        self.snapshot = snap
        self.snapshot_in_progress = False

    def truncate_and_append(self, ents: list[Entry] | tuple[Entry, ...]) -> None:
        first = ents[0].index
        if first == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif first <= self.offset:
            # Replaces everything unstable and possibly durable entries too;
            # the driver truncates storage when it persists these.
            self.offset = first
            self.offset_in_progress = first
            self.entries = list(ents)
        else:
            del self.entries[first - self.offset :]
            self.entries.extend(ents)
            self.offset_in_progress = min(self.offset_in_progress, first)


class RaftLog:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applying = first - 1
        self.applied = first - 1

    # ---- indexes and terms --------------------------------------------------

    def first_index(self) -> int:
        snap = self.unstable.snapshot
        if snap is not None:
            return snap.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        last = self.unstable.maybe_last_index()
        if last is not None:
            return last
        return self.storage.last_index()

    def persisted_last(self) -> int:
        """Last index durable locally and still part of this log."""
        return self.unstable.offset - 1

    def term(self, index: int) -> int:
        """Term at ``index``; raises CompactedError / UnavailableError outside the log."""
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        if index < self.first_index() - 1:
            raise CompactedError(f"index {index} compacted")
        if index > self.last_index():
            raise UnavailableError(f"index {index} beyond last {self.last_index()}")
        return self.storage.term(index)

    def zero_term(self, index: int) -> int:
        """Term at ``index`` or 0 if it is not in the log."""
        try:
            return self.term(index)
        except StorageError:
            return 0

    def last_term(self) -> int:
        return self.zero_term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except StorageError:
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a log ending at (last_index, last_term) at least as up to date?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    # ---- reading entries ----------------------------------------------------

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``: at least one if any, then at most ``max_bytes``."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"index {lo} compacted")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"slice [{lo},{hi}) beyond last {self.last_index()}")
        off = self.unstable.offset
        out: list[Entry] = []
        if lo < off:
            out = list(self.storage.entries(lo, min(hi, off), max_bytes))
            if len(out) < min(hi, off) - lo:
                return out  # storage stopped at max_bytes
        if hi > off:
            start = max(lo, off) - off
            out.extend(self.unstable.entries[start : hi - off])
        if max_bytes is None or len(out) <= 1:
            return out
        size = 0
        for n, e in enumerate(out):
            size += e.size()
            if size > max_bytes and n > 0:
                return out[:n]
        return out

    def entries_from(self, lo: int, max_bytes: int | None = None) -> list[Entry]:
        return self.slice(lo, self.last_index() + 1, max_bytes)

    # ---- appending ----------------------------------------------------------

    def append(self, ents: list[Entry] | tuple[Entry, ...]) -> int:
        if ents:
            self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: tuple[Entry, ...] | list[Entry]) -> int:
        """Index of the first entry whose term differs from ours (or is new); 0 if none."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(
        self, index: int, term: int, max_steps: int = MAX_BACKTRACK_STEPS
    ) -> tuple[int, int]:
        """Largest index <= ``index`` whose term is <= ``term``, with its term.

        Fast backtracking (end of Raft §5.3): a rejecting follower tells the
        leader where its log could match, so a whole term is skipped per
        round trip. The walk stops after ``max_steps`` entries (a very long
        run of one term would otherwise cost O(log length) in one message);
        the answer is then just a weaker hint: still below the rejected
        index, so every round trip makes progress.
        """
        index = min(index, self.last_index())
        for _ in range(max_steps):
            try:
                t = self.term(index)
            except StorageError:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return index, self.zero_term(index)

    def maybe_append(
        self, prev_index: int, prev_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> int | None:
        """The AppendEntries receiver rules of Raft Figure 2; None if the log does not match."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(ents)
        conflict = self.find_conflict(ents)
        if conflict:
            if conflict <= self.committed:
                # Would overwrite a committed entry: only a buggy or malicious
                # peer sends this. Refuse rather than corrupt (Log Matching).
                log.error(
                    "event=append_conflicts_committed conflict=%d committed=%d",
                    conflict,
                    self.committed,
                )
                return None
            self.append(ents[conflict - prev_index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    # ---- commit / apply cursors -------------------------------------------

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            self.committed = min(index, self.last_index())

    def next_committed_entries(self, max_bytes: int | None = None) -> list[Entry]:
        """Committed, locally durable entries not yet handed out (at least one if any)."""
        if self.unstable.snapshot is not None:
            return []  # apply the snapshot first
        hi = min(self.committed, self.persisted_last())
        lo = self.applying + 1
        if lo > hi:
            return []
        return self.slice(lo, hi + 1, max_bytes)

    def has_next_committed_entries(self) -> bool:
        if self.unstable.snapshot is not None:
            return False
        return self.applying < min(self.committed, self.persisted_last())

    def accept_applying(self, index: int) -> None:
        self.applying = max(self.applying, index)

    def applied_to(self, index: int) -> None:
        self.applied = max(self.applied, index)
        self.applying = max(self.applying, index)

    # ---- durability and snapshots ------------------------------------------

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)

    def restore(self, snap: Snapshot) -> None:
        log.info("event=log_restore index=%d term=%d", snap.meta.index, snap.meta.term)
        self.committed = snap.meta.index
        self.applying = max(self.applying, snap.meta.index)
        self.unstable.restore(snap)
