"""PreVote (thesis §9.6) and CheckQuorum / leader lease (thesis §6.2, §4.2.3)."""

from __future__ import annotations

from raftlog.raft.types import HardState, Role

from .harness import Net
from .helpers import MT, all_msgs, make_node, msg


def test_partitioned_node_does_not_disrupt_leader_when_it_returns() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    term = leader.term
    net.isolate("c")
    net.tick(100)
    # Pre-votes fail in isolation, so c never bumped its term.
    assert net.node("c").term == term
    net.heal()
    net.tick(5)
    assert leader.role == Role.LEADER
    assert leader.term == term


def test_without_prevote_a_returning_node_disrupts_the_leader() -> None:
    """The counterfactual: shows the test above depends on PreVote."""
    net = Net(["a", "b", "c"], pre_vote=False, check_quorum=False)
    leader = net.elect("a")
    term = leader.term
    net.isolate("c")
    net.tick(100)
    assert net.node("c").term > term
    net.heal()
    net.tick(40)  # c's next election timeout fires within 2 * election_ticks
    assert leader.term > term


def test_prevote_does_not_change_voter_term_or_vote() -> None:
    node, _ = make_node(hs=HardState(term=2))
    node.step(msg(MT.PRE_VOTE, "b", term=3))
    rd = node.ready()
    (resp,) = all_msgs(rd)
    assert (resp.type, resp.reject, resp.term) == (MT.PRE_VOTE_RESP, False, 3)
    assert node.term == 2
    assert node.vote is None
    assert rd.hard_state is None


def test_precandidate_does_not_increment_term_until_it_wins() -> None:
    node, _ = make_node(hs=HardState(term=2))
    node.campaign()
    assert node.role == Role.PRE_CANDIDATE
    assert node.term == 2
    node.step(msg(MT.PRE_VOTE_RESP, "b", term=3))
    assert node.role == Role.CANDIDATE
    assert node.term == 3


def test_isolated_leader_steps_down_within_two_election_timeouts() -> None:
    net = Net(["a", "b", "c"], election_ticks=10)
    leader = net.elect("a")
    net.tick(3)
    net.isolate("a")
    ticks = 0
    while leader.role == Role.LEADER:
        net.tick(1, only=["a"])
        ticks += 1
        assert ticks <= 20, "leader must step down within 2 election timeouts"
    assert leader.role == Role.FOLLOWER


def test_leader_without_check_quorum_stays_leader_when_isolated() -> None:
    net = Net(["a", "b", "c"], check_quorum=False)
    leader = net.elect("a")
    net.isolate("a")
    net.tick(50, only=["a"])
    assert leader.role == Role.LEADER


def test_follower_in_lease_ignores_vote_requests() -> None:
    """Thesis §4.2.3: having heard from a leader recently, a follower ignores votes."""
    net = Net(["a", "b", "c"], pre_vote=False)
    net.elect("a")
    b = net.node("b")
    term = b.term
    b.step(msg(MT.VOTE, "c", to="b", term=term + 1, index=100, log_term=100))
    assert b.term == term
    assert all_msgs(b.ready()) == []


def test_lease_does_not_protect_a_leader_from_itself() -> None:
    """A (pre-)vote request from the leader a follower follows means that leader
    stepped down: the follower answers it at once, while others still get ignored."""
    net = Net(["a", "b", "c"])
    net.elect("a")
    b = net.node("b")
    term = b.term
    b.step(msg(MT.PRE_VOTE, "c", to="b", term=term + 1, index=100, log_term=100))
    assert all_msgs(b.ready()) == []  # c: b is in its lease of a
    b.step(msg(MT.PRE_VOTE, "a", to="b", term=term + 1, index=100, log_term=100))
    (resp,) = all_msgs(b.ready())
    assert (resp.type, resp.reject, resp.term) == (MT.PRE_VOTE_RESP, False, term + 1)


def test_transfer_vote_overrides_lease() -> None:
    net = Net(["a", "b", "c"], pre_vote=False)
    net.elect("a")
    b = net.node("b")
    term = b.term
    b.step(msg(MT.VOTE, "c", to="b", term=term + 1, index=100, log_term=100, context=b"transfer"))
    assert b.term == term + 1
    (resp,) = all_msgs(b.ready())
    assert resp.reject is False


def test_stale_leader_learns_newer_term_from_append_reply() -> None:
    """A follower answers a lower-term append with its term so the old leader steps down."""
    node, _ = make_node(hs=HardState(term=5))
    node.step(msg(MT.HEARTBEAT, "b", term=3))
    (resp,) = all_msgs(node.ready())
    assert (resp.type, resp.to, resp.term) == (MT.APPEND_RESP, "b", 5)


def test_stale_prevote_gets_rejected_with_newer_term() -> None:
    node, _ = make_node(hs=HardState(term=5))
    node.step(msg(MT.PRE_VOTE, "b", term=4))
    (resp,) = all_msgs(node.ready())
    assert (resp.type, resp.reject, resp.term) == (MT.PRE_VOTE_RESP, True, 5)


def test_removed_stale_leader_steps_down_even_without_prevote_and_check_quorum() -> None:
    """A leader cut off, then removed, must not "lead" its old term forever.

    The new leader never contacts it (it is not a member any more); only the
    replies to its own stale heartbeats can tell it about the newer term.
    """
    net = Net(["a", "b", "c"], pre_vote=False, check_quorum=False)
    old = net.elect("a")
    net.isolate("a")
    net.node("b").campaign()
    net.deliver()
    new = net.node("b")
    assert new.role == Role.LEADER
    from raftlog.raft.types import ConfChange, ConfChangeItem, ConfChangeType

    new.propose_conf_change(ConfChange(changes=(ConfChangeItem(ConfChangeType.REMOVE_NODE, "a"),)))
    net.deliver()
    assert new.conf_state.voters == ("b", "c")
    assert old.role == Role.LEADER  # still believes it leads its old term
    net.heal()
    net.tick(3)
    assert old.role == Role.FOLLOWER
    assert old.term >= new.term
