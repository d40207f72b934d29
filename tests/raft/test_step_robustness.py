"""step() never raises: any message a buggy or malicious peer might send is survivable."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.raft.types import Entry, EntryType, Message, MessageType, Snapshot, SnapshotMeta

from .harness import Net

peer = st.sampled_from(["a", "b", "c", "zz"])
small = st.integers(min_value=0, max_value=40)
entry = st.builds(
    Entry, term=small, index=small, type=st.sampled_from(EntryType), data=st.binary(max_size=8)
)
snapshot = st.builds(
    Snapshot, meta=st.builds(SnapshotMeta, index=small, term=small), data=st.binary(max_size=8)
)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=st.sampled_from(["a", "b"]),
    frm=peer,
    term=small,
    log_term=small,
    index=small,
    entries=st.lists(entry, max_size=3).map(tuple),
    commit=small,
    reject=st.booleans(),
    reject_hint=small,
    context=st.binary(max_size=4),
    snapshot=st.none() | snapshot,
)


@settings(max_examples=80, deadline=None)
@given(st.lists(messages, min_size=1, max_size=12), st.booleans())
def test_random_messages_never_raise_or_undo_commit(msgs: list[Message], lead: bool) -> None:
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    leader.propose(b"committed")
    net.deliver()
    committed = {n: net.node(n).commit_index for n in "abc"}
    if not lead:
        net.node("b").campaign()
    for m in msgs:
        net.node(m.to).step(m)
        net.process_all()
    for n in "abc":
        # Committed state is never undone, whatever arrived (a forged
        # snapshot from a "leader" may move it forward: leaders are trusted).
        node = net.node(n)
        assert node.commit_index >= committed[n]
        assert node.last_index >= node.commit_index >= node.applied_index
