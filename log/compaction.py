"""Log compaction: keep the latest record of every key (Kafka's ``cleanup.policy=compact``).

A topic created with ``cleanup_policy = "compact"`` keeps, per partition, the
last record of each key; an older record with the same key may go. A record
whose value is None is a tombstone: it deletes its key, and goes itself once
it is older than the topic's ``delete_retention_ms`` (a consumer that reads the
partition within that time sees the delete). Records without a key are never
compacted away; a produce to a compacted topic must give every record a key
(``produced_batch_problem``, like Kafka's broker), so only records from
before the topic became compacted lack one.

Who does what:

- **Planning, on the partition leader, off the event loop** (``plan_sweep``,
  called by server/compaction.py in a worker thread). Two passes over the
  stored batches below a cut (the high watermark, or ``min_compaction_lag_ms``
  before it): the first maps each key of the records not yet swept to its
  latest offset, the second lists the offsets that may go. Kafka's log
  cleaner works the same way (an offset map, then a rewrite), on each replica
  independently.
- **A bounded map.** The map takes memory per key, so it is capped
  (``map_bytes``, Kafka's ``log.cleaner.dedupe.buffer.size``): once full, the
  sweep ends at the last batch it mapped, and the next sweep goes on from
  there. The first pass maps only the records not yet swept (from
  ``compacted_below``): below that, a previous sweep already left at most one
  record per key, so a record there goes exactly when its key has a later
  record in the map (or it is a tombstone past its retention).
- **Applying, on every replica, through the Raft log** (``CompactRecords``,
  applied by ``PartitionStateMachine``). The plan travels as offset ranges
  per chunk of batches, so every replica removes exactly the same records at
  the same log position and the replicas stay identical (deterministic apply),
  as retention's ``TruncatePrefix`` does. A replica never decides on its own.

The stored form: a compacted batch keeps its key and header (base offset,
append stamp, count), so offsets never move (a consumer's committed offset
stays valid, as in Kafka), batch keys stay contiguous (snapshot transfer and
lookups by time rely on that), and the batch's append stamp is unchanged.
Only its rows change: each run of removed records becomes one integer, the
run's length, and a compacted batch's rows always start with an integer (0
when its first record stays), so a reader tells the two forms apart from the
first row alone (client/protocol.py ``decode_batch``). A batch whose records
are all gone is a header and one small integer. ``rows_with_offsets`` reads
both forms.

Why the removal rule is safe to apply in chunks: a record goes only when a
later record of its key exists (that one stays, and nothing removes it while
it is the latest), so each chunk is correct on its own, whatever happens to
the chunks after it. A tombstone goes only in a sweep whose earlier chunks
already removed every older record of its key: ``plan_sweep`` lists it only
then, and the chunks are proposed in order, the next only after the previous
one applied (server/compaction.py). A tombstone below ``compacted_below``
whose key is not mapped is already its key's only record: earlier sweeps
removed the older ones.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
from raftlog.client.compression import codec, is_compressed
from raftlog.client.compression import decompress as decompress_blob

from .commands import CompactRecords

# A chunk's stored bytes: bounds one CompactRecords' work on every replica's
# event loop (it decodes and re-encodes the batches it touches).
DEFAULT_CHUNK_BYTES = 256 << 10  # 5-7 ms of apply per chunk here (tests/bench/compaction.py)
_HEADER_SIZE = struct.calcsize(">QQI")  # base_offset, timestamp_ms, count (log/partition.py)

Row = list[Any]  # [timestamp_ms or None, key, value, headers]


class RowsError(ValueError):
    """A stored batch whose records cannot be read as rows (a client sent bytes
    that are not a record batch). Such a batch is never compacted."""


def decode_rows(blob: bytes, max_bytes: int | None = None) -> tuple[list[Any], int | None]:
    """The rows of a stored records blob, and its compression codec id (None: plain).
    ``max_bytes``: RowsError if a compressed blob decompresses to more than this."""
    codec_id = None
    try:
        if is_compressed(blob):
            codec_id = blob[1] if len(blob) > 1 else None
            blob = decompress_blob(blob, max_bytes)
        rows = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack and each codec raise their own types
        raise RowsError(f"records undecodable: {exc}") from exc
    if not isinstance(rows, list):
        raise RowsError("records are not an array")
    return rows, codec_id


def encode_rows(rows: list[Any], codec_id: int | None) -> bytes:
    """``rows`` packed as the client packs them, compressed again with ``codec_id``."""
    packed = msgpack.packb(rows, use_bin_type=True)
    if codec_id is None:
        return packed
    from raftlog.client.compression import compress

    return compress(packed, _codec_name(codec_id))


def _codec_name(codec_id: int) -> str:
    for name in ("gzip", "lz4", "zstd"):
        if codec(name).codec_id == codec_id:
            return name
    raise RowsError(f"unknown codec id {codec_id}")


def key_and_value(row: Any) -> tuple[bytes | None, Any]:
    """A record row's key (None: keyless, or not a record row) and value."""
    if isinstance(row, list) and len(row) == 4 and isinstance(row[1], bytes):
        return row[1], row[2]
    return None, None


def produced_batch_problem(blob: bytes, count: int, max_bytes: int) -> str | None:
    """Why a batch produced to a compacted topic is refused (None: it is accepted).

    Every record needs a key: a keyless record could never be compacted and
    would stay for good (Kafka's broker refuses them too). The rows must be
    record rows, as many as the request's ``count``: a sweep decodes and
    rewrites them, so they are checked once here instead of found unreadable
    later. ``max_bytes`` bounds a compressed batch's decompressed size. This
    is the one produce path where a node unpacks records (DESIGN §9 keeps
    batches opaque): only for compacted topics, which pay for it."""
    try:
        rows, _ = decode_rows(blob, max_bytes)
    except RowsError as exc:
        return str(exc)
    if len(rows) != count:
        return f"the batch holds {len(rows)} records but says {count}"
    for i, row in enumerate(rows):
        if type(row) is not list or len(row) != 4:
            return f"record {i} is not [timestamp_ms, key, value, headers]"
        ts, key, value, headers = row
        if type(key) is not bytes:
            return f"record {i} has no key; every record of a compacted topic needs one"
        if not (
            (ts is None or type(ts) is int)
            and (value is None or type(value) is bytes)
            and (headers is None or type(headers) is dict)
        ):
            return f"record {i} has a field of the wrong type"
    return None


def rows_with_offsets(base_offset: int, rows: list[Any]) -> Iterator[tuple[int, Row]]:
    """``(offset, row)`` of each record still in a batch: an integer in ``rows``
    stands for that many removed records."""
    offset = base_offset
    for row in rows:
        if type(row) is int:
            offset += row
            continue
        yield offset, row
        offset += 1


def check_rows(rows: list[Any], count: int) -> None:
    """RowsError unless ``rows`` are record rows and skip runs covering ``count`` offsets."""
    covered = 0
    for row in rows:
        if type(row) is int:
            if row < 0:
                raise RowsError(f"skip run of {row}")
            covered += row
        elif isinstance(row, list) and len(row) == 4:
            covered += 1
        else:
            raise RowsError(f"record row {row!r:.40} is not [ts, key, value, headers]")
    if covered != count:
        raise RowsError(f"rows cover {covered} offsets, the batch header says {count}")


def without_offsets(
    base_offset: int, rows: list[Any], removed: list[tuple[int, int]]
) -> tuple[list[Any], int]:
    """``rows`` with the records at offsets in ``removed`` (sorted half-open ranges)
    replaced by skip runs; adjacent runs merge, and the result starts with a run
    (0 if the first record stays). Returns (new rows, records removed)."""
    out: list[Any] = [0]
    gone = 0
    ranges = iter(removed)
    current = next(ranges, None)
    offset = base_offset

    def skip(n: int) -> None:
        if out and type(out[-1]) is int:
            out[-1] += n
        else:
            out.append(n)

    for row in rows:
        if type(row) is int:
            skip(row)
            offset += row
            continue
        while current is not None and current[1] <= offset:
            current = next(ranges, None)
        if current is not None and current[0] <= offset:
            skip(1)
            gone += 1
        else:
            out.append(row)
        offset += 1
    return out, gone


# ---------------------------------------------------------------- planning (leader)


# What one key costs the map: the dict's slot, the key's bytes object and the
# offset's int, measured with tracemalloc at 117 bytes plus the key's length
# (CPython 3.11, 200,000 keys), rounded up for the dict's spare room.
MAP_BYTES_PER_KEY = 128


def map_cost(key: bytes) -> int:
    """Bytes one key is estimated to take in a sweep's offset map."""
    return MAP_BYTES_PER_KEY + len(key)


@dataclass(slots=True)
class SweepPlan:
    """What one sweep over ``[start, end)`` will do. ``end`` is where the sweep
    stops: the requested end, or less when the offset map filled up first
    (``map_full``); the next sweep goes on from there."""

    start: int
    end: int
    chunks: list[CompactRecords] = field(default_factory=list)
    records: int = 0  # records read (removed ones excluded)
    removable: int = 0  # records the chunks remove
    tombstones: int = 0  # of which tombstones past delete_retention_ms
    undecodable: int = 0  # batches kept whole because their rows could not be read
    # The oldest append stamp of a tombstone that stays (None: none stays): the
    # scheduler sweeps again once it is past delete_retention_ms.
    oldest_tombstone_ms: int | None = None
    mapped_keys: int = 0  # distinct keys in the offset map
    map_bytes: int = 0  # their estimated memory (map_cost)
    map_full: bool = False  # the map's bound cut the sweep short of the requested end

    @property
    def live(self) -> int:
        """Records left in ``[start, end)`` once the chunks are applied."""
        return self.records - self.removable


def _stored_batches(sm: Any, lo: int, hi: int) -> Iterator[tuple[int, int, int, bytes]]:
    """``(base, timestamp_ms, count, records_blob)`` of the batches holding ``[lo, hi)``."""
    for base, ts, count, value in sm.stored_batches(lo, hi):
        yield base, ts, count, value[_HEADER_SIZE:]


def map_latest(
    sm: Any, lo: int, hi: int, map_bytes: int | None, plan: SweepPlan
) -> tuple[dict[bytes, int], int]:
    """Each key of the records in ``[lo, hi)`` mapped to its latest offset, and
    where the map stops: ``hi``, or the end of the batch at which the map
    reached ``map_bytes`` (None: no bound). At least one batch is always
    mapped, so a sweep moves on even when one batch's keys exceed the bound."""
    latest: dict[bytes, int] = {}
    used = 0
    mapped_to = hi
    for base, _ts, _count, blob in _stored_batches(sm, lo, hi):
        if map_bytes is not None and latest and used >= map_bytes:
            mapped_to = max(base, lo)
            plan.map_full = True
            break
        try:
            rows, _ = decode_rows(blob)
        except RowsError:
            continue
        for offset, row in rows_with_offsets(base, rows):
            if offset < lo or offset >= hi:
                continue
            key, _ = key_and_value(row)
            if key is None:
                continue
            if key not in latest:
                used += map_cost(key)
            latest[key] = offset
    plan.mapped_keys, plan.map_bytes = len(latest), used
    return latest, mapped_to


def plan_sweep(
    sm: Any,
    *,
    start: int,
    end: int,
    tombstones_before_ms: int | None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    map_bytes: int | None = None,
) -> SweepPlan:
    """Plan the compaction of the records in ``[start, end)``, or of a shorter
    ``[start, plan.end)`` when the offset map reaches ``map_bytes`` first.

    ``end`` must be a batch boundary at or below the applied high watermark
    (the caller reads it on the loop); the stored batches below it do not
    change meanwhile except by retention (a prefix goes, which the chunks then
    name harmlessly) and by this sweep's own chunks, one sweep at a time.
    ``tombstones_before_ms``: tombstones appended before this go too (None:
    keep every tombstone). Safe to run in a worker thread: it only reads.
    """
    plan = SweepPlan(start, end)
    # Below compacted_below every key has at most one record (a finished chunk
    # kept only each key's latest record of its sweep), so only the records
    # above it need mapping: one below goes iff its key is mapped.
    dirty_from = min(max(start, sm.compacted_below), end)
    latest, plan.end = map_latest(sm, dirty_from, end, map_bytes, plan)
    end = plan.end
    chunk_lo: int | None = None
    chunk_size = 0
    removed: list[int] = []
    for base, ts, count, blob in _stored_batches(sm, start, end):
        if chunk_lo is None:
            chunk_lo = base
        chunk_size += len(blob)
        try:
            rows, _ = decode_rows(blob)
        except RowsError:
            plan.undecodable += 1
            rows = []
        expired = tombstones_before_ms is not None and ts < tombstones_before_ms
        for offset, row in rows_with_offsets(base, rows):
            if offset < start or offset >= end:
                continue
            plan.records += 1
            key, value = key_and_value(row)
            if key is None:
                continue  # no key: never compacted
            last = latest.get(key)
            if last is None and offset >= dirty_from:
                continue  # not a record row the map could read: kept
            # A key not in the map has its only record here, below dirty_from.
            is_latest = last is None or offset == last
            goes = not is_latest or (value is None and expired)
            if not goes:
                if value is None and (
                    plan.oldest_tombstone_ms is None or ts < plan.oldest_tombstone_ms
                ):
                    plan.oldest_tombstone_ms = ts
                continue
            if value is None and is_latest:
                plan.tombstones += 1
            plan.removable += 1
            if removed and removed[-1] == offset:
                removed[-1] = offset + 1  # extends the previous range
            else:
                removed.extend((offset, offset + 1))
        if chunk_size >= chunk_bytes:
            plan.chunks.append(CompactRecords(chunk_lo, base + count, removed))
            chunk_lo, chunk_size, removed = None, 0, []
    # The last chunk always goes, removals or not: it records that the sweep
    # reached ``end`` (PartitionStateMachine.compacted_below), which decides
    # when the next sweep is due.
    if chunk_lo is not None or not plan.chunks:
        plan.chunks.append(CompactRecords(start if chunk_lo is None else chunk_lo, end, removed))
    elif plan.chunks[-1].hi < end:
        plan.chunks.append(CompactRecords(plan.chunks[-1].hi, end, []))
    return plan
