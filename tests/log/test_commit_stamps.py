"""Commit stamps (log format COMMIT_STAMPS, log/features.py): a committed offset
keeps its commit time through restarts and snapshots, and a delete "only if
committed before" spares an offset committed since the leader looked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from raftlog.client.errors import ErrorCode
from raftlog.log import keys
from raftlog.log.commands import CommitOffset, DeleteOffset
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState

from .test_partition import GID, Log

T0 = 1_700_000_000_000


@pytest.fixture
def plog(store: NodeStore) -> Iterator[Log]:
    store.create_group(GID, ConfState(voters=("n1",)))
    yield Log(store)


def commit(plog: Log, offset: int, stamp: int | None, group: str = "g", gen: int | None = None):
    (result,) = plog.run(CommitOffset(group, offset, generation=gen, timestamp_ms=stamp))
    return result.error


def delete_before(plog: Log, cutoff: int, group: str = "g") -> ErrorCode | None:
    (result,) = plog.run(DeleteOffset(group, None, committed_before_ms=cutoff))
    return result.error


def stored(store: NodeStore, group: str = "g") -> object:
    return msgpack.unpackb(store.db.get(keys.consumer_key(GID, group)), raw=False)


def test_a_stamped_commit_keeps_its_time_and_an_unstamped_one_forgets_it(
    plog: Log, store: NodeStore
) -> None:
    assert commit(plog, 5, T0) is None
    assert plog.sm.commit_stamps == {"g": T0}
    assert stored(store) == [5, "", None, T0]
    # A commit from a node of an older format (no stamp) is not "committed at T0".
    assert commit(plog, 6, None) is None
    assert plog.sm.commit_stamps == {}
    assert stored(store) == [6, ""]  # the form of before stamps
    assert commit(plog, 7, T0 + 5, gen=2) is None
    assert stored(store) == [7, "", 2, T0 + 5]


def test_a_conditional_delete_spares_an_offset_committed_since(plog: Log) -> None:
    assert commit(plog, 5, T0) is None
    # The leader decided at cut-off T0 (so it saw an older commit), but the
    # commit at T0 landed first: the delete is refused and changes nothing.
    assert delete_before(plog, T0) is ErrorCode.FENCED
    assert plog.sm.committed_offset("g") == (5, "")
    assert delete_before(plog, T0 + 1) is None
    assert plog.sm.committed_offset("g") is None
    assert plog.sm.commit_stamps == {}
    assert delete_before(plog, T0 + 1) is None  # a retried delete: nothing to do


def test_a_conditional_delete_spares_an_offset_of_unknown_time(plog: Log) -> None:
    assert commit(plog, 5, None) is None
    assert delete_before(plog, T0) is ErrorCode.FENCED
    assert plog.sm.committed_offset("g") == (5, "")


def test_a_conditional_delete_is_still_fenced_by_generation(plog: Log) -> None:
    assert commit(plog, 5, T0, gen=3) is None
    # No generation, for a group that commits with them: refused as before.
    assert delete_before(plog, T0 + 10) is ErrorCode.FENCED
    assert plog.sm.committed_offset("g") == (5, "")


def test_stamps_survive_a_restart_and_a_snapshot(
    plog: Log, store: NodeStore, data_dir: Path, tmp_path: Path
) -> None:
    assert commit(plog, 5, T0) is None
    assert commit(plog, 9, T0 + 1, group="h", gen=4) is None
    assert commit(plog, 3, None, group="old") is None
    data = plog.sm.snapshot_state()
    assert msgpack.unpackb(data, raw=False)["commit_stamps"] == {"g": T0, "h": T0 + 1}
    store.close()
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as reopened:
        again = PartitionStateMachine(reopened, GID)
        assert again.commit_stamps == {"g": T0, "h": T0 + 1}
        assert again.fences == {"h": 4}
        assert again.snapshot_state() == data
    with NodeStore.open(tmp_path / "n2", cluster="test", node_id="n2") as other:
        other.create_group(GID, ConfState(voters=("n1",)))
        follower = Log(other)
        assert commit(follower, 1, T0 - 1, group="stale") is None  # replaced by the snapshot
        batch = other.new_batch()
        follower.sm.restore_state(data, batch)
        other.write(batch)
        for sm in (follower.sm, PartitionStateMachine(other, GID)):
            assert sm.commit_stamps == {"g": T0, "h": T0 + 1}
            assert sm.snapshot_state() == data


def test_a_partition_without_stamps_snapshots_as_before(plog: Log) -> None:
    assert commit(plog, 5, None) is None
    assert "commit_stamps" not in msgpack.unpackb(plog.sm.snapshot_state(), raw=False)
