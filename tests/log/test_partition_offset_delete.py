"""DeleteOffset (raftlog group delete): a consumer group's committed offset is
forgotten, fenced like a commit, and the fence outlives the offset: through a
restart and through a snapshot sent to another replica."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from raftlog.client.errors import ErrorCode
from raftlog.log import keys
from raftlog.log.commands import DeleteOffset
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState

from .test_partition import GID, Log
from .test_partition_fencing import commit


@pytest.fixture
def plog(store: NodeStore) -> Iterator[Log]:
    store.create_group(GID, ConfState(voters=("n1",)))
    yield Log(store)


def delete(plog: Log, generation: int | None, group: str = "g") -> ErrorCode | None:
    (result,) = plog.run(DeleteOffset(group, generation))
    return result.error


def state(sm: PartitionStateMachine, group: str = "g") -> tuple[object, object]:
    return sm.committed_offset(group), sm.fenced_generation(group)


def test_a_delete_forgets_the_offset_and_fences_the_old_generations(plog: Log) -> None:
    assert commit(plog, 40, 3) is None
    assert delete(plog, 4) is None
    assert state(plog.sm) == (None, 4)
    # A member of the deleted group (generation <= 3) cannot bring its offset back,
    # with or without its generation; the group joined again (above 4) commits.
    assert commit(plog, 41, 3) is ErrorCode.FENCED
    assert commit(plog, 41, None) is ErrorCode.FENCED
    assert state(plog.sm) == (None, 4)
    assert commit(plog, 7, 5) is None
    assert state(plog.sm) == ((7, ""), 5)


def test_a_delete_is_fenced_like_a_commit(plog: Log) -> None:
    assert commit(plog, 40, 6) is None
    # A newer generation claimed the partition (the group was joined again during
    # the deletion): the older delete is refused and changes nothing.
    assert delete(plog, 5) is ErrorCode.FENCED
    assert delete(plog, None) is ErrorCode.FENCED
    assert delete(plog, -1) is ErrorCode.INVALID_REQUEST
    assert state(plog.sm) == ((40, ""), 6)


def test_a_retried_delete_and_a_delete_of_nothing_succeed(plog: Log) -> None:
    assert delete(plog, 2) is None  # never committed here: the fence alone is stored
    assert delete(plog, 2) is None
    assert state(plog.sm) == (None, 2)
    assert commit(plog, 1, 1) is ErrorCode.FENCED


def test_an_unfenced_delete_removes_a_manual_groups_record(plog: Log, store: NodeStore) -> None:
    assert commit(plog, 12, None, group="manual") is None
    assert delete(plog, None, group="manual") is None
    assert state(plog.sm, "manual") == (None, None)
    assert store.db.get(keys.consumer_key(GID, "manual")) is None
    assert commit(plog, 3, None, group="manual") is None  # unfenced commits go on


def test_a_deleted_offset_stays_deleted_and_fenced_after_a_restart(
    store: NodeStore, data_dir: Path, plog: Log
) -> None:
    assert commit(plog, 40, 3) is None
    assert commit(plog, 9, 1, group="other") is None
    assert delete(plog, 4) is None
    # The stored record keeps only the fence (a nil offset).
    stored = msgpack.unpackb(store.db.get(keys.consumer_key(GID, "g")), raw=False)
    assert stored == [None, "", 4]
    store.close()
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as reopened:
        again = Log(reopened)
        assert state(again.sm) == (None, 4)
        assert state(again.sm, "other") == ((9, ""), 1)
        assert commit(again, 41, 3) is ErrorCode.FENCED


def test_a_snapshot_carries_a_fence_without_an_offset(plog: Log, tmp_path: Path) -> None:
    assert commit(plog, 40, 3) is None
    assert delete(plog, 4) is None
    data = plog.sm.snapshot_state()
    with NodeStore.open(tmp_path / "n2", cluster="test", node_id="n2") as other:
        other.create_group(GID, ConfState(voters=("n1",)))
        follower = Log(other)
        assert commit(follower, 5, 1) is None  # stale state the snapshot replaces
        batch = other.new_batch()
        follower.sm.restore_state(data, batch)
        other.write(batch)
        # live, and reloaded from what restore_state wrote
        for sm in (follower.sm, PartitionStateMachine(other, GID)):
            assert state(sm) == (None, 4)
            assert sm.snapshot_state() == data
        follower.index = follower.sm.applied_index
        assert commit(follower, 41, 3) is ErrorCode.FENCED
