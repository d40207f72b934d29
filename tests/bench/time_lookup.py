"""Cost of a lookup by time (``PartitionStateMachine.offset_for_time``) on a big partition.

    python -m tests.bench.time_lookup [--batches 200000] [--records 100] [--lookups 2000]

Fills one partition of a fresh store with ``--batches`` batches of ``--records``
100-byte records (each batch its own stamp, one millisecond apart), then times
``--lookups`` lookups at random times. A lookup is a binary search over the
batches, one RocksDB seek and one value read per step, so its cost grows with
log2(batches) and with the batch size (the whole value is read for its header).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

from raftlog.client.protocol import encode_records
from raftlog.log.commands import Produce, encode_entry_commands
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState, Entry, EntryType

GID = 5
APPLY_CHUNK = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200_000)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = NodeStore.open(f"{tmp}/n1", cluster="bench", node_id="n1")
        try:
            store.create_group(GID, ConfState(voters=("n1",)))
            sm = PartitionStateMachine(store, GID)
            rows = [(None, b"x" * 100, None, None) for _ in range(args.records)]
            blob, count, crc = encode_records(rows)
            index = 0
            while index < args.batches:
                entries = []
                for _ in range(min(APPLY_CHUNK, args.batches - index)):
                    index += 1
                    command = Produce(blob, count, crc, None, None, index)  # stamp = index ms
                    data = encode_entry_commands([command])
                    entries.append(Entry(term=1, index=index, type=EntryType.NORMAL, data=data))
                batch = store.new_batch()
                sm.apply(entries, batch)
                store.write(batch)
            times = [random.randint(0, args.batches + 10) for _ in range(args.lookups)]
            start = time.perf_counter()
            for t in times:
                sm.offset_for_time(t)
            per_lookup = (time.perf_counter() - start) / len(times)
        finally:
            store.close()
    print(
        f"{args.batches} batches of {args.records} records ({sm.next_offset} records): "
        f"{per_lookup * 1e6:.0f} us per lookup ({args.lookups} lookups)"
    )


if __name__ == "__main__":
    main()
