"""Network partition shapes as grudges (after jepsen.nemesis).

A grudge maps each node to the set of nodes it cannot hear from: the directed
link ``src -> dst`` is cut iff ``src in grudge[dst]``. Shapes are pure
functions of the node list and a seeded ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

Grudge = dict[str, frozenset[str]]


def complete_grudge(components: Iterable[Iterable[str]]) -> Grudge:
    """Nodes hear only from nodes of their own component."""
    comps = [frozenset(c) for c in components]
    everyone = frozenset().union(*comps) if comps else frozenset()
    return {n: everyone - comp for comp in comps for n in comp}


def isolate(nodes: Sequence[str], victim: str) -> Grudge:
    """One node alone, the rest together."""
    return complete_grudge([[victim], [n for n in nodes if n != victim]])


def halves(nodes: Sequence[str], rng: random.Random) -> Grudge:
    """A random minority cut off from the majority."""
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    k = len(shuffled) // 2
    return complete_grudge([shuffled[:k], shuffled[k:]])


def bridge(nodes: Sequence[str], rng: random.Random) -> Grudge:
    """Two halves that cannot talk, and one node that talks to both.

    The bridge node sees a majority on either side; a classic way to get two
    leaders believing they are connected to a quorum.
    """
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    mid = len(shuffled) // 2
    bridge_node = shuffled[mid]
    left, right = set(shuffled[:mid]), set(shuffled[mid + 1 :])
    grudge: Grudge = {bridge_node: frozenset()}
    for n in left:
        grudge[n] = frozenset(right)
    for n in right:
        grudge[n] = frozenset(left)
    return grudge


def majorities_ring(nodes: Sequence[str], rng: random.Random) -> Grudge:
    """Every node sees a majority (itself and its nearest ring neighbours), but
    no two nodes see the same majority. With 3 nodes this is no partition."""
    ring = list(nodes)
    rng.shuffle(ring)
    n = len(ring)
    majority = n // 2 + 1
    others = majority - 1
    right_count = (others + 1) // 2
    left_count = others // 2
    grudge: Grudge = {}
    for i, node in enumerate(ring):
        visible = {ring[(i + d) % n] for d in range(1, right_count + 1)}
        visible |= {ring[(i - d) % n] for d in range(1, left_count + 1)}
        visible.add(node)
        grudge[node] = frozenset(set(ring) - visible)
    return grudge


def cut_links(grudge: Grudge) -> set[tuple[str, str]]:
    """Directed (src, dst) links the grudge cuts."""
    return {(src, dst) for dst, srcs in grudge.items() for src in srcs}


SHAPES = ("isolate", "halves", "bridge", "ring")


def shape(name: str, nodes: Sequence[str], rng: random.Random, victim: str | None = None) -> Grudge:
    if name == "isolate":
        return isolate(nodes, victim or rng.choice(list(nodes)))
    if name == "halves":
        return halves(nodes, rng)
    if name == "bridge":
        return bridge(nodes, rng)
    if name == "ring":
        return majorities_ring(nodes, rng)
    raise ValueError(f"unknown partition shape {name!r} (one of {', '.join(SHAPES)})")
