"""Hand-written schedules for bugs random search rarely reaches.

``figure8`` replays the scenario of Raft paper Figure 8 (§5.4.2) on five
nodes, with the simulator's partitions, crashes and one message rewrite:

(a) leader L1 (term t1) appends X at index ix and replicates it to only one
    follower F (partition {L1, F} | {C, D, E});
(b) C is elected in term t2 by the majority side, appends its no-op at ix,
    and is isolated and crashed before anyone else stores it;
(c) one of L1/F becomes leader L in term t3 and replicates X to D and E
    (the network strips its own no-op from what reaches them), so X is on
    a majority but no entry of term t3 is;
(d) L and the other crash; C restarts and is elected by C, D, E (its last
    term t2 beats their t1) and overwrites X.

A core that commits X in (c) by counting replicas (an entry of an older
term) has lost a committed entry in (d): the checker's Leader Completeness
(and, if X was applied, State Machine Safety) fires. A correct core never
commits X in (c), and nothing is violated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from raftlog.raft.types import Message, MessageType, Role

from .cluster import Cluster, CoreFactory, MembershipOp, SimParams


class ScenarioError(RuntimeError):
    """The scenario could not set up its preconditions (not an invariant violation)."""


def run_until(c: Cluster, cond: Callable[[], bool], max_rounds: int, what: str) -> None:
    for _ in range(max_rounds):
        if cond():
            return
        c.round(tick=True)
    if not cond():
        raise ScenarioError(f"seed={c.p.seed}: not reached within {max_rounds} rounds: {what}")


def _durable_term(c: Cluster, nid: str, index: int) -> int | None:
    st = c.nodes[nid].disk.storage
    if index < st.first_index() - 1 or index > st.last_index():
        return None
    return st.term(index)


@dataclass(slots=True)
class Figure8Result:
    cluster: Cluster
    x_index: int
    x_term: int
    old_term_committed: bool  # L's durable commit covered X before C returned


def figure8(core_factory: CoreFactory | None = None, seed: int = 8) -> Figure8Result:
    params = SimParams(seed=seed, n_nodes=5, persist_prob=1.0, max_size_per_msg=1)
    c = Cluster(params) if core_factory is None else Cluster(params, core_factory)
    ids = c.ids
    # A stable leader whose log every node holds and has applied.
    run_until(
        c,
        lambda: c.leader() is not None
        and c.nodes[c.leader()].raft.commit_index > 0
        and all(c.nodes[n].disk.applied == c.nodes[c.leader()].raft.commit_index for n in ids),
        200,
        "initial leader with everything applied everywhere",
    )
    l1 = c.leader()
    base = c.nodes[l1].raft.last_index
    f = next(n for n in ids if n != l1)
    majority_side = [n for n in ids if n not in (l1, f)]

    # (a) X reaches F only.
    c.net.split([l1, f], majority_side)
    c.client_leader = l1
    prop = c.propose()
    if prop is None or prop.index != base + 1:
        raise ScenarioError(f"proposal to {l1} not appended at {base + 1}: {prop}")
    ix, t1 = prop.index, prop.term
    run_until(c, lambda: _durable_term(c, f, ix) == t1, 50, f"X durable on {f}")

    # (b) A majority-side leader C in a newer term; isolate it at once so its
    # no-op at ix stays on its own disk, then crash it.
    def majority_leader() -> str | None:
        for n in majority_side:
            r = c.nodes[n].raft
            if r.role is Role.LEADER and r.term > t1:
                return n
        return None

    run_until(c, lambda: majority_leader() is not None, 300, "leader on the majority side")
    cnode = majority_leader()
    t2 = c.nodes[cnode].raft.term
    c.net.isolate(cnode)
    run_until(c, lambda: _durable_term(c, cnode, ix) == t2, 50, f"{cnode}'s no-op durable")
    c.crash(cnode)
    d, e = (n for n in majority_side if n != cnode)

    # (c) Heal; only L1 or F can win (D and E lack X). D and E receive
    # entries up to ix only: the new leader's own no-op never reaches them.
    c.net.heal()

    def strip_beyond_x(m: Message) -> Message:
        if m.type is MessageType.APPEND and m.to in (d, e) and m.entries:
            kept = tuple(x for x in m.entries if x.index <= ix)
            if len(kept) != len(m.entries):
                return dataclasses.replace(m, entries=kept)
        return m

    c.net.intercept = strip_beyond_x

    def new_leader() -> str | None:
        for n in (l1, f):
            r = c.nodes[n].raft
            if r is not None and r.role is Role.LEADER and r.term > t2:
                return n
        return None

    run_until(c, lambda: new_leader() is not None, 400, "new leader among L1/F")
    lead = new_leader()
    run_until(
        c,
        lambda: _durable_term(c, d, ix) == t1 and _durable_term(c, e, ix) == t1,
        200,
        "X durable on D and E",
    )
    # A core that commits X by counting does so now; a correct one never does.
    # Give it a bounded number of rounds either way.
    for _ in range(4 * params.heartbeat_ticks + 10):
        if c.checker.durable_commit.get(lead, 0) >= ix:
            break
        c.round(tick=True)
    old_term_committed = c.checker.durable_commit.get(lead, 0) >= ix

    # (d) L1 and F crash, C returns and is elected by C, D, E.
    c.net.intercept = None
    c.crash(l1)
    c.crash(f)
    c.start(cnode)

    def c_leads_with_noop() -> bool:
        r = c.nodes[cnode].raft
        if r is None or r.role is not Role.LEADER:
            return False
        st = c.nodes[cnode].disk.storage
        return st.term(st.last_index()) == r.term

    run_until(c, c_leads_with_noop, 400, f"{cnode} elected again with its no-op durable")
    return Figure8Result(c, ix, t1, old_term_committed)


@dataclass(slots=True)
class RemovedJointLeaderSetup:
    cluster: Cluster
    leave_index: int


def removed_joint_leader(
    core_factory: CoreFactory | None = None,
    seed: int = 0,
    pre_vote: bool = True,
    check_quorum: bool = True,
) -> RemovedJointLeaderSetup:
    """The shape of sim seed 116 (a liveness bug), built by hand on three nodes.

    n2 leads the joint configuration {n1,n3} & {n2,n3} (it replaces itself by
    n1) and commits the leave-joint entry at k. The network then arranges:
    n3 never hears a commit index >= k (its last commit news is lost, as if
    it crashed), n3 holds k+2 entries, n1 only k, n2 k+3. Once n2 applies the
    leave-joint and steps down: n3 still uses the joint config and needs
    n2's vote (refused: n2's log is longer); n1 uses {n1,n3} and needs n3's
    (refused: n3's log is longer). Returns the cluster at that point; the
    caller heals and checks liveness.
    """
    c = Cluster(
        SimParams(
            seed=seed, n_nodes=3, persist_prob=1.0, pre_vote=pre_vote, check_quorum=check_quorum
        ),
        *(() if core_factory is None else (core_factory,)),
    )
    run_until(c, lambda: c.leader() is not None, 300, "a leader")
    if c.leader() != "n2":
        c.transfer_leader("n2")
        run_until(c, lambda: c.leader() == "n2", 300, "n2 leads after a transfer")
    n2 = c.nodes["n2"]
    c.client_leader = "n2"
    if not c.change_membership(MembershipOp.REMOVE, "n1"):
        raise ScenarioError("could not propose the removal of n1")
    run_until(
        c,
        lambda: n2.raft.conf_state.voters == ("n2", "n3")
        and all(c.nodes[x].disk.applied == n2.raft.commit_index for x in ("n2", "n3")),
        200,
        "n1 removed everywhere",
    )
    if not c.change_membership(MembershipOp.REPLACE, "n2"):
        raise ScenarioError("could not propose the joint replacement of n2 by n1")
    run_until(
        c, lambda: bool(n2.raft.conf_state.voters_outgoing), 200, "n2 applies the joint config"
    )
    # The leader proposed leave-joint on applying the joint config (auto_leave).
    k = n2.raft.last_index
    for _ in range(3):
        if c.propose() is None:
            raise ScenarioError("n2 refused a write while joint")

    def arrange(m: Message) -> Message | None:
        if m.frm != "n2" or m.type not in (MessageType.APPEND, MessageType.HEARTBEAT):
            return m
        if m.to == "n3":
            kept = tuple(x for x in m.entries if x.index <= k + 2)
            return dataclasses.replace(m, entries=kept, commit=min(m.commit, k - 1))
        if m.to == "n1":
            return dataclasses.replace(m, entries=tuple(x for x in m.entries if x.index <= k))
        return m

    c.net.intercept = arrange
    run_until(
        c,
        lambda: n2.raft.conf_state.voters == ("n1", "n3")
        and not n2.raft.conf_state.voters_outgoing,
        300,
        "n2 applies leave-joint (it used to step down at once here)",
    )
    for _ in range(5):
        c.round()
    c.net.intercept = None
    return RemovedJointLeaderSetup(c, k)
