"""Hand-written schedules for lease reads (thesis §6.4.1).

A lease lets a leader answer a read from its own commit index, with no
heartbeat round, because a quorum promised not to vote for anyone else for
an election timeout (§4.2.3). Each scenario below sets up one way another
leader could be elected and commit while the old one still holds a lease:

- ``isolated``: the leader is cut off and the others elect a new leader once
  their vote-free window has passed;
- ``restart``: a follower that acknowledged the lease crashes and restarts
  at once, forgetting its promise, and votes for a node that had been cut
  off from the leader;
- ``transfer``: the leader hands leadership over; the target's election
  bypasses the vote-free window by design.

Throughout, every round that the old leader claims a lease, the client reads
from it. The checker's "Linearizable read" invariant fails if such a read
misses a write the new leader committed. A correct core serves some of those
reads (so the scenario exercised the lease) and never a stale one; each
mutant in ``mutants.LEASE_MUTANTS`` drops one lease condition and is caught.
"""

from __future__ import annotations

from collections.abc import Callable

from raftlog.raft.types import MessageType, Role

from .cluster import Cluster, CoreFactory, Proposal, SimParams
from .network import NetConfig
from .scenarios import run_until

LEASE_SCENARIOS = ("isolated", "restart", "transfer")


def lease_cluster(seed: int, core_factory: CoreFactory | None = None) -> Cluster:
    params = SimParams(
        seed=seed,
        n_nodes=3,
        # A long election timeout (so a long lease) against elections that
        # take a few rounds: a lease condition that is missing shows at once.
        election_ticks=20,
        heartbeat_ticks=2,
        lease_reads=True,
        persist_prob=1.0,
        net=NetConfig.reliable(),
    )
    return Cluster(params) if core_factory is None else Cluster(params, core_factory)


def leader_with_lease(c: Cluster) -> str:
    """Elect a leader, commit a few writes through it, and wait until it holds a lease."""
    run_until(c, lambda: c.leader() is not None, 300, "a first leader")
    lead = c.leader()
    assert lead is not None
    c.client_leader = lead
    for _ in range(3):
        c.propose()
        c.round()
    run_until(c, lambda: c.nodes[lead].raft.has_lease, 100, f"{lead} holds a lease")
    return lead


def _other_leader(c: Cluster, old: str) -> str | None:
    for nid in c.live():
        if nid != old and c.nodes[nid].raft.role is Role.LEADER:
            return nid
    return None


def run_lease_scenario(name: str, seed: int, core_factory: CoreFactory | None = None) -> int:
    """Play scenario ``name``; returns how many reads the old leader's lease served.

    Raises SimulationFailure if one of them was stale.
    """
    c = lease_cluster(seed, core_factory)
    old = leader_with_lease(c)
    others = [n for n in c.ids if n != old]
    setup: dict[str, Callable[[], None]] = {
        "isolated": lambda: c.net.isolate(old),
        "restart": lambda: _restart_setup(c, old, others),
        "transfer": lambda: _transfer_setup(c, old, others[0]),
    }
    served = 0

    def read_if_leased() -> None:
        nonlocal served
        raft = c.nodes[old].raft
        if raft is not None and raft.has_lease and c.read_index(at=old):
            served += 1

    read_if_leased()
    setup[name]()
    write: Proposal | None = None

    def new_write_committed() -> bool:
        nonlocal write
        read_if_leased()
        lead = _other_leader(c, old)
        if write is None and lead is not None:
            c.client_leader = lead
            write = c.propose()
        return write is not None and write.acked

    run_until(c, new_write_committed, 600, "a new leader commits a write")
    # The old leader may still believe it leads: keep reading from it.
    for _ in range(3 * c.p.election_ticks):
        read_if_leased()
        c.round()
    c.final_check()
    return served


def _restart_setup(c: Cluster, old: str, others: list[str]) -> None:
    """``others[1]`` loses the leader first; then the leader is cut off from
    everyone and ``others[0]``, which acknowledged its lease, crashes and
    restarts at once."""
    a, b = others
    c.net.split([old], [b])
    # b's election timer runs out while a (in the lease) refuses its votes.
    for _ in range(2 * c.p.election_ticks):
        c.round()
    c.net.isolate(old)
    c.crash(a)
    c.start(a)
    # b's timer fires now (any moment is possible for a randomized timer).
    c.nodes[b].raft.campaign()


def _transfer_setup(c: Cluster, old: str, target: str) -> None:
    """Leadership goes to ``target``; the old leader is cut off the moment its
    TimeoutNow has left, so it never hears of the new term."""
    c.nodes[old].raft.transfer_leader(target)
    run_until(
        c,
        lambda: any(m.type is MessageType.TIMEOUT_NOW for m in c.net.pending_messages()),
        50,
        "TimeoutNow on the wire",
    )
    c.net.isolate(old)
    c.net.cut -= {(old, target)}  # the TimeoutNow itself still arrives
