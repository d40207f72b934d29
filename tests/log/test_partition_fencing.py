"""Consumer-offset commits fenced by group generation (PartitionStateMachine)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from raftlog.client.errors import ErrorCode
from raftlog.log import keys
from raftlog.log.commands import CommitOffset
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState

from .test_partition import GID, Log


@pytest.fixture
def plog(store: NodeStore) -> Iterator[Log]:
    store.create_group(GID, ConfState(voters=("n1",)))
    yield Log(store)


def commit(plog: Log, offset: int, generation: int | None, group: str = "g") -> ErrorCode | None:
    (result,) = plog.run(CommitOffset(group, offset, generation=generation))
    return result.error


def test_a_commit_of_an_older_generation_is_fenced_and_changes_nothing(plog: Log) -> None:
    assert commit(plog, 10, 2) is None
    assert commit(plog, 12, 2) is None  # the same generation commits again
    assert commit(plog, 11, 2) is None  # ... in any direction: it owns the partition
    (old,) = plog.run(CommitOffset("g", 3, "zombie", generation=1))
    assert old.error is ErrorCode.FENCED
    assert "generation 1" in old.message and "generation 2" in old.message
    assert plog.sm.committed_offset("g") == (11, "")
    assert plog.sm.fenced_generation("g") == 2
    assert commit(plog, 20, 5) is None  # a newer generation claims it
    assert commit(plog, 13, 2) is ErrorCode.FENCED
    assert commit(plog, 14, 4) is ErrorCode.FENCED
    assert (plog.sm.committed_offset("g"), plog.sm.fenced_generation("g")) == ((20, ""), 5)


def test_fences_are_per_consumer_group(plog: Log) -> None:
    assert commit(plog, 10, 7, group="a") is None
    assert commit(plog, 3, 1, group="b") is None
    assert commit(plog, 4, None, group="c") is None
    assert plog.sm.committed_offset("b") == (3, "")
    assert (plog.sm.fenced_generation("a"), plog.sm.fenced_generation("b")) == (7, 1)
    assert plog.sm.fenced_generation("c") is None


def test_unfenced_commits_pass_until_the_group_commits_with_a_generation(plog: Log) -> None:
    assert commit(plog, 5, None) is None
    assert commit(plog, 2, None) is None  # manual consumers: as before fencing
    assert commit(plog, 6, 0) is None  # the first fenced commit passes (and claims)
    (unfenced,) = plog.run(CommitOffset("g", 9))
    assert unfenced.error is ErrorCode.FENCED
    assert "without a generation" in unfenced.message
    assert plog.sm.committed_offset("g") == (6, "")


def test_a_negative_generation_is_an_invalid_request(plog: Log) -> None:
    assert commit(plog, 5, -1) is ErrorCode.INVALID_REQUEST
    assert plog.sm.committed_offset("g") is None and plog.sm.fenced_generation("g") is None


def test_the_fence_survives_a_restart_with_the_offset(
    store: NodeStore, data_dir: Path, plog: Log
) -> None:
    assert commit(plog, 8, 3) is None
    assert commit(plog, 4, None, group="manual") is None
    store.close()
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as reopened:
        again = Log(reopened)
        assert again.sm.committed_offset("g") == (8, "")
        assert again.sm.fenced_generation("g") == 3
        assert again.sm.fenced_generation("manual") is None
        assert commit(again, 1, 2) is ErrorCode.FENCED
        assert commit(again, 9, None, group="manual") is None
        assert again.sm.committed_offset("g") == (8, "")


def test_offsets_stored_before_fencing_still_load(
    store: NodeStore, data_dir: Path, plog: Log
) -> None:
    # A node upgraded in place: its consumer values are the old [offset, metadata].
    batch = store.new_batch()
    batch.put(keys.consumer_key(GID, "old"), msgpack.packb([17, "m"]))
    store.write(batch)
    store.close()
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as reopened:
        sm = PartitionStateMachine(reopened, GID)
        assert sm.committed_offset("old") == (17, "m")
        assert sm.fenced_generation("old") is None


def test_snapshot_carries_the_fences_to_another_replica(plog: Log, tmp_path: Path) -> None:
    assert commit(plog, 8, 3) is None
    assert commit(plog, 2, None, group="manual") is None
    data = plog.sm.snapshot_state()
    with NodeStore.open(tmp_path / "n2", cluster="test", node_id="n2") as other:
        other.create_group(GID, ConfState(voters=("n1",)))
        follower = Log(other)
        # The follower's own stale state (a fence the leader's state does not
        # hold) must be replaced, not merged.
        assert commit(follower, 1, 9, group="manual") is None
        batch = other.new_batch()
        follower.sm.restore_state(data, batch)
        other.write(batch)
        for sm in (follower.sm, PartitionStateMachine(other, GID)):  # live, reloaded
            assert sm.committed_offset("g") == (8, "")
            assert sm.fenced_generation("g") == 3
            assert sm.fenced_generation("manual") is None
            assert sm.snapshot_state() == data
        follower.index = follower.sm.applied_index
        assert commit(follower, 1, 2) is ErrorCode.FENCED
        assert commit(follower, 3, None, group="manual") is None


def test_a_snapshot_without_fences_is_the_pre_fencing_format(plog: Log, tmp_path: Path) -> None:
    # No fenced commit: the snapshot is byte for byte what a replica from before
    # fencing makes and reads (no new key), and it restores with no fences.
    assert commit(plog, 4, None) is None
    data = plog.sm.snapshot_state()
    assert "fences" not in msgpack.unpackb(data, raw=False, strict_map_key=False)
    with NodeStore.open(tmp_path / "n2", cluster="test", node_id="n2") as other:
        other.create_group(GID, ConfState(voters=("n1",)))
        follower = Log(other)
        assert commit(follower, 1, 9) is None
        batch = other.new_batch()
        follower.sm.restore_state(data, batch)
        other.write(batch)
        assert follower.sm.fenced_generation("g") is None
        assert PartitionStateMachine(other, GID).fenced_generation("g") is None
