"""Fault schedules: the action vocabulary, seeded generation, and the runner.

A schedule is a list of :class:`Action`. The seeded driver draws one from
``random.Random(seed)``; hypothesis draws them from :func:`actions` (in
``test_simulation.py``). :func:`run_schedule` plays a schedule against a
:class:`~tests.sim.cluster.Cluster`, then heals everything and checks
liveness: a leader emerges and every acknowledged write, plus one new write,
is applied on every node within a bounded number of ticks.
"""

from __future__ import annotations

import dataclasses
import random
import traceback
from dataclasses import dataclass
from enum import IntEnum

from .cluster import Cluster, CoreFactory, MembershipOp, SimParams
from .invariants import SimulationFailure
from .network import NetConfig


class Op(IntEnum):
    TICK = 0  # arg rounds with timers ticking
    DELIVER = 1  # arg rounds of message delivery with timers frozen
    PROPOSE = 2  # arg client proposals
    READ = 3  # one ReadIndex request
    DROP = 4  # lose arg random in-flight messages
    PARTITION = 5  # arg = Shape, arg2 = node index
    HEAL = 6
    # arg = node index; arg2 = 1: the current leader instead; arg2 = 2: a node
    # in the middle of an fsync (a Ready taken but not yet durable) if any;
    # arg2 = 3: node arg at its next persist, after the write, before applying.
    CRASH = 7
    RESTART = 8  # arg picks one of the crashed nodes
    TRANSFER = 9  # leader transfers to node arg
    COMPACT = 10  # node arg snapshots its state machine and compacts its log
    MEMBERSHIP = 11  # arg = MembershipOp, arg2 = node index


class Shape(IntEnum):
    ISOLATE = 0  # one node alone
    HALVES = 1  # a minority (starting at the node) against the rest
    BRIDGE = 2  # two halves joined only through one node
    RING = 3  # each node sees only its neighbours
    ONE_WAY = 4  # node -> next node cut in one direction only


@dataclass(slots=True, frozen=True)
class Action:
    op: Op
    arg: int = 0
    arg2: int = 0

    def __str__(self) -> str:
        return f"{self.op.name}({self.arg},{self.arg2})"


# Weights of the seeded driver: mostly time passing and writes, with faults
# frequent enough that most schedules see several elections.
_WEIGHTS: tuple[tuple[Op, int], ...] = (
    (Op.TICK, 50),
    (Op.DELIVER, 8),
    (Op.PROPOSE, 16),
    (Op.READ, 4),
    (Op.DROP, 3),
    (Op.PARTITION, 3),
    (Op.HEAL, 3),
    (Op.CRASH, 3),
    (Op.RESTART, 5),
    (Op.TRANSFER, 1),
    (Op.COMPACT, 2),
    (Op.MEMBERSHIP, 3),
)
# For long runs (``python -m tests.sim.run --profile chaos``): faults several
# times more often, so rare interleavings come up sooner.
_CHAOS_WEIGHTS: tuple[tuple[Op, int], ...] = (
    (Op.TICK, 45),
    (Op.DELIVER, 8),
    (Op.PROPOSE, 16),
    (Op.READ, 6),
    (Op.DROP, 5),
    (Op.PARTITION, 5),
    (Op.HEAL, 4),
    (Op.CRASH, 5),
    (Op.RESTART, 7),
    (Op.TRANSFER, 4),
    (Op.COMPACT, 4),
    (Op.MEMBERSHIP, 6),
)

# Lease reads (``--lease-reads --profile reads``): many reads, and the faults
# that leave a deposed leader believing it leads (partitions, transfers,
# crashes of followers that promised it their vote-free window).
_READS_WEIGHTS: tuple[tuple[Op, int], ...] = (
    (Op.TICK, 40),
    (Op.DELIVER, 8),
    (Op.PROPOSE, 16),
    (Op.READ, 24),
    (Op.DROP, 2),
    (Op.PARTITION, 6),
    (Op.HEAL, 3),
    (Op.CRASH, 4),
    (Op.RESTART, 6),
    (Op.TRANSFER, 3),
    (Op.COMPACT, 1),
    (Op.MEMBERSHIP, 3),
)


def _cumulative(weights: tuple[tuple[Op, int], ...]) -> tuple[list[Op], list[int]]:
    ops, cum, total = [], [], 0
    for op, w in weights:
        total += w
        ops.append(op)
        cum.append(total)
    return ops, cum


PROFILES: dict[str, tuple[list[Op], list[int]]] = {
    "default": _cumulative(_WEIGHTS),
    "chaos": _cumulative(_CHAOS_WEIGHTS),
    "reads": _cumulative(_READS_WEIGHTS),
}


def random_schedule(
    rng: random.Random, n_nodes: int, length: int, profile: str = "default"
) -> list[Action]:
    ops, cum = PROFILES[profile]
    out: list[Action] = []
    for _ in range(length):
        op = rng.choices(ops, cum_weights=cum)[0]
        if op is Op.PROPOSE:
            # Mostly single writes, sometimes a burst (batching, inflight limits).
            out.append(Action(op, rng.choice((1, 1, 2, 3, 8))))
        elif op in (Op.TICK, Op.DELIVER, Op.DROP):
            out.append(Action(op, rng.randint(1, 3)))
        elif op is Op.PARTITION:
            out.append(Action(op, rng.randrange(len(Shape)), rng.randrange(n_nodes)))
        elif op is Op.MEMBERSHIP:
            out.append(Action(op, rng.randrange(len(MembershipOp)), rng.randrange(n_nodes)))
        elif op is Op.CRASH:
            out.append(Action(op, rng.randrange(n_nodes), rng.randrange(4)))
        else:
            out.append(Action(op, rng.randrange(n_nodes)))
    return out


def random_params(seed: int, n_nodes: int, trace: bool = False) -> SimParams:
    """Per-seed network, disk, clock and core settings, so the seed loop covers a range.

    Safety must hold whatever the settings: PreVote and CheckQuorum are
    liveness features, so some seeds switch them off.
    """
    rng = random.Random(f"params:{seed}")
    net = rng.choice(
        (
            NetConfig(),
            NetConfig(drop=0.02, duplicate=0.02, max_delay=1, reorder=0.02),
            NetConfig(drop=0.1, duplicate=0.05, max_delay=3, reorder=0.05),
            NetConfig(drop=0.3, duplicate=0.1, max_delay=2, reorder=0.1),
            # Latency close to the election timeout: elections overlap.
            NetConfig(drop=0.05, min_delay=1, max_delay=6, reorder=0.1, reorder_delay=10),
            # Some messages arrive many election timeouts late (stale terms,
            # stale acks, stale snapshots from deposed leaders).
            NetConfig(drop=0.05, duplicate=0.05, max_delay=1, reorder=0.05, reorder_delay=60),
        )
    )
    election, heartbeat = rng.choice(((10, 2), (10, 1), (6, 1), (16, 3)))
    modes = rng.choice(((True, True), (True, True), (False, True), (True, False), (False, False)))
    skew: tuple[float, ...] = ()
    if rng.random() < 0.3:
        skew = tuple(rng.choice((0.0, 0.0, 0.2, 0.5)) for _ in range(n_nodes))
    slow_disk: tuple[float, ...] = ()
    if rng.random() < 0.2:
        # One node's fsyncs take ~10 rounds: it acks late and applies late.
        slow = rng.randrange(n_nodes)
        slow_disk = tuple(0.1 if k == slow else 1.0 for k in range(n_nodes))
    return SimParams(
        seed=seed,
        n_nodes=n_nodes,
        election_ticks=election,
        heartbeat_ticks=heartbeat,
        pre_vote=modes[0],
        check_quorum=modes[1],
        persist_prob=rng.choice((0.3, 0.7, 1.0)),
        max_size_per_msg=rng.choice((1, 64, 1 << 20)),
        max_inflight_msgs=rng.choice((1, 4, 256)),
        # Small byte limits exercise flow control and proposal dropping
        # (entries here are ~20 bytes each as counted by the core).
        max_inflight_bytes=rng.choice((32 << 20, 100)),
        max_uncommitted_bytes=rng.choice((64 << 20, 64 << 20, 40)),
        # Committed entries paged across Readies (about one entry per Ready).
        max_committed_bytes_per_ready=rng.choice((64 << 20, 20)),
        tick_skip=skew,
        node_persist_prob=slow_disk,
        net=net,
        trace=trace,
    )


def apply_action(c: Cluster, a: Action) -> None:
    ids = c.ids
    n = len(ids)
    op = a.op
    if c.trace is not None:
        c.note(f"action {a}")
    if op is Op.TICK:
        for _ in range(a.arg):
            c.round(tick=True)
    elif op is Op.DELIVER:
        for _ in range(a.arg):
            c.round(tick=False)
    elif op is Op.PROPOSE:
        for _ in range(a.arg):
            c.propose()
    elif op is Op.READ:
        c.read_index()
    elif op is Op.DROP:
        c.net.drop_random(a.arg)
    elif op is Op.PARTITION:
        _partition(c, Shape(a.arg % len(Shape)), a.arg2 % n)
    elif op is Op.HEAL:
        c.net.heal()
    elif op is Op.CRASH:
        target = None
        if a.arg2 == 1:
            target = c.leader()
        elif a.arg2 == 2:
            syncing = [nid for nid in ids if c.nodes[nid].pending is not None]
            if syncing:
                target = syncing[a.arg % len(syncing)]
        elif a.arg2 == 3:
            c.nodes[ids[a.arg % n]].crash_before_apply = True
            return
        c.crash(target or ids[a.arg % n])
    elif op is Op.RESTART:
        # Restart one of the crashed nodes (arg picks which): restarting a
        # node that is up is a no-op, and would leave crashed ones down for
        # most of the run.
        down = c.crashed()
        if down:
            c.start(down[a.arg % len(down)])
    elif op is Op.TRANSFER:
        c.transfer_leader(ids[a.arg % n])
    elif op is Op.COMPACT:
        nid = ids[a.arg % n]
        if c.nodes[nid].up:
            c.compact(nid)
    elif op is Op.MEMBERSHIP:
        c.change_membership(MembershipOp(a.arg % len(MembershipOp)), ids[a.arg2 % n])


def _partition(c: Cluster, shape: Shape, i: int) -> None:
    ids = c.ids
    n = len(ids)
    net = c.net
    net.heal()
    if shape is Shape.ISOLATE:
        net.isolate(ids[i])
    elif shape is Shape.HALVES:
        net.halves([ids[(i + k) % n] for k in range(n // 2)])
    elif shape is Shape.BRIDGE:
        net.bridge(ids[i])
    elif shape is Shape.RING:
        net.ring()
    else:
        net.one_way(ids[i], ids[(i + 1) % n])
    c.note(f"partition {shape.name} cut={sorted(net.cut)}")


@dataclass(slots=True)
class SimResult:
    seed: int
    n_nodes: int
    actions: int
    ticks: int
    rounds: int
    proposals: int
    acked: int
    reads: int
    lease_reads: int
    checks: int
    settle_ticks: int
    trace_hash: str
    trace: list[str] | None


def settle_budget(c: Cluster) -> int:
    """Ticks the liveness phase may take before it counts as a failure.

    Enough for several election rounds (without PreVote, a node that missed
    its removal disrupts until it is caught up or re-added) plus a follower
    catching up one entry per round trip (max_size_per_msg=1, one inflight
    append) from the start of the log.
    """
    longest = max(c.nodes[nid].disk.storage.last_index() for nid in c.ids)
    return max(400, 60 * c.p.election_ticks) + 4 * longest


def settle(c: Cluster, max_ticks: int) -> int:
    """Heal every fault and require progress (the liveness half of the checker).

    Returns the ticks it took. Fails if, within ``max_ticks``, no leader
    commits a fresh write and brings every node up to every acknowledged write.
    """
    c.note("settle: heal network, restart all, reliable delivery, even clocks")
    c.net.heal()
    c.net.config = NetConfig()
    c.p.persist_prob = 1.0
    # Clocks back to one rate: Raft promises liveness only when timers are
    # comparable (a half-speed node that alone holds the longest log can be
    # kept from ever timing out by a fast node's failing candidacies when
    # PreVote is off, since each new term resets its election timer).
    c.p.tick_skip = ()
    c.p.node_persist_prob = ()
    for nid in c.crashed():
        c.start(nid)
    for nid in c.ids:
        c.nodes[nid].crash_before_apply = False
    final = None
    for t in range(1, max_ticks + 1):
        c.round(tick=True)
        if final is None or not final.acked:
            lead = c.leader()
            # Re-propose when the write may be lost: a different leader (or
            # the same node in a later term) may have overwritten it.
            if lead is not None and (
                final is None or lead != final.node or c.nodes[lead].raft.term != final.term
            ):
                final = c.propose() or final
        if final is not None and final.acked:
            # Nodes removed from the group no longer receive the log.
            low = min(c.nodes[nid].disk.applied for nid in c.members())
            if low >= c.acked_max_index:
                return t
    lead = c.leader()
    states = ", ".join(_node_state(c, nid) for nid in c.ids)
    c.checker.fail(
        "Liveness",
        f"after healing, {max_ticks} ticks passed without "
        + ("a leader" if lead is None else f"full progress (leader {lead})")
        + f"; acked_max_index={c.acked_max_index}; final write "
        + ("none accepted" if final is None else f"{final.data!r} acked={final.acked}")
        + f"; nodes: {states}",
    )
    return max_ticks  # pragma: no cover - fail() raises


def _node_state(c: Cluster, nid: str) -> str:
    r = c.nodes[nid].raft
    if r is None:
        return f"{nid}(down applied={c.nodes[nid].disk.applied})"
    return (
        f"{nid}(term={r.term} role={r.role.name} commit={r.commit_index} "
        f"applied={c.nodes[nid].disk.applied})"
    )


def run_schedule(
    params: SimParams,
    actions: list[Action],
    core_factory: CoreFactory | None = None,
    check_liveness: bool = True,
) -> SimResult:
    return play(make_cluster(params, core_factory), actions, check_liveness)


def make_cluster(params: SimParams, core_factory: CoreFactory | None = None) -> Cluster:
    return Cluster(params) if core_factory is None else Cluster(params, core_factory)


def play(c: Cluster, actions: list[Action], check_liveness: bool = True) -> SimResult:
    """Run ``actions`` on ``c``, then (optionally) the liveness phase and the final scan.

    An exception escaping the core is a failure too (``step`` must never
    raise on odd input), reported with the seed like any invariant.
    """
    try:
        for a in actions:
            apply_action(c, a)
        settle_ticks = 0
        if check_liveness:
            settle_ticks = settle(c, max_ticks=settle_budget(c))
        c.final_check()
    except SimulationFailure:
        raise
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)[-1]
        c.checker.fail(
            "No exceptions",
            f"{type(e).__name__}: {e} at {tb.filename}:{tb.lineno} ({tb.name})",
        )
    return SimResult(
        seed=c.p.seed,
        n_nodes=c.p.n_nodes,
        actions=len(actions),
        ticks=c.ticks,
        rounds=c.now,
        proposals=len(c.proposals),
        acked=sum(1 for p in c.proposals if p.acked),
        reads=c.reads_done,
        lease_reads=c.lease_reads,
        checks=c.checker.checks,
        settle_ticks=settle_ticks,
        trace_hash=c.trace_hash(),
        trace=c.trace,
    )


# Actions per seeded schedule: ~1.2 ticks each, so ~500 ticks (~25 election
# timeouts) per schedule, plus the liveness phase.
DEFAULT_LENGTH = 400


def run_seed(
    seed: int,
    n_nodes: int,
    length: int = DEFAULT_LENGTH,
    core_factory: CoreFactory | None = None,
    trace: bool = False,
    check_liveness: bool = True,
    profile: str = "default",
    broadcast_commit: bool = True,
    lease_reads: bool = False,
) -> SimResult:
    """The seeded driver: parameters and schedule both derived from ``seed``."""
    params = seed_params(seed, n_nodes, trace, broadcast_commit, lease_reads)
    actions = random_schedule(random.Random(f"schedule:{seed}"), n_nodes, length, profile)
    c = make_cluster(params, core_factory)
    c.checker.replay = replay_command(
        seed, n_nodes, length, core_factory, check_liveness, profile, broadcast_commit,
        lease_reads,
    )
    return play(c, actions, check_liveness)


def seed_params(
    seed: int, n_nodes: int, trace: bool, broadcast_commit: bool, lease_reads: bool
) -> SimParams:
    """``random_params`` with the run-wide switches of the CLI and the CI loops."""
    params = random_params(seed, n_nodes, trace=trace)
    if not broadcast_commit:
        params = dataclasses.replace(params, broadcast_commit=False)
    if lease_reads:
        # A lease is safe only under bounded clock drift; the seeds' skipped
        # ticks are unbounded drift, so lease runs keep clocks even. It also
        # rests on CheckQuorum's vote-free window (thesis §4.2.3).
        params = dataclasses.replace(
            params, lease_reads=True, tick_skip=(), check_quorum=True
        )
    return params


def replay_command(
    seed: int,
    n_nodes: int,
    length: int,
    core_factory: CoreFactory | None = None,
    check_liveness: bool = True,
    profile: str = "default",
    broadcast_commit: bool = True,
    lease_reads: bool = False,
) -> str:
    cmd = f"python -m tests.sim.replay --seed {seed} --nodes {n_nodes}"
    if profile != "default":
        cmd += f" --profile {profile}"
    if length != DEFAULT_LENGTH:
        cmd += f" --length {length}"
    if core_factory is not None:
        cmd += f" --mutant {core_factory.__name__}"
    if not check_liveness:
        cmd += " --no-liveness"
    if not broadcast_commit:
        cmd += " --no-broadcast-commit"
    if lease_reads:
        cmd += " --lease-reads"
    return cmd
