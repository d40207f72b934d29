"""Membership changes through the log (Raft §6, thesis §4): simple, learners, joint."""

from __future__ import annotations

import pytest
from raftlog.raft.conf_change import ConfChangeError, apply_conf_change
from raftlog.raft.errors import ProposalDroppedError
from raftlog.raft.memory_storage import MemoryStorage
from raftlog.raft.types import ConfChange, ConfChangeItem, ConfChangeType, ConfState, Role

from .harness import Net
from .helpers import make_node

ADD = ConfChangeType.ADD_VOTER
REMOVE = ConfChangeType.REMOVE_NODE
LEARNER = ConfChangeType.ADD_LEARNER


def cc(*items: tuple[ConfChangeType, str], enter_joint: bool = False) -> ConfChange:
    return ConfChange(
        changes=tuple(ConfChangeItem(t, n) for t, n in items), enter_joint=enter_joint
    )


def _join(net: Net, node_id: str) -> None:
    """A joining node starts with the membership it is joining (it is not in it yet)."""
    net.add(node_id, MemoryStorage(conf_state=ConfState(voters=("a", "b", "c"))))


def test_add_voter_replicates_and_counts() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    leader.propose(b"before")
    net.deliver()
    _join(net, "d")
    leader.propose_conf_change(cc((ADD, "d")))
    net.deliver()
    net.tick(3)
    for n in "abcd":
        assert net.node(n).conf_state.voters == ("a", "b", "c", "d"), n
    assert net.applied_data("d") == [b"before"]
    # d is a full voter: with c down, a+b+d are a majority of the four.
    net.isolate("c")
    idx = leader.propose(b"after")
    net.deliver()
    assert leader.commit_index >= idx
    leader.transfer_leader("d")
    net.deliver()
    assert net.node("d").role == Role.LEADER


def test_removed_node_does_not_disrupt() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    term = leader.term
    leader.propose_conf_change(cc((REMOVE, "c")))
    net.deliver()
    assert leader.conf_state.voters == ("a", "b")
    net.tick(100)
    assert leader.role == Role.LEADER
    assert leader.term == term
    assert net.node("c").role != Role.LEADER
    idx = leader.propose(b"x")
    net.deliver()
    assert leader.commit_index >= idx


def test_removed_leader_hands_leadership_to_a_remaining_voter() -> None:
    # Thesis §3.10: the removed leader catches a remaining voter up and sends it
    # TimeoutNow, so the group has a leader again without an election timeout
    # (and members that do not yet know the change committed are not left
    # needing the removed node's vote: simulator seeds 116 and 30216).
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    old_term = leader.term
    leader.propose_conf_change(cc((REMOVE, "a")))
    net.deliver()
    new = [net.node(n) for n in "bc" if net.node(n).role == Role.LEADER]
    assert len(new) == 1, "the hand-over completes during delivery, before any tick"
    assert new[0].term == old_term + 1
    assert new[0].conf_state.voters == ("b", "c")
    # The new leader no longer talks to a; a learns the new term from the answer
    # to its next heartbeat and steps down.
    net.tick(3)  # a few heartbeat intervals
    assert leader.role == Role.FOLLOWER
    net.tick(60)
    assert leader.role != Role.LEADER


def test_campaign_started_before_applying_own_removal_is_abandoned() -> None:
    # Simulator seed 45337: a node that lags in applying starts a (pre-)election
    # while its applied config still has it, then applies its own removal; the
    # campaign must end there, or a non-member can win and block the group.
    net = Net(["a", "b", "c"])
    c = net.node("c")
    c.campaign()
    assert c.role in (Role.PRE_CANDIDATE, Role.CANDIDATE)
    c.apply_conf_change(cc((REMOVE, "c")))
    assert c.role == Role.FOLLOWER
    net.deliver()
    assert c.role != Role.LEADER


def test_learner_replicates_but_does_not_vote_or_count() -> None:
    net = Net(["a", "b", "c"], voters=["a", "b"], learners=("c",))
    leader = net.elect("a")
    leader.propose(b"x")
    net.deliver()
    assert net.applied_data("c") == [b"x"]
    net.isolate("b")
    idx = leader.propose(b"y")
    net.deliver()
    assert net.node("c").last_index >= idx
    assert leader.commit_index < idx, "a learner's ack must not count"
    c = net.node("c")
    for _ in range(100):
        c.tick()
    assert c.role == Role.FOLLOWER


def test_node_outside_config_never_campaigns() -> None:
    node, _ = make_node(node_id="z")
    for _ in range(100):
        node.tick()
    assert (node.role, node.term) == (Role.FOLLOWER, 0)
    node.campaign()
    assert node.role == Role.FOLLOWER


def test_second_conf_change_rejected_while_first_pending() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    net.isolate("a")
    leader.propose_conf_change(cc((REMOVE, "c")))
    with pytest.raises(ProposalDroppedError):
        leader.propose_conf_change(cc((REMOVE, "b")))


def test_joint_change_with_auto_leave() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    _join(net, "d")
    leader.propose_conf_change(cc((ADD, "d"), (REMOVE, "c")))
    net.deliver()
    net.tick(3)
    for n in "abd":
        cs = net.node(n).conf_state
        assert (cs.voters, cs.voters_outgoing) == (("a", "b", "d"), ()), n
    idx = leader.propose(b"z")
    net.deliver()
    assert net.applied_data("d")[-1:] == [b"z"]
    assert leader.commit_index >= idx


def test_explicit_joint_needs_both_majorities_until_left() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    _join(net, "d")
    _join(net, "e")
    leader.propose_conf_change(cc((ADD, "d"), (ADD, "e"), (REMOVE, "b"), enter_joint=True))
    net.deliver()
    assert leader.conf_state.voters == ("a", "c", "d", "e")
    assert leader.conf_state.voters_outgoing == ("a", "b", "c")
    # Old majority {a,b,c} without b and c fails even though the new one has a,d,e.
    net.isolate("b")
    net.isolate("c")
    idx = leader.propose(b"needs-old-majority")
    net.deliver()
    assert leader.commit_index < idx
    net.heal()
    net.tick(3)
    assert leader.commit_index >= idx
    leader.propose_conf_change(ConfChange(leave_joint=True))
    net.deliver()
    assert leader.conf_state.voters_outgoing == ()


def test_pure_conf_change_rules() -> None:
    cs = ConfState(voters=("a", "b", "c"))
    with pytest.raises(ConfChangeError):
        apply_conf_change(cs, ConfChange(leave_joint=True))
    with pytest.raises(ConfChangeError):
        apply_conf_change(ConfState(voters=("a",)), cc((REMOVE, "a")))
    demoted = apply_conf_change(cs, cc((LEARNER, "c")))
    assert (demoted.voters, demoted.learners) == (("a", "b"), ("c",))
    joint = apply_conf_change(cs, cc((LEARNER, "c"), (ADD, "d")))
    assert joint.voters_outgoing == ("a", "b", "c")
    assert joint.learners_next == ("c",) and joint.auto_leave
    left = apply_conf_change(joint, ConfChange(leave_joint=True))
    assert (left.voters, left.learners, left.learners_next) == (("a", "b", "d"), ("c",), ())
    with pytest.raises(ConfChangeError):
        apply_conf_change(joint, cc((ADD, "e")))


def test_invalid_conf_change_is_ignored_consistently() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    before = leader.conf_state
    assert leader.apply_conf_change(ConfChange(leave_joint=True)) == before


def test_leader_leaving_through_joint_config_steps_down_after_leave() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    _join(net, "d")
    leader.propose_conf_change(cc((ADD, "d"), (REMOVE, "a")))  # implicit joint, auto-leave
    net.deliver()
    net.tick(3)
    # a led through the joint config (it was still an outgoing voter), then left.
    assert leader.role == Role.FOLLOWER
    assert leader.conf_state.voters == ("b", "c", "d")
    assert leader.conf_state.voters_outgoing == ()
    net.tick_until(lambda: any(net.node(n).role == Role.LEADER for n in "bcd"))


def test_joiner_with_no_membership_applies_changes_to_their_base() -> None:
    """A replica created empty replays the log; each change carries the membership it
    applies to, so the joiner ends with the real one -- never a lone-voter config."""
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    net.add("d", MemoryStorage())  # no membership at all
    leader.propose_conf_change(cc((LEARNER, "d")))
    net.deliver()
    assert net.node("d").conf_state.voters == ("a", "b", "c")
    assert net.node("d").conf_state.learners == ("d",)
    leader.propose_conf_change(cc((ADD, "d")))
    net.deliver()
    assert net.node("d").conf_state.voters == ("a", "b", "c", "d")
    # d alone can never win: its config needs 3 of 4 votes.
    net.isolate("d")
    net.tick(60, only=["d"])
    assert net.node("d").role != Role.LEADER


def test_change_without_base_is_refused_by_a_node_without_membership() -> None:
    node, _ = make_node(node_id="d", voters=())
    assert node.apply_conf_change(cc((ADD, "d"))) == ConfState()
    for _ in range(50):
        node.tick()
    assert node.role == Role.FOLLOWER


def test_adopt_conf_state_sets_a_joiners_membership() -> None:
    node, _ = make_node(node_id="d", voters=())
    node.adopt_conf_state(ConfState(voters=("a", "b", "c"), learners=("d",)))
    assert node.conf_state.learners == ("d",)


def test_invalid_conf_change_is_refused_at_propose_time() -> None:
    net = Net(["a"])
    leader = net.elect("a")
    with pytest.raises(ProposalDroppedError):
        leader.propose_conf_change(cc((REMOVE, "a")))  # would remove every voter


def test_proposed_change_records_its_base() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    idx = leader.propose_conf_change(cc((ADD, "d")))
    net.deliver()
    (entry,) = [e for e in net.members["b"].storage.all_entries() if e.index == idx]
    from raftlog.raft.codec import decode_conf_change

    assert decode_conf_change(entry.data).base == ConfState(voters=("a", "b", "c"))
