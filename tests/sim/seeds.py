"""Fixed seeds kept as regression cases.

``MUTANT_SEEDS``: for each mutant (tests.sim.mutants), seeded schedules in
which the checker caught it, found by the bounded in-test search of
``test_mutations.py`` (schedule length DEFAULT_LENGTH, liveness phase off)
and the invariant it broke. The unmutated core must pass the same seeds.
A change to schedule generation (schedule.py weights or random_params)
changes what a seed means: ``python -m tests.sim.find_seeds`` prints new ones.

``CORE_BUG_SEEDS``: seeds that once exposed a real bug in raftlog.raft,
with a note of the bug; replayed by ``test_regressions.py``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class MutantSeed:
    mutant: str
    seed: int
    n_nodes: int
    invariant: str


MUTANT_SEEDS: tuple[MutantSeed, ...] = (
    MutantSeed("ack-before-persist", 0, 3, "Commit durability"),
    MutantSeed("ack-before-persist", 1, 5, "Commit durability"),
    MutantSeed("ack-before-persist", 2, 3, "Commit durability"),
    MutantSeed("vote-without-log-check", 0, 3, "Leader Completeness"),
    MutantSeed("vote-without-log-check", 4, 3, "Leader Completeness"),
    MutantSeed("vote-without-log-check", 5, 5, "Leader Completeness"),
    MutantSeed("vote-twice", 1, 5, "One vote per term"),
    MutantSeed("vote-twice", 2, 3, "One vote per term"),
    MutantSeed("vote-twice", 3, 5, "One vote per term"),
    MutantSeed("read-without-quorum", 34, 3, "Linearizable read"),
    MutantSeed("read-without-quorum", 58, 3, "Linearizable read"),
    MutantSeed("read-without-quorum", 60, 3, "Linearizable read"),
)


@dataclass(slots=True, frozen=True)
class CoreBugSeed:
    seed: int
    n_nodes: int
    bug: str
    length: int = 400
    profile: str = "default"
    # Set only if the core is still broken at release time (xfail strict).
    still_broken: bool = False


CORE_BUG_SEEDS: tuple[CoreBugSeed, ...] = (
    CoreBugSeed(
        116,
        3,
        "Liveness: no leader ever after healing. Leader n2 of the joint config "
        "{n1,n3}&{n2,n3} applies its own leave-joint (index 22) and steps down at once "
        "(raft/node.py _switch_to_config -> _become_follower); n3 crashed mid-fsync and "
        "never learns commit>=22, so it stays joint and needs n2's vote, which n2 (log to "
        "47) refuses; n1 knows {n1,n3} but its log (36) is shorter than n3's (39), so n3 "
        "refuses it. etcd keeps a removed leader replicating (stepDownOnRemoval=false) or "
        "the thesis uses the latest config in the log (§4.1).",
    ),
    CoreBugSeed(
        30216,
        3,
        "Same bug with PreVote+CheckQuorum on (defaults): leader n1 of {n2,n3}&{n1,n2} "
        "applies its leave-joint and steps down; n2 stays joint (commit 114) and needs n1's "
        "pre-vote, refused (n1's log is longer); n3 knows {n2,n3} but its log (117) is "
        "shorter than n2's (120), so n2 refuses it: no leader for 1084 ticks after healing.",
    ),
    CoreBugSeed(
        45337,
        5,
        "Removed node becomes leader (PreVote+CheckQuorum on): n5 lags applying (one "
        "committed entry per Ready), starts a pre-vote while its applied config still has "
        "it, then applies its own removal (index 57) but the campaign goes on: pre-vote won "
        "-> VOTE -> LEADER of term 11 over {n1,n2,n4}. As a non-member it refuses every "
        "proposal ('not a member of the group') yet heartbeats, so the members never elect "
        "a real leader: no write commits for 924 ticks. raft/node.py: the pre-candidate -> "
        "candidate -> leader steps do not re-check _promotable(), and _switch_to_config "
        "demotes only a leader, not a (pre)candidate.",
        profile="chaos",
    ),
    CoreBugSeed(
        47480,
        3,
        "Removed joint leader crashes before handing over (PreVote/CheckQuorum off): n3 "
        "leads {n1,n2}&{n2,n3}, applies its leave-joint (commit 16) and, since raft 0b19c8f, "
        "keeps leading to hand over, but crashes (t=388) and restarts as a non-member "
        "follower, which never campaigns. n1/n2 (commit 14) stay joint and need n3's vote "
        "for {n2,n3}; n3 refuses (its log, 58, is longer than theirs, 16/18): no leader for "
        "632 ticks. Fixed: (pre-)vote answers carry the voter's commit index and its term, "
        "and a non-leader whose log holds that entry commits up to it (Log Matching, raft/"
        "node.py _learn_commit): n3's refusal tells n1/n2 that 16 is committed, they apply "
        "the leave-joint and elect a leader of {n1,n2}. "
        "Pinned by tests/raft/test_removed_joint_leader_crash.py.",
    ),
)
