"""SET_CONSUMER_GROUP in the metadata state machine: a consumer group's formed
generation is applied, validated, kept monotonic, snapshotted/restored, and
survives a reopen of the node's store (server/group_coordinator.py loads it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from raftlog.client.errors import ErrorCode
from raftlog.log.commands import (
    CommandError,
    CreateTopic,
    DeleteTopic,
    GroupMemberEntry,
    SetConsumerGroup,
    decode_entry_commands,
    encode_entry_commands,
)
from raftlog.log.metadata import ConsumerGroupInfo, MetadataStateMachine
from raftlog.log.store import NodeStore

from .test_metadata import Meta


@pytest.fixture
def meta(store: NodeStore) -> Iterator[Meta]:
    m = Meta(store)
    m.register("n1", "n2", "n3")
    assert all(r.ok for r in m.run(CreateTopic("t", 4, 3, {}), CreateTopic("u", 1, 3, {})))
    yield m


def member(mid: str, *parts: int, session_ms: int = 2000) -> GroupMemberEntry:
    return GroupMemberEntry(mid, f"client-{mid}", session_ms, 5000, tuple(parts))


def record(generation: int, *members: GroupMemberEntry, partitions: int = 4) -> SetConsumerGroup:
    return SetConsumerGroup("g", "t", generation, partitions, tuple(members))


def test_the_command_round_trips_through_entry_data() -> None:
    cmd = record(3, member("a", 0, 1), member("b", 2, 3))
    assert decode_entry_commands(encode_entry_commands([cmd])) == [cmd]
    empty = record(3)
    assert decode_entry_commands(encode_entry_commands([empty])) == [empty]


@pytest.mark.parametrize(
    "bad_member",
    [
        ["a", "c", 1000, 2000],  # a field short
        ["a", "c", "1000", 2000, [0]],  # timeout not an int
        ["a", "c", 1000, 2000, ["0"]],  # partition not an int
        [1, "c", 1000, 2000, [0]],  # id not a string
        ["a", "c", 1000, 2000, [0], 7],  # instance id not a string
        ["a", "c", 1000, 2000, [0], None, "extra"],  # a field too many
        "a",
    ],
)
def test_malformed_members_raise_command_error(bad_member: object) -> None:
    data = msgpack.packb([[16, "g", "t", 1, 4, [bad_member]]], use_bin_type=True)
    with pytest.raises(CommandError):
        decode_entry_commands(data)


def test_a_formed_generation_is_applied(meta: Meta) -> None:
    (r,) = meta.run(record(1, member("a", 0, 1), member("b", 2, 3)))
    assert r.ok
    assert meta.sm.consumer_groups["g"] == ConsumerGroupInfo(
        "g", "t", 1, 4, (member("a", 0, 1), member("b", 2, 3))
    )


def test_generations_only_move_forward(meta: Meta) -> None:
    assert meta.run(record(2, member("a", 0, 1, 2, 3)))[0].ok
    stale, same = meta.run(record(1, member("b", 0)), record(2, member("b", 0)))
    assert stale.error is ErrorCode.REBALANCE_IN_PROGRESS
    assert same.error is ErrorCode.REBALANCE_IN_PROGRESS
    assert meta.sm.consumer_groups["g"].members == (member("a", 0, 1, 2, 3),)
    # Going empty keeps the generation (the next one is above it), never below it.
    (older_empty,) = meta.run(record(1))
    assert older_empty.error is ErrorCode.REBALANCE_IN_PROGRESS
    assert meta.run(record(2))[0].ok
    assert meta.sm.consumer_groups["g"].members == ()
    assert meta.sm.consumer_groups["g"].generation == 2
    assert meta.run(record(3, member("b", 0, 1, 2, 3)))[0].ok


@pytest.mark.parametrize(
    "cmd",
    [
        record(1, member("a", 0, 1), member("a", 2, 3)),  # one member twice
        record(1, member("a", 0, 1), member("b", 1, 2)),  # partition 1 owned twice
        record(1, member("a", 0, 4)),  # no partition 4 of 4
        record(1, member("a", 0, session_ms=0)),
        SetConsumerGroup("", "t", 1, 4, ()),
        SetConsumerGroup("g", "bad topic", 1, 4, ()),
        SetConsumerGroup("g", "t", 1, 0, ()),
        # two static members with one instance id
        record(
            1, member("a", 0)._replace(instance_id="i"), member("b", 1)._replace(instance_id="i")
        ),
    ],
)
def test_invalid_records_are_refused_and_change_nothing(meta: Meta, cmd: SetConsumerGroup) -> None:
    (r,) = meta.run(cmd)
    assert r.error is ErrorCode.INVALID_REQUEST
    assert meta.sm.consumer_groups == {}


def test_deleting_a_topic_removes_its_groups_and_keeps_the_others(meta: Meta) -> None:
    meta.run(record(3, member("a", 0, 1, 2, 3)), SetConsumerGroup("other", "u", 2, 1, ()))
    (deleted,) = meta.run(DeleteTopic("t"))
    assert deleted.ok
    assert list(meta.sm.consumer_groups) == ["other"]
    # A topic created again under the name starts with no groups, and its first
    # generation is stored like any other (the old one is not in the way).
    assert meta.run(CreateTopic("t", 2, 3, {}))[0].ok
    assert meta.run(record(1, member("b", 0, 1), partitions=2))[0].ok
    assert meta.sm.consumer_groups["g"].generation == 1


def test_records_for_an_unknown_topic_store_nothing(meta: Meta) -> None:
    meta.run(record(2, member("a", 0, 1, 2, 3)))
    meta.run(DeleteTopic("t"))
    # A coordinator that formed a generation just before the delete: refused.
    (late,) = meta.run(record(3, member("a", 0, 1, 2, 3)))
    assert late.error is ErrorCode.UNKNOWN_TOPIC
    # Its group then going empty is fine, and leaves nothing behind.
    (empty,) = meta.run(record(3))
    assert empty.ok
    assert meta.sm.consumer_groups == {}


def test_groups_survive_a_reopen_of_the_store(store: NodeStore, data_dir: Path, meta: Meta) -> None:
    meta.run(record(4, member("a", 0, 1), member("b", 2, 3)))
    meta.run(SetConsumerGroup("other", "u", 2, 1, ()))
    before = dict(meta.sm.consumer_groups)
    snapshot = meta.sm.snapshot_state()
    store.close()
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as reopened:
        sm = MetadataStateMachine(reopened)
        assert sm.consumer_groups == before
        assert sm.snapshot_state() == snapshot


def test_groups_are_in_the_snapshot_and_restored_elsewhere(meta: Meta, tmp_path: Path) -> None:
    meta.run(record(7, member("a", 0, 1, 2), member("b", 3)))
    data = meta.sm.snapshot_state()
    with NodeStore.open(tmp_path / "n2", cluster="test", node_id="n2") as other:
        sm = MetadataStateMachine(other)
        batch = other.new_batch()
        sm.restore_state(data, batch)
        other.write(batch)
        assert sm.consumer_groups == meta.sm.consumer_groups
        reloaded = MetadataStateMachine(other)
        assert reloaded.consumer_groups == meta.sm.consumer_groups
        assert reloaded.snapshot_state() == data


def test_a_state_written_before_groups_were_persisted_still_loads(meta: Meta) -> None:
    state = msgpack.unpackb(meta.sm.snapshot_state(), raw=False)
    del state["consumer_groups"]
    meta.run(record(1, member("a", 0)))
    batch = meta.store.new_batch()
    meta.sm.restore_state(msgpack.packb(state, use_bin_type=True), batch)
    assert meta.sm.consumer_groups == {}


def test_static_members_keep_their_instance_id_through_the_log_and_the_snapshot(
    meta: Meta, tmp_path: Path
) -> None:
    cmd = record(2, member("a", 0, 1)._replace(instance_id="host-a"), member("b", 2, 3))
    assert decode_entry_commands(encode_entry_commands([cmd])) == [cmd]
    assert meta.run(cmd)[0].ok
    stored = meta.sm.consumer_groups["g"].members
    assert [(m.member_id, m.instance_id) for m in stored] == [("a", "host-a"), ("b", None)]
    with NodeStore.open(tmp_path / "n2", cluster="test", node_id="n2") as other:
        sm = MetadataStateMachine(other)
        batch = other.new_batch()
        sm.restore_state(meta.sm.snapshot_state(), batch)
        assert sm.consumer_groups == meta.sm.consumer_groups


def test_members_written_before_static_membership_decode_without_an_instance_id(
    meta: Meta,
) -> None:
    """Records and snapshots of older nodes hold 5-field members."""
    data = msgpack.packb([[16, "g", "t", 1, 4, [["a", "c", 1000, 2000, [0, 1]]]]])
    (cmd,) = decode_entry_commands(data)
    assert isinstance(cmd, SetConsumerGroup)
    assert cmd.members == (GroupMemberEntry("a", "c", 1000, 2000, (0, 1), None),)
    meta.run(record(1, member("a", 0)))
    state = msgpack.unpackb(meta.sm.snapshot_state(), raw=False)
    state["consumer_groups"] = [["g", "t", 3, 4, [["a", "c", 1000, 2000, [0, 1]]]]]
    meta.sm.restore_state(msgpack.packb(state, use_bin_type=True), meta.store.new_batch())
    (old,) = meta.sm.consumer_groups["g"].members
    assert (old.member_id, old.partitions, old.instance_id) == ("a", (0, 1), None)


def tombstone(generation: int, topic: str = "t") -> SetConsumerGroup:
    return SetConsumerGroup("g", topic, generation, 4, (), deleted=True)


def test_a_tombstone_round_trips_and_a_live_record_keeps_the_five_field_form() -> None:
    assert decode_entry_commands(encode_entry_commands([tombstone(5)])) == [tombstone(5)]
    # Not deleted: byte for byte the record of before deletion existed, so a
    # replica that predates it applies it.
    live = encode_entry_commands([record(3)])
    assert msgpack.unpackb(live) == [[16, "g", "t", 3, 4, []]]
    with pytest.raises(CommandError):
        decode_entry_commands(msgpack.packb([[16, "g", "t", 3, 4, [], 1]]))  # not a bool


def test_a_deletion_takes_a_number_of_its_own_and_a_new_group_counts_on(meta: Meta) -> None:
    assert meta.run(record(3, member("a", 0, 1, 2, 3)))[0].ok
    assert meta.run(record(3))[0].ok  # went empty
    (same,) = meta.run(tombstone(3))
    assert same.error is ErrorCode.REBALANCE_IN_PROGRESS  # not above the stored number
    assert meta.run(tombstone(4))[0].ok
    assert meta.sm.consumer_groups["g"] == ConsumerGroupInfo("g", "t", 4, 4, (), deleted=True)
    (refused,) = meta.run(SetConsumerGroup("g", "t", 5, 4, (member("a", 0),), deleted=True))
    assert refused.error is ErrorCode.INVALID_REQUEST  # a tombstone has no members
    assert meta.run(record(5, member("b", 0, 1, 2, 3)))[0].ok  # joined again, above it
    assert not meta.sm.consumer_groups["g"].deleted


def test_a_tombstone_survives_the_snapshot_and_a_reopen(
    store: NodeStore, data_dir: Path, meta: Meta, tmp_path: Path
) -> None:
    assert meta.run(tombstone(2))[0].ok
    assert meta.run(SetConsumerGroup("other", "u", 2, 1, ()))[0].ok
    data = meta.sm.snapshot_state()
    # Only the tombstone has the 6th field: a state without one is unchanged.
    groups = msgpack.unpackb(data, raw=False)["consumer_groups"]
    assert [len(g) for g in groups] == [6, 5]
    with NodeStore.open(tmp_path / "n2", cluster="test", node_id="n2") as other:
        sm = MetadataStateMachine(other)
        sm.restore_state(data, other.new_batch())
        assert sm.consumer_groups == meta.sm.consumer_groups
        assert sm.consumer_groups["g"].deleted and not sm.consumer_groups["other"].deleted
    before = dict(meta.sm.consumer_groups)
    store.close()
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as reopened:
        assert MetadataStateMachine(reopened).consumer_groups == before


def test_a_tombstone_of_a_deleted_topic_stores_nothing(meta: Meta) -> None:
    assert meta.run(record(2, member("a", 0)))[0].ok
    assert meta.run(DeleteTopic("t"))[0].ok
    assert meta.run(tombstone(3))[0].ok
    assert "g" not in meta.sm.consumer_groups
