"""The checker has teeth: cores that break one Raft rule each are caught.

For each mutant the test (1) searches seeds in order with a bounded budget
and requires a violation of the expected invariant, and (2) replays the
seeds kept in ``seeds.py`` and requires the same violation, while the
unmutated core passes those very schedules (so the violation is the
mutation's doing, not the schedule's).
"""

from __future__ import annotations

import random

import pytest
from raftlog.raft.node import RaftNode

from .invariants import SimulationFailure
from .mutants import MUTANTS, CommitOldTermByCounting
from .replay import main as replay_main
from .run import nodes_for
from .scenarios import figure8
from .schedule import (
    DEFAULT_LENGTH,
    make_cluster,
    play,
    random_params,
    random_schedule,
    run_seed,
    settle,
)
from .seeds import MUTANT_SEEDS, MutantSeed

# Seeds tried per mutant before giving up; each search stops at its first hit.
SEARCH_BUDGET = 400

EXPECTED: dict[str, set[str]] = {
    # Acks sent before the fsync: the leader commits what no majority has on
    # disk; after a crash a leader without the entry can win and overwrite it.
    "ack-before-persist": {
        "Commit durability",
        "State Machine Safety",
        "Leader Completeness",
        "Log Matching",
    },
    # Votes for stale logs elect leaders missing committed entries (§5.4.1).
    "vote-without-log-check": {"Leader Completeness", "State Machine Safety"},
    # Two votes in one term (seen on disk), hence two leaders in a term (§5.2).
    "vote-twice": {"One vote per term", "Election Safety"},
    # A deposed leader that still believes it leads serves stale reads (§6.4).
    "read-without-quorum": {"Linearizable read"},
}


def _violation(e: SimulationFailure) -> str:
    return str(e).split(" violated", 1)[0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_seed_search_catches_mutant(name: str) -> None:
    core = MUTANTS[name]
    for seed in range(SEARCH_BUDGET):
        try:
            run_seed(seed, nodes_for(seed), core_factory=core, check_liveness=False)
        except SimulationFailure as e:
            assert _violation(e) in EXPECTED[name], str(e)
            assert f"--mutant {core.__name__}" in str(e)  # the replay names the mutant
            return
    pytest.fail(f"{name}: no violation in {SEARCH_BUDGET} seeds")


def test_ack_before_persist_loses_committed_entries_end_to_end() -> None:
    """Without the direct disk-majority check, the consequence is caught too:
    a committed entry lost after crashes (Leader Completeness / State Machine Safety)."""
    core = MUTANTS["ack-before-persist"]
    for seed in range(SEARCH_BUDGET):
        params = random_params(seed, nodes_for(seed))
        params.check_commit_durability = False
        actions = random_schedule(random.Random(f"schedule:{seed}"), params.n_nodes, DEFAULT_LENGTH)
        try:
            play(make_cluster(params, core), actions, check_liveness=False)
        except SimulationFailure as e:
            assert _violation(e) in EXPECTED["ack-before-persist"] - {"Commit durability"}
            return
    pytest.fail(f"no end-to-end violation in {SEARCH_BUDGET} seeds")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_kept_seeds_still_catch_mutant(name: str) -> None:
    """The seeds kept in seeds.py replay the catch.

    A change to the core (or to schedule generation) can shift what a seed
    does, so at least one kept seed per mutant must still catch it, with the
    recorded invariant; ``python -m tests.sim.find_seeds`` refreshes them.
    """
    cases = [c for c in MUTANT_SEEDS if c.mutant == name]
    assert cases, f"no kept seed for {name}"
    caught = []
    for case in cases:
        try:
            run_seed(case.seed, case.n_nodes, core_factory=MUTANTS[name], check_liveness=False)
        except SimulationFailure as e:
            caught.append((case, _violation(e)))
    assert caught, f"none of the kept seeds {[c.seed for c in cases]} catches {name} any more"
    for case, violation in caught:
        assert violation in EXPECTED[name], (case, violation)


@pytest.mark.parametrize("case", MUTANT_SEEDS, ids=lambda c: f"{c.mutant}-seed{c.seed}")
def test_real_core_passes_the_mutant_seeds(case: MutantSeed) -> None:
    r = run_seed(case.seed, case.n_nodes, core_factory=RaftNode)
    assert r.acked > 0


def test_figure8_catches_commit_of_old_term_entry() -> None:
    """Raft §5.4.2: counting replicas of an older-term entry loses a committed entry."""
    with pytest.raises(SimulationFailure) as info:
        figure8(CommitOldTermByCounting)
    assert _violation(info.value) in {"Leader Completeness", "State Machine Safety"}


@pytest.mark.parametrize("seed", range(5))
def test_figure8_real_core_does_not_commit_old_term_entry(seed: int) -> None:
    r = figure8(RaftNode, seed=seed)
    # X sat on a majority (L, F, D, E) in term t3 without any term-t3 entry:
    # the real core must not have counted it committed.
    assert not r.old_term_committed
    # And the cluster still makes progress after everything heals.
    settle(r.cluster, max_ticks=400)
    r.cluster.final_check()


def test_liveness_checker_catches_a_core_that_never_elects() -> None:
    class NeverCampaigns(RaftNode):
        def campaign(self) -> None:  # manual trigger also disabled
            return

        def tick(self) -> None:  # no timers: no elections, ever
            return

    with pytest.raises(SimulationFailure) as info:
        run_seed(1, 3, length=20, core_factory=NeverCampaigns)
    assert _violation(info.value) == "Liveness"


def test_replay_cli_reproduces_a_mutant_failure(capsys: pytest.CaptureFixture[str]) -> None:
    case = next(c for c in MUTANT_SEEDS if c.mutant == "vote-twice")
    args = ["--seed", str(case.seed), "--nodes", str(case.n_nodes), "--tail", "20"]
    assert replay_main([*args, "--mutant", case.mutant, "--no-liveness"]) == 1
    out = capsys.readouterr().out
    assert f"FAILED: {case.invariant} violated (seed={case.seed}" in out
    assert "--mutant VoteTwicePerTerm --no-liveness" in out
    # The trace tail shows the events leading to it.
    assert len([ln for ln in out.splitlines() if ln.startswith("t=")]) == 20
