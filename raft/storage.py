"""The read side of a Raft group's storage, as the core sees it.

The core never writes storage itself: it hands the driver a ``Ready`` and the
driver persists it (``raftlog.log.store`` on RocksDB, or ``MemoryStorage`` in
tests and the simulator). The core reads back through this protocol, which is
etcd-io/raft's six-method ``Storage`` interface.
"""

from __future__ import annotations

from typing import Protocol

from .types import ConfState, Entry, HardState, Snapshot


def limit_size(ents: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_bytes``, but at least one entry:
    an entry larger than the limit must still be replicated, alone."""
    if max_bytes is None or not ents:
        return ents
    size = ents[0].size()
    n = 1
    while n < len(ents):
        size += ents[n].size()
        if size > max_bytes:
            break
        n += 1
    return ents[:n]


class StorageError(Exception):
    """Base class of the errors a Storage may raise to the core."""


class CompactedError(StorageError):
    """The requested index is below the first available index (compacted into a snapshot)."""


class UnavailableError(StorageError):
    """The requested index is above the last stored index."""


class SnapshotTemporarilyUnavailableError(StorageError):
    """A snapshot is being prepared; the core retries later."""


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the configuration as of the last applied snapshot
        or bootstrap."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``; at least one entry if any is in range, then stop
        before ``max_bytes``. Raises CompactedError / UnavailableError."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; valid for ``first_index()-1 <= index <=
        last_index()`` (``first_index()-1`` is the snapshot's index)."""
        ...

    def first_index(self) -> int:
        """Index of the first entry still stored (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry stored (snapshot index if the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot, for sending to a follower that is too far behind."""
        ...
