"""The partition state machine: record batches, idempotent producers, consumer offsets.

Consumer offsets are fenced by group generation (like Kafka's ILLEGAL_GENERATION):
per consumer group the partition remembers the highest generation that committed
here, and refuses (FENCED) a commit of an older generation, so a member dropped
from the group while it still consumes (a "zombie") cannot move the offset under
the partition's new owner, who claims the partition with its generation as soon
as it is assigned (client/consumer.py). The rules are in ``_commit_offset``.

Applying is deterministic (the same entries give the same state and results on
every replica) and writes only into the caller's WriteBatch. The driver writes
that batch unsynced: after a crash the state machine's ``applied_index``,
stored in the same batch, tells it where to resume re-applying the Raft log.

Layout (see keys.py): each produced batch is ONE value at (group, base_offset)
= a 20-byte header (base_offset, timestamp_ms, count) + the opaque records
blob, never one key per record (DESIGN.md §5, §9); a fetch seeks to the batch
holding the offset and returns blobs as stored.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack
from raftlog.client.errors import ErrorCode
from raftlog.raft.types import Entry, EntryType
from rocksdict import WriteBatch

from . import keys
from .codec import StoreCorruptionError
from .commands import (
    CommandError,
    CommitOffset,
    CompactRecords,
    DeleteOffset,
    ExpireProducers,
    Produce,
    TruncatePrefix,
    decode_entry_commands,
)
from .compaction import RowsError, check_rows, decode_rows, encode_rows, without_offsets
from .sizes import SizeIndex
from .store import NodeStore

log = logging.getLogger(__name__)

BATCH_HEADER = struct.Struct(">QQI")  # base_offset, timestamp_ms, count
# Batches remembered per producer for deduplication: the client keeps at most
# this many batches in flight per partition (Kafka's max.in.flight = 5).
PRODUCER_WINDOW = 5
MAX_BATCH_COUNT = 2**31 - 1  # the header's count is a u32
MAX_ID = 2**63 - 1  # producer ids and sequences (keys are u64; stay in msgpack's int64)

StoredBatch = tuple[int, int, int, bytes]  # base_offset, timestamp_ms, count, records_bytes


@dataclass(slots=True)
class ApplyResult:
    """The outcome of one command; the driver hands it to the request's waiter."""

    base_offset: int | None = None
    duplicate: bool = False
    error: ErrorCode | None = None
    message: str = ""
    timestamp_ms: int | None = None
    # ExpireProducers: how many producers it forgot, by reason ("idle", "limit").
    expired: dict[str, int] | None = None
    # CompactRecords: how many records it removed.
    compacted: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ProducerBatch(NamedTuple):
    """One recent batch of an idempotent producer (the dedup window).

    A NamedTuple rather than a frozen dataclass: one is built per produce on the
    apply hot path, and tuples are several times cheaper to create.
    """

    sequence: int
    count: int
    base_offset: int
    timestamp_ms: int  # the batch's stamp; the window's last one is the producer's last use


def _fail(code: ErrorCode, message: str) -> ApplyResult:
    return ApplyResult(error=code, message=message)


def _window(stored: list[list[int]], default_ms: int) -> list[ProducerBatch]:
    """A stored dedup window. Windows written before producer expiry have no
    timestamps: they count as used at ``default_ms`` (the partition's last
    stamp), so an upgrade never expires an active producer at once."""
    return [ProducerBatch(*b) if len(b) == 4 else ProducerBatch(*b, default_ms) for b in stored]


def _by_recency(items: Iterator[tuple[int, list[ProducerBatch]]]) -> dict[int, list[ProducerBatch]]:
    """Producers least recently used first: by their last batch's base offset,
    which grows with every append, so the order is the same on every replica."""
    return dict(sorted(items, key=lambda item: item[1][-1].base_offset))


class PartitionStateMachine:
    def __init__(self, store: NodeStore, group_id: int) -> None:
        self.store = store
        self.db = store.db
        self.group_id = group_id
        self.applied_index = 0
        self.next_offset = 0  # the high watermark: offset of the next record appended
        self.start_offset = 0  # first offset still stored (retention moves it)
        # Batch timestamps never go backwards, even across leaders with skewed
        # clocks; this keeps time-based retention and lookups monotonic.
        self.last_timestamp_ms = 0
        # Idempotent producers' dedup windows, least recently used first: a
        # produce moves its producer to the end, so ExpireProducers forgets from
        # the front. The order is a function of the log (the windows' last base
        # offsets), so every replica, restart and snapshot restore rebuilds it.
        self.producers: dict[int, list[ProducerBatch]] = {}
        self.offsets: dict[str, tuple[int, str]] = {}
        # Consumer group -> the highest generation that committed here; only
        # groups that ever sent a fenced commit (see _commit_offset).
        self.fences: dict[str, int] = {}
        # Consumer group -> when its offset here was committed (the proposing
        # leader's clock, log format COMMIT_STAMPS); absent: not known (an
        # unstamped commit). Offsets retention expires standalone offsets by it.
        self.commit_stamps: dict[str, int] = {}
        # Stored bytes by segment, for size-based retention; None until asked
        # for (see measure_sizes), so partitions without it pay nothing.
        self.sizes: SizeIndex | None = None
        # (base, count, stored value) of the batches put into the current apply
        # call's WriteBatch: not in RocksDB yet, but a TruncatePrefix or
        # CompactRecords later in the same call must see them, or how the driver
        # chunks applies would change what is stored.
        self._unwritten: list[tuple[int, int, bytes]] = []
        # Log compaction (log/compaction.py): CompactRecords applied so far, and
        # the highest offset a sweep reached. Both are deterministic (applied
        # through the log); a snapshot carries them.
        self.compactions = 0
        self.compacted_below = 0
        self._batch_begin, self._batch_end = keys.group_range(keys.NS.BATCH, group_id)
        self._load()

    # ---- persistence -------------------------------------------------------------

    def _load(self) -> None:
        value = self.db.get(keys.sm_meta(self.group_id, keys.SmField.APPLIED))
        if value is not None:
            try:
                (
                    self.applied_index,
                    self.next_offset,
                    self.start_offset,
                    self.last_timestamp_ms,
                ) = msgpack.unpackb(value)
            except Exception as exc:
                raise StoreCorruptionError(
                    f"partition group {self.group_id}: applied state undecodable: {exc}"
                ) from exc
        self.producers = _by_recency(
            (keys.producer_of_key(key), _window(msgpack.unpackb(value), self.last_timestamp_ms))
            for key, value in self._scan(keys.NS.PRODUCER)
        )
        for key, value in self._scan(keys.NS.CONSUMER):
            group = keys.consumer_of_key(key)
            # [offset, metadata] (unfenced, and everything stored before fencing),
            # [offset, metadata, generation] or [offset, metadata, generation or
            # nil, commit stamp]: see _consumer_value. A deleted offset that
            # keeps its fence is [nil, "", generation].
            offset, metadata, *rest = msgpack.unpackb(value, raw=False)
            if offset is not None:
                self.offsets[group] = (offset, metadata)
            if rest and rest[0] is not None:
                self.fences[group] = rest[0]
            if len(rest) > 1:
                self.commit_stamps[group] = rest[1]
        value = self.db.get(keys.sm_meta(self.group_id, keys.SmField.COMPACTION))
        if value is not None:
            self.compactions, self.compacted_below = msgpack.unpackb(value)

    def _scan(self, ns: keys.NS) -> list[tuple[bytes, bytes]]:
        begin, end = keys.group_range(ns, self.group_id)
        out = []
        it = self.db.iter()
        it.seek(begin)
        while it.valid():
            key = it.key()
            if key >= end:
                break
            out.append((key, it.value()))
            it.next()
        return out

    def _put_applied(self, batch: WriteBatch) -> None:
        batch.put(
            keys.sm_meta(self.group_id, keys.SmField.APPLIED),
            msgpack.packb(
                [self.applied_index, self.next_offset, self.start_offset, self.last_timestamp_ms]
            ),
        )

    def _put_producer(self, producer_id: int, batch: WriteBatch) -> None:
        window = self.producers[producer_id]
        batch.put(
            keys.producer_key(self.group_id, producer_id),
            msgpack.packb([list(b) for b in window]),
        )

    def next_sequence(self, producer_id: int) -> int | None:
        """The sequence ``producer_id``'s next batch must start at (KIP-98), as
        applied; None if the partition does not know the producer."""
        window = self.producers.get(producer_id)
        if not window:
            return None
        last = window[-1]
        return last.sequence + last.count

    # ---- apply ----------------------------------------------------------------------

    def apply(self, entries: Sequence[Entry], batch: WriteBatch) -> list[list[ApplyResult]]:
        """Apply committed entries in order; one result list per entry, one result per command.

        Entries at or below ``applied_index`` were applied before (a replay after
        restart) and are skipped with an empty result list.
        """
        results: list[list[ApplyResult]] = []
        dirty: set[int] = set()
        applied_before = self.applied_index
        # The caller wrote the previous call's batch before this call (the driver
        # writes one apply batch per turn, one apply call per group and turn).
        self._unwritten = []
        for entry in entries:
            if entry.index <= self.applied_index:
                results.append([])
                continue
            results.append(self._apply_entry(entry, batch, dirty))
            self.applied_index = entry.index
        for producer_id in dirty:
            self._put_producer(producer_id, batch)
        if self.applied_index != applied_before:
            self._put_applied(batch)
        return results

    def _apply_entry(self, entry: Entry, batch: WriteBatch, dirty: set[int]) -> list[ApplyResult]:
        # Conf changes are applied to the Raft core by the driver; no-ops (empty
        # data, Raft §5.4.2) carry nothing. Both still advance applied_index.
        if entry.type is not EntryType.NORMAL or not entry.data:
            return []
        try:
            commands = decode_entry_commands(entry.data)
        except CommandError as exc:
            log.warning(
                "undecodable entry group=%d index=%d error=%s", self.group_id, entry.index, exc
            )
            return [_fail(ErrorCode.INVALID_REQUEST, f"undecodable entry: {exc}")]
        out: list[ApplyResult] = []
        for cmd in commands:
            if isinstance(cmd, Produce):
                out.append(self._produce(cmd, batch, dirty))
            elif isinstance(cmd, CommitOffset):
                out.append(self._commit_offset(cmd, batch))
            elif isinstance(cmd, DeleteOffset):
                out.append(self._delete_offset(cmd, batch))
            elif isinstance(cmd, TruncatePrefix):
                out.append(self._truncate_command(cmd, batch))
            elif isinstance(cmd, ExpireProducers):
                out.append(self._expire_producers(cmd, batch, dirty))
            elif isinstance(cmd, CompactRecords):
                out.append(self._compact(cmd, batch))
            else:
                out.append(
                    _fail(ErrorCode.INVALID_REQUEST, f"{type(cmd).__name__} is not a partition op")
                )
        return out

    def _produce(self, cmd: Produce, batch: WriteBatch, dirty: set[int]) -> ApplyResult:
        # Values come from clients through the leader: anything that would not fit
        # the fixed-width key/header fields must be refused here, never crash apply.
        if not 1 <= cmd.count <= MAX_BATCH_COUNT:
            return _fail(
                ErrorCode.INVALID_REQUEST,
                f"batch count must be in 1..{MAX_BATCH_COUNT}, got {cmd.count}",
            )
        pid, seq = cmd.producer_id, cmd.sequence
        if pid is not None:
            if not 0 <= pid <= MAX_ID:
                return _fail(ErrorCode.INVALID_REQUEST, f"producer id {pid} out of range")
            if seq is None or not 0 <= seq <= MAX_ID:
                return _fail(
                    ErrorCode.INVALID_REQUEST, "an idempotent batch needs a sequence in 0..2^63-1"
                )
            verdict = self._check_sequence(pid, seq, cmd.count)
            if verdict is not None:
                return verdict
        base = self.next_offset
        ts = max(cmd.append_timestamp_ms, self.last_timestamp_ms)
        value = BATCH_HEADER.pack(base, ts, cmd.count) + cmd.records
        batch.put(keys.batch_key(self.group_id, base), value)
        self.next_offset = base + cmd.count
        self.last_timestamp_ms = ts
        self._unwritten.append((base, cmd.count, value))
        if self.sizes is not None:
            self.sizes.add(base, cmd.count, BATCH_HEADER.size + len(cmd.records))
        if pid is not None and seq is not None:
            producers = self.producers
            # pop and re-insert: the producer becomes the most recently used.
            window = producers.pop(pid, None)
            if window is None:
                window = []
            producers[pid] = window
            window.append(ProducerBatch(seq, cmd.count, base, ts))
            del window[:-PRODUCER_WINDOW]
            dirty.add(pid)
        return ApplyResult(base_offset=base, timestamp_ms=ts)

    def _check_sequence(self, pid: int, seq: int, count: int) -> ApplyResult | None:
        """Kafka KIP-98 sequence rules; None means "append".

        - The producer's next expected sequence is ``last.sequence + last.count``
          (a batch's sequence is that of its first record).
        - A batch equal to one of the last PRODUCER_WINDOW batches (same first
          sequence and count) is a retry: answer with the original offset.
        - A first batch of an unknown producer must start at sequence 0.
        - An older sequence outside the window: DUPLICATE_SEQUENCE (it was
          appended, but its offset is no longer known). Anything else, including
          a gap: OUT_OF_ORDER_SEQUENCE (nothing appended; the client must not
          skip sequences).
        """
        window = self.producers.get(pid)
        if not window:
            if seq == 0:
                return None
            return _fail(
                ErrorCode.OUT_OF_ORDER_SEQUENCE,
                f"producer {pid} unknown to this partition: first sequence must be 0, got {seq}",
            )
        for b in window:
            if b.sequence == seq and b.count == count:
                return ApplyResult(base_offset=b.base_offset, duplicate=True)
        last = window[-1]
        expected = last.sequence + last.count
        if seq == expected:
            return None
        if seq < window[0].sequence:
            return _fail(
                ErrorCode.DUPLICATE_SEQUENCE,
                f"producer {pid} sequence {seq} is older than the dedup window",
            )
        return _fail(
            ErrorCode.OUT_OF_ORDER_SEQUENCE,
            f"producer {pid} sequence {seq}, expected {expected}",
        )

    def _expire_producers(
        self, cmd: ExpireProducers, batch: WriteBatch, dirty: set[int]
    ) -> ApplyResult:
        """Forget the idle producers, then the least recently used beyond the cap.

        A forgotten producer's next batch is treated as an unknown producer's
        (OUT_OF_ORDER_SEQUENCE unless it starts at sequence 0); the client then
        moves to a fresh producer id (client/aio.py). Only a retry of a batch
        sent before the expiry loses its deduplication, which is why the
        leader expires by idleness first and the cap is a backstop.
        """
        cap = cmd.keep_at_most
        if cap is not None and cap < 0:
            return _fail(ErrorCode.INVALID_REQUEST, f"keep_at_most must be >= 0, got {cap}")
        producers = self.producers
        idle = limit = 0
        while producers:
            pid = next(iter(producers))  # the least recently used
            if producers[pid][-1].timestamp_ms < cmd.idle_before_ms:
                idle += 1
            elif cap is not None and len(producers) > cap:
                limit += 1
            else:
                break
            del producers[pid]
            dirty.discard(pid)
            batch.delete(keys.producer_key(self.group_id, pid))
        return ApplyResult(expired={"idle": idle, "limit": limit})

    def producers_due(self, idle_before_ms: int, keep_at_most: int | None) -> bool:
        """Would ExpireProducers(idle_before_ms, keep_at_most) forget anyone now?
        O(1): the leader asks this of every partition it leads, every round."""
        producers = self.producers
        if not producers:
            return False
        if keep_at_most is not None and len(producers) > keep_at_most:
            return True
        return next(iter(producers.values()))[-1].timestamp_ms < idle_before_ms

    def _commit_offset(self, cmd: CommitOffset, batch: WriteBatch) -> ApplyResult:
        """Store a committed offset, fenced by generation.

        * A commit with generation g is refused (FENCED, nothing changes) when
          a generation h > g already committed here: the group has formed a
          newer generation and its owner of this partition has claimed it, so
          the committer's assignment is stale. Equal generations pass: a member
          commits many times within its generation (and a retried commit is
          the same commit).
        * A commit WITHOUT a generation (a manual-assignment consumer, or a
          client from before fencing) is accepted as before while the group
          never committed here with one, and refused once it has. Accepting it
          would reopen exactly the hole the fence closes: a zombie running an
          old client, or a manual consumer that borrowed a managed group's
          name, could move the offset back (duplicates) or forward past
          records the owner has not processed (loss) under the current owner.
          Kafka refuses such a "standalone" commit to a group that has members
          too. The price: a managed group's offsets on this partition are
          moved only by its members (a group-managed consumer's seek + commit).
        """
        if cmd.offset < 0:
            return _fail(ErrorCode.INVALID_REQUEST, f"offset must be >= 0, got {cmd.offset}")
        refused = self._fence_refuses(cmd.group, cmd.generation, "commit")
        if refused is not None:
            return refused
        self.offsets[cmd.group] = (cmd.offset, cmd.metadata)
        if cmd.generation is not None:
            self.fences[cmd.group] = cmd.generation  # >= fence: checked above
        if cmd.timestamp_ms is None:
            self.commit_stamps.pop(cmd.group, None)  # an older stamp would not be its time
        else:
            self.commit_stamps[cmd.group] = cmd.timestamp_ms
        batch.put(keys.consumer_key(self.group_id, cmd.group), self._consumer_value(cmd.group))
        return ApplyResult()

    def _delete_offset(self, cmd: DeleteOffset, batch: WriteBatch) -> ApplyResult:
        """Forget ``group``'s committed offset, fenced exactly like a commit.

        With a generation the group's fence moves to it and stays (a record
        with no offset): the members of the deleted group, all of older
        generations, stay refused, while a group created again under the name
        counts its generations on from the deletion's (log/metadata.py) and
        commits here as usual. Without a generation (a group that never
        committed with one) the record goes entirely. Deleting an offset that
        is not there is not an error: a retried delete is the same delete.
        """
        refused = self._fence_refuses(cmd.group, cmd.generation, "offset delete")
        if refused is not None:
            return refused
        if cmd.committed_before_ms is not None and cmd.group in self.offsets:
            stamp = self.commit_stamps.get(cmd.group)
            if stamp is None or stamp >= cmd.committed_before_ms:
                return _fail(
                    ErrorCode.FENCED,
                    f"offset delete refused: group {cmd.group!r} committed here at "
                    f"{stamp}, not before {cmd.committed_before_ms}",
                )
        self.offsets.pop(cmd.group, None)
        self.commit_stamps.pop(cmd.group, None)
        key = keys.consumer_key(self.group_id, cmd.group)
        if cmd.generation is None:
            batch.delete(key)
        else:
            self.fences[cmd.group] = cmd.generation
            batch.put(key, self._consumer_value(cmd.group))
        return ApplyResult()

    def _fence_refuses(self, group: str, gen: int | None, what: str) -> ApplyResult | None:
        """FENCED (or INVALID_REQUEST) when ``group``'s fence here refuses an
        operation of generation ``gen``; None when it may go ahead."""
        if gen is not None and gen < 0:
            return _fail(ErrorCode.INVALID_REQUEST, f"generation must be >= 0, got {gen}")
        fence = self.fences.get(group)
        if fence is None:
            return None
        if gen is None:
            return _fail(
                ErrorCode.FENCED,
                f"{what} without a generation refused: group {group!r} commits with "
                f"generations on this partition (generation {fence} did)",
            )
        if gen < fence:
            return _fail(
                ErrorCode.FENCED,
                f"{what} of generation {gen} refused: generation {fence} already "
                f"committed on this partition",
            )
        return None

    def _consumer_value(self, group: str) -> bytes:
        """The stored value of ``group``'s offset: the fence and the commit stamp ride
        along with it, so they are written in the same batch and survive a restart
        exactly like the offset. A group whose offset was deleted keeps only its
        fence: [nil, "", fence]. Each field is there only when set, so a node that
        never sees a stamped commit stores what it stored before stamps."""
        offset, metadata = self.offsets.get(group, (None, ""))
        fence = self.fences.get(group)
        stamp = self.commit_stamps.get(group)
        if stamp is not None:
            return msgpack.packb([offset, metadata, fence, stamp])
        return msgpack.packb([offset, metadata] if fence is None else [offset, metadata, fence])

    def _compact(self, cmd: CompactRecords, batch: WriteBatch) -> ApplyResult:
        """Log compaction, one chunk (log/compaction.py): rewrite the batches holding
        the offsets in ``cmd.removed`` with those records replaced by skip runs.

        Keys, headers and offsets stay. A batch whose rows cannot be read, or do
        not cover its count (a client's malformed batch), is left as it is: the
        same bytes on every replica, so the same decision everywhere.
        """
        flat = cmd.removed
        problem = None
        if not 0 <= cmd.lo <= cmd.hi <= self.next_offset:
            problem = f"range [{cmd.lo}, {cmd.hi}) outside [0, {self.next_offset}]"
        elif len(flat) % 2:
            problem = "removed ranges need an even number of offsets"
        else:
            prev = cmd.lo
            for a, b in zip(flat[::2], flat[1::2]):
                if not prev <= a < b <= cmd.hi:
                    problem = f"removed range [{a}, {b}) not sorted inside [{cmd.lo}, {cmd.hi})"
                    break
                prev = b
        if problem is not None:
            return _fail(ErrorCode.INVALID_REQUEST, f"CompactRecords: {problem}")
        ranges = list(zip(flat[::2], flat[1::2]))
        gone = 0
        if ranges:
            for base, count, value in self._batches_in(ranges[0][0], ranges[-1][1]):
                mine = [(a, b) for a, b in ranges if a < base + count and b > base]
                if not mine:
                    continue
                try:
                    rows, codec_id = decode_rows(value[BATCH_HEADER.size :])
                    check_rows(rows, count)
                except RowsError:
                    continue
                rows, n = without_offsets(base, rows, mine)
                if n == 0:
                    continue
                new = value[: BATCH_HEADER.size] + encode_rows(rows, codec_id)
                batch.put(keys.batch_key(self.group_id, base), new)
                self._unwritten.append((base, count, new))
                gone += n
        if gone:
            self.sizes = None  # stored sizes changed: measured again when needed
        self.compactions += 1
        self.compacted_below = max(self.compacted_below, cmd.hi)
        batch.put(
            keys.sm_meta(self.group_id, keys.SmField.COMPACTION),
            msgpack.packb([self.compactions, self.compacted_below]),
        )
        return ApplyResult(compacted=gone)

    def _batches_in(self, lo: int, hi: int) -> list[tuple[int, int, bytes]]:
        """``(base, count, stored value)`` of the batches holding offsets in ``[lo, hi)``,
        including those put earlier in this apply call (the later put wins)."""
        found = {b: (b, count, value) for b, _, count, value in self.stored_batches(lo, hi)}
        for base, count, value in self._unwritten:
            if base < hi and base + count > lo:
                found[base] = (base, count, value)
        return [found[b] for b in sorted(found)]

    def stored_batches(self, lo: int, hi: int) -> Iterator[tuple[int, int, int, bytes]]:
        """``(base, timestamp_ms, count, stored value)`` of the batches in RocksDB holding
        offsets in ``[lo, hi)``, oldest first: one iteration, and only reads, so log
        compaction plans over it in a worker thread (log/compaction.py)."""
        it = self.db.iter()
        it.seek_for_prev(keys.batch_key(self.group_id, lo))
        if not it.valid() or it.key() < self._batch_begin:
            it.seek(self._batch_begin)
        while it.valid():
            if it.key() >= self._batch_end:
                return
            value = it.value()
            base, ts, count = BATCH_HEADER.unpack_from(value)
            if base >= hi:
                return
            if base + count > lo:
                yield base, ts, count, value
            it.next()

    def _truncate_command(self, cmd: TruncatePrefix, batch: WriteBatch) -> ApplyResult:
        if cmd.start_offset < 0:
            return _fail(ErrorCode.INVALID_REQUEST, f"start offset {cmd.start_offset} < 0")
        self.truncate_prefix(cmd.start_offset, batch)
        return ApplyResult(base_offset=self.start_offset)

    # ---- reads ----------------------------------------------------------------------------

    def offset_in_range(self, offset: int) -> bool:
        """False means OUT_OF_RANGE (offset == next_offset is fine: a fetch waits there)."""
        return self.start_offset <= offset <= self.next_offset

    def read(
        self, offset: int, max_bytes: int, max_records: int | None = None
    ) -> list[StoredBatch]:
        """Stored batches from the one holding ``offset``: at least one if any, then up to
        ``max_bytes`` (stored size) and ``max_records`` (counted from ``offset``).

        One RocksDB iteration and no per-record work: the client drops the
        records before ``offset`` in the first batch.
        """
        out: list[StoredBatch] = []
        end = self._batch_end
        header = BATCH_HEADER
        it = self.db.iter()
        it.seek_for_prev(keys.batch_key(self.group_id, offset))
        if not it.valid() or it.key() < self._batch_begin:
            it.seek(self._batch_begin)
        size = 0
        records = 0
        while it.valid():
            key = it.key()
            if key >= end:
                break
            value = it.value()
            base, ts, count = header.unpack_from(value)
            if base >= self.next_offset:
                # Batches at or beyond the high watermark can only be pre-fetched
                # by a snapshot transfer (server/snapshots.py) and are not
                # applied here yet: never visible to readers.
                break
            if base + count <= offset:  # the batch before ``offset``
                it.next()
                continue
            size += len(value)
            if out and size > max_bytes:
                break
            out.append((base, ts, count, value[header.size :]))
            records += base + count - max(base, offset)
            if max_records is not None and records >= max_records:
                break
            it.next()
        return out

    def offset_for_time(self, timestamp_ms: int) -> tuple[int, int] | None:
        """``(offset, batch_timestamp_ms)`` of the first record appended at or after
        ``timestamp_ms``, or None when every stored record is older.

        Record times here are the batches' append stamps, which never go
        backwards within a partition (``_produce`` takes the max with the last
        one). So "stamp >= t" holds for a suffix of the offsets and a binary
        search over offsets finds where it starts: about log2(batches) seeks,
        with no per-segment time index to keep (Kafka's ``.timeindex``).
        """
        lo, hi = self.start_offset, self.next_offset
        found: tuple[int, int] | None = None
        while lo < hi:
            mid = (lo + hi) // 2
            header = self._batch_holding(mid)
            if header is None:
                # Not contiguous here (cannot happen in an applied range): fall
                # back to scanning what is stored in [lo, hi).
                for base, ts, _count, _size in self.batch_headers(lo=lo, hi=hi):
                    if ts >= timestamp_ms:
                        return max(base, self.start_offset), ts
                return found
            base, ts, count = header
            if ts >= timestamp_ms:
                found = (max(base, self.start_offset), ts)
                hi = base  # base <= mid < hi: the range shrinks
            else:
                lo = base + count  # > mid >= lo
        return found

    def _batch_holding(self, offset: int) -> tuple[int, int, int] | None:
        """``(base_offset, timestamp_ms, count)`` of the stored batch holding ``offset``."""
        it = self.db.iter()
        it.seek_for_prev(keys.batch_key(self.group_id, offset))
        if not it.valid() or it.key() < self._batch_begin:
            return None
        base, ts, count = BATCH_HEADER.unpack_from(it.value())
        return (base, ts, count) if base <= offset < base + count else None

    def committed_offset(self, group: str) -> tuple[int, str] | None:
        return self.offsets.get(group)

    def fenced_generation(self, group: str) -> int | None:
        """The highest generation of ``group`` that committed here (None: never fenced)."""
        return self.fences.get(group)

    # ---- snapshots and retention ------------------------------------------------------------

    def snapshot_state(self) -> bytes:
        """The small state (no records) as of ``applied_index``, for a Raft snapshot.

        Canonical (sorted) so every replica produces the same bytes for the same state.
        "fences" is present only when some group committed with a generation: the
        snapshot of a partition that never saw one stays what it was before fencing.
        """
        state: dict[str, Any] = {
            "applied_index": self.applied_index,
            "next_offset": self.next_offset,
            "start_offset": self.start_offset,
            "last_timestamp_ms": self.last_timestamp_ms,
            "producers": {
                pid: [list(b) for b in window] for pid, window in sorted(self.producers.items())
            },
            "offsets": {g: [o, m] for g, (o, m) in sorted(self.offsets.items())},
        }
        if self.fences:
            state["fences"] = dict(sorted(self.fences.items()))
        if self.commit_stamps:
            state["commit_stamps"] = dict(sorted(self.commit_stamps.items()))
        if self.compactions:
            state["compaction"] = [self.compactions, self.compacted_below]
        return msgpack.packb(state)

    def restore_state(self, data: bytes, batch: WriteBatch) -> None:
        """Replace the state with a snapshot's (Raft §7 InstallSnapshot).

        Records are not in the snapshot: stored batches outside the snapshot's
        [start_offset, next_offset) are deleted; those inside are kept.
        """
        obj: dict[str, Any] = msgpack.unpackb(data, raw=False, strict_map_key=False)
        for ns in (keys.NS.PRODUCER, keys.NS.CONSUMER):
            batch.delete_range(*keys.group_range(ns, self.group_id))
        self.applied_index = obj["applied_index"]
        self.next_offset = obj["next_offset"]
        self.start_offset = obj["start_offset"]
        self.last_timestamp_ms = obj["last_timestamp_ms"]
        self.producers = _by_recency(
            (int(pid), _window(window, self.last_timestamp_ms))
            for pid, window in obj["producers"].items()
        )
        self.offsets = {g: (o, m) for g, (o, m) in obj["offsets"].items()}
        self.fences = dict(obj.get("fences", {}))  # absent: a snapshot from before fencing
        self.commit_stamps = dict(obj.get("commit_stamps", {}))  # absent: none stamped
        # Absent: never compacted (or a snapshot from before compaction existed).
        self.compactions, self.compacted_below = obj.get("compaction", (0, 0))
        compaction_key = keys.sm_meta(self.group_id, keys.SmField.COMPACTION)
        if self.compactions:
            batch.put(compaction_key, msgpack.packb([self.compactions, self.compacted_below]))
        else:
            batch.delete(compaction_key)
        self.sizes = None  # other batches now: measured again when needed
        self._unwritten = []
        for pid in self.producers:
            self._put_producer(pid, batch)
        for group in self.offsets.keys() | self.fences.keys():  # fence-only: deleted offsets
            batch.put(keys.consumer_key(self.group_id, group), self._consumer_value(group))
        batch.delete_range(keys.batch_key(self.group_id, self.next_offset), self._batch_end)
        batch.delete_range(self._batch_begin, keys.batch_key(self.group_id, self._first_kept()))
        self._put_applied(batch)

    def _first_kept(self) -> int:
        """Base offset of the batch holding start_offset (kept whole), else start_offset."""
        start = self.start_offset
        unwritten = self._unwritten
        if unwritten and start >= unwritten[0][0]:
            for base, count, _ in unwritten:
                if base <= start < base + count:
                    return base
            return start  # == next_offset: past every batch
        it = self.db.iter()
        it.seek_for_prev(keys.batch_key(self.group_id, self.start_offset))
        if it.valid() and it.key() >= self._batch_begin:
            base, _, count = BATCH_HEADER.unpack_from(it.value())
            if base + count > self.start_offset:
                return base
        return self.start_offset

    # ---- snapshot transfer (follower catch-up, server/snapshots.py) -------------------

    def contiguous_end(self, lo: int, hi: int) -> int:
        """The first offset in ``[lo, hi)`` not covered by stored batches, scanning from
        the batch holding ``lo``; ``hi`` if all of it is present.

        Resuming a snapshot transfer from here keeps every batch already written
        (a previous attempt, or this replica's own applies).
        """
        expect = lo
        it = self.db.iter()
        it.seek_for_prev(keys.batch_key(self.group_id, lo))
        if not it.valid() or it.key() < self._batch_begin:
            it.seek(self._batch_begin)
        while expect < hi and it.valid():
            key = it.key()
            if key >= self._batch_end:
                break
            base, _, count = BATCH_HEADER.unpack_from(it.value())
            if base + count <= expect:
                it.next()
                continue
            if base > expect:
                break  # a hole
            expect = base + count
            it.next()
        return min(expect, hi)

    def put_fetched(self, batches: Sequence[StoredBatch], batch: WriteBatch) -> int:
        """Stage batches fetched from a peer at their (committed, hence final) offsets;
        returns the offset after the last one. Raises ValueError on batches that
        are not contiguous: a confused or hostile peer must not write holes."""
        expect: int | None = None
        for base, ts, count, records in batches:
            if count < 1 or base < 0 or (expect is not None and base != expect):
                raise ValueError(f"fetched batch at {base} (count {count}) not contiguous")
            batch.put(
                keys.batch_key(self.group_id, base), BATCH_HEADER.pack(base, ts, count) + records
            )
            expect = base + count
        return -1 if expect is None else expect

    def batch_headers(
        self, *, newest_first: bool = False, lo: int | None = None, hi: int | None = None
    ) -> Iterator[tuple[int, int, int, int]]:
        """``(base_offset, timestamp_ms, count, stored_bytes)`` of the stored batches that
        hold offsets in ``[lo, hi)`` (default ``[start_offset, next_offset)``), oldest
        first (or newest first). Lazy: retention stops reading once it has decided."""
        lo = self.start_offset if lo is None else max(lo, self.start_offset)
        hi = self.next_offset if hi is None else min(hi, self.next_offset)
        it = self.db.iter()
        if newest_first:
            it.seek_for_prev(keys.batch_key(self.group_id, max(hi - 1, 0)))
        else:
            it.seek_for_prev(keys.batch_key(self.group_id, lo))
            if not it.valid() or it.key() < self._batch_begin:
                it.seek(self._batch_begin)
        while it.valid():
            key = it.key()
            if key < self._batch_begin or key >= self._batch_end:
                return
            value = it.value()
            base, ts, count = BATCH_HEADER.unpack_from(value)
            if base >= hi or base + count <= lo:
                if newest_first and base + count <= lo:
                    return
                if not newest_first and base >= hi:
                    return
            else:
                yield base, ts, count, len(value)
            if newest_first:
                it.prev()
            else:
                it.next()

    def headers_from(self, lo: int) -> Iterator[tuple[int, int, int, int]]:
        return self.batch_headers(lo=lo)

    def measure_sizes(self) -> SizeIndex:
        """A SizeIndex of what is stored now (reads every batch once: run it in a worker
        thread, then ``install_sizes`` on the loop)."""
        index = SizeIndex()
        index.add_all(self.batch_headers())
        return index

    def install_sizes(self, index: SizeIndex) -> SizeIndex:
        """Adopt ``index`` after catching it up with what was applied meanwhile."""
        end = index.end
        index.truncate(self.start_offset)
        if end is None:
            index.add_all(self.batch_headers())
        elif end < self.next_offset:
            index.add_all(self.batch_headers(lo=end))
        self.sizes = index
        return index

    def truncate_prefix(self, new_start_offset: int, batch: WriteBatch) -> None:
        """Retention: forget records below ``new_start_offset`` (whole batches only are
        deleted; a batch straddling the new start stays, readers skip its head)."""
        new_start = min(max(new_start_offset, self.start_offset), self.next_offset)
        if new_start == self.start_offset:
            return
        self.start_offset = new_start
        if self.sizes is not None:
            self.sizes.truncate(new_start)
        batch.delete_range(self._batch_begin, keys.batch_key(self.group_id, self._first_kept()))
        self._put_applied(batch)
        log.info("partition truncated group=%d start_offset=%d", self.group_id, new_start)
