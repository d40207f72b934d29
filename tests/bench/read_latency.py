"""Latency of one small fetch, linearizable against serializable, on a running cluster.

    raftlog cluster up &        # or any cluster; --bootstrap names it
    python -m tests.bench.read_latency [--bootstrap 127.0.0.1:7101] [--count 2000]

One client fetches one record of a one-partition topic over and over, one
request at a time, first with one consistency, then the other, alternating in
rounds, so a slower hour of this VM does not favour either. A linearizable
fetch waits for the leader's ReadIndex round (a heartbeat to the followers and
a majority's answers); a serializable one is answered from the replica's copy
at once. The difference is that round.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import TopicExistsError

TOPIC = "read-latency"


async def _timed(client: AsyncClient, consistency: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        await client.fetch(TOPIC, 0, 0, max_records=1, consistency=consistency)
        out.append(time.perf_counter() - t0)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


async def main(bootstrap: list[str], count: int, rounds: int, prefer: str | None) -> None:
    async with AsyncClient(bootstrap, prefer_replica=prefer) as client:
        with contextlib.suppress(TopicExistsError):
            await client.create_topic(TOPIC, partitions=1, replicas=3)
        await client.produce(TOPIC, b"x" * 100, partition=0)
        samples: dict[str, list[float]] = {"linearizable": [], "serializable": []}
        for consistency in samples:  # warm up both paths and connections
            await _timed(client, consistency, 50)
        for _ in range(rounds):
            for consistency, got in samples.items():
                got.extend(await _timed(client, consistency, count // rounds))
        leader = (await client.describe_topic(TOPIC))["partitions"][0]["leader"]
        served = client._read_replicas.get((TOPIC, 0))
        print(f"partition leader {leader}; serializable reads served by {served}")
        for consistency, got in samples.items():
            print(f"{consistency:>13}: {len(got)} fetches, p50 {_pct(got, 0.5):.3f} ms, "
                  f"p99 {_pct(got, 0.99):.3f} ms, mean {statistics.fmean(got) * 1e3:.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--prefer-replica", default=None,
                        help="node id serializable reads go to first (default: by client id)")
    args = parser.parse_args()
    trio.run(main, args.bootstrap.split(","), args.count, args.rounds, args.prefer_replica)
