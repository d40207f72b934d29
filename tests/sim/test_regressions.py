"""Seeds that once exposed a real bug in raftlog.raft, replayed forever.

Each case in ``seeds.CORE_BUG_SEEDS`` carries a note of the bug. A case the
core has not fixed yet is marked xfail(strict=True), so the fix turns it
into a failure that asks for the mark to be removed; invariants are never
loosened to make a seed pass.

A seed means something only for one version of schedule generation, so each
bug is also pinned as a hand-written scenario:

- a removed stale leader "leading" forever without PreVote/CheckQuorum (seed
  42928 at tests/sim@6fe5c57, fixed in raft a08c547): ``test_disruption.py``;
- a leader removed by its own leave-joint stepping down before followers
  learned the commit -> no leader ever (seeds 116, 30216; fixed: the removed
  leader keeps replicating and hands leadership over, raft/node.py
  ``_leave_leadership``): below;
- a node that applies its own removal mid-(pre)campaign still becomes leader
  and, refusing proposals as a non-member, blocks the group (chaos seed
  45337; fixed in ``_switch_to_config``): seed, and
  tests/raft/test_conf_change.py;
- the removed joint leader crashing before it hands over, members never
  learning the leave-joint commit (seed 47480; fixed: vote answers carry the
  voter's commit index, raft/node.py ``_learn_commit``): seed, and
  tests/raft/test_removed_joint_leader_crash.py.
"""

from __future__ import annotations

import pytest

from .invariants import SimulationFailure
from .scenarios import removed_joint_leader
from .schedule import run_seed, settle
from .seeds import CORE_BUG_SEEDS, CoreBugSeed
from .stats import SESSION


def _cases() -> list[object]:
    return [
        pytest.param(
            case,
            id=f"seed{case.seed}-n{case.n_nodes}-{case.profile}",
            marks=(
                [pytest.mark.xfail(strict=True, raises=SimulationFailure, reason=case.bug)]
                if case.still_broken
                else []
            ),
        )
        for case in CORE_BUG_SEEDS
    ]


@pytest.mark.skipif(
    not CORE_BUG_SEEDS,
    reason="no core-bug seed in the current schedule generation (see module docstring)",
)
@pytest.mark.parametrize("case", _cases())
def test_core_bug_seed_passes(case: CoreBugSeed) -> None:
    r = run_seed(case.seed, case.n_nodes, length=case.length, profile=case.profile)
    SESSION.record(r)
    assert r.settle_ticks > 0  # the liveness phase ran and converged


# Kept for the record: the bug this scenario pinned (fixed).
REMOVED_JOINT_LEADER_BUG = (
    "raft/node.py _switch_to_config: a leader removed by its own leave-joint steps down at "
    "once, before every follower learned the commit index covering it; a follower still in "
    "the joint config then needs the removed node's vote (refused, longer log) while the "
    "node that applied the new config has the shortest log: no leader ever (sim seed 116)"
)


@pytest.mark.parametrize("defaults", [True, False], ids=["prevote+checkquorum", "neither"])
def test_cluster_elects_a_leader_after_removed_joint_leader_steps_down(defaults: bool) -> None:
    setup = removed_joint_leader(seed=0, pre_vote=defaults, check_quorum=defaults)
    c = setup.cluster
    # Preconditions of the bug's shape (a wrong setup must not pass as a fix).
    assert c.nodes["n3"].raft.conf_state.voters_outgoing == ("n2", "n3")
    assert c.nodes["n1"].raft.conf_state.voters == ("n1", "n3")
    assert not c.nodes["n1"].raft.conf_state.voters_outgoing
    # Liveness: heal everything; a leader must commit a fresh write everywhere.
    settle(c, max_ticks=100 * c.p.election_ticks)
    c.final_check()
