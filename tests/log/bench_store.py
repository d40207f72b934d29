"""Storage micro-benchmarks (not collected by pytest; timing belongs here, not in asserts).

    python tests/log/bench_store.py [--seconds 3] [--dir /tmp/x]

1. NodeStore.save with fsync on: 10 groups per save, 1 vs 100 entries per group
   (100-byte entries + hard state): entries/s and saves (= fsyncs)/s.
2. PartitionStateMachine.read: 100-byte records in batches of 1000, records/s
   when fetching the whole partition 1 MiB at a time (stored blobs, not decoded).
3. PartitionStateMachine.apply: entries of 64 coalesced single-record idempotent
   produces (the server's many-small-producers case), records/s, batch write included.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from raftlog.client.protocol import encode_records
from raftlog.log.commands import Produce, encode_entry_commands
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState, Entry, HardState, Ready

GROUPS = 10
PAYLOAD = b"x" * 100


def bench_save(path: Path, per_group: int, seconds: float) -> tuple[float, float]:
    with NodeStore.open(path, cluster="bench", node_id="n1", fsync=True) as store:
        for gid in range(1, GROUPS + 1):
            store.create_group(gid, ConfState(voters=("n1", "n2", "n3")))
        index = 0
        saves = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            readies = []
            for gid in range(1, GROUPS + 1):
                ents = [
                    Entry(term=1, index=i, data=PAYLOAD)
                    for i in range(index + 1, index + per_group + 1)
                ]
                readies.append((gid, Ready(hard_state=HardState(1, "n1", index), entries=ents)))
            store.save(readies)
            index += per_group
            saves += 1
        elapsed = time.perf_counter() - start
    return saves * per_group * GROUPS / elapsed, saves / elapsed


def bench_read(path: Path, batches: int, seconds: float) -> float:
    records, count, crc = encode_records([(None, PAYLOAD, None, None)] * 1000)
    with NodeStore.open(path, cluster="bench", node_id="n1", fsync=False) as store:
        store.create_group(1, ConfState(voters=("n1",)))
        sm = PartitionStateMachine(store, 1)
        entries = [
            Entry(term=1, index=i + 1, data=encode_entry_commands([Produce(records, count, crc)]))
            for i in range(batches)
        ]
        batch = store.new_batch()
        sm.apply(entries, batch)
        store.write(batch)
        total = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            offset = 0
            while offset < sm.next_offset:
                got = sm.read(offset, 1 << 20)
                last_base, _, last_count, _ = got[-1]
                offset = last_base + last_count
                total += sum(b[2] for b in got)
        elapsed = time.perf_counter() - start
    return total / elapsed


def bench_apply(path: Path, seconds: float) -> float:
    records, count, crc = encode_records([(None, PAYLOAD, None, None)])
    producers = 64
    with NodeStore.open(path, cluster="bench", node_id="n1", fsync=False) as store:
        store.create_group(1, ConfState(voters=("n1",)))
        sm = PartitionStateMachine(store, 1)
        index = 0
        seq = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            entries = []
            for _ in range(10):
                index += 1
                cmds = [Produce(records, count, crc, pid, seq, 1) for pid in range(producers)]
                entries.append(Entry(term=1, index=index, data=encode_entry_commands(cmds)))
                seq += 1
            batch = store.new_batch()
            sm.apply(entries, batch)
            store.write(batch)
        elapsed = time.perf_counter() - start
    return sm.next_offset / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        for per_group in (1, 100):
            eps, sps = bench_save(base / f"save{per_group}", per_group, args.seconds)
            print(
                f"save fsync=on groups={GROUPS} entries/group/save={per_group}: "
                f"{eps:,.0f} entries/s, {sps:,.0f} saves(fsyncs)/s"
            )
        rps = bench_read(base / "read", 200, args.seconds)
        print(f"read 100-byte records, 1000/batch, 1 MiB fetches: {rps:,.0f} records/s")
        aps = bench_apply(base / "apply", args.seconds)
        print(f"apply 64 coalesced 1-record idempotent produces/entry: {aps:,.0f} records/s")


if __name__ == "__main__":
    main()
