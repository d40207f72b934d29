"""On-disk encoding of the Raft values this package stores.

This is a storage format, not the wire: it is versioned by the data dir's
``format_version`` (see ``identity.py``) and owned here, so that the network
codec (``raftlog.raft.codec``) can evolve without rewriting disks.

Entries are on the hot path (every append, every re-read by the leader), so
they are a fixed struct header plus the raw data: no msgpack round trip for
the payload. The small, rare values (hard state, conf state, snapshot) are
msgpack arrays.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
from raftlog.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta

ENTRY_HEADER = struct.Struct(">QB")  # term, type; the index is in the key
INDEX_TERM = struct.Struct(">QQ")


class StoreCorruptionError(Exception):
    """A stored value could not be decoded: the data dir is damaged."""


def encode_entry(entry: Entry) -> bytes:
    return ENTRY_HEADER.pack(entry.term, entry.type) + entry.data


def decode_entry(index: int, value: bytes) -> Entry:
    try:
        term, typ = ENTRY_HEADER.unpack_from(value)
        return Entry(term=term, index=index, type=EntryType(typ), data=value[ENTRY_HEADER.size :])
    except (struct.error, ValueError) as exc:
        raise StoreCorruptionError(f"log entry {index} undecodable: {exc}") from exc


def _unpack(value: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(value, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise StoreCorruptionError(f"{what} undecodable: {exc}") from exc


def encode_hard_state(hs: HardState) -> bytes:
    return msgpack.packb([hs.term, hs.vote, hs.commit])


def decode_hard_state(value: bytes) -> HardState:
    try:
        term, vote, commit = _unpack(value, "hard state")
        return HardState(term=term, vote=vote, commit=commit)
    except (TypeError, ValueError) as exc:
        raise StoreCorruptionError(f"hard state malformed: {exc}") from exc


def _conf_state_fields(cs: ConfState) -> list[Any]:
    return [
        list(cs.voters),
        list(cs.learners),
        list(cs.voters_outgoing),
        list(cs.learners_next),
        cs.auto_leave,
    ]


def _conf_state_from(fields: list[Any]) -> ConfState:
    voters, learners, outgoing, learners_next, auto_leave = fields
    return ConfState(
        voters=tuple(voters),
        learners=tuple(learners),
        voters_outgoing=tuple(outgoing),
        learners_next=tuple(learners_next),
        auto_leave=bool(auto_leave),
    )


def encode_conf_state(cs: ConfState) -> bytes:
    return msgpack.packb(_conf_state_fields(cs))


def decode_conf_state(value: bytes) -> ConfState:
    try:
        return _conf_state_from(_unpack(value, "conf state"))
    except (TypeError, ValueError) as exc:
        raise StoreCorruptionError(f"conf state malformed: {exc}") from exc


def encode_snapshot(snap: Snapshot) -> bytes:
    meta = snap.meta
    return msgpack.packb(
        [meta.index, meta.term, _conf_state_fields(meta.conf_state), snap.data],
        use_bin_type=True,
    )


def decode_snapshot(value: bytes) -> Snapshot:
    try:
        index, term, cs, data = _unpack(value, "snapshot")
        return Snapshot(SnapshotMeta(index, term, _conf_state_from(cs)), data)
    except (TypeError, ValueError) as exc:
        raise StoreCorruptionError(f"snapshot malformed: {exc}") from exc


def encode_index_term(index: int, term: int) -> bytes:
    return INDEX_TERM.pack(index, term)


def decode_index_term(value: bytes) -> tuple[int, int]:
    try:
        return INDEX_TERM.unpack(value)
    except struct.error as exc:
        raise StoreCorruptionError(f"log start malformed: {exc}") from exc
