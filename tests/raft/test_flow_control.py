"""Replication flow control: probe/replicate states, inflight window, batching, backtracking."""

from __future__ import annotations

import pytest
from raftlog.raft.errors import ProposalDroppedError
from raftlog.raft.memory_storage import MemoryStorage
from raftlog.raft.progress import Inflights, ProgressState
from raftlog.raft.types import ConfState, Entry, HardState, Message

from .harness import Net
from .helpers import MT


def _appends_to(msgs: list[Message], to: str) -> list[Message]:
    return [m for m in msgs if m.type == MT.APPEND and m.to == to]


def test_new_leader_probes_then_replicates() -> None:
    net = Net(["a", "b", "c"])
    net.filter = lambda m: not (m.type == MT.APPEND_RESP and m.frm == "b")
    leader = net.elect("a")
    assert leader.status().progress["b"].state == ProgressState.PROBE
    assert leader.status().progress["c"].state == ProgressState.REPLICATE
    # In PROBE at most one append is in flight: more proposals send nothing to b.
    sent: list[Message] = []
    net.filter = lambda m: (sent.append(m) or True) and m.to != "b"
    for i in range(3):
        leader.propose(b"%d" % i)
        net.deliver()
    assert _appends_to(sent, "b") == []
    # A heartbeat reply unpauses the probe.
    net.filter = None
    net.tick(2)
    assert leader.status().progress["b"].state == ProgressState.REPLICATE
    assert leader.status().progress["b"].match == leader.last_index


def test_inflight_window_bounds_pipelined_appends() -> None:
    net = Net(["a", "b", "c"], max_inflight_msgs=3)
    leader = net.elect("a")
    assert leader.status().progress["b"].state == ProgressState.REPLICATE
    sent: list[Message] = []

    def drop_b_acks(m: Message) -> bool:
        sent.append(m)
        return not (m.type == MT.APPEND_RESP and m.frm == "b")

    net.filter = drop_b_acks
    for i in range(10):
        leader.propose(b"%d" % i)
        net.deliver()  # one proposal per Ready -> one append each
    with_entries = [m for m in _appends_to(sent, "b") if m.entries]
    assert len(with_entries) == 3
    assert leader.status().progress["b"].inflight == 3
    # c is unaffected and the group commits everything.
    assert net.applied_data("c") == [b"%d" % i for i in range(10)]
    net.filter = None
    net.tick(3)
    assert leader.status().progress["b"].match == leader.last_index


def test_inflight_bytes_limit() -> None:
    inf = Inflights(max_count=100, max_bytes=1000)
    inf.add(1, 600)
    assert not inf.full()
    inf.add(2, 600)
    assert inf.full()
    inf.free_le(1)
    assert not inf.full()
    assert (inf.count, inf.bytes) == (1, 600)


def test_batches_are_bounded_by_bytes_but_carry_at_least_one_entry() -> None:
    net = Net(["a", "b", "c"], max_size_per_msg=1000)
    leader = net.elect("a")
    net.isolate("b")
    for _ in range(10):
        leader.propose(b"x" * 300)
    big = leader.propose(b"y" * 5000)
    net.deliver()
    net.heal()
    sent: list[Message] = []
    net.filter = lambda m: sent.append(m) or True
    net.tick(3)
    appends = [m for m in _appends_to(sent, "b") if m.entries]
    assert len(appends) > 3
    for m in appends:
        size = sum(e.size() for e in m.entries)
        assert size <= 1000 or len(m.entries) == 1
    assert any(m.entries[0].index == big and len(m.entries) == 1 for m in appends)
    assert net.node("b").last_index == leader.last_index


def test_many_proposals_then_one_ready_coalesce() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    first = leader.propose(b"0")
    for i in range(1, 50):
        leader.propose(b"%d" % i)
    rd = leader.ready()
    assert [e.index for e in rd.entries] == list(range(first, first + 50))
    # One append per follower carries them all.
    assert sorted(m.to for m in rd.messages if m.type == MT.APPEND) == ["b", "c"]


def test_uncommitted_bytes_limit_drops_proposals() -> None:
    net = Net(["a", "b", "c"], max_uncommitted_bytes=1000)
    leader = net.elect("a")
    net.isolate("a")
    leader.propose(b"x" * 800)
    with pytest.raises(ProposalDroppedError):
        leader.propose(b"x" * 800)
    net.heal()
    net.deliver()
    net.tick(2)
    assert leader.propose(b"x" * 800) > 0


def _diverged_pair(naive_terms: int) -> tuple[Net, int]:
    """Leader 'a' has 1 + 50 entries of term 7; follower 'b' has 50 entries of terms 2..6."""
    net = Net(["a", "b", "c"])
    leader_log = [Entry(1, 1)] + [Entry(7, i) for i in range(2, 52)]
    follower_log = [Entry(1, 1)] + [Entry(2 + (i - 2) // 10, i) for i in range(2, 52)]
    for nid, ents in (("a", leader_log), ("c", leader_log), ("b", follower_log)):
        st = MemoryStorage(conf_state=ConfState(voters=("a", "b", "c")))
        st.append(ents)
        st.set_hard_state(HardState(term=7, commit=1))
        net.members[nid].storage = st
        net.restart(nid)
    return net, naive_terms


def test_fast_backtracking_skips_a_term_per_round_trip() -> None:
    net, _ = _diverged_pair(5)
    rejects: list[Message] = []
    net.filter = lambda m: (m.type == MT.APPEND_RESP and m.reject and rejects.append(m)) or True
    leader = net.elect("a")
    net.tick(3)
    b_log = net.members["b"].storage.all_entries()
    assert b_log == net.members["a"].storage.all_entries()
    b_rejects = [m for m in rejects if m.frm == "b"]
    # 50 divergent entries over 5 terms: naive backtracking needs 50 round trips.
    assert 1 <= len(b_rejects) <= 2
    assert leader.commit_index == leader.last_index


def test_reject_hint_points_before_the_conflicting_term() -> None:
    net, _ = _diverged_pair(5)
    b = net.node("b")
    b.step(Message(type=MT.APPEND, to="b", frm="a", term=8, index=51, log_term=7))
    rd = b.ready()
    (resp,) = rd.persisted_messages
    assert resp.reject
    # b's last entry (index 51) is of term 6 <= 7: it may match there.
    assert (resp.reject_hint, resp.log_term) == (51, 6)


def test_backtracking_walk_is_bounded_per_message_but_converges() -> None:
    """A long divergent run of one term costs bounded work per reject, yet converges."""
    net = Net(["a", "b", "c"])
    common = [Entry(1, 1)]
    leader_log = common + [Entry(2, i) for i in range(2, 3002)]
    follower_log = common + [Entry(3, i) for i in range(2, 3002)]
    for nid, ents, term in (("a", leader_log, 4), ("c", leader_log, 4), ("b", follower_log, 3)):
        st = MemoryStorage(conf_state=ConfState(voters=("a", "b", "c")))
        st.append(ents)
        st.set_hard_state(HardState(term=term, commit=1))
        net.members[nid].storage = st
        net.restart(nid)
    rejects: list[Message] = []
    net.filter = lambda m: (m.type == MT.APPEND_RESP and m.reject and rejects.append(m)) or True
    leader = net.elect("a")
    net.tick(3)
    b_rejects = [m for m in rejects if m.frm == "b"]
    # 3000 entries of term 3 the leader never had: about 3000/1024 round trips.
    assert 2 <= len(b_rejects) <= 5
    assert all(m.reject_hint < m.index for m in b_rejects)
    assert net.members["b"].storage.all_entries() == net.members["a"].storage.all_entries()
    assert leader.commit_index == leader.last_index


def test_report_unreachable_stops_pipelining() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    assert leader.status().progress["b"].state == ProgressState.REPLICATE
    leader.report_unreachable("b")
    assert leader.status().progress["b"].state == ProgressState.PROBE
    # Probing again: the next append is a single probe; its ack resumes pipelining.
    leader.propose(b"x")
    net.deliver()
    assert leader.status().progress["b"].state == ProgressState.REPLICATE
    assert leader.status().progress["b"].match == leader.last_index
