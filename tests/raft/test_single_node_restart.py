"""Single-voter groups, and restarting a node from what it persisted."""

from __future__ import annotations

import random

import pytest
from raftlog.raft.errors import NotLeaderError
from raftlog.raft.memory_storage import MemoryStorage
from raftlog.raft.node import Config, RaftNode
from raftlog.raft.types import ConfState, HardState, Role

from .harness import Net
from .helpers import MT, make_node, msg, persist


def test_single_node_commits_after_one_advance() -> None:
    node, st = make_node(voters=("a",))
    node.campaign()
    assert node.role == Role.LEADER
    rd = persist(node, st)  # term/vote + no-op
    assert rd.entries and node.commit_index == rd.entries[-1].index
    idx = node.propose(b"hello")
    rd = node.ready()
    assert [e.index for e in rd.entries] == [idx]
    assert node.commit_index < idx
    st.append(rd.entries)
    node.advance(rd)
    assert node.commit_index == idx
    rd = persist(node, st)
    assert rd.committed_entries[-1].data == b"hello"
    assert node.applied_index == idx


def test_single_node_elects_itself_on_timeout() -> None:
    node, _ = make_node(voters=("a",), election_ticks=5)
    for _ in range(10):
        node.tick()
    assert node.role == Role.LEADER


def test_propose_on_follower_raises_not_leader_with_hint() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    with pytest.raises(NotLeaderError) as ei:
        net.node("b").propose(b"x")
    assert ei.value.leader == "a"


def test_restart_resumes_term_and_vote_as_follower() -> None:
    node, st = make_node()
    node.step(msg(MT.VOTE, "b", term=7))
    persist(node, st)
    again = RaftNode(Config(id="a"), st, random.Random(1))
    assert (again.term, again.vote, again.role) == (7, "b", Role.FOLLOWER)


def test_restart_resumes_committed_entries_after_applied() -> None:
    st = MemoryStorage(conf_state=ConfState(voters=("a",)))
    node = RaftNode(Config(id="a"), st, random.Random(1))
    node.campaign()
    persist(node, st)
    for i in range(5):
        node.propose(b"%d" % i)
    persist(node, st)
    persist(node, st)
    assert node.applied_index == 6
    # Restart having applied only up to 3: entries 4.. come again.
    again = RaftNode(Config(id="a", applied=3), st, random.Random(2))
    rd = again.ready()
    assert [e.index for e in rd.committed_entries] == [4, 5, 6]
    assert again.commit_index == 6


def test_restart_rejects_applied_beyond_commit() -> None:
    st = MemoryStorage(conf_state=ConfState(voters=("a",)), hard_state=HardState(term=1))
    with pytest.raises(ValueError):
        RaftNode(Config(id="a", applied=5), st, random.Random(1))


def test_whole_cluster_restart_keeps_committed_data() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    for i in range(10):
        leader.propose(b"%d" % i)
    net.deliver()
    for n in "abc":
        net.restart(n)
    assert all(net.node(n).role == Role.FOLLOWER for n in "abc")
    net.tick_until(lambda: net.leader() is not None)
    new = net.leader()
    assert new is not None
    new.propose(b"after")
    net.deliver()
    net.tick(2)
    expected = [b"%d" % i for i in range(10)] + [b"after"]
    assert all(net.applied_data(n) == expected for n in "abc")


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        Config(id="a", election_ticks=2, heartbeat_ticks=2).validate()
    with pytest.raises(ValueError):
        Config(id="").validate()
    with pytest.raises(ValueError):
        Config(id="a", max_inflight_msgs=0).validate()


def test_committed_entries_are_paged_by_bytes_after_restart() -> None:
    st = MemoryStorage(conf_state=ConfState(voters=("a",)))
    node = RaftNode(Config(id="a"), st, random.Random(1))
    node.campaign()
    persist(node, st)
    for i in range(20):
        node.propose(b"%02d" % i + b"x" * 100)
    persist(node, st)
    persist(node, st)
    budget = 3 * (100 + 2 + 16)
    again = RaftNode(Config(id="a", max_committed_bytes_per_ready=budget), st, random.Random(2))
    pages = []
    while again.has_ready():
        rd = persist(again, st)
        if rd.committed_entries:
            pages.append([e.index for e in rd.committed_entries])
    assert all(len(p) <= 3 for p in pages)
    assert [i for p in pages for i in p] == list(range(1, 22))
