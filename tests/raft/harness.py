"""A tiny in-test message pump for Raft cores (the full simulator lives in tests/sim/).

Each node has a MemoryStorage "disk"; ``process`` runs one node's Ready
through the contract of ``types.Ready`` (persist, queue messages, apply,
advance) and ``deliver`` pumps the queue until nothing is left, with a bound.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from raftlog.raft.memory_storage import MemoryStorage
from raftlog.raft.node import Config, RaftNode, decode_conf_change_entry
from raftlog.raft.types import ConfState, Entry, EntryType, Message, ReadState, Role


@dataclass
class Member:
    node: RaftNode
    storage: MemoryStorage
    applied: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)


class Net:
    def __init__(
        self,
        ids: list[str],
        *,
        voters: list[str] | None = None,
        learners: tuple[str, ...] = (),
        seed: int = 1,
        node_cls: type[RaftNode] = RaftNode,
        **cfg: object,
    ) -> None:
        self.seed = seed
        self.node_cls = node_cls
        self.cfg = cfg
        self.members: dict[str, Member] = {}
        self.queue: deque[Message] = deque()
        self.cut: set[tuple[str, str]] = set()
        self.delivered: list[Message] = []
        # Optional filter: return False to drop a message.
        self.filter: Callable[[Message], bool] | None = None
        cs = ConfState(voters=tuple(voters if voters is not None else ids), learners=learners)
        for i in ids:
            self.add(i, MemoryStorage(conf_state=cs))

    def add(self, node_id: str, storage: MemoryStorage, applied: int = 0) -> RaftNode:
        cfg = Config(id=node_id, applied=applied, **self.cfg)  # type: ignore[arg-type]
        rng = random.Random(f"{self.seed}-{node_id}-{len(self.members)}")
        node = self.node_cls(cfg, storage, rng)
        old = self.members.get(node_id)
        member = Member(node, storage)
        if old is not None:
            member.applied = old.applied[:applied]
        self.members[node_id] = member
        return node

    def restart(self, node_id: str) -> RaftNode:
        """Crash and restart from the disk; the state machine keeps what it applied."""
        m = self.members[node_id]
        return self.add(node_id, m.storage, applied=len(m.applied))

    def node(self, node_id: str) -> RaftNode:
        return self.members[node_id].node

    # ---- running ------------------------------------------------------------

    def process(self, node_id: str) -> bool:
        m = self.members[node_id]
        n = m.node
        if not n.has_ready():
            return False
        rd = n.ready()
        self.queue.extend(rd.messages)
        if rd.snapshot is not None:
            m.storage.apply_snapshot(rd.snapshot)
        m.storage.append(rd.entries)
        if rd.hard_state is not None:
            m.storage.set_hard_state(rd.hard_state)
        self.queue.extend(rd.persisted_messages)
        if rd.snapshot is not None:
            # The state machine state is the snapshot's: model it as padding.
            m.applied = [Entry(0, i + 1) for i in range(rd.snapshot.meta.index)]
        for e in rd.committed_entries:
            assert e.index == len(m.applied) + 1, (node_id, e.index, len(m.applied))
            m.applied.append(e)
            if e.type == EntryType.CONF_CHANGE:
                cc = decode_conf_change_entry(e)
                assert cc is not None
                cs = n.apply_conf_change(cc)
                m.storage.set_conf_state(cs)
        m.read_states.extend(rd.read_states)
        n.advance(rd)
        return True

    def process_all(self) -> bool:
        any_work = False
        for node_id in list(self.members):
            any_work |= self.process(node_id)
        return any_work

    def deliver(self, max_steps: int = 10_000) -> int:
        """Process and deliver until quiet; returns messages delivered."""
        count = 0
        for _ in range(max_steps):
            self.process_all()
            if not self.queue:
                if not self.process_all():
                    return count
                continue
            msg = self.queue.popleft()
            if (msg.frm, msg.to) in self.cut or msg.to not in self.members:
                continue
            if self.filter is not None and not self.filter(msg):
                continue
            self.delivered.append(msg)
            self.members[msg.to].node.step(msg)
            count += 1
        raise AssertionError(f"network not quiet after {max_steps} steps")

    def tick(self, n: int = 1, only: list[str] | None = None) -> None:
        for _ in range(n):
            for node_id in only or list(self.members):
                self.members[node_id].node.tick()
            self.deliver()

    def isolate(self, node_id: str) -> None:
        for other in self.members:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def heal(self) -> None:
        self.cut.clear()

    def elect(self, node_id: str) -> RaftNode:
        n = self.node(node_id)
        n.campaign()
        self.deliver()
        assert n.role == Role.LEADER, (node_id, n.role)
        return n

    def leader(self) -> RaftNode | None:
        leaders = [m.node for m in self.members.values() if m.node.role == Role.LEADER]
        top = max((n.term for n in leaders), default=0)
        current = [n for n in leaders if n.term == top]
        return current[0] if current else None

    def tick_until(self, cond: Callable[[], bool], max_ticks: int = 500) -> int:
        for t in range(max_ticks):
            if cond():
                return t
            self.tick()
        raise AssertionError(f"condition not reached within {max_ticks} ticks")

    def applied_data(self, node_id: str) -> list[bytes]:
        return [
            e.data for e in self.members[node_id].applied if e.type == EntryType.NORMAL and e.data
        ]
