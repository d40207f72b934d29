"""msgpack encoding of the core's types: compact arrays, exact round trips.

Every value is a positional msgpack array (no field names on the wire). A
Message's entries are nested arrays inside ONE ``packb`` call, so entry data
bytes are copied once, never packed into bytes and re-packed.

Decoding treats its input as untrusted (a peer may be buggy): any malformed
input -- bad msgpack, wrong arity, wrong types, unknown enum values, negative
numbers -- raises ``CodecError`` and nothing else.

Layouts (version-free; add fields only at the end, decoders accept extra
trailing fields so old nodes can read newer frames):

- Entry:        [term, index, type, data]
- HardState:    [term, vote|nil, commit]
- ConfState:    [voters, learners, voters_outgoing, learners_next, auto_leave]
- ConfChange:   [[[type, node_id], ...], enter_joint, leave_joint, context, base?]
                (base: a ConfState, present only when set)
- SnapshotMeta: [index, term, ConfState]
- Snapshot:     [SnapshotMeta, data]
- Message:      [type, to, frm, term, log_term, index, [Entry...], commit, reject,
                 reject_hint, context, Snapshot|nil]
"""

from __future__ import annotations

from typing import Any

import msgpack

from .types import (
    ConfChange,
    ConfChangeItem,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)


class CodecError(ValueError):
    """Bytes that do not decode to a valid value."""


_ENTRY_TYPES = {int(t): t for t in EntryType}
_MSG_TYPES = {int(t): t for t in MessageType}
_CC_TYPES = {int(t): t for t in ConfChangeType}


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(raw: bytes) -> Any:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(raw).__name__}")
    try:
        return msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types on bad input
        raise CodecError(f"invalid msgpack: {exc}") from exc


# ---- field checks -------------------------------------------------------------


def _arr(v: Any, n: int, what: str) -> list[Any]:
    if type(v) is not list or len(v) < n:
        raise CodecError(f"{what}: expected array of >= {n} items")
    return v


def _uint(v: Any, what: str) -> int:
    if type(v) is not int or v < 0:
        raise CodecError(f"{what}: expected unsigned int, got {v!r}")
    return v


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise CodecError(f"{what}: expected bool")
    return v


def _bin(v: Any, what: str) -> bytes:
    if type(v) is not bytes:
        raise CodecError(f"{what}: expected bytes")
    return v


def _str(v: Any, what: str) -> str:
    if type(v) is not str:
        raise CodecError(f"{what}: expected str")
    return v


def _strs(v: Any, what: str) -> tuple[str, ...]:
    if type(v) is not list:
        raise CodecError(f"{what}: expected array")
    return tuple(_str(s, what) for s in v)


def _enum(table: dict[int, Any], v: Any, what: str) -> Any:
    try:
        return table[v]
    except (KeyError, TypeError):
        raise CodecError(f"{what}: unknown value {v!r}") from None


# ---- Entry ----------------------------------------------------------------------


def _entry_obj(e: Entry) -> list[Any]:
    return [e.term, e.index, int(e.type), e.data]


def _entry_from(v: Any) -> Entry:
    a = _arr(v, 4, "entry")
    return Entry(
        term=_uint(a[0], "entry.term"),
        index=_uint(a[1], "entry.index"),
        type=_enum(_ENTRY_TYPES, a[2], "entry.type"),
        data=_bin(a[3], "entry.data"),
    )


def _entries_from(items: list[Any]) -> tuple[Entry, ...]:
    """The hot path of decoding an APPEND: the checks of ``_entry_from``, inlined."""
    out = []
    types = _ENTRY_TYPES
    for v in items:
        if type(v) is not list or len(v) < 4:
            raise CodecError("entry: expected array of >= 4 items")
        term, index, etype, data = v[0], v[1], v[2], v[3]
        if (
            type(term) is not int
            or term < 0
            or type(index) is not int
            or index < 0
            or type(etype) is not int
            or etype not in types
            or type(data) is not bytes
        ):
            raise CodecError(f"entry: malformed {v[:3]!r}")
        out.append(Entry(term, index, types[etype], data))
    return tuple(out)


def encode_entry(e: Entry) -> bytes:
    return _pack(_entry_obj(e))


def decode_entry(raw: bytes) -> Entry:
    return _entry_from(_unpack(raw))


# ---- HardState --------------------------------------------------------------------


def encode_hard_state(hs: HardState) -> bytes:
    return _pack([hs.term, hs.vote, hs.commit])


def decode_hard_state(raw: bytes) -> HardState:
    a = _arr(_unpack(raw), 3, "hard_state")
    vote = None if a[1] is None else _str(a[1], "hard_state.vote")
    return HardState(_uint(a[0], "hard_state.term"), vote, _uint(a[2], "hard_state.commit"))


# ---- ConfState ----------------------------------------------------------------------


def _conf_state_obj(cs: ConfState) -> list[Any]:
    return [
        list(cs.voters),
        list(cs.learners),
        list(cs.voters_outgoing),
        list(cs.learners_next),
        cs.auto_leave,
    ]


def _conf_state_from(v: Any) -> ConfState:
    a = _arr(v, 5, "conf_state")
    return ConfState(
        voters=_strs(a[0], "conf_state.voters"),
        learners=_strs(a[1], "conf_state.learners"),
        voters_outgoing=_strs(a[2], "conf_state.voters_outgoing"),
        learners_next=_strs(a[3], "conf_state.learners_next"),
        auto_leave=_bool(a[4], "conf_state.auto_leave"),
    )


def encode_conf_state(cs: ConfState) -> bytes:
    return _pack(_conf_state_obj(cs))


def decode_conf_state(raw: bytes) -> ConfState:
    return _conf_state_from(_unpack(raw))


# ---- ConfChange -----------------------------------------------------------------


def encode_conf_change(cc: ConfChange) -> bytes:
    obj: list[Any] = [
        [[int(it.type), it.node_id] for it in cc.changes],
        cc.enter_joint,
        cc.leave_joint,
        cc.context,
    ]
    if cc.base is not None:
        # Appended only when set: changes without a base encode as before.
        obj.append(_conf_state_obj(cc.base))
    return _pack(obj)


def decode_conf_change(raw: bytes) -> ConfChange:
    a = _arr(_unpack(raw), 4, "conf_change")
    if type(a[0]) is not list:
        raise CodecError("conf_change.changes: expected array")
    items = []
    for it in a[0]:
        pair = _arr(it, 2, "conf_change.item")
        items.append(
            ConfChangeItem(
                _enum(_CC_TYPES, pair[0], "conf_change.item.type"),
                _str(pair[1], "conf_change.item.node_id"),
            )
        )
    return ConfChange(
        changes=tuple(items),
        enter_joint=_bool(a[1], "conf_change.enter_joint"),
        leave_joint=_bool(a[2], "conf_change.leave_joint"),
        context=_bin(a[3], "conf_change.context"),
        base=_conf_state_from(a[4]) if len(a) > 4 and a[4] is not None else None,
    )


# ---- Snapshot -------------------------------------------------------------------


def _snapshot_meta_obj(m: SnapshotMeta) -> list[Any]:
    return [m.index, m.term, _conf_state_obj(m.conf_state)]


def _snapshot_meta_from(v: Any) -> SnapshotMeta:
    a = _arr(v, 3, "snapshot_meta")
    return SnapshotMeta(
        _uint(a[0], "snapshot_meta.index"),
        _uint(a[1], "snapshot_meta.term"),
        _conf_state_from(a[2]),
    )


def encode_snapshot_meta(m: SnapshotMeta) -> bytes:
    return _pack(_snapshot_meta_obj(m))


def decode_snapshot_meta(raw: bytes) -> SnapshotMeta:
    return _snapshot_meta_from(_unpack(raw))


def _snapshot_obj(s: Snapshot) -> list[Any]:
    return [_snapshot_meta_obj(s.meta), s.data]


def _snapshot_from(v: Any) -> Snapshot:
    a = _arr(v, 2, "snapshot")
    return Snapshot(_snapshot_meta_from(a[0]), _bin(a[1], "snapshot.data"))


def encode_snapshot(s: Snapshot) -> bytes:
    return _pack(_snapshot_obj(s))


def decode_snapshot(raw: bytes) -> Snapshot:
    return _snapshot_from(_unpack(raw))


# ---- Message --------------------------------------------------------------------


def message_obj(m: Message) -> list[Any]:
    """The msgpack-ready array of ``m``, for drivers that batch many messages in one frame."""
    return [
        int(m.type),
        m.to,
        m.frm,
        m.term,
        m.log_term,
        m.index,
        [[e.term, e.index, int(e.type), e.data] for e in m.entries],
        m.commit,
        m.reject,
        m.reject_hint,
        m.context,
        None if m.snapshot is None else _snapshot_obj(m.snapshot),
    ]


def message_from_obj(v: Any) -> Message:
    """Inverse of ``message_obj``; raises CodecError on anything malformed."""
    a = _arr(v, 12, "message")
    if type(a[6]) is not list:
        raise CodecError("message.entries: expected array")
    return Message(
        type=_enum(_MSG_TYPES, a[0], "message.type"),
        to=_str(a[1], "message.to"),
        frm=_str(a[2], "message.frm"),
        term=_uint(a[3], "message.term"),
        log_term=_uint(a[4], "message.log_term"),
        index=_uint(a[5], "message.index"),
        entries=_entries_from(a[6]),
        commit=_uint(a[7], "message.commit"),
        reject=_bool(a[8], "message.reject"),
        reject_hint=_uint(a[9], "message.reject_hint"),
        context=_bin(a[10], "message.context"),
        snapshot=None if a[11] is None else _snapshot_from(a[11]),
    )


def encode_message(m: Message) -> bytes:
    return _pack(message_obj(m))


def decode_message(raw: bytes) -> Message:
    return message_from_obj(_unpack(raw))
