"""A simulated cluster of Raft cores: disks, crashes, a Ready pipeline, a client.

Each node has a *disk* (a ``MemoryStorage`` holding only what was persisted,
plus its durably applied state machine) and, while it is up, a ``RaftNode``
reading from that disk. The Ready contract of ``raftlog.raft.types.Ready`` is
modelled with a real gap between taking a Ready and persisting it:

1. ``ready()`` is taken and its ``messages`` are sent at once (they depend on
   nothing unpersisted, thesis §10.2.1);
2. at a *later* round (chosen by the seeded rng) the snapshot, entries and
   hard state are written to the disk, the ``persisted_messages`` are sent,
   committed entries are applied (durably, with the applied index) and
   ``advance()`` is called.

A crash between 1 and 2 loses the Ready: its persisted_messages never leave
and its entries are not on disk. That is the window in which "ack before
persist" bugs (Raft Figure 2) become visible. A crash can also hit after the
durable write of 2 but before the apply, so a restart resumes with an applied
index below the durable commit.

Restart builds a fresh ``RaftNode`` from the disk with ``Config.applied`` set
to the durably applied index and a fresh rng derived from the seed.

The state machine is the list of applied (term, data) pairs; a snapshot's
``data`` is a key into the cluster's snapshot registry holding a copy of it.
Applying a CONF_CHANGE entry calls ``apply_conf_change`` and saves the
resulting ConfState with the applied index (``MemoryStorage.set_conf_state``).

The cluster also plays the client (writes to the believed leader, ReadIndex
requests, leadership transfers, membership changes, compaction) and feeds
every observation to the ``invariants.Checker``; the one check that needs to
see all disks at once (a leader's commit is on a disk majority) lives here.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from raftlog.raft.errors import NotLeaderError, ProposalDroppedError, RaftError
from raftlog.raft.memory_storage import MemoryStorage
from raftlog.raft.node import Config, RaftNode, decode_conf_change_entry
from raftlog.raft.storage import StorageError
from raftlog.raft.types import (
    ConfChange,
    ConfChangeItem,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Ready,
    Role,
)

from .invariants import Checker
from .network import NetConfig, Network

log = logging.getLogger(__name__)

CoreFactory = Callable[[Config, MemoryStorage, random.Random], RaftNode]


@dataclass(slots=True)
class SimParams:
    """Knobs of one simulated run; all randomness is derived from ``seed``."""

    seed: int
    n_nodes: int = 3
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 32 << 20
    max_uncommitted_bytes: int = 64 << 20
    max_committed_bytes_per_ready: int = 64 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    # Probability that a pending Ready is persisted in a given round.
    persist_prob: float = 0.7
    # Clock drift: probability that a node's timer misses a tick in a round
    # (per node, in id order; missing entries mean 0). Skewed clocks make
    # some nodes time out well before others.
    tick_skip: tuple[float, ...] = ()
    # A slow disk: per-node persist probability overriding persist_prob
    # (per node in id order; missing entries use persist_prob).
    node_persist_prob: tuple[float, ...] = ()
    # The direct disk-majority check of each commit; switched off only to show
    # that the end-to-end invariants catch the same bugs later on their own.
    check_commit_durability: bool = True
    # Config.broadcast_commit: the server runs with it off (followers learn the
    # commit index from the next APPEND or heartbeat).
    broadcast_commit: bool = True
    # Config.lease_reads, with lease_ticks = election_ticks - 1: every clock
    # here advances one tick per round, the bounded drift a lease assumes.
    lease_reads: bool = False
    net: NetConfig = field(default_factory=NetConfig)
    trace: bool = False


@dataclass(slots=True)
class Disk:
    """What survives a crash."""

    storage: MemoryStorage
    # The state machine: sm[i-1] = (term, data) of the entry applied at index i.
    sm: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def applied(self) -> int:
        return len(self.sm)


@dataclass(slots=True)
class SimNode:
    id: str
    disk: Disk
    raft: RaftNode | None = None
    pending: Ready | None = None
    incarnation: int = 0
    last_commit: int = 0
    # Term in which this incarnation was last seen leading (checked once per term).
    leader_term: int = 0
    # Crash at the next persist, after the durable write and before applying.
    crash_before_apply: bool = False

    @property
    def up(self) -> bool:
        return self.raft is not None


@dataclass(slots=True)
class Coverage:
    """What a run exercised; tests assert the fault space stays covered."""

    crashes: int = 0
    lost_readies: int = 0  # crashes that lost a taken, un-persisted Ready
    crashes_before_apply: int = 0
    restarts: int = 0
    snapshots_installed: int = 0
    compactions: int = 0
    conf_changes_applied: int = 0
    transfers: int = 0


class MembershipOp(IntEnum):
    REMOVE = 0
    ADD_VOTER = 1
    ADD_LEARNER = 2
    REPLACE = 3  # joint consensus: remove one voter, add another


@dataclass(slots=True)
class Proposal:
    data: bytes
    node: str
    incarnation: int
    index: int
    term: int
    acked: bool = False


@dataclass(slots=True)
class PendingRead:
    ctx: bytes
    node: str
    min_index: int


class Cluster:
    def __init__(self, params: SimParams, core_factory: CoreFactory = RaftNode) -> None:
        self.p = params
        self.core_factory = core_factory
        self.ids = tuple(f"n{i + 1}" for i in range(params.n_nodes))
        self.now = 0
        self.ticks = 0
        self.rng = random.Random(f"sim:{params.seed}")
        self.net = Network(random.Random(f"net:{params.seed}"), self.ids, params.net)
        self.checker = Checker(params.seed, params.n_nodes)
        self.trace: list[str] | None = [] if params.trace else None
        self._digest = hashlib.sha256()
        conf = ConfState(voters=self.ids)
        self.nodes: dict[str, SimNode] = {
            nid: SimNode(nid, Disk(MemoryStorage(conf_state=conf))) for nid in self.ids
        }
        self.snapshots: dict[bytes, tuple[tuple[int, bytes], ...]] = {}
        # Messages sent, by (sender, type): lets scenarios assert what happened.
        self.sent: dict[tuple[str, MessageType], int] = {}
        self.coverage = Coverage()
        # Client state.
        self.proposals: list[Proposal] = []
        self._inflight: dict[tuple[str, int], Proposal] = {}  # (node, index) -> proposal
        self.acked_max_index = 0
        self.client_leader: str | None = None
        self.reads: dict[bytes, PendingRead] = {}
        self.reads_done = 0
        # Reads asked of a leader that held a lease (SimParams.lease_reads).
        self.lease_reads = 0
        self._counter = 0
        for nid in self.ids:
            self.start(nid)

    # ---- tracing ---------------------------------------------------------------

    def note(self, event: str) -> None:
        if self.trace is not None:
            line = f"t={self.now} {event}"
            self.trace.append(line)
            self._digest.update(line.encode())
            self._digest.update(b"\n")

    def trace_hash(self) -> str:
        """Digest of the trace plus the final durable state of every node."""
        h = self._digest.copy()
        for nid in self.ids:
            d = self.nodes[nid].disk
            h.update(repr((nid, d.storage.hard_state, d.storage.all_entries(), d.sm)).encode())
        return h.hexdigest()

    # ---- lifecycle -----------------------------------------------------------

    def _config(self, nid: str, applied: int) -> Config:
        p = self.p
        return Config(
            id=nid,
            election_ticks=p.election_ticks,
            heartbeat_ticks=p.heartbeat_ticks,
            max_size_per_msg=p.max_size_per_msg,
            max_inflight_msgs=p.max_inflight_msgs,
            max_inflight_bytes=p.max_inflight_bytes,
            max_uncommitted_bytes=p.max_uncommitted_bytes,
            max_committed_bytes_per_ready=p.max_committed_bytes_per_ready,
            pre_vote=p.pre_vote,
            check_quorum=p.check_quorum,
            applied=applied,
            broadcast_commit=p.broadcast_commit,
            lease_reads=p.lease_reads,
            lease_ticks=p.election_ticks - 1 if p.lease_reads else 0,
        )

    def start(self, nid: str) -> None:
        node = self.nodes[nid]
        assert node.raft is None
        node.incarnation += 1
        self.coverage.restarts += node.incarnation > 1
        rng = random.Random(f"core:{self.p.seed}:{nid}:{node.incarnation}")
        node.raft = self.core_factory(self._config(nid, node.disk.applied), node.disk.storage, rng)
        node.last_commit = node.raft.commit_index
        node.leader_term = 0
        node.pending = None
        log.debug(
            "event=sim_start seed=%d node=%s incarnation=%d applied=%d",
            self.p.seed, nid, node.incarnation, node.disk.applied,
        )
        self.note(f"{nid} start incarnation={node.incarnation} applied={node.disk.applied}")

    def crash(self, nid: str) -> None:
        node = self.nodes[nid]
        if node.raft is None:
            return
        lost = node.pending
        node.raft = None
        node.pending = None
        self.coverage.crashes += 1
        self.coverage.lost_readies += lost is not None
        node.crash_before_apply = False
        log.debug(
            "event=sim_crash seed=%d node=%s lost_ready=%s", self.p.seed, nid, lost is not None
        )
        self.note(
            f"{nid} crash lost_entries={len(lost.entries) if lost else 0} "
            f"lost_persisted_msgs={len(lost.persisted_messages) if lost else 0}"
        )

    def live(self) -> list[str]:
        return [nid for nid in self.ids if self.nodes[nid].raft is not None]

    def crashed(self) -> list[str]:
        return [nid for nid in self.ids if self.nodes[nid].raft is None]

    # ---- the main loop -------------------------------------------------------------

    def round(self, tick: bool = True) -> None:
        """One simulated time unit: deliver due messages, tick, run the Ready pipeline."""
        self.now += 1
        self.checker.step = self.now
        nodes = self.nodes
        for msg in self.net.due(self.now):
            node = nodes[msg.to]
            raft = node.raft
            if raft is None:
                continue
            if self.trace is not None:
                self.note(f"{msg.to} <- {msg.frm} {_fmt_msg(msg)}")
            raft.step(msg)
            self._observe(node)
            if msg.type is MessageType.SNAPSHOT:
                sender = nodes[msg.frm].raft
                if sender is not None and hasattr(sender, "report_snapshot"):
                    sender.report_snapshot(msg.to, True)
        if tick:
            self.ticks += 1
            skip = self.p.tick_skip
            for k, nid in enumerate(self.ids):
                node = nodes[nid]
                if node.raft is not None:
                    if k < len(skip) and skip[k] and self.rng.random() < skip[k]:
                        continue
                    node.raft.tick()
                    self._observe(node)
        slow = self.p.node_persist_prob
        for k, nid in enumerate(self.ids):
            node = nodes[nid]
            if node.raft is not None:
                prob = slow[k] if k < len(slow) else self.p.persist_prob
                self.pump(node, self.rng.random() < prob)
        for frm, to in self.net.take_unreachable():
            sender = nodes[frm].raft
            if sender is not None:
                sender.report_unreachable(to)
        for msg in self.net.take_lost_snapshots():
            sender = nodes[msg.frm].raft
            if sender is not None and hasattr(sender, "report_snapshot"):
                sender.report_snapshot(msg.to, False)

    def _observe(self, node: SimNode) -> None:
        raft = node.raft
        commit = raft.commit_index
        if commit < node.last_commit:
            self.checker.on_commit_regress(node.id, node.last_commit, commit, node.incarnation)
        elif (
            commit > node.last_commit
            and raft.role is Role.LEADER
            and self.p.check_commit_durability
        ):
            self._check_commit_durable_on_quorum(node, commit)
        node.last_commit = commit
        if raft.role is Role.LEADER:
            term = raft.term
            if node.leader_term != term:
                node.leader_term = term
                self.checker.on_leader(node.id, term)
                rl = raft.raft_log
                self.checker.check_leader_completeness(
                    node.id, rl.last_index(), term, rl.first_index(), rl.zero_term,
                    what="log on taking office",
                )

    def _check_commit_durable_on_quorum(self, node: SimNode, commit: int) -> None:
        """A leader commits only what a majority holds on disk (Raft §5.3, DESIGN §3.1).

        Checked the moment the leader's commit index moves, against the
        simulated disks: each voter group of the leader's configuration (both
        during joint consensus) must have a majority whose durable log holds
        the entry at ``commit`` with the leader's term for it, or a snapshot
        covering it.
        """
        raft = node.raft
        term = raft.raft_log.zero_term(commit)
        cs = raft.conf_state
        holders = []
        for nid in self.ids:
            st = self.nodes[nid].disk.storage
            if commit < st.first_index() or (
                commit <= st.last_index() and st.term(commit) == term
            ):
                holders.append(nid)
        for group in (cs.voters, cs.voters_outgoing):
            if not group:
                continue
            have = [n for n in group if n in holders]
            if len(have) <= len(group) // 2:
                self.checker.fail(
                    "Commit durability",
                    f"{node.id} (leader, term {raft.term}) committed index {commit} (term {term}) "
                    f"but only {have} of voters {group} hold it on disk",
                )

    def pump(self, node: SimNode, persist: bool) -> None:
        """Advance ``node``'s Ready pipeline by one stage (two if ``persist``)."""
        raft = node.raft
        if node.pending is not None:
            if not persist:
                return
            self._persist(node, node.pending)
            node.pending = None
            if node.raft is None:  # crashed between the write and the apply
                return
        if raft.has_ready():
            rd = raft.ready()
            node.pending = rd
            for m in rd.messages:
                self._send(m)

    def _send(self, m: Message) -> None:
        key = (m.frm, m.type)
        self.sent[key] = self.sent.get(key, 0) + 1
        if self.trace is not None:
            self.note(f"{m.frm} -> {m.to} {_fmt_msg(m)}")
        self.net.send(m, self.now)

    def _persist(self, node: SimNode, rd: Ready) -> None:
        raft = node.raft
        disk = node.disk
        st = disk.storage
        ck = self.checker
        if self.trace is not None:
            self.note(
                f"{node.id} persist entries={[(e.index, e.term) for e in rd.entries]} "
                f"hs={rd.hard_state} snap={rd.snapshot.meta.index if rd.snapshot else None} "
                f"apply={[e.index for e in rd.committed_entries]}"
            )
        # 1. Durable write: snapshot, entries, hard state (one atomic step).
        snap = rd.snapshot
        if snap is not None and not snap.is_empty():
            if snap.meta.index <= disk.applied:
                ck.fail(
                    "Applied monotonicity",
                    f"{node.id} handed snapshot at index {snap.meta.index} but its state machine "
                    f"already applied {disk.applied}",
                )
            st.apply_snapshot(snap)
            self.coverage.snapshots_installed += 1
            contents = self.snapshots[snap.data]
            disk.sm = list(contents)
            ck.check_snapshot_contents(node.id, disk.sm)
        if rd.entries:
            first = rd.entries[0].index
            prev_term = _durable_term(st, first - 1)
            st.append(rd.entries)
            ck.on_persist_entries(node.id, rd.entries, prev_term)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
            ck.on_hard_state(node.id, rd.hard_state.term, rd.hard_state.vote)
        if rd.entries or rd.hard_state is not None or snap is not None:
            hs = st.hard_state
            ck.on_durable_commit(node.id, hs.term, hs.commit, lambda i: _durable_entry(st, i))
            last = st.last_index()
            ck.check_leader_completeness(
                node.id, last, st.term(last), st.first_index(), st.term
            )
        # 2. Messages that must wait for durability (vote grants, append acks).
        for m in rd.persisted_messages:
            self._send(m)
        if node.crash_before_apply:
            # Power loss after the fsync, before the state machine caught up:
            # the restart resumes from an applied index below the durable commit.
            node.crash_before_apply = False
            self.coverage.crashes_before_apply += 1
            self.crash(node.id)
            return
        # 3. Apply, durably with the applied index.
        term_now = raft.term
        for e in rd.committed_entries:
            self._apply(node, e, term_now)
        for rs in rd.read_states:
            pr = self.reads.pop(rs.context, None)
            if pr is not None:
                ck.on_read_state(node.id, rs.context, rs.index, pr.min_index)
                self.reads_done += 1
        # 4. Acknowledge.
        raft.advance(rd)
        self._observe(node)

    def _apply(self, node: SimNode, e: Entry, term_now: int) -> None:
        disk = node.disk
        expected = disk.applied + 1
        if e.index != expected:
            self.checker.fail(
                "Apply order",
                f"{node.id} asked to apply index {e.index} but its state machine is at "
                f"{disk.applied} (entries must be applied once, in order)",
            )
        st = disk.storage
        if e.index >= st.first_index() and (
            e.index > st.last_index() or st.term(e.index) != e.term
        ):
            self.checker.fail(
                "Apply only durable entries",
                f"{node.id} asked to apply index {e.index} term {e.term}, not in its durable log "
                f"(last={st.last_index()})",
            )
        disk.sm.append((e.term, e.data))
        self.checker.on_apply(node.id, e, term_now)
        if e.type is EntryType.CONF_CHANGE:
            # Membership takes effect when applied (Raft §6 / thesis §4.1, as
            # etcd); the resulting ConfState is durable with the applied index.
            cc = decode_conf_change_entry(e)
            if cc is not None:
                cs = node.raft.apply_conf_change(cc)
                st.set_conf_state(cs)
                self.coverage.conf_changes_applied += 1
                self.note(f"{node.id} conf -> voters={cs.voters} out={cs.voters_outgoing} "
                          f"learners={cs.learners + cs.learners_next}")
        prop = self._inflight.pop((node.id, e.index), None)
        if (
            prop is not None
            and prop.incarnation == node.incarnation
            and prop.term == e.term
            and prop.data == e.data
        ):
            prop.acked = True
            self.acked_max_index = max(self.acked_max_index, e.index)
            self.note(f"{node.id} ack {prop.data!r} index={e.index} term={e.term}")

    # ---- client actions --------------------------------------------------------------

    def _next_id(self, prefix: str) -> bytes:
        self._counter += 1
        return f"{prefix}{self._counter}".encode()

    def _client_target(self) -> SimNode | None:
        live = self.live()
        if not live:
            return None
        if self.client_leader in live:
            return self.nodes[self.client_leader]
        return self.nodes[self.rng.choice(live)]

    def propose(self) -> Proposal | None:
        """A client proposes a unique value to the node it believes leads."""
        node = self._client_target()
        if node is None:
            return None
        data = self._next_id("v")
        raft = node.raft
        try:
            index = raft.propose(data)
        except NotLeaderError as e:
            self.client_leader = e.leader
            self.note(f"{node.id} propose {data!r} -> not leader (hint {e.leader})")
            return None
        except ProposalDroppedError as e:
            self.note(f"{node.id} propose {data!r} -> dropped ({e.reason})")
            return None
        self.client_leader = node.id
        prop = Proposal(data, node.id, node.incarnation, index, raft.term)
        self.proposals.append(prop)
        self._inflight[(node.id, index)] = prop
        self.note(f"{node.id} propose {data!r} index={index} term={raft.term}")
        self._observe(node)
        return prop

    def read_index(self, at: str | None = None) -> bool:
        """A ReadIndex request at node ``at``, or at a random live node."""
        live = self.live()
        if not live or (at is not None and at not in live):
            return False
        node = self.nodes[at if at is not None else self.rng.choice(live)]
        ctx = self._next_id("r")
        if node.raft.role is Role.LEADER and node.raft.has_lease:
            self.lease_reads += 1
        try:
            node.raft.read_index(ctx)
        except RaftError as e:
            self.note(f"{node.id} read_index {ctx!r} -> {type(e).__name__}")
            return False
        # Linearizability: the read must see every write committed before it
        # began -- acknowledged or not (Raft §6.4: the leader's commit index
        # once it has committed in its term covers everything committed).
        floor = max(self.acked_max_index, len(self.checker.chosen))
        self.reads[ctx] = PendingRead(ctx, node.id, floor)
        self.note(f"{node.id} read_index {ctx!r} min={floor}")
        return True

    def leader(self) -> str | None:
        """The live leader of the highest term, if any."""
        best: tuple[int, str] | None = None
        for nid in self.live():
            r = self.nodes[nid].raft
            if r.role is Role.LEADER and (best is None or r.term > best[0]):
                best = (r.term, nid)
        return best[1] if best else None

    def transfer_leader(self, target: str) -> None:
        lead = self.leader()
        if lead is None or lead == target:
            return
        try:
            self.nodes[lead].raft.transfer_leader(target)
        except RaftError as e:
            self.note(f"{lead} transfer -> {target}: {type(e).__name__}")
            return
        self.coverage.transfers += 1
        self.note(f"{lead} transfer -> {target}")

    def change_membership(self, kind: MembershipOp, nid: str) -> bool:
        """The leader proposes one membership change about ``nid`` (Raft §6, thesis §4)."""
        lead = self.leader()
        if lead is None:
            return False
        raft = self.nodes[lead].raft
        cs = raft.conf_state
        voters = cs.voters
        T = ConfChangeType
        if kind in (MembershipOp.ADD_VOTER, MembershipOp.ADD_LEARNER) and nid in voters:
            # Aim the addition at a node outside the voters, if there is one.
            outside = [n for n in self.ids if n not in voters]
            if outside:
                nid = outside[self.ids.index(nid) % len(outside)]
        if kind is MembershipOp.REMOVE:
            # Keep at least two voters so the group stays a real quorum system.
            if nid not in voters or len(voters) <= 2:
                return False
            cc = ConfChange(changes=(ConfChangeItem(T.REMOVE_NODE, nid),))
        elif kind is MembershipOp.ADD_VOTER:
            if nid in voters:
                return False
            cc = ConfChange(changes=(ConfChangeItem(T.ADD_VOTER, nid),))
        elif kind is MembershipOp.ADD_LEARNER:
            if nid in voters or nid in cs.learners:
                return False
            cc = ConfChange(changes=(ConfChangeItem(T.ADD_LEARNER, nid),))
        else:
            # Replace voter nid by a non-voter in one step: two voter changes
            # enter a joint configuration the leader leaves on its own.
            spare = [n for n in self.ids if n not in voters]
            if nid not in voters or not spare:
                return False
            cc = ConfChange(
                changes=(
                    ConfChangeItem(T.REMOVE_NODE, nid),
                    ConfChangeItem(T.ADD_VOTER, spare[0]),
                )
            )
        try:
            index = raft.propose_conf_change(cc)
        except RaftError as e:
            self.note(f"{lead} conf change {kind.name} {nid} -> {type(e).__name__}")
            return False
        self.note(f"{lead} conf change {kind.name} {nid} proposed at {index}")
        return True

    def members(self) -> tuple[str, ...]:
        """Voters and learners as the current leader sees them (all nodes if no leader)."""
        lead = self.leader()
        if lead is None:
            return self.ids
        return self.nodes[lead].raft.conf_state.all_nodes()

    def compact(self, nid: str) -> bool:
        """Take a state-machine snapshot at the applied index and compact the log (§7)."""
        node = self.nodes[nid]
        st = node.disk.storage
        applied = node.disk.applied
        if applied <= st.first_index() or applied > st.last_index():
            return False
        key = f"snap:{nid}:{applied}:{self._next_id('s').decode()}".encode()
        self.snapshots[key] = tuple(node.disk.sm)
        st.create_snapshot(applied, None, key)
        st.compact(applied)
        self.coverage.compactions += 1
        self.note(f"{nid} compact to {applied}")
        return True

    # ---- whole-run checks ---------------------------------------------------------------

    def final_check(self) -> None:
        """Full scan of every durable log and state machine (once per run)."""
        ck = self.checker
        for nid in self.ids:
            st = self.nodes[nid].disk.storage
            ents = st.all_entries()
            if ents:
                ck.on_persist_entries(nid, ents, _durable_term(st, ents[0].index - 1))
            last = st.last_index()
            ck.check_leader_completeness(nid, last, st.term(last), st.first_index(), st.term)
            for i, (term, data) in enumerate(self.nodes[nid].disk.sm, start=1):
                ck.on_apply(nid, Entry(term=term, index=i, data=data), 1 << 62)


def _durable_term(st: MemoryStorage, index: int) -> int:
    """Durable term at ``index``; -1 if the disk cannot say (compacted or beyond its end)."""
    try:
        return st.term(index)
    except StorageError:
        return -1


def _durable_entry(st: MemoryStorage, index: int) -> Entry | None:
    if index < st.first_index() or index > st.last_index():
        return None
    return st.entries(index, index + 1)[0]


def _fmt_msg(m: Message) -> str:
    s = f"{m.type.name} t={m.term} i={m.index} lt={m.log_term} c={m.commit}"
    if m.entries:
        s += f" ents={m.entries[0].index}..{m.entries[-1].index}"
    if m.reject:
        s += f" reject hint={m.reject_hint}"
    if m.context:
        s += f" ctx={m.context!r}"
    if m.snapshot is not None:
        s += f" snap={m.snapshot.meta.index}"
    return s


__all__ = [
    "Cluster",
    "Coverage",
    "Disk",
    "MembershipOp",
    "NetConfig",
    "Proposal",
    "SimNode",
    "SimParams",
]
