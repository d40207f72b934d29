"""DESIGN §3 rules 5 and 6 in the simulator: rejoining or removed nodes do not disrupt.

With PreVote and CheckQuorum on (the defaults), a follower that was
partitioned for many election timeouts, or a node removed from the group
(which may not even know it), must not depose a healthy leader: the
leader's term stays the same once the network is whole again.
"""

from __future__ import annotations

import pytest
from raftlog.raft.types import MessageType, Role

from .cluster import Cluster, MembershipOp, SimParams
from .scenarios import run_until


def _stable_cluster(seed: int, n: int = 5) -> tuple[Cluster, str, int]:
    c = Cluster(SimParams(seed=seed, n_nodes=n, persist_prob=1.0))
    run_until(c, lambda: c.leader() is not None, 300, "a leader")
    lead = c.leader()
    c.client_leader = lead
    for _ in range(3):
        assert c.propose() is not None
    run_until(
        c,
        lambda: all(c.nodes[x].disk.applied >= c.acked_max_index > 0 for x in c.ids),
        200,
        "writes applied everywhere",
    )
    return c, lead, c.nodes[lead].raft.term


@pytest.mark.parametrize("seed", range(4))
def test_rejoining_follower_does_not_depose_leader(seed: int) -> None:
    c, lead, term = _stable_cluster(seed)
    follower = next(x for x in c.ids if x != lead)
    c.net.isolate(follower)
    for _ in range(10 * c.p.election_ticks):
        c.round()
    c.net.heal()
    for _ in range(10 * c.p.election_ticks):
        c.round()
    assert c.sent.get((follower, MessageType.PRE_VOTE), 0) > 0
    assert c.leader() == lead
    assert c.nodes[lead].raft.term == term
    # And the rejoined follower catches up.
    c.propose()
    run_until(
        c,
        lambda: c.nodes[follower].disk.applied >= c.acked_max_index,
        300,
        "rejoined follower catches up",
    )


@pytest.mark.parametrize("seed", range(4))
def test_removed_node_unaware_of_removal_does_not_disrupt(seed: int) -> None:
    c, lead, term = _stable_cluster(seed)
    victim = next(x for x in c.ids if x != lead)
    # The victim hears nothing from the leader, so it never learns it was removed.
    c.net.one_way(lead, victim)
    assert c.change_membership(MembershipOp.REMOVE, victim)
    run_until(
        c,
        lambda: victim not in c.nodes[lead].raft.conf_state.voters
        and c.nodes[lead].disk.applied == c.nodes[lead].raft.commit_index,
        200,
        "removal applied on the leader",
    )
    assert victim in c.nodes[victim].raft.conf_state.voters  # still believes it is a voter
    for _ in range(5 * c.p.election_ticks):
        c.round()
    c.net.heal()
    for _ in range(20 * c.p.election_ticks):
        c.round()
    # It did try to get elected, and failed to disturb anyone.
    assert c.sent.get((victim, MessageType.PRE_VOTE), 0) > 0
    assert c.leader() == lead
    assert c.nodes[lead].raft.term == term


@pytest.mark.parametrize("seed", range(3))
def test_removed_stale_leader_steps_down_without_prevote_or_check_quorum(seed: int) -> None:
    """Regression (core fixed in a08c547, found by the simulator, seed 42928 @6fe5c57).

    A leader cut off, then removed from the group, is never contacted by the
    new leader; only replies to its own stale heartbeats can tell it about
    the newer term. Without PreVote/CheckQuorum it used to "lead" forever.
    """
    c = Cluster(
        SimParams(seed=seed, n_nodes=3, persist_prob=1.0, pre_vote=False, check_quorum=False)
    )
    run_until(c, lambda: c.leader() is not None, 300, "a leader")
    old = c.leader()
    old_term = c.nodes[old].raft.term
    c.net.isolate(old)

    def new_leader() -> str | None:
        for x in c.ids:
            r = c.nodes[x].raft
            if x != old and r.role is Role.LEADER and r.term > old_term:
                return x
        return None

    run_until(c, lambda: new_leader() is not None, 300, "a new leader")
    new = new_leader()
    assert c.change_membership(MembershipOp.REMOVE, old)
    run_until(
        c,
        lambda: old not in c.nodes[new].raft.conf_state.voters,
        200,
        "removal applied on the new leader",
    )
    for _ in range(5):  # let messages sent before the removal drain into the cut
        c.round()
    assert c.nodes[old].raft.role is Role.LEADER  # still believes it leads
    c.net.heal()
    run_until(
        c,
        lambda: c.nodes[old].raft.role is not Role.LEADER,
        20 * c.p.election_ticks,
        "the removed stale leader steps down",
    )
    assert c.nodes[old].raft.term >= c.nodes[new].raft.term
