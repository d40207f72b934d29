"""``RaftNode``: one Raft group's deterministic state machine (etcd-io/raft style).

The driver calls ``tick()``, ``step(msg)``, ``propose(data)`` ... and then
``ready()`` / ``advance()`` (see ``types.Ready`` for the contract). The node
never does I/O and never reads a clock; its only randomness is the injected
``random.Random`` (election timeouts), so identical inputs give identical
outputs.

Safety rules are each ONE small overridable method, so test-only subclasses
can switch a rule off and show the simulator catches the violation:

- ``_may_commit_by_counting(index)``: Raft §5.4.2 / Figure 8 -- the leader
  commits by counting replicas only an entry of its current term.
- ``_send_after_persist(msg)``: Raft Figure 2 "respond after persisting" --
  vote grants, append acks and every other non-leader message go to
  ``Ready.persisted_messages``, sent only once the Ready is durable.
- ``_candidate_log_up_to_date(last_index, last_term)``: the election
  restriction of Raft §5.4.1.
- ``_grant_vote_allowed(msg)``: at most one vote per term (Raft §5.2), and
  pre-votes (thesis §9.6) only for a future term.
- ``_in_lease(msg)``: thesis §4.2.3 -- a node that heard from a leader within
  the election timeout ignores (pre)vote requests, unless forced by a
  leadership transfer.
- ``_handle_read_index(msg)`` / ``_answer_read(requester, index, context)``:
  Raft §6.4 -- a read is answered only after the leader committed in its
  term and a quorum confirmed it still leads.
- ``_lease_valid()``: thesis §6.4.1 -- with lease reads, a read skips that
  round only inside the lease and outside transfers and membership changes.

tests/sim/mutants.py subclasses these (and appends to ``self._msgs``, the
list of messages sent without waiting for persistence): keep the names.
"""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from enum import Enum

from .codec import CodecError, decode_conf_change, encode_conf_change
from .conf_change import ConfChangeError, apply_conf_change
from .config import Config, Status
from .errors import NotLeaderError, ProposalDroppedError
from .progress import Progress, ProgressState, ProgressStatus, new_progress
from .quorum import UNBOUNDED, VoteResult, joint_committed, joint_vote
from .raft_log import RaftLog
from .read_only import ReadIndexStatus, ReadOnly
from .storage import (
    CompactedError,
    SnapshotTemporarilyUnavailableError,
    Storage,
    StorageError,
)
from .types import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SoftState,
)

log = logging.getLogger("raftlog.raft")

# Config and Status live in config.py; re-exported here, the API's home.
__all__ = ["CAMPAIGN_TRANSFER", "Config", "RaftNode", "Status", "decode_conf_change_entry"]

# Context of VOTE messages sent after TIMEOUT_NOW: voters must not refuse it
# because of the leader lease (the leader itself asked for this election).
CAMPAIGN_TRANSFER = b"transfer"

MT = MessageType
_VOTE_RESP = {MT.VOTE: MT.VOTE_RESP, MT.PRE_VOTE: MT.PRE_VOTE_RESP}
# (Pre-)vote answers: they carry the voter's commit index (RaftNode._learn_commit).
_VOTE_RESP_TYPES = frozenset(_VOTE_RESP.values())
# Messages a leader sends that depend on nothing unpersisted (thesis §10.2.1).
_LEADER_PARALLEL = frozenset({MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT, MT.TIMEOUT_NOW})
# Never sent over the network (types.MessageType).
_LOCAL = frozenset({MT.HUP, MT.BEAT, MT.PROPOSE})


class _CampaignKind(Enum):
    PRE_ELECTION = 1
    ELECTION = 2
    TRANSFER = 3


class RaftNode:
    def __init__(self, config: Config, storage: Storage, rng: random.Random) -> None:
        config.validate()
        self._cfg = config
        self._id = config.id
        self._rng = rng
        self._log = RaftLog(storage)
        hs, cs = storage.initial_state()
        if hs.commit > self._log.last_index():
            raise ValueError(
                f"stored commit {hs.commit} beyond last index {self._log.last_index()}"
            )
        self._term = hs.term
        self._vote: NodeId | None = hs.vote
        self._log.commit_to(hs.commit)
        if config.applied:
            if config.applied > self._log.committed:
                raise ValueError(f"applied {config.applied} beyond committed {self._log.committed}")
            self._log.applied_to(config.applied)

        self._role = Role.FOLLOWER
        self._lead: NodeId | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_ticks
        self._votes: dict[NodeId, bool] = {}
        self._lead_transferee: NodeId | None = None
        # A leader removed by a change it applied: it only hands leadership over.
        self._leaving = False
        self._pending_conf_index = 0
        self._uncommitted_bytes = 0
        self._read_only = ReadOnly()
        # Lease reads (thesis §6.4.1), all in this node's ticks: ``_ticks``
        # counts every tick() since construction; ``_lease_start`` is the tick
        # at which a heartbeat round left that a quorum then acknowledged.
        # Rounds numbered below ``_lease_min_seq`` (sent before a membership
        # change or before the driver's clock was found unreliable) never
        # start a lease. After a leadership transfer began in a term, no lease
        # in that term: a delayed TimeoutNow may still start an election that
        # bypasses the followers' vote-free window.
        self._ticks = 0
        self._lease_start: int | None = None
        self._lease_min_seq = 0
        self._lease_blocked_term = -1
        # A restarted node forgot when it last heard from a leader; with lease
        # reads it refuses votes for one election timeout (see _in_lease).
        self._boot_guard = config.lease_reads and hs.term > 0
        # READ_INDEX requests that arrived before this leader committed an entry
        # of its own term (§6.4 step 1); answered once it has.
        self._pending_reads: list[Message] = []
        self._read_states: list[ReadState] = []
        self._msgs: list[Message] = []
        self._msgs_after_persist: list[Message] = []
        # Proposals since the last ready(): broadcast once, so N proposals
        # become one APPEND per follower instead of N.
        self._bcast_pending = False

        self._conf = ConfState()
        self._prs: dict[NodeId, Progress] = {}
        self._apply_conf_state(cs)

        self._prev_soft = SoftState(None, Role.FOLLOWER)
        self._prev_hard = HardState(hs.term, hs.vote, self._log.committed)
        self._become_follower(self._term, None)
        log.info(
            "event=start id=%s term=%d commit=%d applied=%d last=%d voters=%s",
            self._id,
            self._term,
            self._log.committed,
            self._log.applied,
            self._log.last_index(),
            ",".join(self._conf.voters),
        )

    # ==== read-only properties ===========================================

    @property
    def id(self) -> NodeId:
        return self._id

    @property
    def term(self) -> int:
        return self._term

    @property
    def vote(self) -> NodeId | None:
        return self._vote

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leader_id(self) -> NodeId | None:
        return self._lead

    @property
    def commit_index(self) -> int:
        return self._log.committed

    @property
    def applied_index(self) -> int:
        return self._log.applied

    @property
    def last_index(self) -> int:
        return self._log.last_index()

    @property
    def conf_state(self) -> ConfState:
        return self._conf

    @property
    def raft_log(self) -> RaftLog:
        return self._log

    # ==== safety rules (overridable, see module docstring) ================

    def _may_commit_by_counting(self, index: int) -> bool:
        """Raft §5.4.2: only an entry of the current term commits by counting replicas."""
        return self._log.zero_term(index) == self._term

    def _send_after_persist(self, msg: Message) -> None:
        """Raft Figure 2: the reply depends on state that must be durable first."""
        self._msgs_after_persist.append(msg)

    def _candidate_log_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: grant only to a candidate whose log is at least as up to date."""
        return self._log.is_up_to_date(last_index, last_term)

    def _grant_vote_allowed(self, msg: Message) -> bool:
        """Raft §5.2: one vote per term (re-granting the same candidate is fine).

        A pre-vote for a future term changes nothing here, so it may be
        granted whatever this node voted in its current term (thesis §9.6).
        """
        if self._vote == msg.frm:
            return True
        if self._vote is None and self._lead is None:
            return True
        return msg.type == MT.PRE_VOTE and msg.term > self._term

    def _in_lease(self, msg: Message) -> bool:
        """Thesis §4.2.3: heard from a live leader recently -> ignore (pre)votes.

        Not when the request comes from that leader itself: asking for votes in
        a later term, it has stopped leading (e.g. CheckQuorum stepped it down),
        so there is no live leader left to protect. Without this, a follower
        whose election clock is not running (the server stops ticking quiesced
        groups) refused the ex-leader's pre-votes until a full election timeout
        after it woke: a rolling restart stalled a group for ~1.5 s.
        """
        if msg.context == CAMPAIGN_TRANSFER:
            return False
        if self._boot_guard and self._ticks < self._cfg.election_ticks:
            # Before the crash this node may have been in some leader's lease
            # quorum, promising no vote for election_ticks; keep that promise.
            return True
        return (
            self._cfg.check_quorum
            and self._lead is not None
            and msg.frm != self._lead
            and self._election_elapsed < self._cfg.election_ticks
        )

    # ==== sending ===========================================================

    def _send(self, msg: Message) -> None:
        if self._role == Role.LEADER and msg.type in _LEADER_PARALLEL:
            if (self._term, self._vote) == (self._prev_hard.term, self._prev_hard.vote):
                self._msgs.append(msg)
            else:
                # Elected within the current Ready (e.g. a single voter): the
                # term is not durable yet. Crashing before the write, this
                # node could lead the same term again with a different log,
                # so even its appends wait for the write.
                self._msgs_after_persist.append(msg)
        else:
            self._send_after_persist(msg)

    # ==== membership =======================================================

    def _voter_ids(self) -> list[NodeId]:
        seen = dict.fromkeys(self._conf.voters)
        seen.update(dict.fromkeys(self._conf.voters_outgoing))
        return sorted(seen)

    def _promotable(self) -> bool:
        """A node campaigns only if it is a voter (not a learner, not removed)."""
        return self._id in self._conf.voters or self._id in self._conf.voters_outgoing

    def _apply_conf_state(self, cs: ConfState) -> None:
        self._conf = cs
        learners = set(cs.learners) | set(cs.learners_next)
        voters = set(cs.voters) | set(cs.voters_outgoing)
        prs: dict[NodeId, Progress] = {}
        nxt = self._log.last_index() + 1
        for node in sorted(voters | learners):
            pr = self._prs.get(node)
            if pr is None:
                pr = new_progress(
                    nxt, self._cfg.max_inflight_msgs, self._cfg.max_inflight_bytes, False
                )
                if node == self._id:
                    pr.match = self._log.persisted_last()
            pr.is_learner = node not in voters
            prs[node] = pr
        self._prs = prs
        # A lease confirmed under the old membership proves nothing about the
        # new one's quorums: only rounds sent from now on count.
        self._lease_start = None
        self._lease_min_seq = self._read_only.next_seq

    # ==== role transitions =================================================

    def _reset(self, term: int) -> None:
        if term != self._term:
            self._term = term
            self._vote = None
        self._lead = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self._cfg.election_ticks + self._rng.randrange(
            self._cfg.election_ticks
        )
        self._lead_transferee = None
        self._leaving = False
        self._votes = {}
        last = self._log.last_index()
        persisted = self._log.persisted_last()
        for node, pr in self._prs.items():
            # A new term knows nothing of the followers' logs (§5.3: nextIndex
            # starts after the leader's last entry); our own durable log we know.
            pr.reset(next_index=last + 1, match=persisted if node == self._id else 0)
        self._pending_conf_index = 0
        self._uncommitted_bytes = 0
        self._read_only.reset()
        self._lease_start = None
        self._pending_reads = []

    def _become_follower(self, term: int, lead: NodeId | None) -> None:
        self._reset(term)
        self._role = Role.FOLLOWER
        self._lead = lead
        log.debug("event=become_follower id=%s term=%d leader=%s", self._id, term, lead)

    def _become_pre_candidate(self) -> None:
        # No term change and no vote: a pre-election is harmless (thesis §9.6).
        self._votes = {}
        self._role = Role.PRE_CANDIDATE
        self._lead = None
        self._election_elapsed = 0
        log.info("event=become_pre_candidate id=%s term=%d", self._id, self._term)

    def _become_candidate(self) -> None:
        self._reset(self._term + 1)
        self._vote = self._id
        self._role = Role.CANDIDATE
        log.info("event=become_candidate id=%s term=%d", self._id, self._term)

    def _become_leader(self) -> None:
        self._reset(self._term)
        self._role = Role.LEADER
        self._lead = self._id
        me = self._prs.get(self._id)
        if me is not None:
            me.become_replicate()
            me.recent_active = True
        # Any conf change in the uncommitted tail may still be pending.
        self._pending_conf_index = self._log.last_index()
        # §5.4.2 / §8: a no-op of our term lets earlier entries commit.
        self._append_entries([Entry(term=self._term, index=0)])
        last = self._log.last_index()
        log.info("event=become_leader id=%s term=%d last=%d", self._id, self._term, last)

    # ==== time ===============================================================

    def tick(self) -> None:
        self._ticks += 1
        if self._role == Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._promotable() and self._election_elapsed >= self._randomized_timeout:
            self._election_elapsed = 0
            self._hup(transfer=False)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        self._tick_snapshots()
        if self._election_elapsed >= self._cfg.election_ticks:
            self._election_elapsed = 0
            if self._cfg.check_quorum:
                self._check_quorum()
            if self._role == Role.LEADER and self._lead_transferee is not None:
                log.info("event=transfer_aborted id=%s target=%s", self._id, self._lead_transferee)
                self._lead_transferee = None
                if self._leaving:
                    # The hand-over did not finish (target slow or cut off): keep
                    # replicating and try again, maybe another voter. Stepping down
                    # instead can leave the group with no possible leader (seed 116).
                    self._leave_leadership()
        if self._role != Role.LEADER:
            return
        if self._heartbeat_elapsed >= self._cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            if self._cfg.lease_reads:
                # Every round a probe: its acks renew the lease, and they
                # confirm any read queued before it as well.
                rid = self._read_only.add_probe(
                    self._id, self._ticks, self._ticks - self._cfg.lease_ticks
                )
                self._bcast_heartbeat(rid)
            else:
                self._bcast_heartbeat(self._read_only.last_pending_id() or b"")

    def _tick_snapshots(self) -> None:
        """Give up on a snapshot not acknowledged within two election timeouts.

        It was lost or failed and the driver did not call report_snapshot;
        probing again resends it if the follower still needs it.
        """
        limit = 2 * self._cfg.election_ticks
        for node, pr in self._prs.items():
            if pr.state != ProgressState.SNAPSHOT:
                continue
            pr.snapshot_ticks += 1
            if pr.snapshot_ticks >= limit:
                log.info("event=snapshot_timeout id=%s to=%s", self._id, node)
                pr.pending_snapshot = 0
                pr.become_probe()

    def _check_quorum(self) -> None:
        """Thesis §6.2: step down unless a quorum was heard from in the last election timeout."""
        active: dict[NodeId, bool] = {}
        for node, pr in self._prs.items():
            if node == self._id:
                active[node] = True
            elif not pr.is_learner:
                active[node] = pr.recent_active
            pr.recent_active = node == self._id
        if joint_vote(self._conf.voters, self._conf.voters_outgoing, active) != VoteResult.WON:
            log.warning("event=check_quorum_failed id=%s term=%d", self._id, self._term)
            self._become_follower(self._term, None)

    # ==== elections ==========================================================

    def campaign(self) -> None:
        """Start a (pre-)election now."""
        self._hup(transfer=False)

    def _hup(self, transfer: bool) -> None:
        if self._role == Role.LEADER:
            return
        if not self._promotable():
            log.debug("event=campaign_refused id=%s reason=not_a_voter", self._id)
            return
        if self._has_unapplied_conf_change():
            # The config we would campaign under may be about to change.
            log.info("event=campaign_refused id=%s reason=unapplied_conf_change", self._id)
            return
        if transfer:
            self._campaign(_CampaignKind.TRANSFER)
        elif self._cfg.pre_vote:
            self._campaign(_CampaignKind.PRE_ELECTION)
        else:
            self._campaign(_CampaignKind.ELECTION)

    def _has_unapplied_conf_change(self) -> bool:
        lo = self._log.applied + 1
        hi = min(self._log.committed, self._log.persisted_last())
        if lo > hi:
            return False
        try:
            ents = self._log.slice(lo, hi + 1)
        except StorageError:
            return False
        return any(e.type == EntryType.CONF_CHANGE for e in ents)

    def _campaign(self, kind: _CampaignKind) -> None:
        if kind == _CampaignKind.PRE_ELECTION:
            self._become_pre_candidate()
            vote_type = MT.PRE_VOTE
            term = self._term + 1  # the term we would use (thesis §9.6)
        else:
            self._become_candidate()
            vote_type = MT.VOTE
            term = self._term
        if self._poll(self._id, True) == VoteResult.WON:
            # Single-voter group: no one else to ask.
            if kind == _CampaignKind.PRE_ELECTION:
                self._campaign(_CampaignKind.ELECTION)
            else:
                self._become_leader()
                self._bcast_append()  # learners, if any
            return
        ctx = CAMPAIGN_TRANSFER if kind == _CampaignKind.TRANSFER else b""
        last_index = self._log.last_index()
        last_term = self._log.last_term()
        for node in self._voter_ids():
            if node == self._id:
                continue
            self._send(
                Message(
                    type=vote_type,
                    to=node,
                    frm=self._id,
                    term=term,
                    index=last_index,
                    log_term=last_term,
                    context=ctx,
                )
            )

    def _poll(self, node: NodeId, granted: bool) -> VoteResult:
        if node not in self._votes:
            self._votes[node] = granted
        return joint_vote(self._conf.voters, self._conf.voters_outgoing, self._votes)

    # ==== stepping messages ====================================================

    def step(self, msg: Message) -> None:
        """Feed one message. Stale, misaddressed or malformed ones are dropped, never raised."""
        if msg.type in _LOCAL:
            # Local triggers are only honoured from this node itself: a
            # buggy or hostile peer must not be able to force elections.
            if msg.frm != self._id or msg.to != self._id:
                return
            if msg.type == MT.HUP:
                self._hup(transfer=False)
            elif msg.type == MT.BEAT and self._role == Role.LEADER:
                self._bcast_heartbeat(b"")
            return  # PROPOSE: proposals go through propose()
        if msg.to != self._id or not isinstance(msg.frm, str) or msg.frm == self._id:
            return
        if not self._step_term(msg):
            return
        if msg.type in _VOTE_RESP_TYPES and msg.reject and self._role != Role.LEADER:
            # Only refusals teach: a voter that grants has no log beyond ours,
            # and our own term's no-op will commit what it knows (§5.4.2). A
            # refuser may never lead (seed 47480), so its answer is the only
            # way its commit index reaches us.
            self._learn_commit(msg.commit, msg.log_term)
        if msg.type in _VOTE_RESP:
            self._handle_vote_request(msg)
        elif self._role == Role.LEADER:
            self._step_leader(msg)
        elif self._role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(msg)
        else:
            self._step_follower(msg)

    def _step_term(self, msg: Message) -> bool:
        """Term rules common to all roles (Raft §5.1); False = drop the message."""
        if msg.term == 0:
            # Forwarded client requests carry no term (they are not Raft RPCs).
            return msg.type in (MT.READ_INDEX, MT.TRANSFER_LEADER)
        if msg.term > self._term:
            if msg.type in (MT.VOTE, MT.PRE_VOTE) and self._in_lease(msg):
                log.debug(
                    "event=vote_ignored_in_lease id=%s from=%s term=%d", self._id, msg.frm, msg.term
                )
                return False
            if msg.type == MT.PRE_VOTE:
                return True  # a pre-vote never changes our term
            if msg.type == MT.PRE_VOTE_RESP and not msg.reject:
                return True  # granted pre-votes carry the future term
            if msg.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
                self._become_follower(msg.term, msg.frm)
            else:
                self._become_follower(msg.term, None)
            return True
        if msg.term < self._term:
            if msg.type in (MT.APPEND, MT.HEARTBEAT):
                # Figure 2: the reply carries our newer term, so a stale
                # leader steps down. Always, even without PreVote and
                # CheckQuorum: a leader removed from the group before it
                # learned so is never contacted by the new leader, and
                # would otherwise go on "leading" term after term alone
                # (found by the simulator, seed 42928 of tests/sim@6fe5c57).
                self._send(Message(type=MT.APPEND_RESP, to=msg.frm, frm=self._id, term=self._term))
            elif msg.type == MT.PRE_VOTE:
                self._send(self._vote_resp(MT.PRE_VOTE_RESP, msg.frm, self._term, reject=True))
            return False
        return True

    def _handle_vote_request(self, msg: Message) -> None:
        grant = self._grant_vote_allowed(msg) and self._candidate_log_up_to_date(
            msg.index, msg.log_term
        )
        resp_type = _VOTE_RESP[msg.type]
        if grant:
            # A granted pre-vote answers with the future term it was asked
            # about, so the pre-candidate recognizes it (thesis §9.6).
            self._send(self._vote_resp(resp_type, msg.frm, msg.term, reject=False))
            if msg.type == MT.VOTE:
                self._election_elapsed = 0
                self._vote = msg.frm
            log.info(
                "event=vote_granted id=%s type=%s to=%s term=%d",
                self._id,
                msg.type.name,
                msg.frm,
                msg.term,
            )
        else:
            self._send(self._vote_resp(resp_type, msg.frm, self._term, reject=True))

    def _vote_resp(self, typ: MessageType, to: NodeId, term: int, reject: bool) -> Message:
        """A (pre-)vote answer; it also tells the candidate our commit index (``_learn_commit``)."""
        commit = self._log.committed
        return Message(
            type=typ,
            to=to,
            frm=self._id,
            term=term,
            reject=reject,
            commit=commit,
            log_term=self._log.zero_term(commit),
        )

    def _learn_commit(self, commit: int, commit_term: int) -> None:
        """Advance our commit index to a peer's, if our log holds its committed entry.

        A voter answering a (pre-)vote says which entry (``commit``,
        ``commit_term``) it knows to be committed. If our log holds an entry
        of that index and term, Log Matching (Raft §5.3) makes our log equal
        to the peer's up to it, so all of it is committed, and committed
        entries are never undone (Leader Completeness, §5.4): committing it
        here is the same inference a follower makes from a leader's
        leaderCommit (Figure 2), only from a peer. Stale, duplicated or
        reordered answers are harmless: "committed" never becomes false.

        Why it is needed (simulator seed 47480): a leader removed by its own
        leave-joint commits it and crashes before anyone else learns that
        commit. It restarts as a non-member, which never campaigns (thesis
        §4.2.3), so nothing ever sends that commit index again. The members
        still decide with the joint config, whose outgoing half needs the
        removed node's vote, which it refuses (its log is longer). Its
        answer now carries the commit index instead: the members apply the
        leave-joint and elect a leader among themselves. This changes no
        quorum rule and gives the removed node no say: it only repeats a fact.
        """
        if commit_term == 0 or commit <= self._log.committed:
            return
        if self._log.match_term(commit, commit_term):
            log.info("event=commit_learned id=%s commit=%d", self._id, commit)
            self._log.commit_to(commit)

    # ---- follower -------------------------------------------------------------

    def _step_follower(self, msg: Message) -> None:
        t = msg.type
        if t == MT.APPEND:
            self._election_elapsed = 0
            self._lead = msg.frm
            self._handle_append(msg)
        elif t == MT.HEARTBEAT:
            self._election_elapsed = 0
            self._lead = msg.frm
            self._handle_heartbeat(msg)
        elif t == MT.SNAPSHOT:
            self._election_elapsed = 0
            self._lead = msg.frm
            self._handle_snapshot(msg)
        elif t == MT.TIMEOUT_NOW:
            log.info("event=timeout_now id=%s from=%s term=%d", self._id, msg.frm, self._term)
            self._hup(transfer=True)
        elif t == MT.READ_INDEX_RESP:
            self._read_states.append(ReadState(msg.index, msg.context))
        # READ_INDEX / TRANSFER_LEADER reaching a non-leader are dropped: the
        # requester's driver times out and retries against the new leader.

    def _step_candidate(self, msg: Message) -> None:
        t = msg.type
        # A leader of our term exists (we may be a pre-candidate in it): follow it.
        if t == MT.APPEND:
            self._become_follower(msg.term, msg.frm)
            self._handle_append(msg)
        elif t == MT.HEARTBEAT:
            self._become_follower(msg.term, msg.frm)
            self._handle_heartbeat(msg)
        elif t == MT.SNAPSHOT:
            self._become_follower(msg.term, msg.frm)
            self._handle_snapshot(msg)
        elif (t == MT.PRE_VOTE_RESP and self._role == Role.PRE_CANDIDATE) or (
            t == MT.VOTE_RESP and self._role == Role.CANDIDATE
        ):
            result = self._poll(msg.frm, not msg.reject)
            if result == VoteResult.WON and not self._promotable():
                self._become_follower(self._term, None)  # removed while campaigning
            elif result == VoteResult.WON:
                if self._role == Role.PRE_CANDIDATE:
                    self._campaign(_CampaignKind.ELECTION)
                else:
                    self._become_leader()
                    self._bcast_append()
            elif result == VoteResult.LOST:
                self._become_follower(self._term, None)

    def _handle_append(self, msg: Message) -> None:
        if not self._entries_well_formed(msg):
            log.warning("event=malformed_append id=%s from=%s", self._id, msg.frm)
            return
        if msg.index < self._log.committed:
            # Everything up to our commit index matches the leader (Leader
            # Completeness); ack that much so it moves on.
            self._send(
                Message(
                    type=MT.APPEND_RESP,
                    to=msg.frm,
                    frm=self._id,
                    term=self._term,
                    index=self._log.committed,
                )
            )
            return
        last_new = self._log.maybe_append(msg.index, msg.log_term, msg.commit, msg.entries)
        if last_new is not None:
            self._send(
                Message(
                    type=MT.APPEND_RESP, to=msg.frm, frm=self._id, term=self._term, index=last_new
                )
            )
            return
        # Reject with a hint: the last index at which our log may match,
        # skipping every entry of a term newer than the leader's prevLogTerm.
        hint_index, hint_term = self._log.find_conflict_by_term(
            min(msg.index, self._log.last_index()), msg.log_term
        )
        self._send(
            Message(
                type=MT.APPEND_RESP,
                to=msg.frm,
                frm=self._id,
                term=self._term,
                index=msg.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    @staticmethod
    def _entries_well_formed(msg: Message) -> bool:
        """Consecutive indexes after prevLogIndex, terms non-decreasing and <= the leader's."""
        index = msg.index
        term = msg.log_term
        for e in msg.entries:
            index += 1
            if e.index != index or e.term < term or e.term > msg.term:
                return False
            term = e.term
        return True

    def _handle_heartbeat(self, msg: Message) -> None:
        # The leader sends min(its commit, our match), so this never exceeds
        # what we hold of its log; commit_to clamps to last_index regardless.
        self._log.commit_to(msg.commit)
        self._send(
            Message(
                type=MT.HEARTBEAT_RESP,
                to=msg.frm,
                frm=self._id,
                term=self._term,
                context=msg.context,
            )
        )

    def _handle_snapshot(self, msg: Message) -> None:
        snap = msg.snapshot
        if snap is None or snap.is_empty():
            return
        if self._restore(snap):
            index = self._log.last_index()
        else:
            index = self._log.committed
        self._send(
            Message(type=MT.APPEND_RESP, to=msg.frm, frm=self._id, term=self._term, index=index)
        )

    def _restore(self, snap: Snapshot) -> bool:
        """InstallSnapshot (Raft §7); False if the snapshot brings nothing new."""
        meta = snap.meta
        if meta.index <= self._log.committed:
            return False
        if self._log.match_term(meta.index, meta.term):
            # We already hold the entry: just fast-forward the commit index.
            self._log.commit_to(meta.index)
            return False
        self._log.restore(snap)
        self._apply_conf_state(meta.conf_state)
        log.info("event=snapshot_restored id=%s index=%d term=%d", self._id, meta.index, meta.term)
        return True

    # ---- leader ------------------------------------------------------------------

    def _step_leader(self, msg: Message) -> None:
        t = msg.type
        if t == MT.READ_INDEX:
            self._handle_read_index(msg)
            return
        if t == MT.TRANSFER_LEADER:
            try:
                target = msg.context.decode()
            except UnicodeDecodeError:
                return
            self._start_transfer(target)
            return
        pr = self._prs.get(msg.frm)
        if pr is None:
            return
        if t == MT.APPEND_RESP:
            pr.recent_active = True
            self._handle_append_resp(msg, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            self._handle_heartbeat_resp(msg, pr)

    def _handle_append_resp(self, msg: Message, pr: Progress) -> None:
        node = msg.frm
        if msg.index > self._log.last_index():
            return  # acks something we never sent: a confused peer
        if msg.reject:
            next_probe = msg.reject_hint
            if msg.log_term > 0:
                # Skip our entries of terms the follower cannot have (§5.3 end).
                next_probe, _ = self._log.find_conflict_by_term(msg.reject_hint, msg.log_term)
            if pr.maybe_decr_to(msg.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(node)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(msg.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT:
            if pr.match + 1 >= self._log.first_index():
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(msg.index)
        if self._maybe_commit() and self._cfg.broadcast_commit:
            self._bcast_append()
        elif was_paused:
            self._send_append(node)
        # Pipeline: fill the window (REPLICATE) without waiting for heartbeats.
        while self._maybe_send_append(node, send_if_empty=False):
            pass
        if node == self._lead_transferee and pr.match == self._log.last_index():
            self._send_timeout_now(node)

    def _handle_heartbeat_resp(self, msg: Message, pr: Progress) -> None:
        pr.probe_sent = False
        if pr.state == ProgressState.REPLICATE and pr.inflights.full():
            # An append was probably lost; let one more through.
            pr.inflights.free_first_one()
        elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()  # installed, but its ack was lost
        if pr.match < self._log.last_index():
            self._send_append(msg.frm)
        if msg.context:
            acks = self._read_only.recv_ack(msg.frm, msg.context)
            if acks is None:
                return
            if joint_vote(self._conf.voters, self._conf.voters_outgoing, acks) != VoteResult.WON:
                return
            statuses = self._read_only.advance(msg.context)
            if statuses:
                self._renew_lease(statuses[-1])
            for status in statuses:
                if status.requester is not None:
                    self._answer_read(status.requester, status.index, status.context)

    def _maybe_commit(self) -> bool:
        match = {node: pr.match for node, pr in self._prs.items() if not pr.is_learner}
        index = joint_committed(self._conf.voters, self._conf.voters_outgoing, match)
        if index == UNBOUNDED or index <= self._log.committed:
            return False
        if not self._may_commit_by_counting(index):
            return False
        self._log.commit_to(index)
        if self._pending_reads and self._committed_in_term():
            pending, self._pending_reads = self._pending_reads, []
            for m in pending:
                self._handle_read_index(m)
        return True

    def _committed_in_term(self) -> bool:
        return self._log.zero_term(self._log.committed) == self._term

    # ---- replication ------------------------------------------------------------

    def _send_append(self, to: NodeId) -> None:
        self._maybe_send_append(to, send_if_empty=True)

    def _maybe_send_append(self, to: NodeId, send_if_empty: bool) -> bool:
        pr = self._prs.get(to)
        if pr is None or to == self._id or pr.is_paused():
            return False
        prev_index = pr.next - 1
        try:
            prev_term = self._log.term(prev_index)
            ents = self._log.entries_from(pr.next, self._cfg.max_size_per_msg)
        except CompactedError:
            # §7: the entries it needs are gone; only a snapshot helps.
            return self._maybe_send_snapshot(to, pr)
        except StorageError as exc:
            log.error(
                "event=append_unavailable id=%s to=%s next=%d err=%s", self._id, to, pr.next, exc
            )
            return False
        if not ents and not send_if_empty:
            return False
        self._send(
            Message(
                type=MT.APPEND,
                to=to,
                frm=self._id,
                term=self._term,
                index=prev_index,
                log_term=prev_term,
                entries=tuple(ents),
                commit=self._log.committed,
            )
        )
        pr.sent_entries(len(ents), sum(e.size() for e in ents))
        return True

    def _maybe_send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a snapshot to a node that may be down
        try:
            snap = self._log.storage.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        if snap.is_empty():
            log.error("event=snapshot_missing id=%s to=%s next=%d", self._id, to, pr.next)
            return False
        pr.become_snapshot(snap.meta.index)
        log.info(
            "event=snapshot_send id=%s to=%s index=%d term=%d",
            self._id,
            to,
            snap.meta.index,
            snap.meta.term,
        )
        self._send(Message(type=MT.SNAPSHOT, to=to, frm=self._id, term=self._term, snapshot=snap))
        return True

    def _bcast_append(self) -> None:
        for node in self._prs:
            if node != self._id:
                self._send_append(node)

    def _bcast_heartbeat(self, context: bytes) -> None:
        for node, pr in self._prs.items():
            if node == self._id:
                continue
            self._send(
                Message(
                    type=MT.HEARTBEAT,
                    to=node,
                    frm=self._id,
                    term=self._term,
                    commit=min(pr.match, self._log.committed),
                    context=context,
                )
            )

    def _append_entries(self, ents: list[Entry]) -> int:
        """Leader appends ``ents`` (term/index filled in) to its unstable log."""
        last = self._log.last_index()
        stamped = [
            Entry(term=self._term, index=last + 1 + i, type=e.type, data=e.data)
            for i, e in enumerate(ents)
        ]
        return self._log.append(stamped)

    # ==== proposals ===============================================================

    def _check_can_propose(self, nbytes: int) -> None:
        if self._role != Role.LEADER:
            raise NotLeaderError(self._lead)
        if self._id not in self._prs:
            raise ProposalDroppedError("this node is not a member of the group")
        if self._lead_transferee is not None:
            raise ProposalDroppedError(f"leadership transfer to {self._lead_transferee} pending")
        limit = self._cfg.max_uncommitted_bytes
        if limit and self._uncommitted_bytes > 0 and self._uncommitted_bytes + nbytes > limit:
            raise ProposalDroppedError("too many uncommitted bytes")

    def propose(self, data: bytes) -> int:
        """Append ``data`` as a NORMAL entry; returns its index (committed later, maybe never)."""
        self._check_can_propose(len(data))
        return self._propose_entry(Entry(term=0, index=0, type=EntryType.NORMAL, data=data))

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Append a membership change (applied by every replica via ``apply_conf_change``).

        The entry records the membership it applies to (``ConfChange.base``),
        so a replica that joins later, with no membership of its own, still
        applies it correctly. Invalid changes raise ProposalDroppedError.
        """
        cc = replace(cc, base=self._conf)
        data = encode_conf_change(cc)
        self._check_can_propose(len(data))
        # One conf change at a time (thesis §4.1): the next may only be
        # proposed once the previous one is applied.
        if self._pending_conf_index > self._log.applied:
            raise ProposalDroppedError(f"conf change at {self._pending_conf_index} not applied yet")
        if self._conf.is_joint() and not cc.leave_joint:
            raise ProposalDroppedError("in a joint configuration: only leave_joint is allowed")
        if not self._conf.is_joint() and cc.leave_joint:
            raise ProposalDroppedError("not in a joint configuration")
        try:
            apply_conf_change(self._conf, cc)
        except ConfChangeError as exc:
            raise ProposalDroppedError(f"invalid conf change: {exc}") from None
        index = self._propose_entry(Entry(term=0, index=0, type=EntryType.CONF_CHANGE, data=data))
        self._pending_conf_index = index
        return index

    def _propose_entry(self, entry: Entry) -> int:
        index = self._append_entries([entry])
        self._uncommitted_bytes += len(entry.data)
        self._bcast_pending = True
        return index

    def _flush_bcast(self) -> None:
        if self._bcast_pending:
            self._bcast_pending = False
            if self._role == Role.LEADER:
                self._bcast_append()

    # ==== membership changes =====================================================

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed CONF_CHANGE entry's change; returns the resulting ConfState.

        The change applies to ``cc.base`` (the membership the leader held when
        it proposed it) when present, else to this node's own membership. An
        invalid change is ignored (the same way on every replica) and the
        current ConfState returned.
        """
        base = cc.base
        if base is None:
            if not self._conf.all_nodes():
                # A joining replica with no membership yet: applying a change
                # to the empty set could make it a lone voter that elects
                # itself. It must learn its membership first (snapshot,
                # adopt_conf_state, or a change that carries its base).
                log.warning(
                    "event=conf_change_ignored id=%s reason=no_membership_no_base", self._id
                )
                return self._conf
            base = self._conf
        elif base != self._conf and self._conf.all_nodes():
            log.info("event=conf_change_base_differs id=%s held=%s", self._id, self._conf)
        try:
            cs = apply_conf_change(base, cc)
        except ConfChangeError as exc:
            log.warning("event=conf_change_ignored id=%s reason=%s", self._id, exc)
            return self._conf
        self._switch_to_config(cs)
        return cs

    def adopt_conf_state(self, cs: ConfState) -> None:
        """Take ``cs`` as this replica's membership, wholesale.

        For a replica that joins with no membership and learns it out of band
        (the driver carries it with the change that adds the node); a
        snapshot or a conf change with a ``base`` does the same through the
        log. Not a way to change membership: that goes through the log.
        """
        self._switch_to_config(cs)

    def _switch_to_config(self, cs: ConfState) -> None:
        log.info(
            "event=conf_change id=%s term=%d voters=%s outgoing=%s learners=%s",
            self._id,
            self._term,
            ",".join(cs.voters),
            ",".join(cs.voters_outgoing),
            ",".join(cs.learners + cs.learners_next),
        )
        was_leader = self._role == Role.LEADER
        self._apply_conf_state(cs)
        if not was_leader:
            if self._role != Role.FOLLOWER and not self._promotable():
                # A campaign started before this node applied its own removal must
                # not go on: a non-member leader refuses every proposal yet keeps
                # the members from electing one (simulator seed 45337).
                log.info("event=campaign_abandoned id=%s term=%d", self._id, self._term)
                self._become_follower(self._term, None)
            return
        if not self._promotable():
            self._leave_leadership()
            return
        if self._lead_transferee is not None and self._lead_transferee not in self._conf.voters:
            self._lead_transferee = None
        # The quorum changed: maybe more is committed now.
        if self._maybe_commit():
            self._bcast_append()
        else:
            # New members need the log.
            for node, pr in self._prs.items():
                if node != self._id and pr.match == 0 and not pr.probe_sent:
                    self._send_append(node)

    def _maybe_auto_leave(self) -> None:
        """A joint config entered implicitly is left by the leader once applied (thesis §4.3)."""
        if (
            self._role != Role.LEADER
            or not self._conf.auto_leave
            or self._pending_conf_index > self._log.applied
            or self._lead_transferee is not None
        ):
            return
        try:
            self.propose_conf_change(ConfChange(leave_joint=True))
        except (ProposalDroppedError, NotLeaderError) as exc:
            log.debug("event=auto_leave_deferred id=%s reason=%s", self._id, exc)

    # ==== linearizable reads =====================================================

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read point (Raft §6.4); the answer comes in Ready.read_states."""
        if self._role == Role.LEADER:
            self._handle_read_index(
                Message(type=MT.READ_INDEX, to=self._id, frm=self._id, context=context)
            )
            return
        if self._lead is None:
            raise NotLeaderError(None)
        self._send(Message(type=MT.READ_INDEX, to=self._lead, frm=self._id, context=context))

    def _handle_read_index(self, msg: Message) -> None:
        if msg.frm != self._id and msg.frm not in self._prs:
            return
        if not self._committed_in_term():
            # §6.4 step 1: until an entry of this term commits, our commit
            # index may be behind earlier leaders'. Queue, do not drop.
            self._pending_reads.append(msg)
            return
        voters = self._voter_ids()
        if voters == [self._id] or self._lease_valid():
            self._answer_read(msg.frm, self._log.committed, msg.context)
            return
        rid = self._read_only.add_request(
            self._log.committed, msg.context, msg.frm, self._id, self._ticks
        )
        self._bcast_heartbeat(rid)

    # ---- leases (thesis §6.4.1) ------------------------------------------------

    def _renew_lease(self, acked: ReadIndexStatus) -> None:
        """A quorum acknowledged the round ``acked``: we led when it was sent.

        Every voter that acknowledged it reset its election clock on receipt,
        at or after ``acked.sent_tick``, and ignores (pre)votes for
        election_ticks from then (_in_lease). So no other leader can be
        elected before ``sent_tick + election_ticks`` of a clock running like
        ours; the lease ends ``lease_ticks`` after ``sent_tick``.
        """
        if not self._cfg.lease_reads or acked.seq < self._lease_min_seq:
            return
        if self._lease_start is None or acked.sent_tick > self._lease_start:
            self._lease_start = acked.sent_tick

    def _lease_valid(self) -> bool:
        """May this leader answer a read from its commit index without a round?"""
        return (
            self._cfg.lease_reads
            and self._role == Role.LEADER
            and self._lease_start is not None
            and self._ticks - self._lease_start < self._cfg.lease_ticks
            # §6.4 step 1: our commit index covers earlier leaders' commits.
            and self._committed_in_term()
            and self._lead_transferee is None
            and self._lease_blocked_term != self._term
            # A membership change in flight: other nodes may already count
            # votes by a configuration the lease's quorum was not drawn from.
            and self._pending_conf_index <= self._log.applied
        )

    @property
    def has_lease(self) -> bool:
        return self._lease_valid()

    def expire_lease(self) -> None:
        """Drop the lease; only rounds sent after this call may start a new one.

        The driver calls this when its ticks stopped tracking real time: the
        loop fell behind the tick timer, or the group stopped ticking
        (quiesced). A tick count that lags the clock would stretch the lease.
        """
        self._lease_start = None
        self._lease_min_seq = self._read_only.next_seq

    def _answer_read(self, requester: NodeId, index: int, context: bytes) -> None:
        if requester == self._id:
            self._read_states.append(ReadState(index, context))
        else:
            self._send(
                Message(
                    type=MT.READ_INDEX_RESP,
                    to=requester,
                    frm=self._id,
                    term=self._term,
                    index=index,
                    context=context,
                )
            )

    # ==== leadership transfer =====================================================

    def _leave_leadership(self) -> None:
        """This leader applied a change that removed (or demoted) it.

        Stepping down at once can leave the group with no possible leader:
        members that hold the change but do not yet know it is committed still
        decide with the old (joint) configuration, need this node's vote, and
        this node refuses candidates whose logs are shorter than its own
        (simulator seeds 116 and 30216). So it keeps replicating, which also
        tells the members the new commit index, takes no proposals, and hands
        leadership to the most caught-up remaining voter (thesis §3.10: catch
        it up, then TimeoutNow), retrying every election timeout, as etcd's
        removed leader keeps leading until the application stops it. It becomes
        a follower when a voter wins (its higher term), or by CheckQuorum if it
        can no longer reach a quorum of the voters.
        """
        candidates = [n for n in self._voter_ids() if n != self._id]
        if not candidates:
            log.info("event=leader_removed id=%s term=%d", self._id, self._term)
            self._become_follower(self._term, None)
            return
        target = max(candidates, key=lambda n: (self._prs[n].match, n))
        log.info("event=leader_removed id=%s term=%d hand_over=%s", self._id, self._term, target)
        self._leaving = True
        self._lead_transferee = None
        self._start_transfer(target)

    def transfer_leader(self, target: NodeId) -> None:
        """Hand leadership to ``target`` (thesis §3.10). Followers forward to the leader."""
        if self._role == Role.LEADER:
            self._start_transfer(target)
            return
        if self._lead is None:
            raise NotLeaderError(None)
        self._send(
            Message(type=MT.TRANSFER_LEADER, to=self._lead, frm=self._id, context=target.encode())
        )

    def _start_transfer(self, target: NodeId) -> None:
        pr = self._prs.get(target)
        if pr is None or pr.is_learner or target == self._id:
            log.info("event=transfer_refused id=%s target=%s", self._id, target)
            return
        if self._lead_transferee == target:
            return
        self._lead_transferee = target
        # The target's election will bypass the followers' vote-free window.
        self._lease_blocked_term = self._term
        self._lease_start = None
        # The transfer must finish within an election timeout or is aborted.
        self._election_elapsed = 0
        log.info("event=transfer_start id=%s target=%s term=%d", self._id, target, self._term)
        if pr.match == self._log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target)

    def _send_timeout_now(self, to: NodeId) -> None:
        self._send(Message(type=MT.TIMEOUT_NOW, to=to, frm=self._id, term=self._term))

    # ==== driver feedback =========================================================

    def report_unreachable(self, node: NodeId) -> None:
        pr = self._prs.get(node)
        if self._role == Role.LEADER and pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, node: NodeId, success: bool) -> None:
        pr = self._prs.get(node)
        if self._role != Role.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not success:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the follower's answer (or a heartbeat) before probing.
        pr.probe_sent = True

    # ==== Ready / advance ==========================================================

    def _soft_state(self) -> SoftState:
        return SoftState(self._lead, self._role)

    def _hard_state(self) -> HardState:
        return HardState(self._term, self._vote, self._log.committed)

    def has_ready(self) -> bool:
        self._flush_bcast()
        if self._msgs or self._msgs_after_persist or self._read_states:
            return True
        rlog = self._log
        u = rlog.unstable
        soft, hard = self._prev_soft, self._prev_hard
        # Field comparisons, not dataclass construction: the driver calls
        # this for every group on every loop turn.
        return (
            u.has_next_entries()
            or (u.snapshot is not None and not u.snapshot_in_progress)
            or soft.leader != self._lead
            or soft.role != self._role
            or hard.term != self._term
            or hard.vote != self._vote
            or hard.commit != rlog.committed
            or rlog.has_next_committed_entries()
        )

    def ready(self) -> Ready:
        """Everything the driver must do now (see ``types.Ready``).

        Process Readies in order: persist one before persisting the next, and
        call ``advance(rd)`` when done with ``rd``.
        """
        self._flush_bcast()
        u = self._log.unstable
        rd = Ready(
            entries=u.next_entries(),
            snapshot=u.next_snapshot(),
            committed_entries=self._log.next_committed_entries(
                self._cfg.max_committed_bytes_per_ready or None
            ),
            messages=self._msgs,
            persisted_messages=self._msgs_after_persist,
            read_states=self._read_states,
        )
        self._msgs = []
        self._msgs_after_persist = []
        self._read_states = []
        soft = self._soft_state()
        if soft != self._prev_soft:
            rd.soft_state = soft
            self._prev_soft = soft
        hard = self._hard_state()
        if hard != self._prev_hard:
            rd.hard_state = hard
            self._prev_hard = hard
        u.accept_in_progress()
        if rd.committed_entries:
            self._log.accept_applying(rd.committed_entries[-1].index)
        return rd

    def advance(self, ready: Ready) -> None:
        """The driver persisted ``ready`` and applied its committed entries."""
        if ready.snapshot is not None:
            self._log.stable_snap_to(ready.snapshot.meta.index)
            self._log.applied_to(ready.snapshot.meta.index)
        if ready.entries:
            last = ready.entries[-1]
            self._log.stable_to(last.index, last.term)
        if ready.committed_entries:
            self._log.applied_to(ready.committed_entries[-1].index)
            if self._role == Role.LEADER:
                freed = sum(len(e.data) for e in ready.committed_entries)
                self._uncommitted_bytes = max(0, self._uncommitted_bytes - freed)
        if self._role == Role.LEADER:
            me = self._prs.get(self._id)
            # The leader's own entries count towards commit only once durable.
            if (
                me is not None
                and me.maybe_update(self._log.persisted_last())
                and self._maybe_commit()
            ):
                self._bcast_append()
            self._maybe_auto_leave()

    # ==== introspection =============================================================

    def status(self) -> Status:
        progress: dict[NodeId, ProgressStatus] = {}
        if self._role == Role.LEADER:
            for node, pr in self._prs.items():
                progress[node] = ProgressStatus(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state,
                    inflight=pr.inflights.count,
                    recent_active=pr.recent_active,
                    is_learner=pr.is_learner,
                )
        return Status(
            id=self._id,
            term=self._term,
            role=self._role,
            leader=self._lead,
            commit=self._log.committed,
            applied=self._log.applied,
            last_index=self._log.last_index(),
            conf_state=self._conf,
            progress=progress,
            lead_transferee=self._lead_transferee,
        )


def decode_conf_change_entry(entry: Entry) -> ConfChange | None:
    """The ConfChange carried by a CONF_CHANGE entry, or None if it does not decode."""
    if entry.type != EntryType.CONF_CHANGE:
        return None
    try:
        return decode_conf_change(entry.data)
    except CodecError:
        return None
