"""Helpers for driving a single RaftNode by hand in unit tests."""

from __future__ import annotations

import random

from raftlog.raft.memory_storage import MemoryStorage
from raftlog.raft.node import Config, RaftNode
from raftlog.raft.types import ConfState, Entry, HardState, Message, MessageType, Ready

MT = MessageType


def log_of(*terms: int) -> list[Entry]:
    """Entries 1..n with the given terms."""
    return [Entry(term=t, index=i + 1, data=f"e{i + 1}".encode()) for i, t in enumerate(terms)]


def make_node(
    node_id: str = "a",
    voters: tuple[str, ...] = ("a", "b", "c"),
    terms: tuple[int, ...] = (),
    hs: HardState | None = None,
    seed: int = 0,
    **cfg: object,
) -> tuple[RaftNode, MemoryStorage]:
    st = MemoryStorage(conf_state=ConfState(voters=voters), hard_state=hs)
    st.append(log_of(*terms))
    node = RaftNode(Config(id=node_id, **cfg), st, random.Random(seed))  # type: ignore[arg-type]
    return node, st


def persist(node: RaftNode, st: MemoryStorage) -> Ready:
    """One ready/persist/advance round; returns the Ready."""
    rd = node.ready()
    if rd.snapshot is not None:
        st.apply_snapshot(rd.snapshot)
    st.append(rd.entries)
    if rd.hard_state is not None:
        st.set_hard_state(rd.hard_state)
    node.advance(rd)
    return rd


def all_msgs(rd: Ready) -> list[Message]:
    return rd.messages + rd.persisted_messages


def msg(t: MessageType, frm: str, to: str = "a", term: int = 1, **kw: object) -> Message:
    return Message(type=t, to=to, frm=frm, term=term, **kw)  # type: ignore[arg-type]
