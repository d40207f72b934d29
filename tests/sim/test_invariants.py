"""Unit tests of the invariant checker on hand-made events (no cores involved)."""

from __future__ import annotations

import pytest
from raftlog.raft.types import Entry

from .invariants import Checker, SimulationFailure


def _ck() -> Checker:
    return Checker(seed=42, n_nodes=3)


def _e(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(term=term, index=index, data=data)


def _log(entries: list[Entry]):  # type: ignore[no-untyped-def]
    by_index = {e.index: e for e in entries}
    return lambda i: by_index.get(i)


def test_two_leaders_in_one_term_fail_with_seed_and_replay() -> None:
    ck = _ck()
    ck.on_leader("n1", 3)
    ck.on_leader("n1", 3)  # the same leader seen again is fine
    ck.on_leader("n2", 4)
    with pytest.raises(SimulationFailure, match="Election Safety") as info:
        ck.on_leader("n3", 3)
    msg = str(info.value)
    assert "seed=42" in msg and "n1 and n3" in msg
    assert "python -m tests.sim.replay --seed 42 --nodes 3" in msg


def test_same_index_and_term_with_different_data_breaks_log_matching() -> None:
    ck = _ck()
    ck.on_persist_entries("n1", [_e(1, 1, b"a"), _e(2, 1, b"b")], prev_term=0)
    ck.on_persist_entries("n2", [_e(1, 1, b"a")], prev_term=0)
    with pytest.raises(SimulationFailure, match="Log Matching"):
        ck.on_persist_entries("n2", [_e(2, 1, b"other")], prev_term=1)


def test_same_entry_after_a_different_predecessor_breaks_log_matching() -> None:
    ck = _ck()
    ck.on_persist_entries("n1", [_e(1, 1), _e(2, 2, b"x")], prev_term=0)
    with pytest.raises(SimulationFailure, match="Log Matching"):
        ck.on_persist_entries("n2", [_e(1, 2), _e(2, 2, b"x")], prev_term=0)


def test_different_entries_committed_at_one_index_break_state_machine_safety() -> None:
    ck = _ck()
    ck.on_durable_commit("n1", 2, 2, _log([_e(1, 1, b"a"), _e(2, 2, b"b")]))
    ck.on_apply("n2", _e(1, 1, b"a"), 2)
    with pytest.raises(SimulationFailure, match="State Machine Safety"):
        ck.on_apply("n3", _e(2, 3, b"c"), 3)


def test_durable_commit_going_back_fails() -> None:
    ck = _ck()
    ck.on_durable_commit("n1", 1, 2, _log([_e(1, 1), _e(2, 1)]))
    with pytest.raises(SimulationFailure, match="Durable commit monotonicity"):
        ck.on_durable_commit("n1", 1, 1, _log([_e(1, 1)]))


def test_log_of_later_term_missing_a_committed_entry_breaks_leader_completeness() -> None:
    ck = _ck()
    ck.on_durable_commit("n1", 2, 3, _log([_e(1, 1), _e(2, 2), _e(3, 2, b"w")]))
    # A log ending in term 2 may lack index 3 (it was committed in term 2).
    ck.check_leader_completeness("n2", 2, 2, 1, {1: 1, 2: 2}.__getitem__)
    # A log ending in term 3 must hold it: written by a leader elected later.
    with pytest.raises(SimulationFailure, match="Leader Completeness"):
        ck.check_leader_completeness("n2", 2, 3, 1, {1: 1, 2: 2}.__getitem__)
    with pytest.raises(SimulationFailure, match="Leader Completeness"):
        ck.check_leader_completeness("n3", 4, 4, 1, {1: 1, 2: 2, 3: 3, 4: 4}.__getitem__)
    ck.check_leader_completeness("n3", 4, 4, 1, {1: 1, 2: 2, 3: 2, 4: 4}.__getitem__)


def test_commit_term_bound_is_lowered_by_later_commits() -> None:
    ck = _ck()
    # n1 (term 5) shows index 1 committed; n2 (term 2) then shows index 2:
    # committing 2 committed 1 too, so index 1's bound drops to 2.
    ck.on_durable_commit("n1", 5, 1, _log([_e(1, 1)]))
    ck.on_durable_commit("n2", 2, 2, _log([_e(1, 1), _e(2, 2)]))
    assert ck.commit_term == [2, 2]


def test_two_durable_votes_in_one_term_fail() -> None:
    ck = _ck()
    ck.on_hard_state("n1", 2, None)
    ck.on_hard_state("n1", 2, "n2")
    ck.on_hard_state("n1", 3, "n3")
    with pytest.raises(SimulationFailure, match="One vote per term"):
        ck.on_hard_state("n1", 3, "n1")
    with pytest.raises(SimulationFailure, match="Durable term monotonicity"):
        ck.on_hard_state("n1", 2, "n2")


def test_read_index_below_an_acknowledged_write_fails() -> None:
    ck = _ck()
    ck.on_read_state("n1", b"r1", 5, 5)
    with pytest.raises(SimulationFailure, match="Linearizable read"):
        ck.on_read_state("n1", b"r2", 4, 5)


def test_custom_replay_hint_is_used() -> None:
    ck = _ck()
    ck.replay = "python -m tests.sim.replay --seed 42 --nodes 3 --mutant X"
    with pytest.raises(SimulationFailure, match="--mutant X"):
        ck.fail("Something", "detail")
