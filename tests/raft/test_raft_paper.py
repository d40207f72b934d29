"""One test per rule of the Raft paper (Ongaro & Ousterhout 2014), section cited in each."""

from __future__ import annotations

from raftlog.raft.node import RaftNode
from raftlog.raft.types import Entry, EntryType, HardState, Message, Role

from .harness import Net
from .helpers import MT, all_msgs, log_of, make_node, msg, persist

# ---- §5.2 leader election ---------------------------------------------------


def test_follower_campaigns_after_randomized_election_timeout() -> None:
    """§5.2: the election timeout is drawn from [T, 2T) with the injected rng."""
    fired = []
    for seed in range(30):
        node, _ = make_node(seed=seed, election_ticks=10, pre_vote=False)
        ticks = 0
        while node.role == Role.FOLLOWER:
            node.tick()
            ticks += 1
            assert ticks < 20, "timeout must be < 2 * election_ticks"
        assert ticks >= 10
        assert node.role == Role.CANDIDATE
        fired.append(ticks)
    assert len(set(fired)) > 3, "timeouts must be randomized"


def test_same_seed_same_timeouts() -> None:
    def timeout(seed: int) -> int:
        node, _ = make_node(seed=seed, pre_vote=False)
        t = 0
        while node.role == Role.FOLLOWER:
            node.tick()
            t += 1
        return t

    assert [timeout(s) for s in range(10)] == [timeout(s) for s in range(10)]


def test_candidate_increments_term_and_votes_for_itself() -> None:
    """§5.2: a candidate increments its term, votes for itself and requests votes."""
    node, st = make_node(pre_vote=False, hs=HardState(term=3))
    node.campaign()
    assert node.role == Role.CANDIDATE
    assert node.term == 4
    rd = persist(node, st)
    assert rd.hard_state == HardState(term=4, vote="a", commit=0)
    votes = [m for m in all_msgs(rd) if m.type == MT.VOTE]
    assert sorted(m.to for m in votes) == ["b", "c"]
    assert all(m.term == 4 for m in votes)
    # The vote requests depend on the persisted term/vote (Figure 2).
    assert all(m in rd.persisted_messages for m in votes)


def test_candidate_wins_with_majority_of_votes() -> None:
    node, _ = make_node(pre_vote=False, voters=("a", "b", "c", "d", "e"))
    node.campaign()
    node.step(msg(MT.VOTE_RESP, "b", term=1))
    assert node.role == Role.CANDIDATE
    node.step(msg(MT.VOTE_RESP, "c", term=1))
    assert node.role == Role.LEADER
    assert node.leader_id == "a"


def test_candidate_loses_with_majority_of_rejections() -> None:
    node, _ = make_node(pre_vote=False)
    node.campaign()
    node.step(msg(MT.VOTE_RESP, "b", term=1, reject=True))
    node.step(msg(MT.VOTE_RESP, "c", term=1, reject=True))
    assert node.role == Role.FOLLOWER
    assert node.term == 1


def test_minority_side_never_elects_a_leader() -> None:
    net = Net(["a", "b", "c", "d", "e"])
    net.elect("a")
    net.isolate("d")
    net.cut |= {("d", "e"), ("e", "d")}
    for other in ("a", "b", "c"):
        net.cut |= {("e", other), (other, "e")}
    net.tick(100, only=["d", "e"])
    assert net.node("d").role != Role.LEADER
    assert net.node("e").role != Role.LEADER


def test_one_vote_per_term() -> None:
    """§5.2: each server votes for at most one candidate in a term."""
    node, _ = make_node()
    node.step(msg(MT.VOTE, "b", term=2))
    rd = node.ready()
    assert rd.persisted_messages[0].reject is False
    assert rd.hard_state is not None and rd.hard_state.vote == "b"
    node.step(msg(MT.VOTE, "c", term=2))
    rd = node.ready()
    assert [m.reject for m in rd.persisted_messages] == [True]
    # Re-asked by the same candidate (its request was duplicated): still granted.
    node.step(msg(MT.VOTE, "b", term=2))
    assert node.ready().persisted_messages[0].reject is False


def test_vote_grant_is_sent_only_after_persisting() -> None:
    """Figure 2: the vote must be durable before the grant leaves."""
    node, _ = make_node()
    node.step(msg(MT.VOTE, "b", term=5))
    rd = node.ready()
    assert rd.messages == []
    assert [m.type for m in rd.persisted_messages] == [MT.VOTE_RESP]
    assert rd.hard_state == HardState(term=5, vote="b", commit=0)


def test_higher_term_converts_leader_to_follower() -> None:
    """§5.1: a server seeing a higher term updates its term and becomes follower."""
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    leader.step(msg(MT.APPEND_RESP, "b", term=leader.term + 3))
    assert leader.role == Role.FOLLOWER
    assert leader.term == 4


def test_stale_term_messages_are_rejected() -> None:
    """§5.1: a request with a stale term is rejected; the reply carries the newer term."""
    node, _ = make_node(hs=HardState(term=5))
    node.step(msg(MT.APPEND, "b", term=3, index=0, log_term=0, entries=tuple(log_of(3))))
    rd = node.ready()
    assert node.term == 5
    assert node.last_index == 0
    assert [(m.type, m.term) for m in all_msgs(rd)] == [(MT.APPEND_RESP, 5)]


def test_new_leader_appends_noop_of_its_term() -> None:
    """§5.4.2/§8: a new leader appends an empty entry of its term."""
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    st = net.members["a"].storage
    last = st.all_entries()[-1]
    assert (last.term, last.type, last.data) == (leader.term, EntryType.NORMAL, b"")
    assert leader.commit_index == last.index


# ---- §5.3 log replication -------------------------------------------------------


def test_follower_appends_and_acks_after_persist() -> None:
    node, _st = make_node(terms=(1,), hs=HardState(term=1))
    node.step(msg(MT.APPEND, "b", index=1, log_term=1, entries=(Entry(1, 2, data=b"x"),)))
    rd = node.ready()
    assert [e.index for e in rd.entries] == [2]
    assert rd.messages == []
    ack = rd.persisted_messages[0]
    assert (ack.type, ack.index, ack.reject) == (MT.APPEND_RESP, 2, False)


def test_follower_rejects_append_when_prev_does_not_match() -> None:
    """§5.3: consistency check on (prevLogIndex, prevLogTerm)."""
    node, _ = make_node(terms=(1, 1), hs=HardState(term=2))
    node.step(msg(MT.APPEND, "b", term=2, index=2, log_term=2, entries=(Entry(2, 3),)))
    rd = node.ready()
    (resp,) = all_msgs(rd)
    assert resp.reject is True
    assert resp.index == 2
    assert (resp.reject_hint, resp.log_term) == (2, 1)
    assert node.last_index == 2


def test_follower_truncates_conflicting_suffix() -> None:
    """§5.3: an existing entry that conflicts with a new one is deleted with all that follow."""
    node, st = make_node(terms=(1, 1, 1, 1), hs=HardState(term=2))
    node.step(msg(MT.APPEND, "b", term=2, index=1, log_term=1, entries=(Entry(2, 2, data=b"n"),)))
    assert node.last_index == 2
    rd = persist(node, st)
    assert [(e.index, e.term) for e in rd.entries] == [(2, 2)]
    assert [(e.index, e.term) for e in st.all_entries()] == [(1, 1), (2, 2)]


def test_duplicate_append_does_not_truncate_newer_entries() -> None:
    """A delayed duplicate of an earlier append must not drop later matching entries."""
    node, _st = make_node(terms=(1, 1, 1), hs=HardState(term=1))
    node.step(msg(MT.APPEND, "b", index=0, log_term=0, entries=tuple(log_of(1))))
    assert node.last_index == 3
    assert not node.ready().entries


def test_log_matching_across_cluster() -> None:
    """§5.3 Log Matching: after replication every log is identical."""
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    for i in range(20):
        leader.propose(b"v%d" % i)
        if i % 3 == 0:
            net.deliver()
    net.deliver()
    logs = [net.members[n].storage.all_entries() for n in "abc"]
    assert logs[0] == logs[1] == logs[2]
    assert net.applied_data("b") == [b"v%d" % i for i in range(20)]


def test_commit_index_reaches_followers() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    idx = leader.propose(b"x")
    net.deliver()
    net.tick(2)  # a heartbeat carries the commit index
    assert all(net.node(n).commit_index >= idx for n in "abc")


def test_committed_entries_are_only_durable_ones() -> None:
    """Ready contract: committed_entries never include entries not yet persisted locally."""
    node, st = make_node(terms=(1,), hs=HardState(term=1))
    node.step(msg(MT.APPEND, "b", index=1, log_term=1, commit=2, entries=(Entry(1, 2),)))
    assert node.commit_index == 2
    rd = node.ready()
    assert [e.index for e in rd.entries] == [2]
    assert [e.index for e in rd.committed_entries] == [1]
    st.append(rd.entries)
    node.advance(rd)
    assert [e.index for e in node.ready().committed_entries] == [2]


def test_leader_appends_are_sent_in_parallel_with_its_write() -> None:
    """Thesis §10.2.1: the leader's AppendEntries need not wait for its own fsync."""
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    leader.propose(b"p")
    rd = leader.ready()
    appends = [m for m in rd.messages if m.type == MT.APPEND]
    assert {m.to for m in appends} == {"b", "c"}
    assert rd.entries and rd.entries[-1].data == b"p"


def test_leader_own_match_advances_only_on_advance() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    idx = leader.propose(b"p")
    rd = leader.ready()
    # Both followers ack before the leader's own write is durable: that is
    # a majority without the leader, so it commits anyway.
    for f in ("b", "c"):
        leader.step(msg(MT.APPEND_RESP, f, term=leader.term, index=idx))
    assert leader.commit_index == idx
    # Only one follower: needs the leader's own durable copy.
    idx2 = leader.propose(b"q")
    net.members["a"].storage.append(rd.entries)
    leader.advance(rd)
    rd2 = leader.ready()
    leader.step(msg(MT.APPEND_RESP, "b", term=leader.term, index=idx2))
    assert leader.commit_index == idx
    net.members["a"].storage.append(rd2.entries)
    leader.advance(rd2)
    assert leader.commit_index == idx2


# ---- §5.4 safety -----------------------------------------------------------------


def test_vote_denied_to_candidate_with_older_last_term() -> None:
    """§5.4.1: deny if the candidate's last log term is older."""
    node, _ = make_node(terms=(1, 2), hs=HardState(term=2))
    node.step(msg(MT.VOTE, "b", term=3, index=5, log_term=1))
    assert all_msgs(node.ready())[0].reject is True


def test_vote_denied_to_candidate_with_shorter_log_same_term() -> None:
    node, _ = make_node(terms=(1, 2, 2), hs=HardState(term=2))
    node.step(msg(MT.VOTE, "b", term=3, index=2, log_term=2))
    assert all_msgs(node.ready())[0].reject is True
    node.step(msg(MT.VOTE, "c", term=3, index=3, log_term=2))
    assert all_msgs(node.ready())[0].reject is False


def _figure8_cluster(node_cls: type[RaftNode] = RaftNode) -> tuple[Net, RaftNode]:
    """s1 holds an entry of term 2 that only s2 also has; s1 is re-elected in term 4.

    Appends of the new leader are dropped, so the test hands it acks itself.
    """
    net = Net(["s1", "s2", "s3", "s4", "s5"], node_cls=node_cls)
    for n in ("s1", "s2"):
        net.members[n].storage.append(log_of(1, 2))
    for n in ("s3", "s4", "s5"):
        net.members[n].storage.append(log_of(1))
    for n in net.members:
        net.members[n].storage.set_hard_state(HardState(term=3, commit=1))
        net.restart(n)
    net.filter = lambda m: m.type != MT.APPEND
    leader = net.elect("s1")
    assert leader.term == 4
    return net, leader


def test_figure8_leader_does_not_commit_old_term_entry_by_counting() -> None:
    """§5.4.2: entry 2 (term 2) on a majority is NOT committed by counting replicas."""
    net, leader = _figure8_cluster()
    for f in ("s2", "s3"):
        leader.step(msg(MT.APPEND_RESP, f, to="s1", term=4, index=2))
    net.deliver()
    assert leader.commit_index == 1
    # Once the term-4 no-op at index 3 is on a majority, both commit.
    for f in ("s2", "s3"):
        leader.step(msg(MT.APPEND_RESP, f, to="s1", term=4, index=3))
    assert leader.commit_index == 3


def test_figure8_rule_is_the_overridable_hook() -> None:
    """The mutation hook really is the §5.4.2 rule: switched off, index 2 commits."""

    class Broken(RaftNode):
        def _may_commit_by_counting(self, index: int) -> bool:
            return True

    _net, leader = _figure8_cluster(Broken)
    for f in ("s2", "s3"):
        leader.step(msg(MT.APPEND_RESP, f, to="s1", term=4, index=2))
    assert leader.commit_index == 2


def test_leader_never_overwrites_its_log() -> None:
    """Leader Append-Only: appends with a higher index never truncate the leader."""
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    before = net.members["a"].storage.all_entries()
    leader.step(msg(MT.APPEND, "b", term=leader.term, index=0, log_term=0, entries=(Entry(9, 1),)))
    net.deliver()
    assert net.members["a"].storage.all_entries()[: len(before)] == before


def test_message_to_someone_else_is_ignored() -> None:
    node, _ = make_node()
    node.step(Message(type=MT.VOTE, to="zz", frm="b", term=9))
    assert node.term == 0
    assert not node.has_ready()


def test_malformed_append_is_dropped() -> None:
    node, _ = make_node(terms=(1,), hs=HardState(term=2))
    gap = (Entry(2, 3),)  # does not follow prevLogIndex 1
    node.step(msg(MT.APPEND, "b", term=2, index=1, log_term=1, entries=gap))
    future = (Entry(5, 2),)  # a term above the sender's
    node.step(msg(MT.APPEND, "b", term=2, index=1, log_term=1, entries=future))
    assert node.last_index == 1
    assert all_msgs(node.ready()) == []


def test_leader_appends_wait_for_persist_when_its_term_is_new() -> None:
    """A single voter elected in this Ready: its appends to learners wait for the term write."""
    net = Net(["a", "l"], voters=["a"], learners=("l",))
    a = net.node("a")
    a.campaign()
    rd = a.ready()
    assert rd.hard_state is not None and rd.hard_state.term == 1
    assert rd.messages == []
    assert any(m.type == MT.APPEND and m.to == "l" for m in rd.persisted_messages)


def test_local_trigger_from_a_peer_is_ignored() -> None:
    node, _ = make_node()
    node.step(Message(type=MT.HUP, to="a", frm="b"))
    assert node.role == Role.FOLLOWER
    node.step(Message(type=MT.HUP, to="a", frm="a"))
    assert node.role == Role.PRE_CANDIDATE
