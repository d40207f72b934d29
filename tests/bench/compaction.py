"""Cost of a log compaction sweep (log/compaction.py) on one big partition.

    python -m tests.bench.compaction [--batches 10000] [--records 100] [--keys 10000]

Fills one partition of a fresh store with ``--batches`` batches of ``--records``
100-byte records, keyed at random among ``--keys`` keys, then times the
leader's plan (two passes over the stored batches, in a worker thread on a
node) and the apply of its chunks (what every replica does on its event loop,
one 256 KiB chunk at a time), and prints records per second for each.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

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
            began = time.perf_counter()
            plan = plan_sweep(sm, start=0, end=sm.next_offset, tombstones_before_ms=None)
            planned = time.perf_counter() - began
            began = time.perf_counter()
            slowest = 0.0
            removed = 0
            for chunk in plan.chunks:
                t = time.perf_counter()
                (result,) = apply([chunk])[0]
                slowest = max(slowest, time.perf_counter() - t)
                removed += result.compacted
            applied = time.perf_counter() - began
        finally:
            store.close()
    print(
        f"{records:,} records, {args.keys:,} keys: removed {removed:,} "
        f"({plan.live:,} stay) in {len(plan.chunks)} chunks\n"
        f"plan:  {planned:.2f} s ({records / planned:,.0f} records/s)\n"
        f"apply: {applied:.2f} s ({records / applied:,.0f} records/s), "
        f"slowest chunk {slowest * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
