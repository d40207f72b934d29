"""Values the client returns (results of produce, fetch, offsets, metadata)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .protocol import Record

__all__ = [
    "BatchMetadata",
    "DeletedGroup",
    "EncodedPiece",
    "FetchResult",
    "Offsets",
    "PartitionMeta",
    "PieceOutcome",
    "Record",
    "RecordMetadata",
    "Resplit",
    "TopicMeta",
]


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where an acknowledged record landed."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    """Where an acknowledged batch landed: offsets base_offset .. base_offset+count-1."""

    topic: str
    partition: int
    base_offset: int
    count: int
    duplicate: bool = False  # the server had it already (an idempotent retry)

    def record(self, i: int) -> RecordMetadata:
        return RecordMetadata(self.topic, self.partition, self.base_offset + i)


# A slice of one producer batch, encoded: (index of its first record in the
# batch, blob, record count, crc of the blob). A batch goes out as one piece,
# or as several in order when a topic's max_message_bytes is under its size.
EncodedPiece = tuple[int, bytes, int, int]
# resplit(first, count, limit): records first .. first+count-1 of a batch, encoded
# again as pieces of at most ``limit`` bytes each (see AsyncClient.send_pieces).
Resplit = Callable[[int, int, int], list[EncodedPiece]]


class PieceOutcome(NamedTuple):
    """What became of one piece of a batch (``AsyncClient.send_pieces``):
    ``meta`` where it landed, or ``error`` why it did not. A named tuple: one
    is built per produce request, and a tuple is the cheapest to build."""

    first: int  # index of the piece's first record in the batch
    meta: BatchMetadata | None
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class DeletedGroup:
    """What ``delete_group`` did.

    ``generation``: the number the deletion took (its offsets' fence), or None
    for a group the controller never knew, whose offsets were deleted unfenced.
    ``deleted``: the partitions whose committed offset is gone (or never was).
    ``kept``: partitions a newer generation claimed during the deletion (the
    group was joined again meanwhile); their offsets are that generation's.
    """

    group: str
    topic: str
    generation: int | None
    deleted: tuple[int, ...]
    kept: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchResult:
    records: list[Record]
    start_offset: int  # the partition's first retained offset
    end_offset: int  # the offset the next appended record will get (high watermark)
    # Where the next fetch starts: after the last record returned, or past records a
    # compacted topic removed (None: the results of older code, the last record + 1).
    next_fetch_offset: int | None = None

    def next_offset(self, requested: int) -> int:
        """The offset to fetch next after this result."""
        last = self.records[-1].offset + 1 if self.records else requested
        if self.next_fetch_offset is None:
            return last
        return max(last, self.next_fetch_offset)


@dataclass(frozen=True, slots=True)
class Offsets:
    start_offset: int
    end_offset: int


@dataclass(frozen=True, slots=True)
class OffsetAndTimestamp:
    """The answer to a lookup by time (Kafka's ``offsetsForTimes``): the first record
    stamped at or after the time asked for, and that record's append stamp."""

    offset: int
    timestamp_ms: int


@dataclass(slots=True)
class PartitionMeta:
    partition: int
    replicas: list[str] = field(default_factory=list)
    leader: str | None = None
    leader_address: str | None = None
    group: int | None = None


@dataclass(slots=True)
class TopicMeta:
    name: str
    partitions: list[PartitionMeta]
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> TopicMeta:
        parts = [
            PartitionMeta(
                partition=int(p["partition"]),
                replicas=list(p.get("replicas") or []),
                leader=p.get("leader"),
                leader_address=p.get("leader_address"),
                group=p.get("group"),
            )
            for p in obj.get("partitions") or []
        ]
        parts.sort(key=lambda p: p.partition)
        return cls(name=str(obj["name"]), partitions=parts, config=dict(obj.get("config") or {}))
