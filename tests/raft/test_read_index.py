"""ReadIndex (Raft §6.4): linearizable reads without writing to the log."""

from __future__ import annotations

import pytest
from raftlog.raft.errors import NotLeaderError
from raftlog.raft.types import ReadState

from .harness import Net
from .helpers import MT


def test_leader_answers_after_quorum_heartbeat_round() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    leader.propose(b"x")
    net.deliver()
    leader.read_index(b"r1")
    net.deliver()
    assert net.members["a"].read_states == [ReadState(leader.commit_index, b"r1")]


def test_no_answer_without_quorum_acks() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    net.filter = lambda m: m.type != MT.HEARTBEAT_RESP
    leader.read_index(b"r1")
    net.deliver()
    assert net.members["a"].read_states == []
    net.filter = None
    net.tick(2)  # the next heartbeat round re-carries the pending context
    assert [rs.context for rs in net.members["a"].read_states] == [b"r1"]


def test_new_leader_queues_reads_until_it_commits_in_its_term() -> None:
    net = Net(["a", "b", "c"])
    net.filter = lambda m: m.type != MT.APPEND
    leader = net.elect("a")
    noop_index = leader.last_index
    leader.read_index(b"early")
    net.deliver()
    assert net.members["a"].read_states == []
    net.filter = None
    net.tick(3)
    (rs,) = net.members["a"].read_states
    assert rs.context == b"early"
    assert rs.index >= noop_index


def test_follower_forwards_read_index_to_leader() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    leader.propose(b"x")
    net.deliver()
    net.node("b").read_index(b"fr")
    net.deliver()
    assert net.members["b"].read_states == [ReadState(leader.commit_index, b"fr")]
    assert net.members["a"].read_states == []


def test_read_index_without_known_leader_raises() -> None:
    net = Net(["a", "b", "c"])
    with pytest.raises(NotLeaderError) as ei:
        net.node("b").read_index(b"x")
    assert ei.value.leader is None


def test_single_voter_answers_without_messages() -> None:
    net = Net(["a"])
    leader = net.elect("a")
    leader.read_index(b"solo")
    rd = leader.ready()
    assert rd.read_states == [ReadState(leader.commit_index, b"solo")]
    assert rd.messages == [] and rd.persisted_messages == []


def test_reads_answered_in_order_up_to_acked_context() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    net.filter = lambda m: m.type != MT.HEARTBEAT_RESP
    leader.read_index(b"r1")
    leader.read_index(b"r2")
    net.deliver()
    net.filter = None
    net.tick(2)
    assert [rs.context for rs in net.members["a"].read_states] == [b"r1", b"r2"]


def test_old_heartbeat_ack_does_not_confirm_a_new_request_with_same_context() -> None:
    """A delayed ack of an earlier round must not confirm a later read (new leader may exist)."""
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    held: list = []
    net.filter = lambda m: not (m.type == MT.HEARTBEAT_RESP and held.append(m) is None)
    leader.read_index(b"same")
    net.deliver()
    assert len(held) == 2
    net.members["a"].read_states.clear()
    net.filter = lambda m: m.type != MT.HEARTBEAT_RESP
    leader.read_index(b"same")  # the caller reuses its context
    net.deliver()
    for m in held:  # only the OLD round's acks arrive
        leader.step(m)
    net.process("a")
    # The old round is answered (for the first request)...
    assert [rs.context for rs in net.members["a"].read_states] == [b"same"]
    net.members["a"].read_states.clear()
    # ...but the second request stays pending until a round sent after it is acked.
    net.process("a")
    assert net.members["a"].read_states == []


def test_forwarded_read_waits_for_new_leaders_first_commit() -> None:
    net = Net(["a", "b", "c"])
    net.filter = lambda m: m.type != MT.APPEND
    leader = net.elect("a")
    net.filter = lambda m: m.type not in (MT.APPEND, MT.APPEND_RESP) or m.to == "a"
    # b learns of the leader from a heartbeat, then forwards its read.
    net.tick(2)
    assert net.node("b").leader_id == "a"
    net.node("b").read_index(b"fwd")
    net.deliver()
    assert net.members["b"].read_states == []
    net.filter = None
    net.tick(3)
    (rs,) = net.members["b"].read_states
    assert rs.context == b"fwd"
    assert rs.index == leader.commit_index
