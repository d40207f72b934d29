"""PartitionStateMachine.offset_for_time: the first record appended at or after a time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.log.commands import TruncatePrefix
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState

from .test_partition import GID, Log, produce


@pytest.fixture
def plog(store: NodeStore) -> Iterator[Log]:
    store.create_group(GID, ConfState(voters=("n1",)))
    yield Log(store)


def test_finds_the_first_batch_stamped_at_or_after_the_time(plog: Log) -> None:
    plog.run(produce(3, ts=1000))  # offsets 0-2
    plog.run(produce(2, ts=2000))  # 3-4
    plog.run(produce(4, ts=2000))  # 5-8
    plog.run(produce(1, ts=3000))  # 9
    assert plog.sm.offset_for_time(0) == (0, 1000)
    assert plog.sm.offset_for_time(1000) == (0, 1000)
    assert plog.sm.offset_for_time(1001) == (3, 2000)
    assert plog.sm.offset_for_time(2000) == (3, 2000)  # the first of two equal stamps
    assert plog.sm.offset_for_time(2500) == (9, 3000)
    assert plog.sm.offset_for_time(3001) is None  # everything is older


def test_an_empty_partition_has_no_offset_for_any_time(plog: Log) -> None:
    assert plog.sm.offset_for_time(0) is None


def test_a_stamp_that_went_backwards_is_stored_as_the_later_one(plog: Log) -> None:
    """A new leader with a slow clock: its batch keeps the previous stamp, so
    lookups stay monotonic and a time never maps to an offset before an older one."""
    plog.run(produce(1, ts=5000))
    plog.run(produce(1, ts=4000))
    plog.run(produce(1, ts=6000))
    assert plog.sm.offset_for_time(4000) == (0, 5000)
    assert plog.sm.offset_for_time(5001) == (2, 6000)


def test_a_time_before_the_retained_start_answers_the_start_offset(plog: Log) -> None:
    plog.run(produce(10, ts=1000))  # 0-9
    plog.run(produce(10, ts=2000))  # 10-19
    plog.run(TruncatePrefix(5))  # the first batch straddles the new start
    assert plog.sm.offset_for_time(0) == (5, 1000)
    assert plog.sm.offset_for_time(1500) == (10, 2000)


# ---------------------------------------------------------------- against a linear scan

stamps = st.lists(st.tuples(st.integers(1, 4), st.integers(0, 50)), min_size=0, max_size=40)


@settings(max_examples=60, deadline=None)
@given(batches=stamps, truncate=st.integers(0, 80), probes=st.lists(st.integers(0, 60), max_size=8))
def test_matches_a_scan_of_every_record(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[tuple[int, int]],
    truncate: int,
    probes: list[int],
) -> None:
    """Any stamps (including ones that go backwards: stored as the running max),
    any retention cut: the answer is the first retained offset whose stored
    stamp is at or after the time, as a record-by-record scan finds it."""
    store = NodeStore.open(tmp_path_factory.mktemp("db"), cluster="test", node_id="n1")
    try:
        store.create_group(GID, ConfState(voters=("n1",)))
        plog = Log(store)
        for count, ts in batches:
            plog.run(produce(count, ts=ts))
        plog.run(TruncatePrefix(truncate))
        sm = plog.sm
        stored: list[tuple[int, int]] = []  # (offset, stamp) of every retained record
        for base, ts, count, _blob in sm.read(sm.start_offset, 1 << 30):
            stored += [(o, ts) for o in range(max(base, sm.start_offset), base + count)]
        assert [o for o, _ in stored] == list(range(sm.start_offset, sm.next_offset))
        for t in [*probes, 0, 51]:
            expected = next(((o, ts) for o, ts in stored if ts >= t), None)
            assert sm.offset_for_time(t) == expected, t
    finally:
        store.close()
