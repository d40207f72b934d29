"""Replay one seeded schedule deterministically and print its trace.

    python -m tests.sim.replay --seed 1234 --nodes 5 [--length 200] [--tail 200]

The same seed always gives the same trace (and trace hash); a failing seed
printed by the test suite reproduces here with the full event log.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys

from .cluster import Cluster
from .invariants import SimulationFailure
from .schedule import (
    DEFAULT_LENGTH,
    PROFILES,
    make_cluster,
    play,
    random_schedule,
    replay_command,
    seed_params,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.sim.replay", description=__doc__)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--length", type=int, default=DEFAULT_LENGTH, help="actions in the schedule")
    ap.add_argument("--tail", type=int, default=0, help="print only the last N trace lines")
    ap.add_argument("--mutant", default=None, help="mutant core (tests.sim.mutants): key or class")
    ap.add_argument("--no-liveness", action="store_true", help="skip the heal-and-progress phase")
    ap.add_argument("--profile", default="default", choices=sorted(PROFILES))
    ap.add_argument(
        "--no-broadcast-commit",
        action="store_true",
        help="cores with Config.broadcast_commit off (as the server runs them)",
    )
    ap.add_argument("--lease-reads", action="store_true", help="cores with Config.lease_reads on")
    args = ap.parse_args(argv)
    # The core logs every election; the trace below says more, in order.
    logging.getLogger("raftlog.raft").setLevel(logging.ERROR)

    factory = None
    if args.mutant:
        from .mutants import MUTANTS

        by_class = {cls.__name__: cls for cls in MUTANTS.values()}
        factory = MUTANTS.get(args.mutant) or by_class[args.mutant]
    params = seed_params(
        args.seed, args.nodes, True, not args.no_broadcast_commit, args.lease_reads
    )
    actions = random_schedule(
        random.Random(f"schedule:{args.seed}"), args.nodes, args.length, args.profile
    )
    print(f"# seed={args.seed} nodes={args.nodes} params={params}")
    c = make_cluster(params, factory)
    c.checker.replay = replay_command(
        args.seed,
        args.nodes,
        args.length,
        factory,
        not args.no_liveness,
        args.profile,
        not args.no_broadcast_commit,
        args.lease_reads,
    )
    try:
        result = play(c, actions, check_liveness=not args.no_liveness)
    except SimulationFailure as e:
        _print_trace(c, args.tail)
        print(f"FAILED: {e}")
        return 1
    _print_trace(c, args.tail)
    print(
        f"# ok: ticks={result.ticks} rounds={result.rounds} proposals={result.proposals} "
        f"acked={result.acked} reads={result.reads} settle_ticks={result.settle_ticks} "
        f"trace_hash={result.trace_hash}"
    )
    return 0


def _print_trace(c: Cluster, tail: int) -> None:
    lines = c.trace or []
    if tail:
        lines = lines[-tail:]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
