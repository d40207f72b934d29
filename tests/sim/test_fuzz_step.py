"""``RaftNode.step`` never raises, whatever a (buggy) peer sends.

Random messages of every network type, with arbitrary terms, indexes,
entries and snapshots, are stepped into a node that is a follower, a
candidate or a leader, and its Ready pipeline is run as a driver would.
Safety is not checked here (forged messages can lie about anything);
only that the node keeps working: no exception, and it still elects itself
leader of a single-node view when asked to campaign afterwards.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.raft.memory_storage import MemoryStorage
from raftlog.raft.node import Config, RaftNode
from raftlog.raft.types import (
    ConfState,
    Entry,
    Message,
    MessageType,
    Role,
    Snapshot,
    SnapshotMeta,
)

IDS = ("n1", "n2", "n3")
NET_TYPES = [t for t in MessageType if t.value >= MessageType.APPEND.value]


def _drive(node: RaftNode, st_: MemoryStorage) -> None:
    while node.has_ready():
        rd = node.ready()
        if rd.snapshot is not None and not rd.snapshot.is_empty():
            st_.apply_snapshot(rd.snapshot)
        st_.append(rd.entries)
        if rd.hard_state is not None:
            st_.set_hard_state(rd.hard_state)
        node.advance(rd)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    term = draw(st.integers(0, 6))
    first = draw(st.integers(0, 12))
    n = draw(st.integers(0, 4))
    terms = sorted(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)))
    entries = tuple(
        Entry(term=t, index=first + 1 + i, data=draw(st.binary(max_size=4)))
        for i, t in enumerate(terms)
    )
    snap = None
    if draw(st.booleans()):
        snap = Snapshot(
            SnapshotMeta(
                draw(st.integers(0, 15)),
                draw(st.integers(0, 6)),
                ConfState(voters=draw(st.sampled_from([IDS, ("n1",), ("n2", "n3"), ()]))),
            ),
            b"",
        )
    return Message(
        type=draw(st.sampled_from(NET_TYPES)),
        to=draw(st.sampled_from(["n1", "n1", "n1", "n9"])),
        frm=draw(st.sampled_from(["n2", "n3", "n1", "n7"])),
        term=term,
        log_term=draw(st.integers(0, 6)),
        index=first,
        entries=entries,
        commit=draw(st.integers(0, 20)),
        reject=draw(st.booleans()),
        reject_hint=draw(st.integers(0, 20)),
        context=draw(st.sampled_from([b"", b"transfer", b"\x00" * 8])),
        snapshot=snap,
    )


@settings(max_examples=150, deadline=None)
@given(
    start_role=st.sampled_from([Role.FOLLOWER, Role.CANDIDATE, Role.LEADER]),
    msgs=st.lists(messages(), min_size=1, max_size=12),
)
def test_step_never_raises_on_arbitrary_messages(start_role: Role, msgs: list[Message]) -> None:
    st_ = MemoryStorage(conf_state=ConfState(voters=IDS))
    node = RaftNode(Config(id="n1", election_ticks=5, heartbeat_ticks=1), st_, random.Random(1))
    if start_role is not Role.FOLLOWER:
        node.campaign()
        _drive(node, st_)
    if start_role is Role.LEADER:
        for peer in ("n2", "n3"):
            kind = MessageType.PRE_VOTE_RESP if node.role is Role.PRE_CANDIDATE else None
            if kind is not None:
                node.step(Message(type=kind, to="n1", frm=peer, term=node.term + 1))
            node.step(Message(type=MessageType.VOTE_RESP, to="n1", frm=peer, term=node.term))
        _drive(node, st_)
        assert node.role is Role.LEADER  # precondition of the leader case
    for m in msgs:
        node.step(m)
        node.tick()
        _drive(node, st_)
    # Still a working state machine: properties readable, ticks and readies go on.
    for _ in range(30):
        node.tick()
        _drive(node, st_)
    assert node.commit_index <= node.last_index
    assert isinstance(node.role, Role)
