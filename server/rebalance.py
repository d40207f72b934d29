"""Pure planning for the day-2 commands: leader spreading and replica draining.

No I/O here: cli_ops gathers the cluster's state, these functions decide,
cli_ops executes (leader transfers, partition reassigns). Deterministic (ties
broken by node id, then topic/partition), so a plan can be shown with
``--dry-run`` and then executed unchanged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class PartitionView:
    topic: str
    partition: int
    group: int
    replicas: tuple[str, ...]
    leader: str | None


@dataclass(slots=True, frozen=True)
class LeaderMove:
    topic: str
    partition: int
    group: int
    frm: str
    to: str


def plan_leader_moves(partitions: list[PartitionView], nodes: list[str]) -> list[LeaderMove]:
    """Transfers that bring every node's leader count within one of the others'.

    Each move takes a partition from the node leading the most to one of its
    replicas leading at least two fewer, so the spread shrinks with every move
    and the plan ends (at most one move per partition).
    """
    counts: Counter[str] = Counter({n: 0 for n in nodes})
    led: dict[str, list[PartitionView]] = {n: [] for n in nodes}
    for p in sorted(partitions, key=lambda p: (p.topic, p.partition)):
        if p.leader is not None and p.leader in counts:
            counts[p.leader] += 1
            led[p.leader].append(p)
    moves: list[LeaderMove] = []
    moved: set[int] = set()
    for _ in range(len(partitions)):
        best: tuple[int, str, PartitionView, str] | None = None
        for node in sorted(counts, key=lambda n: (-counts[n], n)):
            for p in led[node]:
                if p.group in moved:
                    continue
                for r in p.replicas:
                    if r in counts and r != node and counts[r] <= counts[node] - 2:
                        gain = counts[node] - counts[r]
                        if best is None or gain > best[0]:
                            best = (gain, node, p, r)
            if best is not None:
                break
        if best is None:
            break
        _, frm, p, to = best
        moves.append(LeaderMove(p.topic, p.partition, p.group, frm, to))
        moved.add(p.group)
        counts[frm] -= 1
        counts[to] += 1
        led[frm].remove(p)
        led[to].append(p)
    return moves


def plan_drain(
    partitions: list[PartitionView], node: str, candidates: list[str]
) -> list[tuple[PartitionView, tuple[str, ...]]]:
    """For every partition ``node`` holds: its new replica list.

    ``node`` is replaced in place (its position in the list, so a preferred
    leader stays first) by the candidate holding the fewest replicas; with no
    candidate left the partition shrinks by one replica rather than keep the
    node (the operator asked for it to go).
    """
    load: Counter[str] = Counter({c: 0 for c in candidates if c != node})
    for p in partitions:
        for r in p.replicas:
            if r in load:
                load[r] += 1
    plan = []
    for p in sorted(partitions, key=lambda p: (p.topic, p.partition)):
        if node not in p.replicas:
            continue
        options = sorted((c for c in load if c not in p.replicas), key=lambda c: (load[c], c))
        if options:
            load[options[0]] += 1
            new = tuple(options[0] if r == node else r for r in p.replicas)
        else:
            new = tuple(r for r in p.replicas if r != node)
        plan.append((p, new))
    return plan


def plan_leader_drain(partitions: list[PartitionView], node: str) -> list[LeaderMove]:
    """Transfers that take every partition leadership off ``node`` (before a restart),
    each to the other replica leading the fewest partitions so far."""
    counts: Counter[str] = Counter()
    for p in partitions:
        if p.leader is not None:
            counts[p.leader] += 1
    moves = []
    for p in sorted(partitions, key=lambda p: (p.topic, p.partition)):
        if p.leader != node:
            continue
        others = sorted((r for r in p.replicas if r != node), key=lambda r: (counts[r], r))
        if not others:
            continue  # a single-replica partition cannot be led by anyone else
        counts[node] -= 1
        counts[others[0]] += 1
        moves.append(LeaderMove(p.topic, p.partition, p.group, node, others[0]))
    return moves
