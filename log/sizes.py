"""Stored bytes of a partition, by segments of consecutive batches, kept in memory.

Size-based retention needs "how many bytes are stored, and where to cut so
that at most N remain". Re-reading every batch each round would cost I/O
proportional to the retained data; instead the state machine reports every
batch it stores (``add``) and every prefix it drops (``truncate``) to this
index, which groups batches into segments of about ``SEGMENT_BYTES`` (like
Kafka's log segments). A retention decision then walks whole segments and
reads at most one segment's batch headers from disk.

In memory only and optional (``PartitionStateMachine.sizes`` is None until
retention asks for it): it does not take part in apply determinism, and is
rebuilt by one scan after a restart or a snapshot install.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

SEGMENT_BYTES = 4 * 1024 * 1024

Header = tuple[int, int, int, int]  # base_offset, timestamp_ms, count, stored_bytes
HeadersFrom = Callable[[int], Iterable[Header]]  # stored batch headers from an offset on


@dataclass(slots=True)
class Segment:
    first: int  # base offset of its first batch
    end: int  # offset after its last batch
    bytes: int


class SizeIndex:
    def __init__(self, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.segment_bytes = segment_bytes
        self.segments: deque[Segment] = deque()
        self.total = 0
        # The first segment may hold batches below the start offset (retention
        # cut inside it): ``exact`` is False until it is re-measured.
        self.exact = True

    @property
    def end(self) -> int | None:
        return self.segments[-1].end if self.segments else None

    def add(self, base: int, count: int, size: int) -> None:
        """A batch ``[base, base+count)`` of ``size`` stored bytes was appended."""
        last = self.segments[-1] if self.segments else None
        if last is not None and last.end == base and last.bytes + size <= self.segment_bytes:
            last.end = base + count
            last.bytes += size
        else:
            self.segments.append(Segment(base, base + count, size))
        self.total += size

    def add_all(self, headers: Iterable[Header]) -> None:
        for base, _ts, count, size in headers:
            self.add(base, count, size)

    def truncate(self, start: int) -> None:
        """Everything below ``start`` is gone (whole batches)."""
        segs = self.segments
        while segs and segs[0].end <= start:
            self.total -= segs.popleft().bytes
        if segs and segs[0].first < start:
            self.exact = False

    def remeasure_first(self, headers_from: HeadersFrom) -> None:
        """Replace the first segment's size by the batches still stored in it."""
        if not self.segments:
            self.exact = True
            return
        first = self.segments[0]
        size, low = 0, None
        for base, _ts, _count, nbytes in headers_from(first.first):
            if base >= first.end:
                break
            low = base if low is None else low
            size += nbytes
        self.total += size - first.bytes
        first.bytes = size
        if low is not None:
            first.first = low
        self.exact = True

    def cut_for(self, keep_bytes: int, headers_from: HeadersFrom) -> int | None:
        """The start offset that leaves at most ``keep_bytes``; None if nothing must go.

        Whole segments are skipped by their totals; only the segment holding
        the cut has its batch headers read (``headers_from(segment.first)``).
        """
        if not self.exact:
            self.remeasure_first(headers_from)
        excess = self.total - keep_bytes
        if excess <= 0:
            return None
        cut = None
        for seg in self.segments:
            if seg.bytes <= excess:
                excess -= seg.bytes
                cut = seg.end
                if excess <= 0:
                    return cut
                continue
            for base, _ts, count, size in headers_from(seg.first):
                excess -= size
                cut = base + count
                if excess <= 0 or cut >= seg.end:
                    break
            return cut
        return cut
