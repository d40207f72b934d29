"""Lease reads (thesis §6.4.1) in the simulator: served without a round, never stale.

The hand-written scenarios of ``lease_scenarios`` each catch the mutant that
drops the lease condition they are about, while the real core serves reads
from its lease in all of them and none is stale. A seeded loop then runs the
random schedules, read-heavy, with every core holding leases.
"""

from __future__ import annotations

import pytest
from raftlog.raft.node import Config
from raftlog.raft.types import ConfChange, ConfChangeItem, ConfChangeType, MessageType

from .invariants import SimulationFailure
from .lease_scenarios import LEASE_SCENARIOS, leader_with_lease, lease_cluster, run_lease_scenario
from .mutants import LEASE_MUTANTS
from .run import nodes_for
from .scenarios import run_until
from .schedule import run_seed

# Which scenario sets up the failure each mutant is blind to.
CAUGHT_BY = {
    "lease-never-expires": "isolated",
    "lease-forgot-on-restart": "restart",
    "lease-across-transfer": "transfer",
}
SEEDS = 200


@pytest.mark.parametrize("scenario", LEASE_SCENARIOS)
def test_correct_core_serves_lease_reads_and_none_is_stale(scenario: str) -> None:
    for seed in range(3):
        assert run_lease_scenario(scenario, seed) > 0


@pytest.mark.parametrize("mutant", sorted(CAUGHT_BY))
def test_each_missing_lease_condition_gives_a_stale_read(mutant: str) -> None:
    with pytest.raises(SimulationFailure, match="Linearizable read"):
        run_lease_scenario(CAUGHT_BY[mutant], 0, LEASE_MUTANTS[mutant])


def test_a_lease_read_needs_no_heartbeat_round() -> None:
    c = lease_cluster(1)
    lead = leader_with_lease(c)
    node = c.nodes[lead]
    beats = c.sent.get((lead, MessageType.HEARTBEAT), 0)
    done = c.reads_done
    assert c.read_index(at=lead)
    c.pump(node, True)
    c.pump(node, True)
    assert c.reads_done == done + 1
    assert c.sent.get((lead, MessageType.HEARTBEAT), 0) == beats


def test_no_lease_after_expire_or_during_a_membership_change() -> None:
    c = lease_cluster(2)
    lead = leader_with_lease(c)
    raft = c.nodes[lead].raft
    raft.expire_lease()
    assert not raft.has_lease
    run_until(c, lambda: raft.has_lease, 100, "a lease from a newer round")
    follower = next(n for n in c.ids if n != lead)
    raft.propose_conf_change(
        ConfChange(changes=(ConfChangeItem(ConfChangeType.ADD_LEARNER, follower),))
    )
    assert not raft.has_lease  # pending until applied
    run_until(c, lambda: raft.has_lease, 200, "a lease under the new membership")
    assert follower in raft.conf_state.learners


def test_lease_config_is_validated() -> None:
    with pytest.raises(ValueError, match="check_quorum"):
        Config(id="n1", lease_reads=True, lease_ticks=5, check_quorum=False).validate()
    with pytest.raises(ValueError, match="lease_ticks"):
        Config(id="n1", election_ticks=10, lease_reads=True, lease_ticks=10).validate()
    Config(id="n1", election_ticks=10, lease_reads=True, lease_ticks=9).validate()


def test_seeded_schedules_with_leases_stay_linearizable() -> None:
    lease_reads = 0
    failures = []
    for seed in range(SEEDS):
        try:
            r = run_seed(seed, nodes_for(seed), profile="reads", lease_reads=True)
        except SimulationFailure as e:
            failures.append(str(e).splitlines()[0])
            continue
        lease_reads += r.lease_reads
    assert not failures, failures[:3]
    assert lease_reads > SEEDS  # the leases were used, not just held
