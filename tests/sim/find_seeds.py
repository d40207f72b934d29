"""Re-find the mutant seeds kept in ``seeds.py`` after schedule generation changed.

    python -m tests.sim.find_seeds [--budget 400] [--per-mutant 2]

Prints a ``MUTANT_SEEDS`` tuple to paste into ``seeds.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .invariants import SimulationFailure
from .mutants import MUTANTS
from .run import nodes_for
from .schedule import run_seed


def find(name: str, budget: int, wanted: int) -> list[tuple[int, int, str]]:
    found: list[tuple[int, int, str]] = []
    for seed in range(budget):
        n = nodes_for(seed)
        try:
            run_seed(seed, n, core_factory=MUTANTS[name], check_liveness=False)
        except SimulationFailure as e:
            found.append((seed, n, str(e).split(" violated", 1)[0]))
            if len(found) >= wanted:
                break
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.sim.find_seeds", description=__doc__)
    ap.add_argument("--budget", type=int, default=400)
    ap.add_argument("--per-mutant", type=int, default=2)
    args = ap.parse_args(argv)
    logging.getLogger("raftlog.raft").setLevel(logging.CRITICAL)
    missing = False
    print("MUTANT_SEEDS: tuple[MutantSeed, ...] = (")
    for name in MUTANTS:
        if name == "commit-old-term":
            continue  # caught by the hand-written Figure 8 scenario instead
        hits = find(name, args.budget, args.per_mutant)
        missing |= not hits
        for seed, n, invariant in hits:
            print(f'    MutantSeed("{name}", {seed}, {n}, "{invariant}"),')
    print(")")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
