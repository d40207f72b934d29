"""The multi-raft driver: every Raft group of a node, driven by ONE trio task.

A loop turn (DESIGN §9 "coalesce"):

1. wait for work: inbound peer messages, client commands, reads, or the tick
   timer (``cfg.tick_ms`` on trio's clock);
2. step inbound messages (undecodable ones are dropped and counted: a buggy
   peer must not crash us); turn ALL queued commands of a group into ONE
   proposal; start ONE ReadIndex round per group for all queued reads; tick
   the groups that are due;
3. collect ``ready()`` of every group that has one; send every group's
   ``messages`` at once, grouped per peer into one ``transport.send``
   (a leader's appends may leave before its own fsync, thesis §10.2.1);
4. apply the Readies' committed entries of all groups into ONE apply
   WriteBatch (sync=False: it can be rebuilt by re-applying the log), resolve
   waiters, answer reads. Committed entries are already durable locally (the
   core hands out only indexes <= the persisted last index), so this happens
   before step 5 and a produce is answered one fsync earlier;
5. ``store.save`` all Readies = one WriteBatch + one fsync for all groups. A
   big save, or any save while the disk is slow, runs in a worker thread so
   the trio loop keeps accepting requests, answering and taking peer frames
   (they queue for the next turn: at most one save is in flight); a small
   fsync on a fast disk runs inline, cheaper than the thread hand-off. A Ready
   that only moves the commit index is saved without fsync (commitIndex is
   volatile state in Raft Figure 2);
6. send ``persisted_messages`` (vote grants and append acks only after the
   fsync, Raft Figure 2), then ``advance()`` every group.

Waiters (DESIGN §3.3): a proposal is keyed by the (index, term) it was
appended at. When that index is applied with the same term, the waiters get
the state machine's results; with another term the entry was overwritten by
a later leader, so it never took effect -> NOT_LEADER. When this node loses
leadership, proposals beyond the commit index may still be committed by the
next leader, so they get TIMEOUT (outcome unknown), never "failed".

Quiescence (idle groups cost almost nothing): a leader group whose followers
all match its last index and know its commit, with nothing pending, stops
being ticked; a follower group stops being ticked while its leader's NODE is
alive (a frame from it arrived within an election timeout — the driver sends
a tiny per-node-pair heartbeat when nothing else flows). Why this is safe:
ticks only drive time (elections, heartbeats, CheckQuorum); skipping them
never makes the core accept or commit anything. Reads still need a quorum
round (ReadIndex), so a stale quiesced leader cannot serve a stale read; any
proposal, read or inbound message (heartbeats excepted) wakes the group, and
a stale leader that is woken steps down by CheckQuorum within an election
timeout, its pending proposals ending in TIMEOUT. A follower whose leader
node dies resumes ticking when the node-level liveness expires and elects a
new leader; a woken follower rejects (pre)votes until its own election timeout
has ticked away (the lease check of thesis §4.2.3), so a quiet group cannot
be disrupted.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import struct
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

import trio
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import NOT_SAID, NotSaid
from raftlog.log.commands import encode_entry_commands
from raftlog.log.metadata import MetadataStateMachine
from raftlog.log.partition import ApplyResult, PartitionStateMachine
from raftlog.raft import codec
from raftlog.raft.errors import NotLeaderError, ProposalDroppedError
from raftlog.raft.node import Config as RaftConfig
from raftlog.raft.node import RaftNode
from raftlog.raft.progress import ProgressState
from raftlog.raft.types import ConfState, EntryType, Message, MessageType, Ready, Role

from . import membership
from .clock_skew import CLOCK_FRAME_EVERY_S, NodeClock, clock_frame, wall_time
from .config import LEASE_MARGIN_TICKS
from .groups import IN_SYNC_MAX_LAG, METADATA_GROUP, Group, GroupKind, Proposal
from .log_throttle import LogThrottle
from .metadata_users import MetadataUsers
from .producer_order import hold_early_batches, in_sequence_order
from .snapshots import SnapshotManager
from .waiters import Outcome, Waiter

log = logging.getLogger("raftlog.driver")

# Messages for a group this node does not host yet (a CREATE_TOPIC applied on
# the leader before here) are kept briefly, so a new partition's first
# election is not lost; bounded per group and in number of groups.
_EARLY_PER_GROUP = 64
_EARLY_GROUPS = 1024
# Heartbeats (and their answers) in flight when a group quiesces must not
# wake it again; they carry nothing that needs a tick to be handled.
_KEEPS_QUIET = frozenset({MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP})
# A THROTTLED client retries after this long (a few fsyncs: time to commit).
THROTTLE_RETRY_MS = 50
# Partition groups created per loop turn (see _create_pending).
_CREATE_PER_TURN = 8
# Group id of the driver's own node-level heartbeat "message" (never a group).
NODE_HEARTBEAT_GID = -1


# Ticks further apart than this many intervals (a stalled loop, a SIGSTOP, the
# slow timer of an all-quiet node) mean the tick count fell behind real time:
# every lease is dropped, so none outlives its real-time bound.
LEASE_TICK_GAP = 2.0
# A read answered between turns from a lease (read_barrier) needs the last tick
# to be this recent: the time since it is time the lease's tick count misses.
LEASE_FAST_PATH_GAP = 1.5


# Saves with at most this many entry bytes fsync on the event loop itself (see
# _turn); RAFTLOG_INLINE_SAVE_MAX_BYTES overrides it (0: always a worker thread).
INLINE_SAVE_MAX_BYTES = int(os.environ.get("RAFTLOG_INLINE_SAVE_MAX_BYTES", 32 * 1024))


# A small save whose fsync took at least this long makes the next ones run in a
# worker thread too, until one is fast again. Inline, a stalled disk stops the
# whole loop: answers to committed produces, metadata lookups and peer frames
# all wait behind the fsync (with two disks of three at 2 s per fsync, produces
# took up to 18 s inline and mostly 2-4 s this way; README "Slow disks").
# 10 ms is far above this machine's ~0.5 ms fsync and far above the ~0.2 ms a
# thread hand-off costs.
SLOW_DISK_INLINE_MAX_S = 0.01

# How long the leader holds an idempotent produce that arrived ahead of its
# predecessor (server/producer_order.py). A producer's batches retried after a
# leader change arrive within a few of the client's jittered retries (each at
# most LEADER_BACKOFF_CAP, 0.1 s, apart); a predecessor later than this is
# probably not coming, and the batch is proposed to be refused at apply.
EARLY_BATCH_HOLD_S = 0.5
# At most this many commands parked per group: a producer sending sequence
# gaps on purpose holds memory for the hold time at most, and only this much.
MAX_PARKED_PER_GROUP = 256


def _entry_bytes(readies: list[tuple[int, Ready]]) -> int:
    return sum(len(e.data) for _, rd in readies for e in rd.entries)


def _needs_save(rd: Ready) -> bool:
    return bool(rd.entries) or rd.snapshot is not None or rd.hard_state is not None


def _nothing_said(_node_id: str) -> NotSaid:
    return NOT_SAID  # no listener (in-process clusters): the file's peer addresses


STATS_EVERY_S = 5.0
# Longest wait for the TLS writer tasks before an inline fsync (see _handle_readies).
DELIVER_BEFORE_FSYNC_S = 0.002
# A save whose fsync takes this fraction of the (shortest) election timeout is
# logged (throttled: one line per SLOW_FSYNC_LOG_EVERY_S with the count); 100 ms
# with the default timing. A stall this long on a majority is about to cost an
# election, and the log line is what tells an operator it was the disk (etcd
# logs "slow fdatasync" for the same reason; its alert line is a p99 over 10 ms).
SLOW_FSYNC_ELECTION_FRACTION = 0.5
SLOW_FSYNC_LOG_EVERY_S = 10.0


class Transport(Protocol):
    def send(
        self, peer: str, msgs: list[tuple[int, bytes]], *, flush_follows: bool = False
    ) -> None: ...

    def flush(self) -> None: ...

    def undelivered(self) -> bool: ...

    async def deliver(self) -> None: ...

    def is_connected(self, peer: str) -> bool: ...


class StorageFailedError(Exception):
    """Saving or applying a Ready failed (a full disk, an I/O error, a bug): the
    node stops rather than run on without durability or with a half-handled Ready."""


class MultiRaft:
    def __init__(
        self,
        cfg: Any,  # server.config.ClusterConfig
        node_id: str,
        store: Any,  # log.store.NodeStore
        transport: Transport,
        *,
        metrics: Any = None,
        debug: bool | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.store = store
        self.transport = transport
        self.metrics = metrics
        self.debug = bool(os.environ.get("RAFTLOG_DEBUG")) if debug is None else debug
        self._rng = rng or random.Random()
        self.groups: dict[int, Group] = {}
        self._inbox: list[tuple[str, list[tuple[int, bytes]]]] = []
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._dirty: set[int] = set()
        # (deadline, seq, waiter) of submit(deadline=...): expired by the loop.
        self._deadlines: list[tuple[float, int, Waiter]] = []
        self._deadline_seq = itertools.count()
        self._early: dict[int, list[Message]] = {}
        self._read_seq = 0
        self._tick_s = cfg.tick_ms / 1000.0
        self._election_s = cfg.election_ticks * self._tick_s
        self.slow_fsync_s = SLOW_FSYNC_ELECTION_FRACTION * self._election_s
        self._last_tick_at = 0.0  # trio time of the last tick delivered (run())
        self._heartbeat_s = cfg.heartbeat_ticks * self._tick_s
        # A peer is alive if any frame came within an election timeout; the
        # liveness frame goes out 4x per election timeout when nothing else does.
        self._node_heartbeat_s = max(self._heartbeat_s, self._election_s / 4)
        self._last_heard: dict[str, float] = {}
        self._ticking: set[int] = set()
        self._quiet_followers: dict[str, set[int]] = {}
        self._last_sent: dict[str, float] = {}
        # Our wall clock next to the peers' (server/clock_skew.py): batch
        # stamps and time-based retention.
        self.clock = NodeClock()
        self._clock_sent: dict[str, float] = {}
        self._desired: dict[int, Any] = {}
        # Groups created by a peer's message before the metadata listed this
        # node (membership.group_for_message), with when: see sweep_joined_groups.
        self.joined_by_message: dict[int, float] = {}
        self._pending_create: dict[int, Any] = {}
        self._running = False
        # Nodes group 0 just added: their incarnation is settled once the
        # metadata commands of the same Ready are applied (_apply_group).
        self.readded_nodes: list[str] = []
        self.storage_failed = False
        self.stats: dict[str, Any] = defaultdict(int)
        self._slow_fsync_log = LogThrottle(SLOW_FSYNC_LOG_EVERY_S)
        # How long the last small save's fsync took (SLOW_DISK_INLINE_MAX_S).
        self._last_small_fsync_s = 0.0
        self._last_stats: dict[str, Any] = {}
        self.peers = [n.id for n in cfg.nodes if n.id != node_id]
        self._addresses = {n.id: n.address for n in cfg.nodes}
        # Snapshots, compaction, catch-up by snapshot (server/snapshots.py);
        # inert until its background task runs (server/node.py).
        self.snapshots = SnapshotManager(self)
        # The metadata log's users, as the listener authenticates them.
        self.metadata_users = MetadataUsers()
        # The peer address a node gave itself in the hello of its live link to
        # this one (server/log_format.py LogFormats.peer_address_of; set by
        # server/node.py): what the controller records for it.
        self.said_peer_address: Callable[[str], str | NotSaid | None] = _nothing_said

    # ------------------------------------------------------------ setup

    def start(self) -> None:
        """Load or bootstrap the metadata group and every partition group on disk."""
        on_disk = set(self.store.group_ids())
        if METADATA_GROUP not in on_disk:
            conf = membership.bootstrap_conf(self.cfg, self.node_id)
            self.store.create_group(METADATA_GROUP, conf)
            log.info("event=bootstrap group=0 voters=%s", ",".join(conf.voters))
        meta_sm = MetadataStateMachine(self.store)
        self._add_group(METADATA_GROUP, GroupKind.METADATA, meta_sm)
        self.metadata_users.follow(meta_sm.users)
        membership.sync_peers(self)
        self._desired = dict(self._groups_for_me())
        for gid in sorted(on_disk - {METADATA_GROUP}):
            group = self._add_partition(gid)
            self._describe(group)
            # After a restart of many groups, the preferred leader campaigns at
            # once: one voting round instead of a storm of randomized timeouts.
            if group.replicas and group.replicas[0] == self.node_id:
                group.raft.campaign()
        # Groups the metadata assigns here but not on disk (creation is spread
        # over turns, so a crash can come between the metadata apply and it).
        for gid, info in self._desired.items():
            if gid not in self.groups:
                self._pending_create[gid] = info
        if self.cfg.unsafe_ack_before_commit:
            log.warning(
                "event=UNSAFE mode=unsafe_ack_before_commit: produces are acknowledged "
                "BEFORE commit; acknowledged records may be lost"
            )
        if self.cfg.unsafe_follower_reads:
            log.warning(
                "event=UNSAFE mode=unsafe_follower_reads: reads are served from local "
                "state on any replica without ReadIndex; reads may be stale"
            )

    def _add_group(self, gid: int, kind: GroupKind, sm: Any) -> Group:
        storage = self.store.group(gid)
        hard_state, _ = storage.initial_state()
        config = RaftConfig(
            id=self.node_id,
            election_ticks=self.cfg.election_ticks,
            heartbeat_ticks=self.cfg.heartbeat_ticks,
            max_uncommitted_bytes=self.cfg.limits.max_uncommitted_bytes_per_group,
            # Followers learn a new commit index from the next APPEND or
            # heartbeat instead of an extra APPEND per commit: one message and
            # one follower Ready (plus its ack) less per produce. Acks come from
            # the leader's own apply; only follower apply is a heartbeat later.
            broadcast_commit=False,
            lease_reads=self.cfg.lease_reads,
            lease_ticks=self.cfg.election_ticks - LEASE_MARGIN_TICKS if self.cfg.lease_reads else 0,
            # The apply batch of a turn is written before that turn's hard state
            # (see _turn), so after a crash the state machine may be ahead of the
            # stored commit index; it skips re-applied entries, so start the core
            # from the commit it can prove.
            applied=min(sm.applied_index, hard_state.commit),
        )
        raft = RaftNode(config, storage, random.Random(self._rng.getrandbits(64)))
        group = Group(gid=gid, kind=kind, raft=raft, sm=sm)
        group.durable_term_vote = (hard_state.term, hard_state.vote)
        group.role = raft.role
        group.leader = raft.leader_id
        self.groups[gid] = group
        self._dirty.add(gid)
        self._ticking.add(gid)
        for msg in self._early.pop(gid, ()):
            self._step(group, msg)
        return group

    def _add_partition(self, gid: int) -> Group:
        return self._add_group(gid, GroupKind.PARTITION, PartitionStateMachine(self.store, gid))

    @property
    def metadata(self) -> Any:
        return self.groups[METADATA_GROUP].sm

    def _groups_for_me(self) -> dict[int, Any]:
        return dict(self.metadata.groups_for(self.node_id))

    def _describe(self, group: Group) -> None:
        info = self._desired.get(group.gid)
        if info is not None:
            group.topic = info.topic
            group.partition = info.partition
            group.replicas = tuple(info.replicas)

    # ------------------------------------------------------------ inputs (any task)

    def on_peer_msgs(self, frm: str, msgs: list[tuple[int, bytes]]) -> None:
        """Called by the listener for every peer frame; queues, never blocks."""
        self._last_heard[frm] = time.monotonic()
        self._inbox.append((frm, msgs))
        self._wake.set()

    def submit(
        self, gid: int, command: Any, nbytes: int = 0, deadline: float | None = None
    ) -> Waiter:
        """Queue a command for the group's next proposal (coalesced with others).

        With a ``deadline`` (trio clock) the loop itself fails the waiter with
        TIMEOUT (outcome unknown) if it is still open then: for callers that
        do not wait in a task of their own (``Waiter.on_done``).
        """
        waiter = Waiter(nbytes)
        group = self.groups.get(gid)
        if group is None:  # deleted while the request was being handled
            waiter.fail(ErrorCode.UNKNOWN_TOPIC, f"group {gid} is not hosted here (deleted?)")
            return waiter
        group.queued_cmds.append((command, waiter))
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, next(self._deadline_seq), waiter))
        self._dirty.add(gid)
        self._wake.set()
        return waiter

    def _expire_deadlines(self, now: float) -> None:
        """TIMEOUT for every deadline-carrying waiter still open at ``now``.

        Answered waiters are dropped from the top too: requests carry similar
        timeouts, so the oldest is usually answered, and the heap stays about
        as large as the number of requests in flight.
        """
        heap = self._deadlines
        while heap and (heap[0][0] <= now or heap[0][2].done):
            heapq.heappop(heap)[2].time_out()

    async def propose(self, gid: int, command: Any, deadline: float, nbytes: int = 0) -> Outcome:
        return await self.submit(gid, command, nbytes).wait(deadline)

    async def read_barrier(self, gid: int, deadline: float) -> Outcome:
        """Linearizable read point (DESIGN §3.4): resolves once this node, as leader,
        confirmed leadership for a read index and applied up to it."""
        waiter = Waiter()
        group = self.groups.get(gid)
        if group is None:
            waiter.fail(ErrorCode.UNKNOWN_TOPIC, f"group {gid} is not hosted here (deleted?)")
            return await waiter.wait(deadline)
        if self._lease_covers(group):
            # The leader's lease makes its commit index a linearizable read
            # point right now, and it has applied that far: no turn needed.
            self._count_reads("lease", 1)
            waiter.resolve(group.raft.commit_index)
            return await waiter.wait(deadline)
        group.queued_reads.append(waiter)
        self._dirty.add(gid)
        self._wake.set()
        return await waiter.wait(deadline)

    def _lease_covers(self, group: Group) -> bool:
        """May a read be answered between turns, from the lease, at once?

        Only while the loop's ticks are current: between turns the tick count
        is as old as the last tick, and a loop stuck in a long save delivers
        none (the stall check in run() only runs when it comes back).
        """
        return (
            self.cfg.lease_reads
            and trio.current_time() - self._last_tick_at < LEASE_FAST_PATH_GAP * self._tick_s
            and group.raft.has_lease
            and group.applied >= group.raft.commit_index
        )

    def _count_reads(self, path: str, n: int) -> None:
        self.stats[f"{path}_reads"] += n
        if self.metrics is not None:
            self.metrics.reads.inc(n, path=path)

    async def wait_applied(self, gid: int, deadline: float) -> None:
        """Return after the next apply in the group, or at the deadline."""
        group = self.groups.get(gid)
        if group is None:
            return
        with trio.move_on_at(deadline):
            await group.applied_event.wait()

    async def wait_changed(self, deadline: float) -> bool:
        """Return True after the next loop turn that changed something, False at deadline."""
        with trio.move_on_at(deadline):
            await self._changed.wait()
            return True
        return False

    def transfer_leader(self, gid: int, target: str) -> None:
        group = self.groups[gid]
        group.raft.transfer_leader(target)
        self._unquiet(group)
        self._dirty.add(gid)
        self._wake.set()

    async def hand_over_leadership(self, deadline: float) -> tuple[int, int]:
        """Controlled shutdown: move every group this node leads to another voter.

        Returns (groups to move, groups now led elsewhere). Each group this node
        leads that has another voter alive gets a leadership transfer (thesis
        §3.10: the target is caught up, then TimeoutNow makes it campaign at
        once, with no election timeout) to its most caught-up live voter; this
        waits until each has another leader or until ``deadline`` (trio clock).
        The core aborts a transfer that takes over an election timeout; it is
        re-issued, to a voter not tried yet if there is one. The loop, listener
        and transport must keep running meanwhile (they carry the transfer);
        requests keep being served as usual: a produce to a moved group gets
        NOT_LEADER naming the new leader.
        """
        if not self._running:
            return 0, 0
        pending = {
            gid
            for gid, group in self.groups.items()
            if group.role is Role.LEADER
            and any(v != self.node_id for v in group.raft.conf_state.voters)
        }
        total = len(pending)
        moved = 0
        tried: dict[int, set[str]] = defaultdict(set)
        while pending and self._running:
            now = time.monotonic()
            for gid in sorted(pending):
                group = self.groups.get(gid)
                if group is None:  # deleted meanwhile: nothing left to lead
                    pending.discard(gid)
                elif group.role is not Role.LEADER:
                    if group.leader not in (None, self.node_id):
                        pending.discard(gid)
                        moved += 1
                    elif self._transfer_target(group, set(), now) is None:
                        # Stepped down (the target's campaign), but every other
                        # voter is gone since: no leader can come to wait for.
                        pending.discard(gid)
                else:  # still leading
                    current = group.raft.status().lead_transferee
                    if current is not None and self._node_alive(current, now):
                        continue  # under way
                    # None: not started, or aborted by the core. A target that
                    # went away (it is stopping too: `cluster up` stops every
                    # node at once) is replaced, else we would wait out the bound.
                    target = self._transfer_target(group, tried[gid], now)
                    if target is None:  # no live voter: the group cannot move
                        pending.discard(gid)
                        continue
                    tried[gid].add(target)
                    log.info(
                        "event=shutdown_transfer group=%d to=%s term=%d",
                        gid,
                        target,
                        group.raft.term,
                    )
                    self.transfer_leader(gid, target)
            if not pending or trio.current_time() >= deadline:
                break
            # A turn with Readies wakes us; re-check at least every heartbeat
            # (an aborted transfer shows only after a tick that had no Ready).
            await self.wait_changed(min(deadline, trio.current_time() + self._heartbeat_s))
        return total, moved

    def _transfer_target(self, group: Group, tried: set[str], now: float) -> str | None:
        """The live voter (other than us) to hand ``group`` to: untried first, then
        the most caught-up (a lagging one needs appends before TimeoutNow)."""
        status = group.raft.status()
        live = [
            n
            for n in group.raft.conf_state.voters
            if n != self.node_id and self._node_alive(n, now)
        ]
        if not live:
            return None

        def rank(n: str) -> tuple[bool, int, str]:
            progress = status.progress.get(n)
            return (n not in tried, getattr(progress, "match", 0), n)

        return max(live, key=rank)

    def leader_address(self, node: str | None) -> str | None:
        if node is None:
            return None
        address = self._addresses.get(node)
        if address is None:
            info = self.metadata.nodes.get(node) if hasattr(self.metadata, "nodes") else None
            address = getattr(info, "address", None)
        return address

    # ------------------------------------------------------------ the loop

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if not self.groups:
            self.start()
        self._running = True
        next_tick = trio.current_time() + self._tick_s
        self._last_tick_at = trio.current_time()
        next_register = trio.current_time()
        next_stats = trio.current_time() + STATS_EVERY_S
        task_status.started()
        try:
            while True:
                wake_at = min(next_tick, self._deadlines[0][0]) if self._deadlines else next_tick
                with trio.move_on_at(wake_at):
                    await self._wake.wait()
                self._wake = trio.Event()
                now = trio.current_time()
                if self._deadlines:
                    self._expire_deadlines(now)
                tick = now >= next_tick
                if tick:
                    # With every group quiet only the node liveness frames need
                    # the timer; a proposal or message wakes the loop anyway.
                    interval = self._tick_s if self._ticking else self._node_heartbeat_s
                    next_tick += interval
                    slipped = now - self._last_tick_at > LEASE_TICK_GAP * self._tick_s
                    if next_tick < now:  # fell behind (a long fsync): do not tick in bursts
                        next_tick = now + interval
                        slipped = True
                    self._last_tick_at = now
                    if slipped and self.cfg.lease_reads:
                        self._expire_leases()
                if now >= next_register:
                    next_register = now + 0.5
                    self._maybe_register_nodes()
                    if self.joined_by_message:
                        membership.sweep_joined_groups(self, now)
                if now >= next_stats:
                    next_stats = now + STATS_EVERY_S
                    self._log_stats()
                try:
                    await self._turn(tick)
                except StorageFailedError:
                    self.storage_failed = True  # run_node then abandons the store
                    raise
                except (trio.Cancelled, KeyboardInterrupt):
                    raise
                except Exception:
                    log.exception("event=loop_error node=%s", self.node_id)
                    self.stats["loop_errors"] += 1
                    if self.debug:
                        raise
        finally:
            self._running = False
            self._fail_everything()

    async def _turn(self, tick: bool) -> None:
        self._create_pending()
        self._drain_inbox()
        dirty, self._dirty = self._dirty, set()
        for gid in dirty:
            group = self.groups.get(gid)
            if group is not None:
                self._feed(group)
        if tick:
            self._tick_groups(dirty)
        readies: list[tuple[int, Ready]] = []
        for gid in dirty:
            group = self.groups.get(gid)
            if group is not None and group.raft.has_ready():
                readies.append((gid, group.raft.ready()))
        if not readies:
            return
        self.stats["turns"] += 1
        try:
            await self._handle_readies(readies)
        except StorageFailedError:
            raise
        except Exception as exc:
            # The Readies were taken from the cores but not all saved, applied and
            # advanced: going on would hand out entries that build on unsaved ones
            # (a disk full during an apply did exactly that). Stop; a restart
            # rebuilds everything from what is on disk (etcd panics here too).
            log.critical("event=ready_failed node=%s error=%r", self.node_id, exc)
            raise StorageFailedError(f"handling Readies failed: {exc!r}") from exc

    async def _handle_readies(self, readies: list[tuple[int, Ready]]) -> None:
        """Send, apply, save, send what waited for the save, advance (module docstring)."""
        self._send(readies, persisted=False)
        # Committed entries in a Ready are already durable here (the core hands
        # out only indexes <= the persisted last index), so they are applied
        # BEFORE this turn's fsync: a produce is answered one fsync earlier.
        # Nothing else writes to the DB meanwhile (the previous save is done).
        self._apply(readies)
        to_save = [(gid, rd) for gid, rd in readies if _needs_save(rd)]
        if to_save:
            # Evaluate every Ready (no short-circuit): _needs_sync tracks each
            # group's durable term/vote.
            flags = [self._needs_sync(gid, rd) for gid, rd in to_save]
            sync = any(flags) and self.store.fsync
            small = sync and _entry_bytes(to_save) <= INLINE_SAVE_MAX_BYTES
            started = time.perf_counter()
            try:
                if sync and (not small or self._last_small_fsync_s >= SLOW_DISK_INLINE_MAX_S):
                    # A big write's fsync, or any fsync of a disk that just
                    # stalled, runs in a worker thread (the WAL sync releases
                    # the GIL), so requests and peer frames keep being accepted
                    # meanwhile.
                    await trio.to_thread.run_sync(self._save_blocking, to_save, sync)
                else:
                    if sync and self.transport.undelivered():
                        # TLS links: this turn's appends are still with the
                        # writer tasks, which only run when we yield; the fsync
                        # below would block the loop first and put the
                        # followers' fsyncs after ours instead of beside it
                        # (thesis §10.2.1).
                        with trio.move_on_after(DELIVER_BEFORE_FSYNC_S):
                            await self.transport.deliver()
                    # A memtable write, or a small write and its fsync, costs
                    # less than the two thread hand-offs (~0.2 ms measured) it
                    # would add to every Raft round on the way to an ack.
                    self._save_blocking(to_save, sync)
            except Exception as exc:
                # A node that cannot persist must stop (etcd panics too): going
                # on would leave its cores waiting forever on unsaved Readies.
                log.critical("event=save_failed node=%s error=%r", self.node_id, exc)
                raise StorageFailedError(f"saving Readies failed: {exc!r}") from exc
            elapsed = time.perf_counter() - started
            self.stats["save_s"] += elapsed
            if sync:
                self._observe_fsync(elapsed)
                if small:
                    self._last_small_fsync_s = elapsed
        self._send(readies, persisted=True)
        for gid, rd in readies:
            group = self.groups.get(gid)
            if group is not None:
                group.raft.advance(rd)
                # advance() may produce more work (e.g. commit of own entries).
                self._dirty.add(gid)
                if group.raft.has_ready():
                    self._wake.set()
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def _log_stats(self) -> None:
        """One line per interval: what the loop did (operators and profiling)."""
        stats = self.stats
        last = self._last_stats
        delta = {k: v - last.get(k, 0) for k, v in stats.items() if v != last.get(k, 0)}
        self._last_stats = dict(stats)
        if delta:
            log.info(
                "event=loop_stats interval_s=%.0f %s",
                STATS_EVERY_S,
                " ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in sorted(delta.items())
                ),
            )
        if self.metrics is not None:
            self._update_gauges()
        for group in self.groups.values():
            # Forwarded reads whose handlers all gave up (leader unreachable).
            for ctx in [c for c, ws in group.reads.items() if all(w.done for w in ws)]:
                del group.reads[ctx]

    def _update_gauges(self) -> None:
        m = self.metrics
        roles: dict[str, int] = defaultdict(int)
        pending = 0
        apply_lag = 0
        max_lag = 0
        producers = 0
        under_replicated = 0
        leaderless = 0
        for group in self.groups.values():
            roles[group.role.name.lower()] += 1
            if group.kind is GroupKind.PARTITION:
                producers += len(group.sm.producers)
            pending += len(group.proposals)
            apply_lag += max(0, group.raft.commit_index - group.applied)
            if group.leader is None:
                leaderless += 1
            if group.role is Role.LEADER:
                status = group.raft.status()
                if not group.quiet:
                    for progress in status.progress.values():
                        max_lag = max(max_lag, status.last_index - progress.match)
                under_replicated += self._under_replicated(status)
        m.max_follower_lag.set(max_lag)
        m.under_replicated_groups.set(under_replicated)
        m.leaderless_groups.set(leaderless)
        try:
            fs = os.statvfs(self.store.path)
        except OSError:
            pass
        else:
            m.data_dir_free.set(fs.f_bavail * fs.f_frsize)
            m.data_dir_size.set(fs.f_blocks * fs.f_frsize)
        for prop, value in self.store.rocksdb_stats(m.rocksdb).items():
            m.rocksdb[prop].set(value)
        for role in ("leader", "follower", "candidate", "pre_candidate"):
            m.groups.set(roles.get(role, 0), role=role)
        m.pending_proposals.set(pending)
        m.apply_lag.set(apply_lag)
        m.producer_ids.set(producers)

    def _under_replicated(self, status: Any) -> bool:
        """A group this node leads has a replica out of sync: not in steady
        replication (probed, or sent a snapshot), more than IN_SYNC_MAX_LAG
        entries behind, or on a node this one has no live link to. The last
        matters for a quiet group, whose leader sends nothing and so keeps a
        stopped follower's progress as it was (Kafka's UnderReplicatedPartitions)."""
        for node, progress in status.progress.items():
            if node == self.node_id:
                continue
            if (
                progress.state is not ProgressState.REPLICATE
                or status.last_index - progress.match > IN_SYNC_MAX_LAG
                or not self.transport.is_connected(node)
            ):
                return True
        return False

    def _needs_sync(self, gid: int, rd: Ready) -> bool:
        """Entries, a snapshot, a new term or vote must be fsynced (Raft Figure 2);
        the commit index alone need not be (it is volatile state in Figure 2 and
        is re-learned from the leader), so a commit-only Ready costs no fsync."""
        if rd.entries or rd.snapshot is not None:
            return True
        hs = rd.hard_state
        if hs is None:
            return False
        group = self.groups.get(gid)
        if group is None:
            return True
        changed = (hs.term, hs.vote) != group.durable_term_vote
        group.durable_term_vote = (hs.term, hs.vote)
        return changed

    def _save_blocking(self, readies: list[tuple[int, Ready]], sync: bool) -> None:
        """Worker thread: one WriteBatch for all groups, fsynced only if needed."""
        self.store.save(readies, sync=sync)

    def _drain_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for frm, msgs in inbox:
            for item in msgs:
                try:
                    gid, data = item
                    if gid == NODE_HEARTBEAT_GID:
                        self._observe_clock(frm, data)
                        continue
                    msg = codec.decode_message(data)
                except Exception as exc:  # a buggy or hostile peer must not crash us
                    self.stats["bad_peer_messages"] += 1
                    log.warning("event=bad_peer_message from=%s error=%s", frm, exc)
                    continue
                if msg.to != self.node_id or msg.frm != frm:
                    self.stats["misrouted_messages"] += 1
                    continue
                group = self.groups.get(gid)
                if group is None:
                    group = membership.group_for_message(self, gid, msg)
                if group is None:
                    self._keep_early(gid, msg)
                    continue
                if not membership.admit(group, msg, self.node_id):
                    self.stats["non_member_votes_refused"] += 1
                    continue
                self._step(group, msg)

    def _keep_early(self, gid: int, msg: Message) -> None:
        if not isinstance(gid, int) or gid <= METADATA_GROUP:
            return
        queue = self._early.get(gid)
        if queue is None:
            if len(self._early) >= _EARLY_GROUPS:
                self.stats["early_dropped"] += 1
                return
            queue = self._early[gid] = []
        if len(queue) < _EARLY_PER_GROUP:
            queue.append(msg)

    def _step(self, group: Group, msg: Message) -> None:
        if msg.type is MessageType.SNAPSHOT and self.snapshots.intercept(group, msg):
            return  # its records are fetched first; it is re-queued afterwards
        try:
            group.raft.step(msg)
        except Exception:
            self.stats["step_errors"] += 1
            log.exception("event=step_error group=%d from=%s type=%s", group.gid, msg.frm, msg.type)
            if self.debug:
                raise
        if msg.type not in _KEEPS_QUIET:
            self._unquiet(group)
        self._dirty.add(group.gid)

    def _feed(self, group: Group) -> None:
        """Turn queued commands into one proposal and queued reads into one ReadIndex."""
        if group.queued_cmds or group.parked:
            self._unquiet(group)
            self._propose_queued(group)
        if group.queued_reads:
            self._unquiet(group)
            waiters, group.queued_reads = group.queued_reads, []
            self._count_reads("lease" if group.raft.has_lease else "read_index", len(waiters))
            self._read_seq += 1
            ctx = struct.pack(">Q", self._read_seq)
            try:
                group.raft.read_index(ctx)
            except NotLeaderError as exc:
                self._fail_not_leader(group, waiters, exc.leader)
                return
            group.reads[ctx] = waiters

    def _propose_queued(self, group: Group) -> None:
        queued, group.queued_cmds = group.queued_cmds, []
        live = [(c, w) for c, w in queued if not w.done]  # drop those whose handler gave up
        if group.kind is GroupKind.PARTITION:
            if group.inflight_produces:
                live = self._attach_retries(group, live)
            if group.parked or group.role is Role.LEADER:
                live = self._hold_early(group, live)
            live = self._admit(group, in_sequence_order(live))
        if not live:
            return
        waiters = [w for _, w in live]
        nbytes = sum(w.nbytes for w in waiters)
        commands = [c for c, _ in live]
        data = encode_entry_commands(commands)
        try:
            index = group.raft.propose(data)
        except NotLeaderError as exc:
            self._fail_not_leader(group, waiters, exc.leader)
            return
        except ProposalDroppedError as exc:
            if "uncommitted" in exc.reason:
                for w in waiters:
                    w.fail(ErrorCode.THROTTLED, exc.reason, retry_after_ms=THROTTLE_RETRY_MS)
            else:
                self._fail_not_leader(group, waiters, group.raft.leader_id, exc.reason)
            return
        self.stats["proposals"] += 1
        self.stats["proposed_commands"] += len(live)
        proposal = Proposal(group.raft.term, waiters, nbytes)
        if group.kind is GroupKind.PARTITION:
            group.track_produces(index, proposal, commands)
        group.proposals[index] = proposal
        group.uncommitted_bytes += nbytes
        if self.cfg.unsafe_ack_before_commit and group.kind is GroupKind.PARTITION:
            self._unsafe_ack(group, live)

    def _hold_early(self, group: Group, live: list[tuple[Any, Waiter]]) -> list[tuple[Any, Waiter]]:
        """Park a producer's batches that came ahead of their predecessor (see
        producer_order); release those whose predecessor is proposed now, or
        whose hold ran out. A node that is not the leader holds nothing: its
        parked commands go on to be refused with NOT_LEADER."""
        if group.role is not Role.LEADER:
            live = [(p.cmd, p.waiter) for p in group.parked if not p.waiter.done] + live
            group.parked = []
            return live
        already = {id(p.waiter) for p in group.parked}
        live, group.parked, overdue = hold_early_batches(
            live,
            group.parked,
            group.next_sequence,
            trio.current_time(),
            EARLY_BATCH_HOLD_S,
            MAX_PARKED_PER_GROUP,
        )
        parked = sum(1 for p in group.parked if id(p.waiter) not in already)
        if parked or overdue:
            self.stats["parked"] += parked
            self.stats["parked_overdue"] += overdue
            if self.metrics is not None:
                self.metrics.produce_batches_held.inc(parked)
                self.metrics.produce_batches_overdue.inc(overdue)
        return live

    def _attach_retries(
        self, group: Group, live: list[tuple[Any, Waiter]]
    ) -> list[tuple[Any, Waiter]]:
        """Answer a retried idempotent produce with its in-flight original.

        A client whose attempt timed out sends the same batch again (same
        producer id, sequence and count). Proposing it again would append a
        second entry that the sequence check rejects at apply as a duplicate,
        and the retry would wait for that entry's commit too: with commits
        slower than the attempt timeout, no retry ever fits. Like Kafka's
        leader, match it to the original at append time instead: it gets the
        original's offset when that entry applies, or the original's fate if
        the entry is lost with its leader. Returns the commands still to propose.
        """
        fresh = []
        for cmd, waiter in live:
            original = group.original_of(cmd)
            if original is None:
                fresh.append((cmd, waiter))
                continue
            proposal, position = original
            if proposal.retries is None:
                proposal.retries = []
            proposal.retries.append((position, cmd, waiter))
            self.stats["retries_attached"] += 1
        return fresh

    def _answer_retries(
        self, group: Group, retries: list[tuple[int, Any, Waiter]], results: list[Any]
    ) -> None:
        """Retries attached to an applied entry: the original's offset if it was
        appended, else proposed on their own now. A refusal is not passed on: the
        original may have been refused for a state that has changed since (an
        out-of-order sequence whose predecessor has been applied by now), and
        proposed on arrival the retry would have been judged after it too."""
        for position, cmd, waiter in retries:
            result = results[position]
            if isinstance(result, ApplyResult) and result.ok:
                offset, stamp = result.base_offset, result.timestamp_ms
                waiter.resolve(ApplyResult(base_offset=offset, duplicate=True, timestamp_ms=stamp))
            elif not waiter.done:
                group.queued_cmds.append((cmd, waiter))
                self._dirty.add(group.gid)
                self._wake.set()

    def _admit(self, group: Group, live: list[tuple[Any, Waiter]]) -> list[tuple[Any, Waiter]]:
        """Flow control: the commands (in arrival order) that fit in the group's budget
        of uncommitted bytes; the others get THROTTLED (nothing appended, retry later).

        Like the core's own check, one command always fits when nothing is
        uncommitted, so a large batch cannot be starved.
        """
        budget = self.cfg.limits.max_uncommitted_bytes_per_group - group.uncommitted_bytes
        used = 0
        taken = 0
        for _, waiter in live:
            fits = used + waiter.nbytes <= budget
            if not fits and (taken or group.uncommitted_bytes > 0):
                break
            used += waiter.nbytes
            taken += 1
        for _, waiter in live[taken:]:
            waiter.fail(
                ErrorCode.THROTTLED,
                "too much uncommitted data in the partition",
                retry_after_ms=THROTTLE_RETRY_MS,
            )
        return live[:taken]

    def _unsafe_ack(self, group: Group, live: list[tuple[Any, Waiter]]) -> None:
        """DELIBERATELY UNSAFE (jepsen only): ack at local append, before commit."""

        group.unsafe_next_offset = max(group.unsafe_next_offset, group.sm.next_offset)
        for cmd, waiter in live:
            count = getattr(cmd, "count", 0)
            if count:
                waiter.resolve(ApplyResult(base_offset=group.unsafe_next_offset))
                group.unsafe_next_offset += count

    def _fail_not_leader(
        self, group: Group, waiters: list[Waiter], leader: str | None, why: str = "not leader"
    ) -> None:
        address = self.leader_address(leader)
        for w in waiters:
            w.fail(
                ErrorCode.NOT_LEADER,
                f"{why} for group {group.gid}",
                leader=leader,
                leader_address=address,
            )

    # ------------------------------------------------------------ ticks, quiescence

    def _tick_groups(self, dirty: set[int]) -> None:
        """Tick every group that is not quiet; wake quiet followers whose leader's node
        went silent. Cost is O(ticking groups), not O(hosted groups)."""
        now = time.monotonic()
        for node in list(self._quiet_followers):
            if not self._node_alive(node, now):
                for gid in self._quiet_followers.pop(node):
                    group = self.groups.get(gid)
                    if group is not None:
                        self._unquiet(group)
        ticks = 0
        for gid in list(self._ticking):
            group = self.groups.get(gid)
            if group is None:
                self._ticking.discard(gid)
                continue
            group.raft.tick()
            ticks += 1
            dirty.add(gid)
            self._maybe_quiesce(group, now)
        self.stats["group_ticks"] += ticks
        self._node_heartbeats(now)

    def node_alive(self, node: str) -> bool:
        """We are connected to ``node`` and heard from it within an election timeout."""
        return self._node_alive(node, time.monotonic())

    def _node_alive(self, node: str, now: float) -> bool:
        """Node-level liveness: our connection to it is up and a frame from it (any
        group's message or its liveness frame) arrived within an election timeout."""
        if node == self.node_id:
            return True
        return now - self._last_heard.get(
            node, 0.0
        ) < self._election_s and self.transport.is_connected(node)

    def _unquiet(self, group: Group) -> None:
        """Any proposal, read, inbound message or role change makes a group tick again."""
        group.quiet_checks = 0
        if group.quiet:
            group.quiet = False
            if group.quiet_under is not None:
                self._quiet_followers.get(group.quiet_under, set()).discard(group.gid)
                group.quiet_under = None
        self._ticking.add(group.gid)

    def _maybe_quiesce(self, group: Group, now: float) -> None:
        if group.has_work():
            group.quiet_checks = 0
            return
        group.quiet_checks += 1
        if group.role is Role.FOLLOWER:
            # A follower needs ticks only to notice a dead leader; while the
            # leader's node is alive it can stop after a few heartbeats.
            if (
                group.quiet_checks >= 2 * self.cfg.heartbeat_ticks
                and group.leader is not None
                and self._node_alive(group.leader, now)
            ):
                group.quiet = True
                group.quiet_under = group.leader
                self._quiet_followers.setdefault(group.leader, set()).add(group.gid)
                self._ticking.discard(group.gid)
            return
        # A leader checks once per election timeout: status() is not free, and
        # a window with nothing changing proves the followers heard the final
        # commit index (several heartbeats went out meanwhile).
        if group.quiet_checks < self.cfg.election_ticks:
            return
        group.quiet_checks = 0
        raft = group.raft
        mark = (raft.term, raft.commit_index, raft.last_index)
        stable = mark == group.quiet_mark
        group.quiet_mark = mark
        if not stable:
            return
        if group.role is Role.LEADER:
            status = raft.status()
            last = status.last_index
            if status.commit != last:
                return
            for node, progress in status.progress.items():
                if node != self.node_id and progress.match != last:
                    return
            group.quiet = True
            self._ticking.discard(group.gid)
            # Unticked, its tick count stops while real time goes on.
            raft.expire_lease()

    def _expire_leases(self) -> None:
        """The loop missed ticks: no lease may be trusted on the stale tick count."""
        for gid in self._ticking:
            group = self.groups.get(gid)
            if group is not None and group.role is Role.LEADER:
                if group.raft.has_lease:
                    self.stats["leases_dropped"] += 1  # loop_stats: held, then lost
                group.raft.expire_lease()

    def _node_heartbeats(self, now: float) -> None:
        """Per-node-pair liveness frame to peers we sent nothing else to lately; it
        carries our wall clock, and goes at least every CLOCK_FRAME_EVERY_S for that."""
        for peer in self.peers:
            idle = now - self._last_sent.get(peer, 0.0) >= self._node_heartbeat_s
            if idle or now - self._clock_sent.get(peer, 0.0) >= CLOCK_FRAME_EVERY_S:
                self._last_sent[peer] = self._clock_sent[peer] = now
                self.transport.send(peer, [(NODE_HEARTBEAT_GID, clock_frame(wall_time()))])

    def _observe_clock(self, peer: str, payload: bytes) -> None:
        offset = self.clock.observe(peer, payload, self.peers)
        if offset is not None and self.metrics is not None:
            self.metrics.peer_clock_offset.set(offset, peer=peer)

    def stamp_ms(self) -> int:
        """A batch timestamp (NodeClock.stamp_ms)."""
        return self.clock.stamp_ms(self.peers)

    def clock_not_ahead(self, max_skew_s: float) -> bool:
        """Is our wall clock ahead of a majority of the nodes by at most ``max_skew_s``?"""
        return self.clock.not_ahead(self.peers, max_skew_s)

    # ------------------------------------------------------------ output

    def _send(self, readies: list[tuple[int, Ready]], *, persisted: bool) -> None:
        per_peer: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
        for gid, rd in readies:
            msgs = rd.persisted_messages if persisted else rd.messages
            for msg in msgs:
                per_peer[msg.to].append((gid, codec.encode_message(msg)))
                if msg.type is MessageType.SNAPSHOT:  # metrics: snapshots sent
                    self.snapshots.note_sent(gid, msg)
            if not persisted and rd.soft_state is not None:
                self._on_soft_state(gid, rd)
        now = time.monotonic()
        for peer, batch in per_peer.items():
            self._last_sent[peer] = now
            self.transport.send(peer, batch, flush_follows=True)
        if per_peer:
            self.transport.flush()  # now, not after this turn's fsync (see transport)

    def _on_soft_state(self, gid: int, rd: Ready) -> None:
        group = self.groups[gid]
        soft = rd.soft_state
        assert soft is not None
        was_leader = group.role is Role.LEADER
        if soft.leader != group.leader or soft.role != group.role:
            log.info(
                "event=role_change group=%d topic=%s partition=%s role=%s leader=%s term=%d",
                gid,
                group.topic,
                group.partition,
                soft.role.name,
                soft.leader,
                group.raft.term,
            )
            self.stats["leader_changes"] += 1
            if self.metrics is not None:
                self.metrics.leader_changes.inc()
        if soft.leader != group.leader and group.reads:
            # Reads forwarded to the old leader may never be answered; they have
            # no effect, so a redirect is always a correct answer.
            for waiters in group.reads.values():
                self._fail_not_leader(group, waiters, soft.leader, "leader changed")
            group.reads.clear()
        group.role = soft.role
        group.leader = soft.leader
        self._unquiet(group)
        if was_leader and soft.role is not Role.LEADER:
            self._lost_leadership(group)
        if gid == METADATA_GROUP and soft.role is Role.LEADER and not was_leader:
            self._maybe_register_nodes()

    def _lost_leadership(self, group: Group) -> None:
        # Parked batches never entered the log: _hold_early releases them next
        # turn, to be refused NOT_LEADER (a plain redirect).
        group.proposed_next_seq.clear()
        commit = group.raft.commit_index
        for index in [i for i in group.proposals if i > commit]:
            proposal = group.proposals.pop(index)
            group.uncommitted_bytes -= proposal.nbytes
            group.forget_produces(index, proposal)
            for w in proposal.all_waiters():
                # The next leader may still commit it: outcome unknown.
                w.fail(ErrorCode.TIMEOUT, "leadership lost before commit; outcome unknown")
        # Reads have no effect: a plain redirect is always correct.
        for waiters in group.reads.values():
            self._fail_not_leader(group, waiters, group.leader, "leadership lost")
        group.reads.clear()
        for waiters in [w for _, w in group.reads_at]:
            self._fail_not_leader(group, waiters, group.leader, "leadership lost")
        group.reads_at.clear()

    def _observe_fsync(self, seconds: float) -> None:
        self.stats["fsyncs"] += 1
        if self.metrics is not None:
            self.metrics.fsync_latency.observe(seconds)
        if seconds >= self.slow_fsync_s:
            count = self._slow_fsync_log.count()
            if count:
                log.warning(
                    "event=slow_fsync node=%s seconds=%.3f count=%d threshold=%.3f",
                    self.node_id,
                    seconds,
                    count,
                    self.slow_fsync_s,
                )

    # ------------------------------------------------------------ apply

    def _apply(self, readies: list[tuple[int, Ready]]) -> None:
        batch = None
        touched: list[Group] = []
        meta_applied = False
        for gid, rd in readies:
            group = self.groups.get(gid)
            if group is None:
                continue
            if rd.snapshot is not None:
                # InstallSnapshot (Raft §7): the state machine takes the
                # snapshot's state in this batch, before save() persists it.
                if batch is None:
                    batch = self.store.new_batch()
                meta_applied |= self.snapshots.restore(group, rd.snapshot, batch)
                touched.append(group)
            if rd.committed_entries:
                if batch is None:
                    batch = self.store.new_batch()
                self._apply_group(group, rd, batch)
                touched.append(group)
                meta_applied |= gid == METADATA_GROUP
            if rd.read_states:
                for rs in rd.read_states:
                    waiters = group.reads.pop(rs.context, None)
                    if waiters:
                        group.reads_at.append((rs.index, waiters))
                touched.append(group)
        if batch is not None:
            self.store.write(batch, sync=False)
            self.snapshots.after_apply(readies)
        for group in touched:
            if group.reads_at:
                applied = group.applied
                keep = []
                for index, waiters in group.reads_at:
                    if applied >= index:
                        for w in waiters:
                            w.resolve(index)
                    else:
                        keep.append((index, waiters))
                group.reads_at = keep
            group.notify_applied()
        if meta_applied:
            self._reconcile_groups()
            self.metadata_users.follow(self.metadata.users)
            membership.sync_peers(self)

    def _apply_group(self, group: Group, rd: Ready, batch: Any) -> None:
        entries = rd.committed_entries
        applied = group.sm.applied_index
        for entry in entries:
            # Entries at or below the state machine's applied index are a replay
            # after a restart (see _add_group): their conf changes were applied
            # and persisted with that apply batch already.
            if entry.type is EntryType.CONF_CHANGE and entry.index > applied:
                # Also persists the new ConfState with the apply batch.
                membership.apply_conf_entry(self, group, entry, batch)
        results = group.sm.apply(entries, batch)
        while self.readded_nodes:  # group 0's adds, now that their registrations are applied
            membership.adopt_incarnation(self, self.readded_nodes.pop(0))
        for entry, result in zip(entries, results):
            proposal = group.proposals.pop(entry.index, None)
            if proposal is None:
                continue
            group.uncommitted_bytes -= proposal.nbytes
            if proposal.produce_keys:
                group.forget_produces(entry.index, proposal)
            if proposal.term != entry.term:
                # Overwritten by another leader's entry: ours never took effect.
                self._fail_not_leader(
                    group, proposal.all_waiters(), group.leader, "entry overwritten by a new leader"
                )
                continue
            for waiter, res in zip(proposal.waiters, result):
                waiter.resolve(res)
            if proposal.retries:
                self._answer_retries(group, proposal.retries, result)
        if not group.proposals and group.proposed_next_seq:
            # Nothing of ours in flight: the state machine knows every sequence.
            group.proposed_next_seq.clear()

    # ------------------------------------------------------------ metadata-driven groups

    def _reconcile_groups(self) -> None:
        """Follow the metadata: host the groups this node is a replica of, drop the others."""
        desired = self._groups_for_me()
        previous, self._desired = self._desired, desired
        for gid, info in desired.items():
            group = self.groups.get(gid)
            if group is not None:
                self._describe(group)
            else:
                self._pending_create[gid] = info
        for gid in previous:
            if gid not in desired:
                self._pending_create.pop(gid, None)
                if gid in self.groups:
                    self._delete_group(gid)
        self._create_pending()

    def _create_pending(self) -> None:
        """Create at most _CREATE_PER_TURN groups now.

        Each creation is a synced write; a topic with a thousand partitions
        must not stall the loop (and so every other group's heartbeats) for
        seconds. Messages for groups not created yet wait in ``_early``.
        """
        if not self._pending_create:
            return
        on_disk = set(self.store.group_ids())
        for _ in range(min(_CREATE_PER_TURN, len(self._pending_create))):
            gid, info = next(iter(self._pending_create.items()))
            del self._pending_create[gid]
            if gid in self.groups or gid not in self._desired:
                continue
            fresh = gid not in on_disk
            if fresh:
                self.store.create_group(gid, ConfState(voters=tuple(info.replicas)))
            group = self._add_partition(gid)
            self._describe(group)
            log.info(
                "event=group_created group=%d topic=%s partition=%s replicas=%s fresh=%s",
                gid,
                info.topic,
                info.partition,
                ",".join(info.replicas),
                fresh,
            )
            # The first replica campaigns at once (preferred leader: spreads
            # leaders over nodes and makes a new topic writable in milliseconds).
            if fresh and info.replicas and info.replicas[0] == self.node_id:
                group.raft.campaign()
        if self._pending_create:
            self._wake.set()

    def _delete_group(self, gid: int) -> None:
        group = self.groups.pop(gid)
        self._unquiet(group)
        self._ticking.discard(gid)
        for proposal in group.proposals.values():
            for w in proposal.all_waiters():
                w.fail(ErrorCode.UNKNOWN_TOPIC, "topic deleted")
        for w in group.unproposed_waiters():
            w.fail(ErrorCode.UNKNOWN_TOPIC, "topic deleted")
        group.notify_applied()
        self.store.delete_group(gid)
        log.info(
            "event=group_deleted group=%d topic=%s partition=%s", gid, group.topic, group.partition
        )

    def _maybe_register_nodes(self) -> None:
        """The metadata leader registers the nodes (membership.register_nodes)."""
        membership.register_nodes(self)

    # ------------------------------------------------------------ shutdown, status

    def _fail_everything(self) -> None:
        for group in self.groups.values():
            for proposal in group.proposals.values():
                for w in proposal.all_waiters():
                    # In the log already: it may still commit (DESIGN §3.3).
                    w.fail(ErrorCode.TIMEOUT, "node shutting down; outcome unknown")
            for w in group.unproposed_waiters():
                # Never proposed, or reads: no effect, retry elsewhere.
                w.fail(ErrorCode.NOT_AVAILABLE, "node shutting down")

    def group_status(self, group: Group) -> dict[str, Any]:
        status = group.raft.status()
        replicas = []
        if status.role is Role.LEADER:
            for node, progress in status.progress.items():
                replicas.append(
                    {
                        "node": node,
                        "match": progress.match,
                        "next": progress.next,
                        "state": getattr(progress.state, "name", str(progress.state)).lower(),
                        "lag": max(0, status.last_index - progress.match),
                    }
                )
        return {
            "group": group.gid,
            "topic": group.topic,
            "partition": group.partition,
            "role": status.role.name.lower(),
            "leader": status.leader,
            "term": status.term,
            "commit": status.commit,
            "applied": group.applied,
            "last_index": status.last_index,
            "replicas": replicas,
            # Not ticked while idle (see the module docstring); additive field.
            "quiet": group.quiet,
            # Snapshots and compaction (server/snapshots.py); additive fields.
            **self.snapshots.group_status(group.gid),
        }
