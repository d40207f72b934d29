"""Producer expiry (ExpireProducers): what a partition forgets, in which order, and that
every replica, restart and snapshot restore forgets exactly the same producers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raftlog.client.errors import ErrorCode
from raftlog.log import keys
from raftlog.log.commands import ExpireProducers
from raftlog.log.partition import ApplyResult, PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState

from .test_partition import GID, Log, produce


@pytest.fixture
def plog(store: NodeStore) -> Iterator[Log]:
    store.create_group(GID, ConfState(voters=("n1",)))
    yield Log(store)


def reloaded(plog: Log) -> PartitionStateMachine:
    """The state machine a restart would build from the store."""
    return PartitionStateMachine(plog.store, GID)


def test_idle_producers_are_forgotten_and_active_ones_kept(plog: Log) -> None:
    plog.run(produce(1, pid=1, seq=0, ts=1_000))
    plog.run(produce(1, pid=2, seq=0, ts=2_000))
    plog.run(produce(1, pid=3, seq=0, ts=3_000))
    plog.run(produce(1, pid=1, seq=1, ts=4_000))  # producer 1 is active again
    (result,) = plog.run(ExpireProducers(idle_before_ms=3_500))
    assert result.expired == {"idle": 2, "limit": 0}
    assert list(plog.sm.producers) == [1]
    assert list(reloaded(plog).producers) == [1]  # deleted from the store too


def test_the_cap_forgets_the_least_recently_used(plog: Log) -> None:
    for pid in (1, 2, 3, 4):
        plog.run(produce(1, pid=pid, seq=0, ts=1_000))
    plog.run(produce(1, pid=1, seq=1, ts=1_000))  # 1 used last: 2, 3 are the oldest
    (result,) = plog.run(ExpireProducers(idle_before_ms=0, keep_at_most=2))
    assert result.expired == {"idle": 0, "limit": 2}
    assert list(plog.sm.producers) == [4, 1]
    assert list(reloaded(plog).producers) == [4, 1]


def test_a_duplicate_does_not_count_as_use(plog: Log) -> None:
    plog.run(produce(1, pid=1, seq=0, ts=1_000))
    plog.run(produce(1, pid=2, seq=0, ts=1_000))
    (dup,) = plog.run(produce(1, pid=1, seq=0, ts=9_000))
    assert dup.duplicate
    plog.run(ExpireProducers(idle_before_ms=0, keep_at_most=1))
    assert list(plog.sm.producers) == [2]


def test_a_forgotten_producer_is_unknown_and_may_start_again(plog: Log) -> None:
    plog.run(produce(2, pid=7, seq=0, ts=1_000))
    plog.run(ExpireProducers(idle_before_ms=5_000))
    (retry,) = plog.run(produce(1, pid=7, seq=2, ts=6_000))
    assert retry.error is ErrorCode.OUT_OF_ORDER_SEQUENCE
    assert plog.sm.next_offset == 2  # nothing appended
    (fresh,) = plog.run(produce(1, pid=7, seq=0, ts=6_000))
    assert fresh == ApplyResult(base_offset=2, timestamp_ms=6_000)


def test_expiry_in_the_same_entry_as_the_producers_batch(plog: Log) -> None:
    """The apply call writes producers it touched at its end: one it forgot since
    must not be written back (nor crash the apply)."""
    results = plog.run(
        produce(1, pid=1, seq=0, ts=1_000), ExpireProducers(idle_before_ms=0, keep_at_most=0)
    )
    assert results[1].expired == {"idle": 0, "limit": 1}
    assert plog.sm.producers == {} and reloaded(plog).producers == {}
    assert plog.sm.next_offset == 1


def test_producers_due_answers_what_expiry_would_do(plog: Log) -> None:
    assert not plog.sm.producers_due(10_000, 0)  # nobody to forget
    plog.run(produce(1, pid=1, seq=0, ts=1_000))
    plog.run(produce(1, pid=2, seq=0, ts=2_000))
    assert plog.sm.producers_due(1_500, None)
    assert not plog.sm.producers_due(1_000, None)
    assert plog.sm.producers_due(0, 1)
    assert not plog.sm.producers_due(0, 2)


def test_a_negative_cap_is_refused_and_forgets_nothing(plog: Log) -> None:
    plog.run(produce(1, pid=1, seq=0))
    (result,) = plog.run(ExpireProducers(idle_before_ms=0, keep_at_most=-1))
    assert result.error is ErrorCode.INVALID_REQUEST
    assert list(plog.sm.producers) == [1]


def test_windows_stored_before_expiry_load_as_used_at_the_last_stamp(plog: Log) -> None:
    """A store from before producer timestamps: [sequence, count, base] per batch.
    Such a producer must not look idle since 1970 and vanish at the first round."""
    plog.run(produce(1, pid=1, seq=0, ts=1_000))
    plog.run(produce(1, ts=8_000))  # the partition's last stamp
    batch = plog.store.new_batch()
    batch.put(keys.producer_key(GID, 1), msgpack.packb([[0, 1, 0]]))
    plog.store.write(batch)
    sm = reloaded(plog)
    assert sm.producers[1][-1].timestamp_ms == 8_000
    assert not sm.producers_due(7_999, None)


def test_snapshots_from_before_expiry_restore_too(plog: Log, tmp_path: Path) -> None:
    plog.run(produce(1, pid=3, seq=0, ts=1_000))
    state = msgpack.unpackb(plog.sm.snapshot_state(), strict_map_key=False)
    state["producers"] = {3: [[0, 1, 0]]}
    state["last_timestamp_ms"] = 5_000
    with NodeStore.open(tmp_path / "other", cluster="test", node_id="n2") as other:
        dst = PartitionStateMachine(other, GID)
        wb = other.new_batch()
        dst.restore_state(msgpack.packb(state), wb)
        other.write(wb)
        assert dst.producers[3][-1].timestamp_ms == 5_000


# One step of a partition's life: a batch of producer ``pid`` at clock ``ts`` (its
# next sequence, or a retry of the last), or an expiry.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("produce"), st.integers(1, 6), st.booleans()),
        st.tuples(st.just("expire"), st.integers(0, 40), st.none() | st.integers(0, 4)),
        st.tuples(st.just("snapshot"), st.none(), st.none()),
    ),
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=steps)
def test_every_replica_forgets_the_same_producers(tmp_path: Path, script: list) -> None:
    """Three views of one log, checked after every step: the live state machine, one
    rebuilt from the store (a restart), and one restored from a snapshot taken at a
    random step and fed the entries after it (a follower caught up by InstallSnapshot).
    They must hold the same producers in the same least-recently-used order, since
    the next ExpireProducers forgets from the front."""
    run_dir = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    with (
        NodeStore.open(run_dir / "a", cluster="test", node_id="n1") as a,
        NodeStore.open(run_dir / "b", cluster="test", node_id="n2") as b,
    ):
        a.create_group(GID, ConfState(voters=("n1",)))
        live = Log(a)
        follower: Log | None = None
        next_seq: dict[int, int] = {}
        for clock, (kind, x, y) in enumerate(script):
            if kind == "produce":
                seq = next_seq.get(x, 0)
                retry = y and seq > 0
                cmd = produce(1, pid=x, seq=seq - 1 if retry else seq, ts=clock)
                next_seq[x] = seq if retry else seq + 1
            elif kind == "expire":
                cmd = ExpireProducers(idle_before_ms=x, keep_at_most=y)
            else:
                if follower is None:
                    b.create_group(GID, ConfState(voters=("n1",)))
                    follower = Log(b)
                    wb = b.new_batch()
                    follower.sm.restore_state(live.sm.snapshot_state(), wb)
                    b.write(wb)
                    follower.index = live.index
                continue
            entry = live.entry(cmd)
            live.apply(entry)
            if kind == "expire":
                for pid in list(next_seq):
                    if pid not in live.sm.producers:
                        next_seq[pid] = 0  # forgotten: starts again at 0 (the client's reset)
            if follower is not None:
                follower.apply(entry)
                follower.index = live.index
                assert follower.sm.producers == live.sm.producers
                assert list(follower.sm.producers) == list(live.sm.producers)
            restarted = PartitionStateMachine(a, GID)
            assert restarted.producers == live.sm.producers
            assert list(restarted.producers) == list(live.sm.producers)
