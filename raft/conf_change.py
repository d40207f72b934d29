"""Pure membership arithmetic: ConfState + ConfChange -> new ConfState (Raft §6, thesis §4).

Three kinds of change:

- simple: at most one voter added/removed/demoted, outside joint consensus.
  Safe on its own because any majority of the old and of the new voter set
  overlap (thesis §4.1).
- enter joint: any number of items; the new voters become ``voters`` and the
  old ones ``voters_outgoing``, and decisions need both majorities until the
  joint config is left. Several voter changes without ``enter_joint`` enter a
  joint config that the leader leaves automatically (``auto_leave``).
- leave joint: drop ``voters_outgoing``; demoted voters become learners.

Invalid changes raise ``ConfChangeError``; the core then ignores the entry on
every replica alike, so replicas stay consistent.
"""

from __future__ import annotations

from .types import ConfChange, ConfChangeItem, ConfChangeType, ConfState, NodeId


class ConfChangeError(ValueError):
    pass


def _voter_changes(cs: ConfState, items: tuple[ConfChangeItem, ...]) -> int:
    """How many items change whether a node is an incoming voter."""
    voters = set(cs.voters)
    n = 0
    for it in items:
        is_voter = it.node_id in voters
        if (it.type == ConfChangeType.ADD_VOTER) != is_voter:
            n += 1
            if it.type == ConfChangeType.ADD_VOTER:
                voters.add(it.node_id)
            else:
                voters.discard(it.node_id)
    return n


def _apply_items(
    voters: list[NodeId],
    learners: list[NodeId],
    learners_next: list[NodeId],
    outgoing: tuple[NodeId, ...],
    items: tuple[ConfChangeItem, ...],
) -> None:
    for it in items:
        node = it.node_id
        if not isinstance(node, str) or not node:
            raise ConfChangeError(f"invalid node id {node!r}")
        for group in (voters, learners, learners_next):
            if node in group:
                group.remove(node)
        if it.type == ConfChangeType.ADD_VOTER:
            voters.append(node)
        elif it.type == ConfChangeType.ADD_LEARNER:
            # A voter of the outgoing config cannot be a learner until the
            # joint config is left (it still votes there): etcd's LearnersNext.
            if node in outgoing:
                learners_next.append(node)
            else:
                learners.append(node)


def apply_conf_change(cs: ConfState, cc: ConfChange) -> ConfState:
    if cc.leave_joint:
        if cc.changes or cc.enter_joint:
            raise ConfChangeError("leave_joint carries no changes")
        if not cs.is_joint():
            raise ConfChangeError("not in a joint configuration")
        learners = list(cs.learners)
        for node in cs.learners_next:
            if node not in learners:
                learners.append(node)
        return ConfState(
            voters=cs.voters,
            learners=tuple(sorted(learners)),
            voters_outgoing=(),
            learners_next=(),
            auto_leave=False,
        )
    if cs.is_joint():
        raise ConfChangeError("already in a joint configuration; leave it first")
    joint = cc.enter_joint or _voter_changes(cs, cc.changes) > 1
    voters = list(cs.voters)
    learners = list(cs.learners)
    learners_next: list[NodeId] = []
    outgoing = cs.voters if joint else ()
    _apply_items(voters, learners, learners_next, outgoing, cc.changes)
    if not voters:
        raise ConfChangeError("removing all voters")
    return ConfState(
        voters=tuple(sorted(voters)),
        learners=tuple(sorted(learners)),
        voters_outgoing=tuple(sorted(outgoing)),
        learners_next=tuple(sorted(learners_next)),
        # Entered implicitly (several voter changes): the leader leaves by itself.
        auto_leave=joint and not cc.enter_joint,
    )
