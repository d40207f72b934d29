"""A seeded, simulated network between Raft cores.

Time is the simulator's tick counter. Every message sent gets a delivery
tick drawn from the network's own ``random.Random``; a message may be
dropped, duplicated, or delayed so that it overtakes or is overtaken by
others (reordering). Partitions are a set of cut *directed* links, so any
shape can be expressed (one-way links included); the helpers below build the
common ones.

Why a separate rng: the network's choices must be replayable from the seed
alone, independent of how many random numbers the Raft cores draw.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from raftlog.raft.types import Message, MessageType, NodeId

Link = tuple[NodeId, NodeId]  # (from, to): a directed link


@dataclass(slots=True)
class NetConfig:
    """Fault probabilities per message; delays are in ticks."""

    drop: float = 0.0
    duplicate: float = 0.0
    min_delay: int = 0
    max_delay: int = 0
    # Probability that one message is held back extra ticks (beyond max_delay),
    # so it arrives after later traffic on the same link (reordering).
    reorder: float = 0.0
    reorder_delay: int = 5

    @classmethod
    def reliable(cls) -> NetConfig:
        return cls()

    @classmethod
    def lossy(cls) -> NetConfig:
        return cls(drop=0.05, duplicate=0.02, min_delay=0, max_delay=2, reorder=0.03)


@dataclass(slots=True)
class NetStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    cut: int = 0
    duplicated: int = 0


@dataclass(slots=True)
class Network:
    rng: random.Random
    nodes: tuple[NodeId, ...]
    config: NetConfig = field(default_factory=NetConfig)
    cut: set[Link] = field(default_factory=set)
    stats: NetStats = field(default_factory=NetStats)
    # Heap of (deliver_at, seq, message); seq breaks ties deterministically
    # (messages are not orderable) and keeps FIFO order for equal delays.
    _queue: list[tuple[int, int, Message]] = field(default_factory=list)
    _seq: int = 0
    # Snapshot messages that never arrived: the driver must report them to
    # the sender (RaftNode.report_snapshot) or its Progress stays stuck.
    _lost_snapshots: list[Message] = field(default_factory=list)
    _unreachable: dict[Link, None] = field(default_factory=dict)
    # Optional targeted fault for hand-written scenarios: called on every
    # message at delivery; returns the message to deliver (possibly rewritten)
    # or None to lose it.
    intercept: Callable[[Message], Message | None] | None = None

    # ---- sending and delivery -------------------------------------------

    def send(self, msg: Message, now: int) -> None:
        self.stats.sent += 1
        cfg = self.config
        if cfg.drop and self.rng.random() < cfg.drop:
            self.stats.dropped += 1
            self._lost(msg)
            return
        copies = 1
        if cfg.duplicate and self.rng.random() < cfg.duplicate:
            copies = 2
            self.stats.duplicated += 1
        for _ in range(copies):
            delay = cfg.min_delay
            if cfg.max_delay > cfg.min_delay:
                delay = self.rng.randint(cfg.min_delay, cfg.max_delay)
            if cfg.reorder and self.rng.random() < cfg.reorder:
                delay += self.rng.randint(1, cfg.reorder_delay)
            self._seq += 1
            heapq.heappush(self._queue, (now + delay, self._seq, msg))

    def due(self, now: int) -> list[Message]:
        """Pop every message due at or before ``now`` whose link is not cut.

        The partition is checked at delivery time, as a real network would
        lose a packet that is in flight when the cable is pulled.
        """
        out: list[Message] = []
        q = self._queue
        while q and q[0][0] <= now:
            _, _, msg = heapq.heappop(q)
            if (msg.frm, msg.to) in self.cut:
                self.stats.cut += 1
                self._lost(msg)
                # A real transport notices a dead connection: the driver
                # reports the peer unreachable (RaftNode.report_unreachable).
                self._unreachable[(msg.frm, msg.to)] = None
                continue
            if self.intercept is not None:
                msg = self.intercept(msg)
                if msg is None:
                    self.stats.dropped += 1
                    continue
            out.append(msg)
        self.stats.delivered += len(out)
        return out

    def _lost(self, msg: Message) -> None:
        if msg.type is MessageType.SNAPSHOT:
            self._lost_snapshots.append(msg)

    def take_unreachable(self) -> list[Link]:
        out = list(self._unreachable)
        self._unreachable.clear()
        return out

    def take_lost_snapshots(self) -> list[Message]:
        out, self._lost_snapshots = self._lost_snapshots, []
        return out

    def pending(self) -> int:
        return len(self._queue)

    def pending_messages(self) -> list[Message]:
        return [m for _, _, m in sorted(self._queue)]

    def drop_random(self, count: int = 1) -> int:
        """Lose ``count`` in-flight messages chosen at random (a targeted fault)."""
        dropped = 0
        for _ in range(count):
            if not self._queue:
                break
            i = self.rng.randrange(len(self._queue))
            self._lost(self._queue[i][2])
            self._queue[i] = self._queue[-1]
            self._queue.pop()
            dropped += 1
        heapq.heapify(self._queue)
        self.stats.dropped += dropped
        return dropped

    def drop_to(self, node: NodeId) -> None:
        """Forget in-flight messages to ``node`` (its connections were reset)."""
        self._queue = [e for e in self._queue if e[2].to != node]
        heapq.heapify(self._queue)

    # ---- partitions --------------------------------------------------------

    def heal(self) -> None:
        self.cut.clear()

    def cut_links(self, links: Iterable[Link]) -> None:
        self.cut.update(links)

    def can_talk(self, a: NodeId, b: NodeId) -> bool:
        return (a, b) not in self.cut and (b, a) not in self.cut

    def isolate(self, node: NodeId) -> None:
        self.split([node], [n for n in self.nodes if n != node])

    def split(self, side_a: Sequence[NodeId], side_b: Sequence[NodeId]) -> None:
        """Cut every link between the two sides, both directions."""
        for a in side_a:
            for b in side_b:
                self.cut.add((a, b))
                self.cut.add((b, a))

    def halves(self, minority: Sequence[NodeId]) -> None:
        """A minority/majority partition: ``minority`` on one side, the rest on the other."""
        self.split(list(minority), [n for n in self.nodes if n not in minority])

    def bridge(self, bridge_node: NodeId) -> None:
        """Two halves that can both talk to ``bridge_node`` but not to each other.

        The classic Jepsen "bridge": the bridge node can assemble a majority
        with either side, which stresses leader election and CheckQuorum.
        """
        others = [n for n in self.nodes if n != bridge_node]
        mid = len(others) // 2
        self.split(others[:mid], others[mid:])

    def ring(self) -> None:
        """Each node talks only to its two neighbours in ``nodes`` order."""
        n = len(self.nodes)
        for i, a in enumerate(self.nodes):
            for j, b in enumerate(self.nodes):
                if i != j and (j - i) % n not in (1, n - 1):
                    self.cut.add((a, b))

    def one_way(self, frm: NodeId, to: NodeId) -> None:
        """Cut only ``frm -> to`` (asymmetric partition)."""
        self.cut.add((frm, to))

    def connected_majority(self, live: Iterable[NodeId]) -> bool:
        """Whether some majority of all nodes is live and fully connected (both ways)."""
        live_set = [n for n in self.nodes if n in set(live)]
        need = len(self.nodes) // 2 + 1
        # Greedy clique search is exact enough for <= 5 nodes: try each node
        # as a seed and add every live node that talks to all already chosen.
        for seed in live_set:
            group = [seed]
            for n in live_set:
                if n != seed and all(self.can_talk(n, g) for g in group):
                    group.append(n)
            if len(group) >= need:
                return True
        return False
