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


def plan_metadata_leader_drain(
    partitions: list[PartitionView],
    moves: list[LeaderMove],
    node: str,
    metadata_leader: str | None,
    voters: list[str],
    live: set[str] | None = None,
) -> str | None:
    """The voter of the metadata group (group 0) to take its leadership off ``node``.

    None unless ``node`` leads group 0 and another voter can take it. The
    target is the other voter leading the fewest partitions once ``moves``
    (the partition transfers of the same drain) are done, ties broken by id:
    the controller's work then lands where there is least of it. With ``live``
    given, only those nodes are considered (a transfer to a stopped node would
    only time out).
    """
    if metadata_leader != node:
        return None
    leaders = {p.group: p.leader for p in partitions}
    for m in moves:
        leaders[m.group] = m.to
    counts: Counter[str] = Counter(v for v in leaders.values() if v is not None)
    others = [v for v in voters if v != node and (live is None or v in live)]
    if not others:
        return None
    return min(others, key=lambda v: (counts[v], v))
