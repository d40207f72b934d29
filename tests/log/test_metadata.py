"""MetadataStateMachine: nodes, topics, placement, producer ids, persistence."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from raftlog.client.errors import ErrorCode
from raftlog.log.commands import (
    CommitOffset,
    encode_entry_commands,
)
from raftlog.log.metadata import (
    AllocProducerId,
    CreateTopic,
    DeleteTopic,
    MetadataStateMachine,
    MetaResult,
    RegisterNode,
    SetPartitionReplicas,
    place_replicas,
)
from raftlog.log.store import NodeStore
from raftlog.raft.types import Entry


class Meta:
    def __init__(self, store: NodeStore) -> None:
        self.store = store
        self.sm = MetadataStateMachine(store)
        self.index = self.sm.applied_index

    def run(self, *cmds: object) -> list[MetaResult]:
        self.index += 1
        entry = Entry(term=1, index=self.index, data=encode_entry_commands(list(cmds)))
        batch = self.store.new_batch()
        (results,) = self.sm.apply([entry], batch)
        self.store.write(batch)
        return results

    def register(self, *node_ids: str) -> None:
        self.run(
            *(RegisterNode(n, f"127.0.0.1:{7100 + i}", f"inc-{n}") for i, n in enumerate(node_ids))
        )


@contextlib.contextmanager
def restored_elsewhere(data: bytes, data_dir: Path) -> Iterator[MetadataStateMachine]:
    """A state machine on another node's store, restored from the snapshot ``data``
    and read back from that store's disk."""
    with NodeStore.open(data_dir, cluster="test", node_id="other") as other:
        sm = MetadataStateMachine(other)
        batch = other.new_batch()
        sm.restore_state(data, batch)
        other.write(batch)
        yield MetadataStateMachine(other)


@pytest.fixture
def meta(store: NodeStore) -> Iterator[Meta]:
    yield Meta(store)


def test_create_topic_assigns_consecutive_groups_and_round_robin_replicas(meta: Meta) -> None:
    meta.register("n3", "n1", "n2")
    (r,) = meta.run(CreateTopic("orders", 4, 2, {"retention_ms": 1000}))
    assert r.ok and r.topic is not None
    parts = meta.sm.topics["orders"].partitions
    assert [p.group_id for p in parts] == [1, 2, 3, 4]
    # Sorted ids n1,n2,n3; group g starts at index g % 3.
    assert [p.replicas for p in parts] == [
        ("n2", "n3"),
        ("n3", "n1"),
        ("n1", "n2"),
        ("n2", "n3"),
    ]
    assert meta.sm.topics["orders"].config == {"retention_ms": 1000}
    (r2,) = meta.run(CreateTopic("audit", 1, 3))
    assert r2.topic is not None and r2.topic.partitions[0].group_id == 5


def test_placement_is_independent_of_registration_order() -> None:
    assert place_replicas(7, ["b", "c", "a"], 3) == place_replicas(7, ["a", "b", "c"], 3)
    assert place_replicas(7, ["a", "b", "c"], 3) == ("b", "c", "a")


def test_groups_for_lists_the_partitions_a_node_hosts(meta: Meta) -> None:
    meta.register("n1", "n2", "n3")
    meta.run(CreateTopic("t", 3, 1))
    hosted = {n: sorted(meta.sm.groups_for(n)) for n in ("n1", "n2", "n3")}
    assert hosted == {"n1": [3], "n2": [1], "n3": [2]}
    info = meta.sm.groups_for("n2")[1]
    assert (info.topic, info.partition, info.replicas) == ("t", 0, ("n2",))


@pytest.mark.parametrize(
    ("cmd", "code"),
    [
        (CreateTopic("bad name", 1, 1), ErrorCode.INVALID_REQUEST),
        (CreateTopic("x" * 201, 1, 1), ErrorCode.INVALID_REQUEST),
        (CreateTopic("", 1, 1), ErrorCode.INVALID_REQUEST),
        (CreateTopic("t", 0, 1), ErrorCode.INVALID_REQUEST),
        (CreateTopic("t", 1, 4), ErrorCode.INVALID_REQUEST),
        (CreateTopic("t", 1, 0), ErrorCode.INVALID_REQUEST),
        (DeleteTopic("nope"), ErrorCode.UNKNOWN_TOPIC),
        (SetPartitionReplicas("nope", 0, ("n1",)), ErrorCode.UNKNOWN_TOPIC),
        (CommitOffset("g", 1), ErrorCode.INVALID_REQUEST),
    ],
)
def test_invalid_commands_are_error_results(meta: Meta, cmd: object, code: ErrorCode) -> None:
    meta.register("n1", "n2", "n3")
    before = (dict(meta.sm.topics), meta.sm.next_group_id)
    (r,) = meta.run(cmd)
    assert r.error is code and r.message
    assert (dict(meta.sm.topics), meta.sm.next_group_id) == before


def test_duplicate_topic_is_topic_exists(meta: Meta) -> None:
    meta.register("n1")
    first, second = meta.run(CreateTopic("t", 1, 1), CreateTopic("t", 2, 1))
    assert first.ok
    assert second.error is ErrorCode.TOPIC_EXISTS
    assert len(meta.sm.topics["t"].partitions) == 1


def test_delete_topic_returns_its_groups_and_ids_are_not_reused(meta: Meta) -> None:
    meta.register("n1")
    meta.run(CreateTopic("t", 2, 1))
    (r,) = meta.run(DeleteTopic("t"))
    assert r.group_ids == (1, 2)
    assert "t" not in meta.sm.topics and meta.sm.groups_for("n1") == {}
    (again,) = meta.run(CreateTopic("t", 1, 1))
    assert again.topic is not None and again.topic.partitions[0].group_id == 3


def test_producer_ids_are_unique_and_increasing(meta: Meta) -> None:
    results = meta.run(AllocProducerId(), AllocProducerId(), AllocProducerId())
    ids = [r.producer_id for r in results]
    assert ids == sorted(set(ids)) and len(ids) == 3
    (later,) = meta.run(AllocProducerId())
    assert later.producer_id is not None and later.producer_id > ids[-1]


def test_register_node_updates_address_and_incarnation(meta: Meta) -> None:
    meta.run(RegisterNode("n1", "a:1", "inc1"))
    meta.run(RegisterNode("n1", "a:2", "inc2"))
    assert (meta.sm.nodes["n1"].address, meta.sm.nodes["n1"].incarnation) == ("a:2", "inc2")
    (bad,) = meta.run(RegisterNode("", "a:1", "x"))
    assert bad.error is ErrorCode.INVALID_REQUEST


def test_set_partition_replicas(meta: Meta) -> None:
    meta.register("n1", "n2", "n3")
    meta.run(CreateTopic("t", 2, 1))
    (ok,) = meta.run(SetPartitionReplicas("t", 1, ("n3", "n1")))
    assert ok.ok
    assert meta.sm.topics["t"].partitions[1].replicas == ("n3", "n1")
    assert 2 in meta.sm.groups_for("n1")
    bad = meta.run(
        SetPartitionReplicas("t", 5, ("n1",)),
        SetPartitionReplicas("t", 0, ("n1", "n1")),
        SetPartitionReplicas("t", 0, ("n9",)),
    )
    assert [r.error for r in bad] == [
        ErrorCode.UNKNOWN_PARTITION,
        ErrorCode.INVALID_REQUEST,
        ErrorCode.INVALID_REQUEST,
    ]


def test_state_survives_restart_and_replays_are_skipped(
    store: NodeStore, data_dir: Path, meta: Meta
) -> None:
    meta.register("n1", "n2")
    meta.run(CreateTopic("t", 2, 2), AllocProducerId())
    snapshot = meta.sm.snapshot_state()
    store.close()
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as reopened:
        sm = MetadataStateMachine(reopened)
        assert sm.snapshot_state() == snapshot
        assert sm.applied_index == 2
        assert sorted(sm.nodes) == ["n1", "n2"]
        replay = Entry(term=1, index=2, data=encode_entry_commands([AllocProducerId()]))
        assert sm.apply([replay], reopened.new_batch()) == [[]]
        assert sm.next_producer_id == 2


def test_snapshot_restore_into_another_node(meta: Meta, tmp_path: Path) -> None:
    meta.register("n1", "n2", "n3")
    meta.run(CreateTopic("a", 3, 3), CreateTopic("b", 1, 2), AllocProducerId())
    data = meta.sm.snapshot_state()
    with restored_elsewhere(data, tmp_path / "n2") as reloaded:
        assert reloaded.snapshot_state() == data
        assert reloaded.groups_for("n2") == meta.sm.groups_for("n2")
        assert reloaded.topics == meta.sm.topics


def test_undecodable_entry_is_an_error_result(meta: Meta) -> None:
    batch = meta.store.new_batch()
    (results,) = meta.sm.apply([Entry(term=1, index=1, data=b"\x93\x01")], batch)
    assert results[0].error is ErrorCode.INVALID_REQUEST
    assert meta.sm.applied_index == 1


def test_each_result_carries_the_index_of_the_entry_it_was_applied_from(meta: Meta) -> None:
    """What a user change answers as its metadata_index (raftlog user --wait)."""
    meta.register("n1")
    first = meta.run(AllocProducerId(), DeleteTopic("nope"))
    assert [r.index for r in first] == [meta.index, meta.index]
    assert not first[1].ok  # a refusal is applied at its entry too
    (later,) = meta.run(AllocProducerId())
    assert later.index == meta.index == first[0].index + 1
