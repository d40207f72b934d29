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
