"""raft.codec: exact round trips (hypothesis) and one error type for malformed input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.raft import codec
from raftlog.raft.codec import CodecError
from raftlog.raft.types import (
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

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
small = st.integers(min_value=0, max_value=1 << 40)
node_ids = st.text(min_size=1, max_size=8)
ids = st.lists(node_ids, max_size=5).map(tuple)
blobs = st.binary(max_size=64)

entries = st.builds(Entry, term=small, index=small, type=st.sampled_from(EntryType), data=blobs)
hard_states = st.builds(HardState, term=u64, vote=st.none() | node_ids, commit=u64)
conf_states = st.builds(
    ConfState,
    voters=ids,
    learners=ids,
    voters_outgoing=ids,
    learners_next=ids,
    auto_leave=st.booleans(),
)
conf_changes = st.builds(
    ConfChange,
    changes=st.lists(
        st.builds(ConfChangeItem, st.sampled_from(ConfChangeType), node_ids), max_size=4
    ).map(tuple),
    enter_joint=st.booleans(),
    leave_joint=st.booleans(),
    context=blobs,
    base=st.none() | conf_states,
)
metas = st.builds(SnapshotMeta, index=u64, term=u64, conf_state=conf_states)
snapshots = st.builds(Snapshot, meta=metas, data=blobs)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=node_ids,
    frm=node_ids,
    term=u64,
    log_term=u64,
    index=u64,
    entries=st.lists(entries, max_size=4).map(tuple),
    commit=u64,
    reject=st.booleans(),
    reject_hint=u64,
    context=blobs,
    snapshot=st.none() | snapshots,
)


def _name(p: object) -> str:
    return getattr(p, "__name__", "")


PAIRS = [
    (codec.encode_entry, codec.decode_entry, entries),
    (codec.encode_hard_state, codec.decode_hard_state, hard_states),
    (codec.encode_conf_state, codec.decode_conf_state, conf_states),
    (codec.encode_conf_change, codec.decode_conf_change, conf_changes),
    (codec.encode_snapshot_meta, codec.decode_snapshot_meta, metas),
    (codec.encode_snapshot, codec.decode_snapshot, snapshots),
    (codec.encode_message, codec.decode_message, messages),
]


@pytest.mark.parametrize(
    ("enc", "dec", "strategy"), PAIRS, ids=lambda p: getattr(p, "__name__", "")
)
def test_round_trip(enc, dec, strategy) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=100, deadline=None)
    @given(strategy)
    def check(value: object) -> None:
        raw = enc(value)
        assert isinstance(raw, bytes)
        assert dec(raw) == value

    check()


def _decodes_to_valid_value_or_codec_error(enc, dec, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    """Either CodecError, or a value that re-encodes and decodes to itself."""
    try:
        value = dec(raw)
    except CodecError:
        return
    assert dec(enc(value)) == value


@pytest.mark.parametrize(
    ("enc", "dec", "strategy"), PAIRS, ids=lambda p: getattr(p, "__name__", "")
)
def test_random_bytes_raise_only_codec_error(enc, dec, strategy) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=100, deadline=None)
    @given(st.binary(max_size=80))
    def check(raw: bytes) -> None:
        _decodes_to_valid_value_or_codec_error(enc, dec, raw)

    check()


@pytest.mark.parametrize(
    ("enc", "dec", "strategy"), PAIRS, ids=lambda p: getattr(p, "__name__", "")
)
def test_mutated_valid_frames_raise_only_codec_error(enc, dec, strategy) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=100, deadline=None)
    @given(strategy, st.integers(min_value=0, max_value=200), st.integers(0, 255))
    def check(value: object, pos: int, byte: int) -> None:
        raw = bytearray(enc(value))
        raw[pos % len(raw)] = byte
        _decodes_to_valid_value_or_codec_error(enc, dec, bytes(raw))
        _decodes_to_valid_value_or_codec_error(enc, dec, bytes(raw[: pos % len(raw)]))

    check()


BAD_MESSAGES = [
    b"",
    b"\xc1",  # never-used msgpack byte
    msgpack.packb({"type": 10}),
    msgpack.packb([10, "a", "b"]),  # too short
    msgpack.packb([99, "a", "b", 1, 0, 0, [], 0, False, 0, b"", None]),  # unknown type
    msgpack.packb([10, "a", "b", -1, 0, 0, [], 0, False, 0, b"", None]),  # negative term
    msgpack.packb([10, 1, "b", 1, 0, 0, [], 0, False, 0, b"", None]),  # int node id
    msgpack.packb([10, "a", "b", 1, 0, 0, [[1, 1, 7, b""]], 0, False, 0, b"", None]),
    msgpack.packb([10, "a", "b", 1, 0, 0, [[1, 1, 0, "str"]], 0, False, 0, b"", None]),
    msgpack.packb([10, "a", "b", 1, 0, 0, 5, 0, False, 0, b"", None]),  # entries not a list
    msgpack.packb([10, "a", "b", 1, 0, 0, [], 0, 1, 0, b"", None]),  # reject not bool
    msgpack.packb([18, "a", "b", 1, 0, 0, [], 0, False, 0, b"", [[1, 1], b""]]),
    msgpack.packb([10, "a", "b", 1.5, 0, 0, [], 0, False, 0, b"", None]),  # float term
    msgpack.packb([10, "a", "b", True, 0, 0, [], 0, False, 0, b"", None]),  # bool term
    msgpack.packb([10, "a", "b", 1, 0, 0, [], 0, False, 0, b"", None]) + b"\x00",  # trailing
]


@pytest.mark.parametrize("raw", BAD_MESSAGES)
def test_malformed_message_raises_codec_error(raw: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode_message(raw)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(CodecError):
        codec.decode_entry("not bytes")  # type: ignore[arg-type]


def test_decoders_accept_trailing_fields_from_newer_versions() -> None:
    raw = msgpack.packb([1, 2, 0, b"d", "future-field"])
    assert codec.decode_entry(raw) == Entry(1, 2, EntryType.NORMAL, b"d")


def test_entries_in_message_are_compact() -> None:
    ents = tuple(Entry(5, i, data=b"x" * 100) for i in range(1, 101))
    m = Message(type=MessageType.APPEND, to="b", frm="a", term=5, entries=ents)
    raw = codec.encode_message(m)
    # 100 bytes of data + a few bytes of framing per entry, nothing re-packed.
    assert len(raw) < 100 * 110
    assert codec.decode_message(raw) == m
