"""Test-only RaftNode subclasses that each break exactly one safety rule.

They exist to prove the simulator's checker has teeth: each must be caught
(see ``test_mutations.py``). They override the small rule methods the core
exposes for this purpose (``raftlog.raft.node`` module docstring).
"""

from __future__ import annotations

from raftlog.raft.node import RaftNode
from raftlog.raft.types import Message


class CommitOldTermByCounting(RaftNode):
    """Figure 8 (Raft §5.4.2): commit an entry of an earlier term by counting replicas."""

    def _may_commit_by_counting(self, index: int) -> bool:
        return True


class AckBeforePersist(RaftNode):
    """Raft Figure 2: send vote grants and append acks before they are durable."""

    def _send_after_persist(self, msg: Message) -> None:
        self._msgs.append(msg)


class VoteWithoutLogCheck(RaftNode):
    """Raft §5.4.1: grant votes without the candidate-log-up-to-date check."""

    def _candidate_log_up_to_date(self, last_index: int, last_term: int) -> bool:
        return True


class VoteTwicePerTerm(RaftNode):
    """Raft §5.2: grant every vote request, even after voting for someone else this term."""

    def _grant_vote_allowed(self, msg: Message) -> bool:
        return True


class ReadWithoutQuorum(RaftNode):
    """Raft §6.4 / DESIGN rule 4: answer ReadIndex at once from a node that merely
    believes it leads (no heartbeat round, no own-term commit)."""

    def _handle_read_index(self, msg: Message) -> None:
        self._answer_read(msg.frm, self.commit_index, msg.context)


MUTANTS: dict[str, type[RaftNode]] = {
    "commit-old-term": CommitOldTermByCounting,
    "ack-before-persist": AckBeforePersist,
    "vote-without-log-check": VoteWithoutLogCheck,
    "vote-twice": VoteTwicePerTerm,
    "read-without-quorum": ReadWithoutQuorum,
}


# ---- lease reads (thesis §6.4.1): each mutant drops one of the lease's conditions ----


class LeaseNeverExpires(RaftNode):
    """A leader keeps its lease however long ago a quorum last answered it, and
    (as a leader without CheckQuorum) never steps down on its own."""

    def _lease_valid(self) -> bool:
        if self._lease_start is not None:
            self._lease_start = self._ticks
        return super()._lease_valid()

    def _check_quorum(self) -> None:
        pass


class LeaseForgotOnRestart(RaftNode):
    """A restarted node votes at once, breaking the vote-free window it promised."""

    def _in_lease(self, msg: Message) -> bool:
        self._boot_guard = False
        return super()._in_lease(msg)


class LeaseAcrossTransfer(RaftNode):
    """A leader keeps reading from its lease while (and after) it hands leadership over."""

    def _lease_valid(self) -> bool:
        transferee, blocked = self._lead_transferee, self._lease_blocked_term
        self._lead_transferee, self._lease_blocked_term = None, -1
        try:
            return super()._lease_valid()
        finally:
            self._lead_transferee, self._lease_blocked_term = transferee, blocked

    def _start_transfer(self, target: str) -> None:
        start = self._lease_start
        super()._start_transfer(target)
        self._lease_start = start


LEASE_MUTANTS: dict[str, type[RaftNode]] = {
    "lease-never-expires": LeaseNeverExpires,
    "lease-forgot-on-restart": LeaseForgotOnRestart,
    "lease-across-transfer": LeaseAcrossTransfer,
}
