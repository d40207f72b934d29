"""ALTER_TOPIC in the metadata state machine: more partitions, config changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from raftlog.client.errors import ErrorCode
from raftlog.log.commands import AlterTopic, decode_entry_commands, encode_entry_commands
from raftlog.log.metadata import (
    CreateTopic,
    DeleteTopic,
    MetadataStateMachine,
    place_replicas,
    topic_config_problem,
)
from raftlog.log.store import NodeStore

from .test_metadata import Meta


@pytest.fixture
def meta(store: NodeStore) -> Iterator[Meta]:
    m = Meta(store)
    m.register("n1", "n2", "n3")
    yield m


def test_the_command_round_trips_through_entry_data() -> None:
    cmd = AlterTopic("t", 6, {"retention_ms": 10, "retention_bytes": None})
    assert decode_entry_commands(encode_entry_commands([cmd])) == [cmd]


def test_growing_adds_partitions_on_fresh_groups_with_the_topics_replication(meta: Meta) -> None:
    meta.run(CreateTopic("t", 2, 2), CreateTopic("other", 1, 3))
    before = list(meta.sm.topics["t"].partitions)
    (r,) = meta.run(AlterTopic("t", 4))
    assert r.ok and r.topic is not None
    parts = meta.sm.topics["t"].partitions
    assert parts[:2] == before  # existing partitions keep their groups and replicas
    # Group ids are never reused: 1-2 are t's, 3 is other's, the new ones follow.
    assert [(p.partition, p.group_id) for p in parts[2:]] == [(2, 4), (3, 5)]
    assert [p.replicas for p in parts[2:]] == [
        place_replicas(4, ["n1", "n2", "n3"], 2),
        place_replicas(5, ["n1", "n2", "n3"], 2),
    ]
    assert meta.sm.groups_for("n1").keys() >= {p.group_id for p in parts if "n1" in p.replicas}
    (r,) = meta.run(CreateTopic("later", 1, 1))
    assert r.topic is not None and r.topic.partitions[0].group_id == 6


def test_config_keys_are_set_and_removed_and_partitions_kept(meta: Meta) -> None:
    meta.run(CreateTopic("t", 3, 3, {"retention_ms": 1000}))
    (r,) = meta.run(AlterTopic("t", 0, {"retention_bytes": 4096}))
    assert r.ok and len(meta.sm.topics["t"].partitions) == 3
    assert meta.sm.topics["t"].config == {"retention_ms": 1000, "retention_bytes": 4096}
    (r,) = meta.run(AlterTopic("t", 3, {"retention_ms": None}))
    assert r.ok and meta.sm.topics["t"].config == {"retention_bytes": 4096}


@pytest.mark.parametrize(
    ("cmd", "code", "words"),
    [
        (AlterTopic("nope", 2), ErrorCode.UNKNOWN_TOPIC, "unknown topic"),
        (AlterTopic("t", 1), ErrorCode.INVALID_REQUEST, "never shrink"),
        (AlterTopic("t", 10_001), ErrorCode.INVALID_REQUEST, "at most 10000"),
        (AlterTopic("t", 0, {"retention": 5}), ErrorCode.INVALID_REQUEST, "unknown topic config"),
        (AlterTopic("t", 0, {"retention_ms": 0}), ErrorCode.INVALID_REQUEST, "positive integer"),
        (AlterTopic("t", 0, {"retention_ms": True}), ErrorCode.INVALID_REQUEST, "positive"),
    ],
)
def test_bad_alters_change_nothing(
    meta: Meta, cmd: AlterTopic, code: ErrorCode, words: str
) -> None:
    meta.run(CreateTopic("t", 2, 3, {"retention_ms": 5}))
    topics, next_group = dict(meta.sm.topics), meta.sm.next_group_id
    (r,) = meta.run(cmd)
    assert r.error is code and words in r.message
    assert meta.sm.topics == topics and meta.sm.next_group_id == next_group


def test_a_grown_topic_survives_restart(store: NodeStore, data_dir: Path, meta: Meta) -> None:
    meta.run(CreateTopic("t", 1, 3), AlterTopic("t", 3, {"retention_bytes": 7}))
    topics = dict(meta.sm.topics)
    store.close()
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as reopened:
        sm = MetadataStateMachine(reopened)
        assert sm.topics == topics
        assert sm.next_group_id == 4


def test_deleting_a_grown_topic_stops_every_group(meta: Meta) -> None:
    meta.run(CreateTopic("t", 1, 3), AlterTopic("t", 3))
    (r,) = meta.run(DeleteTopic("t"))
    assert r.group_ids == (1, 2, 3)


def test_config_validation() -> None:
    assert topic_config_problem({"retention_ms": 1, "retention_bytes": 2}) is None
    assert "unknown" in (topic_config_problem({"retention_hours": 1}) or "")
    assert "positive" in (topic_config_problem({"retention_ms": None}) or "")
    assert topic_config_problem({"retention_ms": None}, removals=True) is None
    assert "positive" in (topic_config_problem({"retention_bytes": 1.5}) or "")
