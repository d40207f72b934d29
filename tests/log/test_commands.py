"""Entry command encoding: exact round trip, and one exception type for bad bytes."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.log.commands import (
    AllocProducerId,
    CommandError,
    CommandKind,
    CommitOffset,
    CreateTopic,
    DeleteOffset,
    DeleteTopic,
    DeleteUser,
    ExpireProducers,
    Produce,
    RegisterNode,
    SetLogFormat,
    SetPartitionReplicas,
    SetUser,
    TruncatePrefix,
    decode_entry_commands,
    encode_entry_commands,
)

ints = st.integers(0, 2**63 - 1)
text = st.text(max_size=20)
commands = st.one_of(
    st.builds(
        Produce,
        st.binary(max_size=50),
        ints,
        ints,
        st.none() | ints,
        st.none() | ints,
        ints,
    ),
    st.builds(CommitOffset, text, ints, text, st.none() | ints, st.none() | ints),
    st.builds(DeleteOffset, text, st.none() | ints, st.none() | ints),
    st.builds(TruncatePrefix, ints),
    st.builds(ExpireProducers, ints, st.none() | ints),
    st.builds(RegisterNode, text, text, text, st.none() | text),
    st.builds(CreateTopic, text, ints, ints, st.dictionaries(text, ints | text, max_size=3)),
    st.builds(DeleteTopic, text),
    st.just(AllocProducerId()),
    st.builds(SetPartitionReplicas, text, ints, st.lists(text, max_size=4).map(tuple)),
    st.builds(SetLogFormat, ints),
    st.builds(
        SetUser, text, st.dictionaries(text, st.lists(text, max_size=2) | text), st.booleans()
    ),
    st.builds(DeleteUser, text),
)


@settings(max_examples=100, deadline=None)
@given(cmds=st.lists(commands, max_size=6))
def test_round_trip_is_exact(cmds: list) -> None:
    assert decode_entry_commands(encode_entry_commands(cmds)) == cmds


def test_no_commands_is_the_empty_noop_data() -> None:
    assert encode_entry_commands([]) == b""
    assert decode_entry_commands(b"") == []


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # never-used msgpack byte
        b"\x93\x01",  # truncated array
        _pack({"not": "a list"}),
        _pack([5]),  # a command that is not an array
        _pack([[]]),  # empty command
        _pack([[99, "x"]]),  # unknown kind
        _pack([[True]]),  # bool is not a kind
        _pack([[CommandKind.PRODUCE, b"r", 1, 0, None, None]]),  # missing field
        _pack([[CommandKind.PRODUCE, "str", 1, 0, None, None, 0]]),  # records not bytes
        _pack([[CommandKind.PRODUCE, b"r", True, 0, None, None, 0]]),  # bool count
        _pack([[CommandKind.PRODUCE, b"r", 1, 0, "pid", None, 0]]),
        _pack([[CommandKind.COMMIT_OFFSET, "g", 1.5, ""]]),
        _pack([[CommandKind.COMMIT_OFFSET, "g", 1, "", "7"]]),  # generation not an int
        _pack([[CommandKind.COMMIT_OFFSET, "g", 1, "", True]]),  # bool generation
        _pack([[CommandKind.COMMIT_OFFSET, "g", 1, "", 7, 8, 9]]),  # a 6th field
        _pack([[CommandKind.COMMIT_OFFSET, "g", 1, "", 7, "8"]]),  # a str stamp
        _pack([[CommandKind.DELETE_OFFSET, "g", None, 1.5]]),  # a float cut-off
        _pack([[CommandKind.SET_LOG_FORMAT]]),
        _pack([[CommandKind.SET_LOG_FORMAT, "2"]]),
        _pack([[CommandKind.CREATE_TOPIC, "t", 1, 1, []]]),
        _pack([[CommandKind.SET_PARTITION_REPLICAS, "t", 0, ["n1", 2]]]),
    ],
)
def test_malformed_data_raises_command_error(data: bytes) -> None:
    with pytest.raises(CommandError):
        decode_entry_commands(data)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=1, max_size=64))
def test_random_bytes_decode_or_raise_command_error_only(data: bytes) -> None:
    # Anything else (TypeError, ValueError, ...) would escape and fail the test.
    with contextlib.suppress(CommandError):
        decode_entry_commands(data)


def test_an_unfenced_commit_keeps_the_three_field_form_of_old_logs() -> None:
    # Entries written before fencing existed hold [kind, group, offset, metadata]:
    # they must still decode (as unfenced), and an unfenced commit is still
    # written that way, so a replica that predates fencing can apply it.
    old = _pack([[CommandKind.COMMIT_OFFSET, "g", 42, "m"]])
    assert decode_entry_commands(old) == [CommitOffset("g", 42, "m", None)]
    assert encode_entry_commands([CommitOffset("g", 42, "m")]) == old
    fenced = encode_entry_commands([CommitOffset("g", 42, "m", generation=3)])
    assert msgpack.unpackb(fenced) == [[CommandKind.COMMIT_OFFSET, "g", 42, "m", 3]]
    assert decode_entry_commands(fenced) == [CommitOffset("g", 42, "m", 3)]


def test_a_delete_offset_round_trips_and_refuses_wrong_types() -> None:
    for cmd in (DeleteOffset("g", 4), DeleteOffset("g", None)):
        assert decode_entry_commands(encode_entry_commands([cmd])) == [cmd]
    for bad in (["g", True], ["g", "4"], [7, 4], ["g"]):
        with pytest.raises(CommandError):
            decode_entry_commands(_pack([[CommandKind.DELETE_OFFSET, *bad]]))


def test_commit_stamps_extend_the_forms_of_old_logs_only_when_set() -> None:
    # Log format COMMIT_STAMPS (log/features.py): a stamped commit has a 5th field
    # (its generation then possibly nil) and a conditional delete a 3rd. Unset,
    # both keep the forms a replica of an older format decodes.
    stamped = encode_entry_commands([CommitOffset("g", 42, "m", None, 1_700_000_000_000)])
    assert msgpack.unpackb(stamped) == [
        [CommandKind.COMMIT_OFFSET, "g", 42, "m", None, 1_700_000_000_000]
    ]
    assert decode_entry_commands(stamped) == [CommitOffset("g", 42, "m", None, 1_700_000_000_000)]
    fenced = encode_entry_commands([CommitOffset("g", 42, "m", 3)])
    assert msgpack.unpackb(fenced) == [[CommandKind.COMMIT_OFFSET, "g", 42, "m", 3]]
    delete = encode_entry_commands([DeleteOffset("g", None, 99)])
    assert msgpack.unpackb(delete) == [[CommandKind.DELETE_OFFSET, "g", None, 99]]
    assert msgpack.unpackb(encode_entry_commands([DeleteOffset("g", 4)])) == [
        [CommandKind.DELETE_OFFSET, "g", 4]
    ]
