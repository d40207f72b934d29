"""Long simulation runs, outside CI.

    python -m tests.sim.run --schedules 100000 [--workers 2] [--start 0] [--length 200]

Seeds ``start .. start+schedules-1`` alternate between 3 and 5 nodes (even
seeds 3, odd seeds 5, as in the CI loop). Failing seeds are printed with
their replay command; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from .invariants import SimulationFailure
from .schedule import DEFAULT_LENGTH, PROFILES, replay_command, run_seed


def nodes_for(seed: int) -> int:
    return 3 if seed % 2 == 0 else 5


def run_range(
    start: int,
    stop: int,
    length: int,
    profile: str = "default",
    broadcast_commit: bool = True,
    lease_reads: bool = False,
) -> tuple[int, int, list[tuple[int, str]]]:
    """Run seeds [start, stop); return (schedules, ticks, failures)."""
    logging.getLogger("raftlog.raft").setLevel(logging.ERROR)
    ticks = 0
    failures: list[tuple[int, str]] = []
    for seed in range(start, stop):
        try:
            ticks += run_seed(
                seed,
                nodes_for(seed),
                length,
                profile=profile,
                broadcast_commit=broadcast_commit,
                lease_reads=lease_reads,
            ).ticks
        except SimulationFailure as e:
            failures.append((seed, str(e)))
    return stop - start, ticks, failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.sim.run", description=__doc__)
    ap.add_argument("--schedules", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--length", type=int, default=DEFAULT_LENGTH)
    ap.add_argument("--chunk", type=int, default=200, help="seeds per work unit")
    ap.add_argument("--profile", default="default", choices=sorted(PROFILES))
    ap.add_argument(
        "--no-broadcast-commit",
        action="store_true",
        help="cores with Config.broadcast_commit off (as the server runs them)",
    )
    ap.add_argument("--lease-reads", action="store_true", help="cores with Config.lease_reads on")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    stop = args.start + args.schedules
    chunks = [
        (
            s,
            min(s + args.chunk, stop),
            args.length,
            args.profile,
            not args.no_broadcast_commit,
            args.lease_reads,
        )
        for s in range(args.start, stop, args.chunk)
    ]
    total = ticks = 0
    failures: list[tuple[int, str]] = []
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for n, t, f in pool.map(_run_chunk, chunks):
            total += n
            ticks += t
            failures.extend(f)
            for seed, msg in f:
                print(f"FAIL seed={seed}: {msg.splitlines()[0]}", flush=True)
            print(
                f"progress schedules={total} ticks={ticks} failures={len(failures)} "
                f"elapsed={time.monotonic() - t0:.0f}s",
                flush=True,
            )
    print(
        f"done schedules={total} ticks={ticks} failures={len(failures)} "
        f"elapsed={time.monotonic() - t0:.1f}s"
    )
    for seed, _ in failures:
        cmd = replay_command(
            seed,
            nodes_for(seed),
            args.length,
            profile=args.profile,
            broadcast_commit=not args.no_broadcast_commit,
            lease_reads=args.lease_reads,
        )
        print(f"  replay: {cmd}")
    return 1 if failures else 0


def _run_chunk(
    chunk: tuple[int, int, int, str, bool, bool],
) -> tuple[int, int, list[tuple[int, str]]]:
    return run_range(*chunk)


if __name__ == "__main__":
    sys.exit(main())
