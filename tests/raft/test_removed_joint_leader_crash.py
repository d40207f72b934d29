"""A leader removed by its own leave-joint crashes before handing over (sim seed 47480).

c leads the joint config {a,b} & {b,c} (c replaces itself by a) and commits
the leave-joint entry k, but a and b never hear a commit index >= k. c
applies k (it is no longer a member), crashes and restarts as a non-member
follower, which never campaigns. a and b still decide with the joint config
and need c's vote for {b,c}; c refuses it, its log (k+2) being longer than
theirs (k). Without a way for a and b to learn that k is committed, no
leader is ever elected.
"""

from __future__ import annotations

import dataclasses

import pytest
from raftlog.raft.types import ConfChange, HardState, Message, MessageType, Role

from .harness import Net
from .helpers import all_msgs, make_node, msg, persist
from .test_conf_change import ADD, REMOVE, cc

MT = MessageType
ELECTION_TICKS = 10


def _crashed_removed_joint_leader(pre_vote: bool, check_quorum: bool) -> tuple[Net, int]:
    """The cluster right after c restarted; returns it and the leave-joint index k."""
    net = Net(
        ["a", "b", "c"],
        voters=["b", "c"],
        learners=("a",),
        pre_vote=pre_vote,
        check_quorum=check_quorum,
        election_ticks=ELECTION_TICKS,
    )
    c = net.elect("c")
    c.propose_conf_change(cc((ADD, "a"), (REMOVE, "c"), enter_joint=True))
    net.deliver()
    for n in "abc":
        cs = net.node(n).conf_state
        assert (cs.voters, cs.voters_outgoing) == (("a", "b"), ("b", "c")), n

    k = c.propose_conf_change(ConfChange(leave_joint=True))
    c.propose(b"x")  # k+1, k+2: only c ever holds them
    c.propose(b"y")

    def arrange(m: Message) -> bool:
        """a and b get entries up to k but never a commit index covering k."""
        if m.frm != "c" or m.to == "c":
            return True
        if m.type == MT.TIMEOUT_NOW:
            return False  # the hand-over never happens: c "crashes" first
        if m.type in (MT.APPEND, MT.HEARTBEAT):
            kept = tuple(e for e in m.entries if e.index <= k)
            net.node(m.to).step(dataclasses.replace(m, entries=kept, commit=min(m.commit, k - 1)))
            return False
        return True

    net.filter = arrange
    net.deliver()
    assert c.commit_index >= k and c.conf_state.voters == ("a", "b")
    assert c.last_index == k + 2
    for n in "ab":
        assert (net.node(n).last_index, net.node(n).commit_index) == (k, k - 1), n
        assert net.node(n).conf_state.voters_outgoing == ("b", "c"), n

    c = net.restart("c")
    net.filter = None
    assert c.conf_state.voters == ("a", "b") and c.commit_index >= k
    return net, k


@pytest.mark.parametrize("defaults", [True, False], ids=["prevote+checkquorum", "neither"])
def test_members_elect_a_leader_after_removed_joint_leader_crashes(defaults: bool) -> None:
    net, k = _crashed_removed_joint_leader(pre_vote=defaults, check_quorum=defaults)
    # Bounded: a few election timeouts, far fewer than the sim's 632-tick stall.
    net.tick_until(
        lambda: any(net.node(n).role == Role.LEADER for n in "ab"),
        max_ticks=6 * ELECTION_TICKS,
    )
    leader = net.leader()
    assert leader is not None and leader.id in ("a", "b")
    idx = leader.propose(b"after")
    net.deliver()
    assert leader.commit_index >= idx
    for n in "ab":
        assert net.node(n).commit_index > k, n
        cs = net.node(n).conf_state
        assert (cs.voters, cs.voters_outgoing) == (("a", "b"), ()), n
        assert net.applied_data(n)[-1:] == [b"after"], n
    # The removed node still never campaigns.
    assert net.node("c").role == Role.FOLLOWER


def test_vote_answer_advances_commit_only_if_our_log_holds_that_entry() -> None:
    # Log Matching is the whole safety argument of _learn_commit: a commit index
    # naming an entry our log does not hold (other term, or beyond our log)
    # says nothing about our entries and must be ignored.
    node, st = make_node(terms=(1, 1, 2), hs=HardState(term=2, vote=None, commit=1), pre_vote=False)
    node.campaign()
    persist(node, st)
    assert node.role == Role.CANDIDATE
    term = node.term

    def answer(frm: str, commit: int, commit_term: int) -> None:
        node.step(
            msg(MT.VOTE_RESP, frm, term=term, reject=True, commit=commit, log_term=commit_term)
        )

    answer("b", 3, 3)  # our entry 3 has term 2: a different entry
    answer("b", 4, 2)  # beyond our log
    assert node.commit_index == 1
    answer("c", 3, 2)
    assert node.commit_index == 3
    assert [e.index for e in persist(node, st).committed_entries] == [2, 3]


def test_vote_answers_carry_the_voters_commit_index() -> None:
    node, st = make_node(terms=(1, 1, 2), hs=HardState(term=2, vote=None, commit=2))
    for kind in (MT.VOTE, MT.PRE_VOTE):
        node.step(msg(kind, "b", term=3, index=1, log_term=1))  # stale log: refused
        (resp,) = all_msgs(persist(node, st))
        assert (resp.reject, resp.commit, resp.log_term) == (True, 2, 1)
