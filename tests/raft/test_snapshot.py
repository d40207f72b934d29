"""Log compaction and InstallSnapshot (Raft §7)."""

from __future__ import annotations

from raftlog.raft.progress import ProgressState
from raftlog.raft.types import Message, Snapshot, SnapshotMeta

from .harness import Net
from .helpers import MT, make_node


def _compact_leader(net: Net, node_id: str) -> int:
    node = net.node(node_id)
    st = net.members[node_id].storage
    idx = node.applied_index
    st.create_snapshot(idx, node.conf_state, b"state@%d" % idx)
    st.compact(idx)
    return idx


def test_lagging_follower_gets_snapshot_then_entries() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    net.isolate("c")
    for i in range(10):
        leader.propose(b"%d" % i)
    net.deliver()
    snap_index = _compact_leader(net, "a")
    sent: list[Message] = []
    net.filter = lambda m: sent.append(m) or True
    net.heal()
    net.tick(3)
    snaps = [m for m in sent if m.type == MT.SNAPSHOT and m.to == "c"]
    assert len(snaps) == 1
    assert snaps[0].snapshot is not None and snaps[0].snapshot.meta.index == snap_index
    c_st = net.members["c"].storage
    assert c_st.snapshot().data == b"state@%d" % snap_index
    assert net.node("c").applied_index == snap_index
    leader.propose(b"later")
    net.deliver()
    net.tick(2)
    assert net.applied_data("c")[-1:] == [b"later"]
    assert leader.status().progress["c"].state == ProgressState.REPLICATE
    assert c_st.all_entries() == net.members["a"].storage.all_entries()


def test_lost_snapshot_is_resent() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    net.isolate("c")
    for i in range(5):
        leader.propose(b"%d" % i)
    net.deliver()
    _compact_leader(net, "a")
    net.heal()
    dropped: list[Message] = []

    def drop_first_snapshot(m: Message) -> bool:
        if m.type == MT.SNAPSHOT and not dropped:
            dropped.append(m)
            return False
        return True

    net.filter = drop_first_snapshot
    net.tick(2)
    assert dropped
    snap = dropped[0].snapshot
    assert snap is not None
    # Without report_snapshot, the leader retries after two election timeouts.
    waited = net.tick_until(lambda: net.node("c").applied_index >= snap.meta.index, 25)
    assert waited >= 15


def test_report_snapshot_failure_returns_to_probe() -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    net.isolate("c")
    for i in range(5):
        leader.propose(b"%d" % i)
    net.deliver()
    _compact_leader(net, "a")
    net.heal()
    net.filter = lambda m: m.type != MT.SNAPSHOT
    net.tick(1)
    assert leader.status().progress["c"].state == ProgressState.SNAPSHOT
    leader.report_snapshot("c", success=False)
    assert leader.status().progress["c"].state == ProgressState.PROBE


def test_stale_snapshot_is_ignored() -> None:
    node, _ = make_node(terms=(1, 1, 1))
    node.step(Message(type=MT.APPEND, to="a", frm="b", term=1, index=3, log_term=1, commit=3))
    node.ready()
    snap = Snapshot(SnapshotMeta(2, 1, node.conf_state))
    node.step(Message(type=MT.SNAPSHOT, to="a", frm="b", term=1, snapshot=snap))
    rd = node.ready()
    assert rd.snapshot is None
    (resp,) = rd.persisted_messages
    assert (resp.type, resp.index) == (MT.APPEND_RESP, 3)
