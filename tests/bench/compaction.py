"""Cost of a log compaction sweep (log/compaction.py) on one big partition.

    python -m tests.bench.compaction [--batches 10000] [--records 100] [--keys 10000]
        [--map-bytes N] [--trace-memory]

Fills one partition of a fresh store with ``--batches`` batches of ``--records``
100-byte records, keyed at random among ``--keys`` keys, then times the
leader's plan (two passes over the stored batches, in a worker thread on a
node) and the apply of its chunks (what every replica does on its event loop,
one 256 KiB chunk at a time), and prints records per second for each.

``--map-bytes`` bounds each sweep's offset map (``[retention]
compaction_map_bytes``; default: no bound): sweeps then follow each other, each
going on where the last stopped, until one reaches the end; the figures add
them up. ``--trace-memory`` reports the planning's peak Python memory
(tracemalloc, which slows the plan down by about half).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import tracemalloc

from raftlog.client.protocol import encode_records
from raftlog.log.commands import Produce, encode_entry_commands
from raftlog.log.compaction import plan_sweep
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState, Entry, EntryType

GID = 5
APPLY_CHUNK = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--map-bytes", type=int, default=None)
    parser.add_argument("--trace-memory", action="store_true")
    args = parser.parse_args()
    rng = random.Random(1)

    with tempfile.TemporaryDirectory() as tmp:
        store = NodeStore.open(f"{tmp}/n1", cluster="bench", node_id="n1")
        try:
            store.create_group(GID, ConfState(voters=("n1",)))
            sm = PartitionStateMachine(store, GID)
            index = 0

            def apply(commands: list) -> list:
                nonlocal index
                entries = []
                for command in commands:
                    index += 1
                    data = encode_entry_commands([command])
                    entries.append(Entry(term=1, index=index, type=EntryType.NORMAL, data=data))
                batch = store.new_batch()
                results = sm.apply(entries, batch)
                store.write(batch)
                return results

            pending = []
            for n in range(args.batches):
                rows = [
                    (b"key-%08d" % rng.randrange(args.keys), b"x" * 100, None, None)
                    for _ in range(args.records)
                ]
                blob, count, crc = encode_records(rows)
                pending.append(Produce(blob, count, crc, None, None, n))
                if len(pending) == APPLY_CHUNK:
                    apply(pending)
                    pending = []
            if pending:
                apply(pending)
            records = args.batches * args.records
            planned = applied = slowest = 0.0
            removed = sweeps = live = 0
            peak = mapped_keys = 0
            if args.trace_memory:
                tracemalloc.start()
            while True:
                sweeps += 1
                began = time.perf_counter()
                plan = plan_sweep(
                    sm,
                    start=0,
                    end=sm.next_offset,
                    tombstones_before_ms=None,
                    map_bytes=args.map_bytes,
                )
                planned += time.perf_counter() - began
                if args.trace_memory:
                    peak = max(peak, tracemalloc.get_traced_memory()[1])
                    tracemalloc.reset_peak()
                mapped_keys = max(mapped_keys, plan.mapped_keys)
                began = time.perf_counter()
                for chunk in plan.chunks:
                    t = time.perf_counter()
                    (result,) = apply([chunk])[0]
                    slowest = max(slowest, time.perf_counter() - t)
                    removed += result.compacted
                applied += time.perf_counter() - began
                live = plan.live
                if not plan.map_full:
                    break
        finally:
            store.close()
    bound = "none" if args.map_bytes is None else f"{args.map_bytes:,} bytes"
    memory = f", planning's peak {peak / 2**20:,.1f} MiB" if args.trace_memory else ""
    print(
        f"{records:,} records, {args.keys:,} keys: removed {removed:,} ({live:,} stay)\n"
        f"map bound {bound}: {sweeps} sweeps, at most {mapped_keys:,} keys mapped{memory}\n"
        f"plan:  {planned:.2f} s ({records / planned:,.0f} records/s)\n"
        f"apply: {applied:.2f} s ({records / applied:,.0f} records/s), "
        f"slowest chunk {slowest * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
