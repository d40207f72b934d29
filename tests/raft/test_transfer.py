"""Leadership transfer (thesis §3.10)."""

from __future__ import annotations

import pytest
from raftlog.raft.errors import ProposalDroppedError
from raftlog.raft.types import Role

from .harness import Net
from .helpers import MT


def test_transfer_to_up_to_date_follower() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    term = leader.term
    leader.transfer_leader("b")
    net.deliver()
    assert net.node("b").role == Role.LEADER
    assert net.node("b").term == term + 1
    assert leader.role == Role.FOLLOWER


def test_transfer_catches_up_lagging_target_first() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    net.cut |= {("a", "c")}
    for i in range(5):
        leader.propose(b"%d" % i)
    net.deliver()
    assert net.node("c").last_index < leader.last_index
    net.heal()
    sent_timeout_before_caught_up = []

    def watch(m):  # type: ignore[no-untyped-def]
        if m.type == MT.TIMEOUT_NOW:
            sent_timeout_before_caught_up.append(net.node("c").last_index < leader.last_index)
        return True

    net.filter = watch
    leader.transfer_leader("c")
    net.deliver()
    assert sent_timeout_before_caught_up == [False]
    assert net.node("c").role == Role.LEADER
    assert net.applied_data("c") == [b"%d" % i for i in range(5)]


def test_proposals_dropped_while_transfer_pending() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    net.isolate("b")
    leader.transfer_leader("b")
    with pytest.raises(ProposalDroppedError):
        leader.propose(b"x")


def test_transfer_aborts_after_election_timeout() -> None:
    net = Net(["a", "b", "c"], election_ticks=10)
    leader = net.elect("a")
    net.isolate("b")
    leader.transfer_leader("b")
    assert leader.status().lead_transferee == "b"
    net.tick(10, only=["a"])
    assert leader.status().lead_transferee is None
    assert leader.role == Role.LEADER
    assert leader.propose(b"ok") > 0


def test_follower_forwards_transfer_request() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.node("c").transfer_leader("c")
    net.deliver()
    assert net.node("c").role == Role.LEADER


def test_transfer_to_self_or_unknown_is_ignored() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    leader.transfer_leader("a")
    leader.transfer_leader("zz")
    net.deliver()
    assert leader.role == Role.LEADER
    assert leader.status().lead_transferee is None
