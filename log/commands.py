"""The commands carried in the data of NORMAL Raft entries.

An entry's data is a msgpack array of commands, because the driver coalesces
all client requests queued for a group in one loop turn into ONE proposal
(DESIGN.md §9). Empty data is the new leader's no-op (Raft §5.4.2) and holds no
command. Each command is an array ``[kind, field, ...]`` in the field order of
its dataclass: compact, and decoding needs no key lookups.

Entries come from peers (a buggy or hostile one included), so decoding checks
every field's type and raises the single ``CommandError``; the state machines
turn that into an error result for the entry, never a crash. Because every
replica decodes the same bytes, that outcome is deterministic too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, NamedTuple

import msgpack


class CommandError(Exception):
    """Entry data that is not a valid command array."""


class CommandKind(IntEnum):
    # Partition groups.
    PRODUCE = 1
    COMMIT_OFFSET = 2
    TRUNCATE_PREFIX = 3
    EXPIRE_PRODUCERS = 4  # forget idle producer ids (server/retention.py)
    DELETE_OFFSET = 5  # forget a consumer group's committed offset (raftlog group delete)
    COMPACT_RECORDS = 6  # remove superseded records of a compacted topic (log/compaction.py)
    # The metadata group (group 0).
    REGISTER_NODE = 10
    CREATE_TOPIC = 11
    DELETE_TOPIC = 12
    ALLOC_PRODUCER_ID = 13
    SET_PARTITION_REPLICAS = 14
    UNREGISTER_NODE = 15  # a node removed from the cluster (raftlog member remove)
    SET_CONSUMER_GROUP = 16  # a consumer group's formed generation, or its going empty
    ALTER_TOPIC = 17  # more partitions and/or config changes (raftlog topic alter)
    SET_LOG_FORMAT = 18  # the cluster's log format rises (log/features.py)
    SET_USER = 19  # create or alter a user kept in the metadata (log/users.py)
    DELETE_USER = 20


RetryKey = tuple[int, int | None, int]


@dataclass(slots=True, frozen=True)
class Produce:
    """Append one client batch. ``records`` is opaque (client.protocol.encode_records)."""

    records: bytes
    count: int
    crc: int
    producer_id: int | None = None
    # Sequence of the batch's first record (Kafka KIP-98); advances by ``count``.
    sequence: int | None = None
    # Set by the leader when proposing so that every replica (and every replay)
    # stamps the batch with the same time.
    append_timestamp_ms: int = 0

    KIND = CommandKind.PRODUCE

    @property
    def retry_key(self) -> RetryKey | None:
        """What a retry of this batch repeats, as the dedup window matches it
        (producer id, first sequence, count); None without idempotence. A
        missing sequence is refused at apply."""
        if self.producer_id is None:
            return None
        return (self.producer_id, self.sequence, self.count)


@dataclass(slots=True, frozen=True)
class CommitOffset:
    """Store consumer group ``group``'s committed ``offset`` on this partition.

    ``generation``: the group generation of the member that commits (a
    group-managed consumer), or None (unfenced: a manual-assignment consumer,
    or a client from before fencing). The partition refuses a commit of a
    generation older than one that already committed there (FENCED; see
    log/partition.py). On the wire (in the Raft log) an unfenced commit is
    still the 3-field array of old; only a fenced one carries the 4th field,
    so entries written before fencing existed decode unchanged.

    ``timestamp_ms``: the leader's clock when it proposed the commit (log
    format COMMIT_STAMPS, log/features.py), so that every replica stores the
    same commit time; None in a cluster of an older format. Only a stamped
    commit has the 5th field (its 4th then possibly nil).
    """

    group: str
    offset: int
    metadata: str = ""
    generation: int | None = None
    timestamp_ms: int | None = None

    KIND = CommandKind.COMMIT_OFFSET


@dataclass(slots=True, frozen=True)
class DeleteOffset:
    """Forget consumer group ``group``'s committed offset on this partition.

    Fenced like CommitOffset: refused (FENCED) when a newer generation than
    ``generation`` committed here, or when it carries no generation for a group
    that commits with them. With a generation the partition keeps that
    generation as the group's fence (and no offset), so a zombie of the deleted
    group cannot commit its old position back afterwards.

    ``committed_before_ms`` (log format COMMIT_STAMPS): delete only an offset
    whose stored commit time is older than this, else refuse (FENCED). The
    deciding leader saw an old commit; one that lands between its look and
    this delete's apply must stay. Only such a delete has the 3rd field.
    """

    group: str
    generation: int | None = None
    committed_before_ms: int | None = None

    KIND = CommandKind.DELETE_OFFSET


@dataclass(slots=True, frozen=True)
class TruncatePrefix:
    """Retention: forget the records below ``start_offset``.

    Decided by the partition leader and carried through the Raft log, so every
    replica deletes the same batches at the same log position and the start
    offset moves identically everywhere (deterministic apply).
    """

    start_offset: int

    KIND = CommandKind.TRUNCATE_PREFIX


@dataclass(slots=True, frozen=True)
class ExpireProducers:
    """Forget idempotent producers: those whose last batch is stamped before
    ``idle_before_ms``, then the least recently used beyond ``keep_at_most``
    (None: no cap).

    Decided by the partition leader (server/retention.py) and carried through
    the Raft log for the same reason as TruncatePrefix: producer state decides
    whether a retried batch is appended or answered as a duplicate, so every
    replica must forget the same producers at the same log position.
    """

    idle_before_ms: int
    keep_at_most: int | None = None

    KIND = CommandKind.EXPIRE_PRODUCERS


@dataclass(slots=True, frozen=True)
class CompactRecords:
    """Log compaction, one chunk: remove the records at the offsets in ``removed``
    (a flat list of half-open ranges ``[a0, b0, a1, b1, ...]``, sorted, inside
    ``[lo, hi)``) from the stored batches holding offsets in ``[lo, hi)``.

    Planned by the partition leader (log/compaction.py ``plan_sweep``) and
    carried through the log like TruncatePrefix, so every replica rewrites the
    same batches at the same log position. ``hi`` also records how far the
    sweep got, which decides when the next one is due.
    """

    lo: int
    hi: int
    removed: list[int]

    KIND = CommandKind.COMPACT_RECORDS


@dataclass(slots=True, frozen=True)
class RegisterNode:
    node_id: str
    address: str
    incarnation: str
    # The node's listener for the other nodes (cluster.toml ``peer_address``),
    # written only from log format NODE_PEER_ADDRESS on (log/features.py).
    peer_address: str | None = None

    KIND = CommandKind.REGISTER_NODE


@dataclass(slots=True, frozen=True)
class CreateTopic:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, Any] = field(default_factory=dict)

    KIND = CommandKind.CREATE_TOPIC


@dataclass(slots=True, frozen=True)
class DeleteTopic:
    name: str

    KIND = CommandKind.DELETE_TOPIC


@dataclass(slots=True, frozen=True)
class AllocProducerId:
    KIND = CommandKind.ALLOC_PRODUCER_ID


@dataclass(slots=True, frozen=True)
class SetPartitionReplicas:
    topic: str
    partition: int
    replicas: tuple[str, ...]

    KIND = CommandKind.SET_PARTITION_REPLICAS


@dataclass(slots=True, frozen=True)
class UnregisterNode:
    node_id: str

    KIND = CommandKind.UNREGISTER_NODE


class GroupMemberEntry(NamedTuple):
    """One member of a persisted consumer-group generation (a tuple: msgpack packs
    it as an array, so a command stays compact on the wire)."""

    member_id: str
    client_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    partitions: tuple[int, ...]
    # A static member's group_instance_id (Kafka KIP-345); None for a dynamic one.
    # Records written before static membership have 5 fields.
    instance_id: str | None = None


@dataclass(slots=True, frozen=True)
class SetConsumerGroup:
    """A consumer group's generation, as formed by the coordinator (the controller).

    Proposed through the metadata group so that a new controller loads it and
    the members keep their partitions (server/group_coordinator.py). ``members``
    empty means the group went empty (last member left or expired): its old
    members must not come back on a later controller. ``partitions`` is the
    topic's partition count the assignment was made for.

    ``deleted`` (no members): ``raftlog group delete``. The group is gone for
    every reader, but its number stays as a tombstone, so a group created again
    under the name counts on from it; its old members' commits stay fenced.
    On the wire the 6th field is present only when set, so records written
    before deletion existed decode unchanged.
    """

    group: str
    topic: str
    generation: int
    partitions: int
    members: tuple[GroupMemberEntry, ...] = ()
    deleted: bool = False

    KIND = CommandKind.SET_CONSUMER_GROUP


@dataclass(slots=True, frozen=True)
class AlterTopic:
    """Grow a topic to ``partitions`` (0: unchanged; never fewer, like Kafka) and
    set the ``config`` keys given (a None value removes that key)."""

    name: str
    partitions: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    KIND = CommandKind.ALTER_TOPIC


@dataclass(slots=True, frozen=True)
class SetLogFormat:
    """Raise the cluster's log format to ``log_format`` (log/features.py). Proposed
    by the controller only once every registered node reads it; never lowers."""

    log_format: int

    KIND = CommandKind.SET_LOG_FORMAT


@dataclass(slots=True, frozen=True)
class SetUser:
    """Create user ``name`` with ``record`` (``create``: refused if it exists), or
    alter it (refused if it does not): ``record``'s keys replace the stored
    ones and a None value removes one, so an alter without ``token_sha256``
    keeps the token. Log format DYNAMIC_USERS (log/features.py)."""

    name: str
    record: dict[str, Any]
    create: bool

    KIND = CommandKind.SET_USER


@dataclass(slots=True, frozen=True)
class DeleteUser:
    name: str

    KIND = CommandKind.DELETE_USER


Command = (
    Produce
    | CommitOffset
    | DeleteOffset
    | TruncatePrefix
    | ExpireProducers
    | CompactRecords
    | RegisterNode
    | CreateTopic
    | DeleteTopic
    | AllocProducerId
    | SetPartitionReplicas
    | UnregisterNode
    | SetConsumerGroup
    | AlterTopic
    | SetLogFormat
    | SetUser
    | DeleteUser
)

_CLASSES: dict[int, type] = {
    cls.KIND: cls
    for cls in (
        Produce,
        CommitOffset,
        DeleteOffset,
        TruncatePrefix,
        ExpireProducers,
        CompactRecords,
        RegisterNode,
        CreateTopic,
        DeleteTopic,
        AllocProducerId,
        SetPartitionReplicas,
        UnregisterNode,
        SetConsumerGroup,
        AlterTopic,
        SetLogFormat,
        SetUser,
        DeleteUser,
    )
}

# Per kind: (accepted type, may be None) for each field, in dataclass order.
_INT = (int, False)
_OPT_INT = (int, True)
_STR = (str, False)
_SCHEMA: dict[type, tuple[tuple[type, bool], ...]] = {
    Produce: ((bytes, False), _INT, _INT, _OPT_INT, _OPT_INT, _INT),
    CommitOffset: (_STR, _INT, _STR, _OPT_INT, _OPT_INT),
    DeleteOffset: (_STR, _OPT_INT, _OPT_INT),
    TruncatePrefix: (_INT,),
    ExpireProducers: (_INT, _OPT_INT),
    CompactRecords: (_INT, _INT, (list, False)),
    RegisterNode: (_STR, _STR, _STR, (str, True)),
    CreateTopic: (_STR, _INT, _INT, (dict, False)),
    DeleteTopic: (_STR,),
    AllocProducerId: (),
    SetPartitionReplicas: (_STR, _INT, (list, False)),
    UnregisterNode: (_STR,),
    SetConsumerGroup: (_STR, _STR, _INT, _INT, (list, False), (bool, False)),
    AlterTopic: (_STR, _INT, (dict, False)),
    SetLogFormat: (_INT,),
    SetUser: (_STR, (dict, False), (bool, False)),
    DeleteUser: (_STR,),
}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in _CLASSES.values()
}

# Commands whose last fields came later, with the field count of their oldest
# form: fenced commits, commit stamps and conditional deletes (log/features.py),
# group deletion. Trailing fields that hold their default are left out when
# written, so replicas of a cluster still on an older form decode them, and
# put back with their defaults when read.
_OLDEST_FORM: dict[type, int] = {
    CommitOffset: 3,
    DeleteOffset: 2,
    SetConsumerGroup: 5,
    RegisterNode: 3,
}
_DEFAULTS: dict[type, tuple[Any, ...]] = {
    cls: tuple(f.default for f in fields(cls)) for cls in _OLDEST_FORM
}


def _to_wire(cmd: Command) -> list[Any]:
    if type(cmd) is Produce:  # the hot path: one per client produce
        return [
            CommandKind.PRODUCE,
            cmd.records,
            cmd.count,
            cmd.crc,
            cmd.producer_id,
            cmd.sequence,
            cmd.append_timestamp_ms,
        ]
    out: list[Any] = [cmd.KIND]
    for name in _FIELD_NAMES[type(cmd)]:
        value = getattr(cmd, name)
        out.append(list(value) if isinstance(value, tuple) else value)
    oldest = _OLDEST_FORM.get(type(cmd))
    if oldest is not None:
        defaults = _DEFAULTS[type(cmd)]
        while len(out) - 1 > oldest and out[-1] is defaults[len(out) - 2]:
            out.pop()
    return out


def _is_int(v: Any) -> bool:
    return type(v) is int  # excludes bool


def _decode_produce(raw: list[Any]) -> Produce | None:
    """Produce fast path; None means "let the generic checker explain what is wrong"."""
    if len(raw) != 7:
        return None
    _, records, count, crc, pid, seq, ts = raw
    if (
        type(records) is bytes
        and _is_int(count)
        and _is_int(crc)
        and (pid is None or _is_int(pid))
        and (seq is None or _is_int(seq))
        and _is_int(ts)
    ):
        return Produce(records, count, crc, pid, seq, ts)
    return None


def encode_entry_commands(commands: list[Command] | tuple[Command, ...]) -> bytes:
    """One entry's data: the msgpack array of ``commands`` (empty list -> b"")."""
    if not commands:
        return b""
    return msgpack.packb([_to_wire(c) for c in commands], use_bin_type=True)


def _decode_one(raw: Any) -> Command:
    if not isinstance(raw, list) or not raw:
        raise CommandError("a command must be a non-empty array")
    if raw[0] == CommandKind.PRODUCE:
        cmd = _decode_produce(raw)
        if cmd is not None:
            return cmd
    kind, *values = raw
    cls = _CLASSES.get(kind) if isinstance(kind, int) and not isinstance(kind, bool) else None
    if cls is None:
        raise CommandError(f"unknown command kind {kind!r}")
    schema = _SCHEMA[cls]
    oldest = _OLDEST_FORM.get(cls)
    if oldest is not None and oldest <= len(values) < len(schema):
        values.extend(_DEFAULTS[cls][len(values) :])  # an older form: see _OLDEST_FORM
    if len(values) != len(schema):
        raise CommandError(f"{cls.__name__}: {len(values)} fields, expected {len(schema)}")
    for i, (value, (typ, nullable)) in enumerate(zip(values, schema)):
        if value is None and nullable:
            continue
        if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
            raise CommandError(
                f"{cls.__name__}: field {i} must be {typ.__name__}, got {type(value).__name__}"
            )
    if cls is SetPartitionReplicas:
        if not all(isinstance(r, str) for r in values[2]):
            raise CommandError("SetPartitionReplicas: replicas must be strings")
        values[2] = tuple(values[2])
    if cls is SetConsumerGroup:
        values[4] = _decode_group_members(values[4])
    if cls is CompactRecords and not all(_is_int(v) for v in values[2]):
        raise CommandError("CompactRecords: removed offsets must be integers")
    return cls(*values)


def _decode_group_members(raw: list[Any]) -> tuple[GroupMemberEntry, ...]:
    """SetConsumerGroup members: [id, client id, session ms, rebalance ms, [partition, ...],
    instance id or nil]; the last field is absent in records older than static members."""
    out = []
    for m in raw:
        if not isinstance(m, list) or len(m) not in (5, 6):
            raise CommandError("SetConsumerGroup: a member must be an array of 5 or 6 fields")
        member_id, client_id, session_ms, rebalance_ms, parts = m[:5]
        instance_id = m[5] if len(m) == 6 else None
        if instance_id is not None and not isinstance(instance_id, str):
            raise CommandError("SetConsumerGroup: a member's instance id must be a string")
        if not (isinstance(member_id, str) and isinstance(client_id, str)):
            raise CommandError("SetConsumerGroup: member and client ids must be strings")
        if not (_is_int(session_ms) and _is_int(rebalance_ms)):
            raise CommandError("SetConsumerGroup: member timeouts must be integers")
        if not isinstance(parts, list) or not all(_is_int(p) for p in parts):
            raise CommandError("SetConsumerGroup: member partitions must be integers")
        out.append(
            GroupMemberEntry(
                member_id, client_id, session_ms, rebalance_ms, tuple(parts), instance_id
            )
        )
    return tuple(out)


def decode_entry_commands(data: bytes) -> list[Command]:
    """The commands of one entry's data; raises CommandError on anything malformed."""
    if not data:
        return []
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CommandError(f"entry data is not msgpack: {exc}") from exc
    if not isinstance(raw, list):
        raise CommandError("entry data must be an array of commands")
    return [_decode_one(c) for c in raw]
