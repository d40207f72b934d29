"""Configuration and status snapshot of one Raft group's node."""

from __future__ import annotations

from dataclasses import dataclass, field

from .progress import ProgressStatus
from .types import ConfState, NodeId, Role


@dataclass(slots=True)
class Config:
    """Per-node configuration of one Raft group.

    id: this node's id; must appear in the group's ConfState to campaign.
    election_ticks: election timeout base; the timeout is drawn uniformly in
        [election_ticks, 2*election_ticks). Too small vs. network latency ->
        endless elections; too large -> slow fail-over.
    heartbeat_ticks: leader heartbeat interval; must be < election_ticks or
        followers time out on a healthy leader.
    max_size_per_msg: byte budget of entries per APPEND (at least one entry is
        always sent). Too large -> huge frames, head-of-line blocking.
    max_inflight_msgs: APPENDs in flight per follower in REPLICATE state. Too
        small -> throughput bound by round trips; too large -> memory.
    max_inflight_bytes: byte bound of the same window (0 = unbounded).
    max_uncommitted_bytes: the leader drops proposals once this many payload
        bytes are appended but not committed (0 = unbounded): without it a
        leader cut off from its followers buffers without limit.
    pre_vote: thesis §9.6; off -> a partitioned node rejoining with a higher
        term disrupts a healthy leader.
    check_quorum: thesis §6.2; off -> a leader cut off from a majority keeps
        believing it leads and followers ignore no lease.
    max_committed_bytes_per_ready: byte budget of committed_entries in one
        Ready (0 = unbounded; at least one entry). Unbounded, a node restarting
        far behind loads its whole unapplied log into memory at once.
    broadcast_commit: when an ack advances the commit index, send every
        follower an (often empty) APPEND carrying it at once, as etcd does. Off
        -> followers learn the new commit index with the next APPEND or
        heartbeat (at most heartbeat_ticks later): one message and one
        follower Ready less per commit, and followers apply a little later.
        Safety does not depend on it (a follower's commit index is only ever
        learned from entries it holds, §5.3).
    lease_reads: thesis §6.4.1 -- a leader that a quorum acknowledged within
        ``lease_ticks`` of its own clock answers ``read_index`` at once, with
        no heartbeat round. Safe only while clocks advance at nearly the same
        rate and the driver ticks on time (or calls ``expire_lease`` when it
        did not): followers refuse votes for election_ticks after hearing
        from the leader (§4.2.3), and the lease ends before that. Needs
        check_quorum. Also makes a restarted node that had a term refuse
        votes for election_ticks: it may have promised an old leader its
        vote-free window before it crashed.
    lease_ticks: how long a lease lasts, counted from when the confirming
        heartbeat left; at most election_ticks - 1. The server uses
        election_ticks - 6 (server/config.py LEASE_MARGIN_TICKS says why).
    applied: last index the state machine applied before a restart;
        committed entries handed out resume after it. Wrong -> entries are
        applied twice or skipped.
    """

    id: NodeId
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 32 << 20
    max_uncommitted_bytes: int = 64 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    lease_reads: bool = False
    lease_ticks: int = 0
    applied: int = 0
    max_committed_bytes_per_ready: int = 64 << 20
    broadcast_commit: bool = True

    def validate(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("Config.id must be a non-empty string")
        if self.heartbeat_ticks <= 0:
            raise ValueError("heartbeat_ticks must be > 0")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election_ticks must be greater than heartbeat_ticks")
        if self.max_size_per_msg <= 0:
            raise ValueError("max_size_per_msg must be > 0")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be > 0")
        if (
            min(
                self.max_inflight_bytes,
                self.max_uncommitted_bytes,
                self.max_committed_bytes_per_ready,
            )
            < 0
        ):
            raise ValueError("byte limits must be >= 0")
        if self.lease_reads:
            if not self.check_quorum:
                raise ValueError("lease_reads needs check_quorum")
            if not 0 < self.lease_ticks < self.election_ticks:
                raise ValueError("lease_ticks must be in [1, election_ticks - 1] with lease_reads")
        if self.applied < 0:
            raise ValueError("applied must be >= 0")


@dataclass(slots=True, frozen=True)
class Status:
    id: NodeId
    term: int
    role: Role
    leader: NodeId | None
    commit: int
    applied: int
    last_index: int
    conf_state: ConfState
    # Only on the leader: its view of every member's log.
    progress: dict[NodeId, ProgressStatus] = field(default_factory=dict)
    lead_transferee: NodeId | None = None
