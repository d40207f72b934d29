"""Pure quorum arithmetic: commit indexes and vote tallies for majority and joint configs.

Raft §5.3/§5.4: an entry is committed once a majority of voters store it; a
candidate wins with a majority of votes. During joint consensus (Raft §6,
thesis §4.3) every decision needs a majority of BOTH the incoming and the
outgoing voter sets. An empty voter set imposes no constraint (so a simple,
non-joint config is a joint config whose outgoing half is empty).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum

from .types import NodeId

# Commit index an empty voter set "agrees" to: no constraint at all.
UNBOUNDED = 1 << 63


class VoteResult(IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority_committed(voters: Sequence[NodeId], match: Mapping[NodeId, int]) -> int:
    """Highest index stored by a majority of ``voters`` (missing ones count as 0)."""
    if not voters:
        return UNBOUNDED
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    # With n voters, the (n//2+1)-th highest value is on a majority.
    return acked[len(acked) // 2]


def joint_committed(
    incoming: Sequence[NodeId], outgoing: Sequence[NodeId], match: Mapping[NodeId, int]
) -> int:
    """Commit index of a (possibly joint) config: the minimum of both halves."""
    return min(majority_committed(incoming, match), majority_committed(outgoing, match))


def majority_vote(voters: Sequence[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """Tally ``votes`` (True = granted) among ``voters``; non-voters' votes are ignored."""
    if not voters:
        return VoteResult.WON
    granted = rejected = 0
    for v in voters:
        got = votes.get(v)
        if got is True:
            granted += 1
        elif got is False:
            rejected += 1
    need = len(voters) // 2 + 1
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING


def joint_vote(
    incoming: Sequence[NodeId], outgoing: Sequence[NodeId], votes: Mapping[NodeId, bool]
) -> VoteResult:
    """Joint tally: won only if both halves won, lost if either half lost."""
    a = majority_vote(incoming, votes)
    b = majority_vote(outgoing, votes)
    if a == b:
        return a
    if VoteResult.LOST in (a, b):
        return VoteResult.LOST
    return VoteResult.PENDING
