"""Exceptions the Raft core raises to its driver.

Both are "try elsewhere / try later" answers, never corruption: the core's
state is unchanged when they are raised.
"""

from __future__ import annotations

from .types import NodeId


class RaftError(Exception):
    """Base class of the core's own exceptions."""


class NotLeaderError(RaftError):
    """The request needs the leader and this node is not it.

    ``leader`` is the node this one believes leads the current term, or None
    when it knows no leader (an election is under way), so the driver can
    redirect the client (wire error NOT_LEADER with the leader's address).
    """

    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not leader (leader={leader})")
        self.leader = leader


class ProposalDroppedError(RaftError):
    """The leader refused the proposal; nothing was appended.

    ``reason`` says why: a leadership transfer is pending, the uncommitted
    tail exceeds ``Config.max_uncommitted_bytes``, a conf change is already
    pending, this node was removed ...
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"proposal dropped: {reason}")
        self.reason = reason
