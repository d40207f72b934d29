"""CPU cost of idle partitions: N partitions (default 1,000) per node, no traffic.

    python -m tests.bench.idle_partitions [--partitions 1000] [--seconds 30]

Starts a 3-node cluster, creates one topic with N partitions of 3 replicas
(so every node hosts N partition groups plus the metadata group), lets it
settle, then reads each node's CPU time (utime + stime from /proc) over the
measuring window and prints it as a percentage of one core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from raftlog.client import Client

from tests.server.cluster_harness import LocalCluster

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: fields[11] = utime, fields[12] = stime (in clock ticks).
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(Path(tmp), nodes=3) as cluster:
        cluster.start_all()
        cluster.wait_for_leaders(deadline=60)
        with Client(cluster.addresses(), request_timeout=300.0) as client:
            started = time.monotonic()
            client.create_topic("idle", partitions=args.partitions, replicas=3)
            print(f"created {args.partitions} partitions in {time.monotonic() - started:.1f} s")
        cluster.wait_for_leaders(deadline=300)
        time.sleep(args.settle)  # a settling period before measuring, not a condition wait
        pids = {node: proc.pid for node, proc in cluster.procs.items()}
        before = {node: _cpu_seconds(pid) for node, pid in pids.items()}
        t0 = time.monotonic()
        time.sleep(args.seconds)  # the measuring window itself
        elapsed = time.monotonic() - t0
        for node, pid in sorted(pids.items()):
            used = _cpu_seconds(pid) - before[node]
            print(f"{node}: {100 * used / elapsed:.2f} % of a core "
                  f"({args.partitions} idle partitions + metadata)")  # fmt: skip


if __name__ == "__main__":
    main()
