"""Produce latency while a majority of the nodes' disks stall at each fsync.

    python -m tests.bench.slow_disk_latency [--delay-ms 2000] [--workers 8]
        [--seconds 15] [--request-timeout 20] [--election-ticks 300] [--keep DIR]

Three nodes on jepsen's lazyfs disks (root and /dev/fuse, as the power
nemesis needs). A topic of three partitions, one per leader; the disks of the
two nodes that do not lead partition 0 then make every fsync wait
``--delay-ms``. ``--workers`` tasks of ONE client (so producer ids and
metadata are already known) produce to the partitions in turn for
``--seconds``; every produce's latency or error is printed, then a summary.

The default election timeout (200-400 ms) cannot hold a leader through fsyncs
of seconds (a vote must be fsynced before it is sent), hence
``--election-ticks``: this measures what a slow disk costs a leader that stays
leader, not the elections.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import RaftlogError
from raftlog.jepsen.cluster import ClusterSettings, JepsenCluster

TOPIC = "slow"


async def measure(args: argparse.Namespace, run_dir: Path) -> list[float | None]:
    """Latency of every produce in the stall (None: it failed)."""
    cluster = JepsenCluster(
        run_dir,
        ClusterSettings(nodes=3, lazyfs=True, proxied=False, election_ticks=args.election_ticks),
    )
    cluster.mount_disks()
    try:
        await cluster.prepare()
        await cluster.start_all()
        await cluster.wait_for_topic(TOPIC, 3, 3)
        async with AsyncClient(cluster.addresses, request_timeout=args.request_timeout) as client:
            topic = await client.describe_topic(TOPIC)
            leaders = {p["partition"]: p["leader"] for p in topic["partitions"]}
            for partition in leaders:  # producer id and metadata, before the stall
                await client.produce(TOPIC, b"warm", partition=partition)
            slow = sorted(n for n in cluster.nodes if n != leaders[0])
            print(f"leaders {leaders}; fsyncs of {slow} wait {args.delay_ms} ms", flush=True)
            for nid in slow:
                cluster.set_fsync_delay(nid, args.delay_ms)
            latencies: list[float | None] = []
            start = time.monotonic()

            async def worker(w: int) -> None:
                i = 0
                while time.monotonic() - start < args.seconds:
                    partition = (w + i) % 3
                    i += 1
                    sent = time.monotonic()
                    try:
                        await client.produce(TOPIC, b"x" * 100, partition=partition)
                        took: float | None = time.monotonic() - sent
                        what = f"ok {took:.2f}s"
                    except RaftlogError as exc:
                        took, what = None, f"FAILED after {time.monotonic() - sent:.2f}s: {exc}"
                    latencies.append(took)
                    print(
                        f"{sent - start:6.2f}s worker {w} partition {partition} "
                        f"(leader {leaders[partition]}) {what}",
                        flush=True,
                    )

            async with trio.open_nursery() as nursery:
                for w in range(args.workers):
                    nursery.start_soon(worker, w)
            for nid in slow:
                cluster.set_fsync_delay(nid, 0)
            return latencies
    finally:
        cluster.stop_all()
        cluster.release_disks(keep=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delay-ms", type=float, default=2000.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--request-timeout", type=float, default=20.0)
    parser.add_argument("--election-ticks", type=int, default=300)
    parser.add_argument("--keep", type=Path, help="run in DIR and keep the node logs there")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        latencies = trio.run(measure, args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="raftlog-slow-disk-") as tmp:
            latencies = trio.run(measure, args, Path(tmp))
    done = sorted(t for t in latencies if t is not None)
    failed = len(latencies) - len(done)
    if done:
        print(
            f"{len(done)} acknowledged, {failed} failed; latency min {done[0]:.2f}s "
            f"median {statistics.median(done):.2f}s max {done[-1]:.2f}s"
        )
    else:
        print(f"nothing acknowledged, {failed} failed")


if __name__ == "__main__":
    main()
