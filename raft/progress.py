"""The leader's view of one follower's log (thesis §3.5 nextIndex/matchIndex, plus flow control).

A follower is in one of three states:

- PROBE: the leader does not know where the logs match. At most one append
  is in flight; the next one waits for its answer or for a heartbeat reply.
- REPLICATE: logs match up to ``match``; the leader streams appends
  optimistically (``next`` runs ahead of ``match``), bounded by the
  ``Inflights`` window so a slow follower cannot make it buffer unboundedly.
- SNAPSHOT: the needed entries are compacted; a snapshot was sent and
  replication pauses until it is reported applied or failed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """Appends sent but not yet acknowledged, bounded by message count AND total bytes.

    A deque used as a ring: appends are acknowledged in index order, so we
    only ever add at the right and free from the left.
    """

    __slots__ = ("_bytes", "_items", "_max_bytes", "_max_count")

    def __init__(self, max_count: int, max_bytes: int = 0) -> None:
        self._items: deque[tuple[int, int]] = deque()
        self._max_count = max_count
        self._max_bytes = max_bytes  # 0 = no byte limit
        self._bytes = 0

    def add(self, last_index: int, nbytes: int) -> None:
        self._items.append((last_index, nbytes))
        self._bytes += nbytes

    def free_le(self, index: int) -> None:
        """Forget every in-flight append whose last entry is <= ``index`` (acknowledged)."""
        items = self._items
        while items and items[0][0] <= index:
            self._bytes -= items.popleft()[1]

    def free_first_one(self) -> None:
        if self._items:
            self._bytes -= self._items.popleft()[1]

    def full(self) -> bool:
        return len(self._items) >= self._max_count or (
            self._max_bytes > 0 and self._bytes >= self._max_bytes
        )

    def reset(self) -> None:
        self._items.clear()
        self._bytes = 0

    @property
    def count(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes


@dataclass(slots=True)
class Progress:
    match: int
    next: int
    inflights: Inflights
    state: ProgressState = ProgressState.PROBE
    # PROBE: an append was sent and we wait for its answer (or a heartbeat reply).
    probe_sent: bool = False
    # SNAPSHOT: index of the snapshot in flight, and ticks spent waiting for it.
    pending_snapshot: int = 0
    snapshot_ticks: int = 0
    # Heard from since the last CheckQuorum round (thesis §6.2).
    recent_active: bool = False
    is_learner: bool = False

    def reset(self, next_index: int, match: int) -> None:
        """Forget everything learned in an earlier term."""
        self.match = match
        self.next = next_index
        self.recent_active = False
        self._reset(ProgressState.PROBE)

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            # If the snapshot arrived, the follower has everything up to it.
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        self.next = self.match + 1
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.inflights.reset()

    def maybe_update(self, n: int) -> bool:
        """An ack says the follower matches up to ``n``; True if that is news."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def sent_entries(self, count: int, nbytes: int) -> None:
        """Account for an append carrying ``count`` entries starting at ``next``."""
        if self.state == ProgressState.REPLICATE:
            if count:
                last = self.next + count - 1
                self.next = last + 1
                self.inflights.add(last, nbytes)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append at prev index ``rejected``; back ``next`` off.

        ``match_hint`` is the highest index the follower's log may match at
        (fast backtracking, end of Raft §5.3). Returns False for a stale reject.
        """
        if self.state == ProgressState.REPLICATE:
            # A reject at or below match answers an old, out-of-order append.
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        # In PROBE only the reject of the append we actually sent counts.
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True


@dataclass(slots=True, frozen=True)
class ProgressStatus:
    """A read-only snapshot of a Progress for ``RaftNode.status()``."""

    match: int
    next: int
    state: ProgressState
    inflight: int
    recent_active: bool
    is_learner: bool = False


def new_progress(
    next_index: int, max_inflight: int, max_inflight_bytes: int, is_learner: bool
) -> Progress:
    return Progress(
        match=0,
        next=next_index,
        inflights=Inflights(max_inflight, max_inflight_bytes),
        is_learner=is_learner,
        recent_active=True,
    )


__all__ = [
    "Inflights",
    "Progress",
    "ProgressState",
    "ProgressStatus",
    "new_progress",
]
