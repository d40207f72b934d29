"""The raftlog wire protocol: the one definition used by both client and server.

Framing (DESIGN.md §4)
    TCP. Each frame is a 4-byte big-endian length, then that many bytes of one
    msgpack map (``bin`` for bytes, ``str`` for text). A frame longer than the
    receiver's ``max_frame_bytes`` closes that connection and nothing else.

Hello
    The first frame on every connection, from the dialler::

        {"type": "hello", "version": 1, "role": "client" | "peer",
         "id": <client or node id>, "credential": <str or None>,
         "cluster": <cluster name or None>, "incarnation": <str or None>}

    A node's peer hello adds ``"log_format"`` (the highest it reads) and
    ``"peer_address"`` (its own listener for the other nodes, or nil).

    The server answers ``{"type": "hello_ok", "version": 1, "node": <id>,
    "cluster": <name>, "limits": {"max_record_bytes": <int>, "max_batch_bytes":
    <int>}}`` (a client's record and batch checks follow the node's [limits];
    older nodes send no ``limits``) or an error reply (``id`` 0) and closes.

Requests and replies (role "client")
    A request is ``{"type": <op>, "id": <correlation id, int > 0>, ...fields}``.
    A reply is ``{"id": <same id>, "ok": True, ...result}`` or
    ``{"id": <same id>, "ok": False, "error": <ErrorCode>, "message": <str>,
    ...details}``. Replies may come out of order (pipelining). ``REQUESTS``
    below lists every op and the type of each field; ``validate_request``
    checks a decoded frame against it.

Peer traffic (role "peer")
    One-way frames ``{"type": "raft", "msgs": [[group_id, <encoded Message>],
    ...]}`` batching all groups' messages of one driver turn; no replies.

Record batches
    A produce carries one opaque batch: ``encode_records`` packs the records
    into a msgpack array; ``count`` and ``crc`` (zlib.crc32 of the bytes)
    travel beside it. The server checks size, count and CRC but never unpacks
    the records (DESIGN.md §9), so a batch the Producer compressed
    (client/compression.py) is stored as it came. A fetch returns stored batches as
    ``[base_offset, timestamp_ms, count, records_bytes]``; the client decodes
    and drops the records before the offset it asked for.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

from .compression import compress, decompress, is_compressed
from .errors import ErrorCode

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">I")

# Defaults; a node's limits are configurable and documented in the README.
DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024  # the largest produce batch (Kafka's max.message.bytes)
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024  # checked by the client per record


class FrameError(Exception):
    """A frame that cannot be decoded; the connection that sent it is closed."""


class FrameTooLargeError(FrameError):
    pass


# ---------------------------------------------------------------- framing


def encode_frame(obj: dict[str, Any]) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def encode_frames(objs: Iterable[dict[str, Any]]) -> bytes:
    """Several frames as one buffer, for one socket write per loop turn."""
    return b"".join(encode_frame(obj) for obj in objs)


class FrameDecoder:
    """Incremental decoder: feed bytes, take whole frames out.

    Raises FrameTooLargeError as soon as a header announces a frame over the
    limit (before buffering it), and FrameError on a body that is not a
    msgpack map.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        frames: list[dict[str, Any]] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER.size:
            (length,) = HEADER.unpack_from(buf, pos)
            if length > self.max_frame_bytes:
                raise FrameTooLargeError(
                    f"frame of {length} bytes exceeds max_frame_bytes={self.max_frame_bytes}"
                )
            end = pos + HEADER.size + length
            if len(buf) < end:
                break
            frames.append(decode_body(bytes(buf[pos + HEADER.size : end])))
            pos = end
        if pos:
            del buf[:pos]
        return frames


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise FrameError(f"frame is not valid msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise FrameError(f"frame is a {type(obj).__name__}, expected a map")
    return obj


# ---------------------------------------------------------------- hello


# The client id a node's snapshot transfer connects with ("replica:<node id>").
REPLICA_CLIENT_PREFIX = "replica:"


class NotSaid(enum.Enum):
    """A hello field left out (an older node), as against one said to be nil."""

    NOT_SAID = enum.auto()


NOT_SAID = NotSaid.NOT_SAID


def hello(
    role: str,
    ident: str,
    *,
    credential: str | None = None,
    cluster: str | None = None,
    incarnation: str | None = None,
    peer_credential: str | None = None,
    log_format: int | None = None,
    peer_address: str | NotSaid | None = NOT_SAID,
) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "hello",
        "version": PROTOCOL_VERSION,
        "role": role,
        "id": ident,
        "credential": credential,
        "cluster": cluster,
        "incarnation": incarnation,
    }
    if peer_credential is not None:
        # Only a node's snapshot transfer sends it (server/listener.py
        # _is_replica_transfer); absent from every other hello.
        frame["peer_credential"] = peer_credential
    if log_format is not None:
        # A node's peer link: the highest log format it reads (log/features.py).
        # Absent from a node older than log formats, which reads only the first.
        frame["log_format"] = log_format
    if peer_address is not NOT_SAID:
        # A node's peer link: the peer_address its own cluster.toml gives it (nil:
        # none), which the controller records for the nodes that learn of it
        # from the metadata (server/membership.py register_nodes). Absent
        # from older nodes, whose record then follows the controller's file.
        frame["peer_address"] = peer_address
    return frame


# The [limits] a node announces to each client in hello_ok ("limits"), so the
# client's checks line up with the node's without the application configuring
# them twice, and it retires idle connections before the node closes them
# (connections_max_idle_ms, absent when the node keeps them for good).
ANNOUNCED_LIMITS = ("max_record_bytes", "max_batch_bytes", "connections_max_idle_ms")


def hello_ok(node: str, cluster: str, limits: dict[str, int] | None = None) -> dict[str, Any]:
    reply = {"type": "hello_ok", "version": PROTOCOL_VERSION, "node": node, "cluster": cluster}
    if limits:
        reply["limits"] = limits
    return reply


def announced_limits(reply: dict[str, Any]) -> dict[str, int]:
    """The ``limits`` of a hello_ok that are well formed (positive integers of
    ``ANNOUNCED_LIMITS``); an older node announces none."""
    given = reply.get("limits")
    if not isinstance(given, dict):
        return {}
    return {
        name: value
        for name in ANNOUNCED_LIMITS
        if type(value := given.get(name)) is int and value > 0
    }


# ---------------------------------------------------------------- replies


def ok_reply(req_id: int, **result: Any) -> dict[str, Any]:
    return {"id": req_id, "ok": True, **result}


def error_reply(req_id: int, code: ErrorCode, message: str, **details: Any) -> dict[str, Any]:
    return {"id": req_id, "ok": False, "error": code.value, "message": message, **details}


# ---------------------------------------------------------------- request schemas

# Field type specs: a Python type, or a tuple of accepted types. Optional
# fields may be absent or None. Booleans are not accepted where ints are.


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: type | tuple[type, ...]
    required: bool = True


def _f(name: str, typ: type | tuple[type, ...], required: bool = True) -> Field:
    return Field(name, typ, required)


# Read consistency levels (fetch, list_offsets, metadata); the default is the first.
LINEARIZABLE = "linearizable"
SERIALIZABLE = "serializable"
CONSISTENCIES = (LINEARIZABLE, SERIALIZABLE)

# Consumer-group rebalance protocols (group_join "rebalance"); the default is the first.
EAGER = "eager"
COOPERATIVE = "cooperative"
REBALANCE_PROTOCOLS = (EAGER, COOPERATIVE)

# A partition read's optional consistency: "linearizable" (the default: the
# leader after a ReadIndex round) or "serializable" (any replica's own applied
# copy, server/replica_reads.py), with the Raft group the client's metadata
# maps the partition to, so a replica with other metadata refuses.
_READ_CONSISTENCY = (_f("consistency", str, False), _f("raft_group", int, False))

REQUESTS: dict[str, tuple[Field, ...]] = {
    # Cluster metadata: nodes, topics, partitions, replicas, leaders.
    # "consistency": "serializable" answers from the node's own view, without
    # confirming it with the metadata group's leader (it may be stale).
    "metadata": (_f("topics", list, False), _f("consistency", str, False)),
    "create_topic": (
        _f("topic", str),
        _f("partitions", int),
        _f("replicas", int),
        _f("config", dict, False),  # retention_bytes, retention_ms (log.metadata)
        _f("timeout_ms", int, False),
    ),
    # Grow to ``partitions`` (never shrink) and/or set config keys (None removes one).
    "alter_topic": (
        _f("topic", str),
        _f("partitions", int, False),
        _f("config", dict, False),
        _f("timeout_ms", int, False),
    ),
    "delete_topic": (_f("topic", str),),
    "list_topics": (),
    "describe_topic": (_f("topic", str),),
    # Allocate a cluster-unique producer id (through the metadata group).
    "init_producer": (),
    "produce": (
        _f("topic", str),
        _f("partition", int),
        _f("records", bytes),  # encode_records(...)
        _f("count", int),
        _f("crc", int),
        _f("producer_id", int, False),
        _f("sequence", int, False),  # sequence of the batch's first record
        _f("timeout_ms", int, False),
    ),
    "fetch": (
        _f("topic", str),
        _f("partition", int),
        _f("offset", int),
        _f("max_bytes", int, False),
        _f("max_records", int, False),
        _f("max_wait_ms", int, False),
        *_READ_CONSISTENCY,
    ),
    # Start and end offsets of a partition (linearizable unless serializable).
    # With ``timestamp_ms`` the reply also has ``offset`` and ``timestamp_ms``: the
    # first record the leader stamped at or after that time (both None if none).
    "list_offsets": (
        _f("topic", str),
        _f("partition", int),
        _f("timestamp_ms", int, False),
        *_READ_CONSISTENCY,
    ),
    "commit_offset": (
        _f("group", str),
        _f("topic", str),
        _f("partition", int),
        _f("offset", int),
        _f("metadata", str, False),
        # The committing member's group generation (group-managed consumers);
        # absent = unfenced. See CommitOffset in log/commands.py.
        _f("generation", int, False),
        # True for an operator's reset (raftlog group reset-offsets): such a
        # commit is audited (server/audit.py); others are the data path.
        _f("reset", bool, False),
    ),
    "fetch_committed": (_f("group", str), _f("topic", str), _f("partition", int)),
    # Forget the group's committed offset on one partition, fenced by generation
    # like a commit (DeleteOffset in log/commands.py; raftlog group delete).
    "delete_offset": (
        _f("group", str),
        _f("topic", str),
        _f("partition", int),
        _f("generation", int, False),
    ),
    # This node's view of every group it hosts (leader, term, commit, applied,
    # replicas' match), or of those of ``groups`` (ids) only: a poll of one group's
    # applied index (raftlog user --wait) need not list a node's every partition.
    "cluster_status": (_f("groups", list, False),),
    # Re-read this node's config file for the TLS files and [auth], as SIGHUP does:
    # {node, reloaded: {tls?: null | why not, auth?: null | why not}, auth?: {...}}.
    "config_reload": (),
    # Operations (membership issue): see server handlers.
    "member_list": (),
    "member_add": (_f("node", str), _f("address", str), _f("timeout_ms", int, False)),
    "member_remove": (_f("node", str), _f("timeout_ms", int, False)),
    "leader_transfer": (
        _f("topic", str),
        _f("partition", int),
        _f("to", str),
        _f("timeout_ms", int, False),
    ),
    # Hand the metadata group's (group 0, the controller's) leadership to voter ``to``.
    "metadata_leader_transfer": (_f("to", str), _f("timeout_ms", int, False)),
    "partition_reassign": (
        _f("topic", str),
        _f("partition", int),
        _f("replicas", list),
        _f("timeout_ms", int, False),
        # "all" (default): the group's conf, then metadata if this node leads
        # group 0; "group" or "metadata": only that half.
        _f("phase", str, False),
    ),
    # Users kept in the metadata log (log/users.py, server/user_ops.py). ``user``
    # holds a [[auth.user]] table's keys, with ``token_sha256`` (the SHA-256 of
    # the token, hex) for ``token``. user_alter changes only the keys given (a
    # None value removes one). Both reply {user: {name, source, token: bool,
    # read, write, admin, groups, deny_read, deny_write, deny_admin, deny_groups,
    # cluster, tls_names, ...quotas}, metadata_index},
    # user_delete {metadata_index}: the metadata log index the change was
    # applied at, which a node's cluster_status ``applied`` of group 0 reaches
    # once that node authenticates by it.
    "user_create": (_f("name", str), _f("user", dict), _f("timeout_ms", int, False)),
    "user_alter": (_f("name", str), _f("user", dict), _f("timeout_ms", int, False)),
    "user_delete": (_f("name", str), _f("timeout_ms", int, False)),
    # {users: [as above, from the metadata log and the answering node's file],
    #  authenticates_clients: bool}
    "user_list": (),
    # Consumer groups (server/group_ops.py), answered by the metadata group's
    # leader (the coordinator). group_join replies {member_id, generation,
    # state, partitions, confirmed}; partitions is None while the group is
    # rebalancing: join again with the member_id (the server holds a join up to
    # max_wait_ms). ``owned``: the partitions a cooperative member keeps
    # consuming while it rejoins (none are given to another member meanwhile).
    # ``confirmed``: the node checked with a quorum that it still coordinates,
    # so the member may keep its partitions a session timeout from its request.
    "group_join": (
        _f("group", str),
        _f("topic", str),
        _f("member_id", str, False),
        # A static member's group_instance_id (server/group_coordinator.py).
        _f("instance_id", str, False),
        _f("session_timeout_ms", int, False),
        _f("rebalance_timeout_ms", int, False),
        _f("max_wait_ms", int, False),
        _f("owned", list, False),
        _f("rebalance", str, False),  # "eager" (default) or "cooperative"
    ),
    # ok, or REBALANCE_IN_PROGRESS (rejoin) / UNKNOWN_MEMBER (join again) /
    # FENCED_INSTANCE_ID (a newer member took this one's instance id: stop).
    "group_heartbeat": (_f("group", str), _f("member_id", str), _f("generation", int)),
    "group_leave": (_f("group", str), _f("member_id", str)),
    # {group, topic, state, generation,
    #  members: [{member_id, client_id, partitions, instance_id, rebalance}],
    #  withheld: [partitions a cooperative rebalance has not handed out yet]}
    "group_describe": (_f("group", str),),
    # {groups: [the group_describe reply of each group the coordinator knows]}
    "group_list": (),
    # Delete a group with no members (GROUP_NOT_EMPTY otherwise; UNKNOWN_GROUP for
    # one the coordinator never knew): {group, topic, generation, partitions}. The
    # caller then deletes its offsets (delete_offset) with that generation.
    # ``topic``, when given, must be the group's (INVALID_REQUEST otherwise).
    "group_delete": (_f("group", str), _f("topic", str, False)),
    # Peer to peer (server/snapshot_transfer.py): committed batches of a group from
    # ``offset``, for a follower installing a snapshot. ``node`` is the asking
    # node; ``token`` its [auth] peer_token when the cluster has one.
    "replica_fetch": (
        _f("group", int),
        _f("offset", int),
        _f("max_bytes", int, False),
        _f("node", str),
        _f("token", str, False),
    ),
}


class RequestError(Exception):
    """A request that fails validation; becomes an INVALID_REQUEST reply."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _type_name(typ: type | tuple[type, ...]) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def validate_request(frame: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    """Check a decoded request frame; return (correlation id, op, fields).

    Raises RequestError with INVALID_REQUEST and a message naming the bad
    field. A frame without a usable ``id`` is answered with id 0.
    """
    req_id = frame.get("id")
    if not isinstance(req_id, int) or isinstance(req_id, bool) or req_id <= 0:
        raise RequestError(ErrorCode.INVALID_REQUEST, "request 'id' must be a positive integer")
    op = frame.get("type")
    if not isinstance(op, str) or op not in REQUESTS:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"unknown request type {op!r}")
    fields: dict[str, Any] = {}
    for spec in REQUESTS[op]:
        value = frame.get(spec.name)
        if value is None:
            if spec.required:
                raise RequestError(
                    ErrorCode.INVALID_REQUEST, f"{op}: missing required field {spec.name!r}"
                )
            continue
        ok = isinstance(value, spec.type) and not (
            isinstance(value, bool) and spec.type is int
        )
        if not ok:
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                f"{op}: field {spec.name!r} must be {_type_name(spec.type)}, "
                f"got {type(value).__name__}",
            )
        fields[spec.name] = value
    return req_id, op, fields


# ---------------------------------------------------------------- record batches


class Record(NamedTuple):
    """One consumed record: immutable, and a named tuple (like kafka-python's
    ConsumerRecord) because a consumer builds hundreds of thousands per second:
    a frozen dataclass costs ~0.7 µs each to construct, a named tuple ~0.13 µs."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None  # None: a tombstone (a compacted topic's delete)
    headers: dict[str, bytes] | None = None


def encode_records(
    records: Sequence[tuple[bytes | None, bytes, dict[str, bytes] | None, int | None]],
) -> tuple[bytes, int, int]:
    """Pack ``(key, value, headers, timestamp_ms)`` tuples into one batch.

    Returns (records_bytes, count, crc). ``timestamp_ms`` None means "use the
    leader's append time".
    """
    blob = msgpack.packb(
        [[ts, key, value, headers] for key, value, headers, ts in records], use_bin_type=True
    )
    return blob, len(records), zlib.crc32(blob)


def encode_record_rows(
    rows: Sequence[Sequence[Any]], compression: str | None = None
) -> tuple[bytes, int, int]:
    """Like ``encode_records`` for rows already in wire order
    (``[timestamp_ms, key, value, headers]``): one msgpack call, no per-record
    Python work (the batching Producer keeps its rows this way).

    ``compression`` (gzip, lz4, zstd; None or "none": off) compresses the packed
    batch (client/compression.py); the CRC covers the bytes that travel. A
    batch that shrinks by less than 1/16 goes uncompressed (random or already
    compressed values): it never outgrows the batch limit, and its readers
    skip a decompression that saves nothing."""
    blob = msgpack.packb(rows, use_bin_type=True)
    if compression and compression != "none":
        packed = compress(blob, compression)
        if len(packed) <= len(blob) - len(blob) // 16:
            blob = packed
    return blob, len(rows), zlib.crc32(blob)


def decode_batch(
    base_offset: int, timestamp_ms: int, records_bytes: bytes, min_offset: int = 0
) -> list[Record]:
    """Unpack a stored batch into Records, dropping those below ``min_offset``."""
    if is_compressed(records_bytes):
        records_bytes = decompress(records_bytes)
    rows = msgpack.unpackb(records_bytes, raw=False, strict_map_key=False)
    if rows and type(rows[0]) is int:
        return _decode_compacted(base_offset, timestamp_ms, rows, min_offset)
    skip = max(0, min_offset - base_offset)
    new = tuple.__new__  # Record._make without its per-call overhead: the hot loop
    return [
        new(Record, (base_offset + i, timestamp_ms if ts is None else ts, key, value, headers))
        for i, (ts, key, value, headers) in enumerate(rows[skip:] if skip else rows, skip)
    ]


def _decode_compacted(
    base_offset: int, timestamp_ms: int, rows: list[Any], min_offset: int
) -> list[Record]:
    """A batch of a compacted topic (log/compaction.py): its rows start with an
    integer, and each integer stands for that many removed records, whose
    offsets are skipped. Offsets of the records that stay never change."""
    out = []
    offset = base_offset
    for row in rows:
        if type(row) is int:
            offset += row
            continue
        if offset >= min_offset:
            ts, key, value, headers = row
            out.append(Record(offset, timestamp_ms if ts is None else ts, key, value, headers))
        offset += 1
    return out


def crc_of(records_bytes: bytes) -> int:
    return zlib.crc32(records_bytes)
