"""The key layout of a node's RocksDB.

Every key starts with one namespace byte. Group ids, Raft indexes and record
offsets follow as fixed-width big-endian unsigned integers, so the byte order
RocksDB sorts by is the numeric order we iterate in: a group's log is one
contiguous key range, in index order, and a seek to ``(group, offset)`` lands
on the right batch.

    00 "identity"                      node identity (cluster, node id, incarnation, format)
    01 <node id utf-8>                 a peer's incarnation (trust on first use)
    02 <group u64>                     marker: the group exists on this node
    10 <group u64> <field u8>          Raft metadata: hard state, conf state, snapshot, log start
    20 <group u64> <index u64>         Raft log entry
    30 <group u64> <field u8>          state machine scalars (applied state, metadata blob)
    31 <group u64> <producer id u64>   partition: idempotent producer window
    32 <group u64> <consumer group>    partition: committed consumer offset
    40 <group u64> <base offset u64>   partition: one stored record batch
"""

from __future__ import annotations

import struct
from enum import IntEnum

U64 = struct.Struct(">Q")
GROUP_INDEX = struct.Struct(">QQ")  # group id, index/offset


class NS(IntEnum):
    IDENTITY = 0x00
    PEER = 0x01
    GROUP = 0x02
    RAFT_META = 0x10
    LOG = 0x20
    SM_META = 0x30
    PRODUCER = 0x31
    CONSUMER = 0x32
    BATCH = 0x40


class RaftField(IntEnum):
    HARD_STATE = 1
    CONF_STATE = 2
    SNAPSHOT = 3  # snapshot meta and data
    LOG_START = 4  # (index, term) of the last compacted entry: term(first_index-1)


class SmField(IntEnum):
    APPLIED = 1  # partition: applied index, offsets; metadata: the whole state
    COMPACTION = 2  # partition: log compaction's progress (log/partition.py)


IDENTITY_KEY = bytes([NS.IDENTITY]) + b"identity"

# Namespaces holding per-group data: deleting a group clears each of them.
GROUP_NAMESPACES = (
    NS.GROUP,
    NS.RAFT_META,
    NS.LOG,
    NS.SM_META,
    NS.PRODUCER,
    NS.CONSUMER,
    NS.BATCH,
)


def group_prefix(ns: NS, group_id: int) -> bytes:
    return bytes([ns]) + U64.pack(group_id)


def group_range(ns: NS, group_id: int) -> tuple[bytes, bytes]:
    """[begin, end) covering every key of ``group_id`` in namespace ``ns``."""
    return group_prefix(ns, group_id), group_prefix(ns, group_id + 1)


def group_marker(group_id: int) -> bytes:
    return group_prefix(NS.GROUP, group_id)


def parse_group_marker(key: bytes) -> int:
    return U64.unpack_from(key, 1)[0]


def raft_meta(group_id: int, field: RaftField) -> bytes:
    return group_prefix(NS.RAFT_META, group_id) + bytes([field])


def log_key(group_id: int, index: int) -> bytes:
    return bytes([NS.LOG]) + GROUP_INDEX.pack(group_id, index)


def index_of_log_key(key: bytes) -> int:
    return U64.unpack_from(key, 9)[0]


def sm_meta(group_id: int, field: SmField) -> bytes:
    return group_prefix(NS.SM_META, group_id) + bytes([field])


def producer_key(group_id: int, producer_id: int) -> bytes:
    return bytes([NS.PRODUCER]) + GROUP_INDEX.pack(group_id, producer_id)


def producer_of_key(key: bytes) -> int:
    return U64.unpack_from(key, 9)[0]


def consumer_key(group_id: int, consumer_group: str) -> bytes:
    return group_prefix(NS.CONSUMER, group_id) + consumer_group.encode()


def consumer_of_key(key: bytes) -> str:
    return key[9:].decode()


def batch_key(group_id: int, base_offset: int) -> bytes:
    return bytes([NS.BATCH]) + GROUP_INDEX.pack(group_id, base_offset)


def offset_of_batch_key(key: bytes) -> int:
    return U64.unpack_from(key, 9)[0]


def peer_key(node_id: str) -> bytes:
    return bytes([NS.PEER]) + node_id.encode()
