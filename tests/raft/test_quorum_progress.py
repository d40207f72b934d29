"""Pure helpers: quorum arithmetic and per-follower Progress transitions."""

from __future__ import annotations

from raftlog.raft.progress import Inflights, ProgressState, new_progress
from raftlog.raft.quorum import (
    UNBOUNDED,
    VoteResult,
    joint_committed,
    joint_vote,
    majority_committed,
    majority_vote,
)


def test_majority_committed_is_the_median_of_acks() -> None:
    match = {"a": 9, "b": 5, "c": 7}
    assert majority_committed(("a", "b", "c"), match) == 7
    assert majority_committed(("a", "b", "c", "d"), match) == 5  # d counts as 0
    assert majority_committed((), match) == UNBOUNDED


def test_joint_committed_needs_both_majorities() -> None:
    match = {"a": 10, "b": 10, "c": 2, "d": 2, "e": 10}
    assert joint_committed(("a", "b", "c"), ("c", "d", "e"), match) == 2
    assert joint_committed(("a", "b", "c"), (), match) == 10


def test_vote_tallies() -> None:
    voters = ("a", "b", "c")
    assert majority_vote(voters, {"a": True}) == VoteResult.PENDING
    assert majority_vote(voters, {"a": True, "b": True}) == VoteResult.WON
    assert majority_vote(voters, {"a": True, "b": False, "c": False}) == VoteResult.LOST
    assert majority_vote(voters, {"x": True, "y": True}) == VoteResult.PENDING
    assert majority_vote((), {}) == VoteResult.WON
    assert joint_vote(voters, ("c", "d", "e"), {"a": True, "b": True}) == VoteResult.PENDING
    assert joint_vote(voters, ("c", "d", "e"), {"a": True, "d": False, "e": False}) == (
        VoteResult.LOST
    )
    votes = {"a": True, "b": True, "d": True, "e": True}
    assert joint_vote(voters, ("c", "d", "e"), votes) == VoteResult.WON


def test_inflights_free_in_order() -> None:
    inf = Inflights(max_count=3)
    for i in (5, 10, 15):
        inf.add(i, 1)
    assert inf.full()
    inf.free_le(10)
    assert inf.count == 1 and not inf.full()
    inf.free_first_one()
    assert inf.count == 0


def test_progress_probe_pauses_and_decrements() -> None:
    pr = new_progress(11, 4, 0, is_learner=False)
    assert pr.state == ProgressState.PROBE
    pr.sent_entries(3, 30)
    assert pr.is_paused()
    # A reject of something other than what we sent is stale.
    assert not pr.maybe_decr_to(7, 3)
    assert pr.maybe_decr_to(10, 3)
    assert pr.next == 4 and not pr.is_paused()


def test_progress_replicate_is_optimistic_and_bounded() -> None:
    pr = new_progress(1, 2, 0, is_learner=False)
    pr.maybe_update(0)
    pr.become_replicate()
    pr.sent_entries(5, 50)
    assert pr.next == 6 and not pr.is_paused()
    pr.sent_entries(5, 50)
    assert pr.next == 11 and pr.is_paused()
    assert pr.maybe_update(5)
    pr.inflights.free_le(5)
    assert not pr.is_paused()
    # Reject in replicate: back to just after match.
    assert pr.maybe_decr_to(10, 7)
    assert pr.next == 6
    assert not pr.maybe_decr_to(4, 0)  # at or below match: stale


def test_progress_snapshot_then_probe_resumes_after_it() -> None:
    pr = new_progress(1, 4, 0, is_learner=False)
    pr.become_snapshot(100)
    assert pr.is_paused()
    pr.become_probe()
    assert pr.next == 101
