"""Time from SIGKILL of a partition leader until produces succeed again.

    python -m tests.bench.failover [--rounds 5] [--nodes 3]

A sequential producer writes to a one-partition topic. Each round waits for
a few acknowledged produces, SIGKILLs the partition's leader, and measures
the gap between the kill and the next acknowledged produce (the client
redirects and retries by itself; its produce is idempotent). The killed node
is restarted before the next round. Default cluster timing (tick 10 ms,
election 20 ticks) as in cluster.toml.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from raftlog.client import Client

from tests.server.cluster_harness import LocalCluster


class _Producer(threading.Thread):
    """Produces sequentially and records the monotonic time of every ack."""

    def __init__(self, client: Client, topic: str) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.topic = topic
        self.acks: list[float] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            self.client.produce(self.topic, f"v{n}".encode(), partition=0)
            with self.lock:
                self.acks.append(time.monotonic())
            n += 1

    def first_ack_after(self, t: float, deadline_s: float) -> float | None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            with self.lock:
                later = [a for a in self.acks[-50:] if a > t]
            if later:
                return later[0]
            time.sleep(0.005)
        return None

    def ack_count(self) -> int:
        with self.lock:
            return len(self.acks)


def _group_of(client: Client, topic: str) -> int:
    info = client.describe_topic(topic)
    return int(info["partitions"][0]["group"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(Path(tmp), nodes=args.nodes) as cluster:
        cluster.start_all()
        cluster.wait_for_leaders(deadline=60)
        with Client(cluster.addresses(), request_timeout=10.0) as client:
            client.create_topic("failover", partitions=1, replicas=args.nodes)
            gid = _group_of(client, "failover")
            producer = _Producer(client, "failover")
            producer.start()
            gaps: list[float] = []
            try:
                for round_no in range(args.rounds):
                    target = producer.ack_count() + 20
                    deadline = time.monotonic() + 30
                    while producer.ack_count() < target and time.monotonic() < deadline:
                        time.sleep(0.01)
                    leader = cluster.leader_of(gid)
                    killed_at = time.monotonic()
                    cluster.kill(leader)
                    resumed = producer.first_ack_after(killed_at, deadline_s=30)
                    if resumed is None:
                        print(f"round {round_no}: killed {leader}: no ack within 30 s")
                        break
                    gap = resumed - killed_at
                    gaps.append(gap)
                    print(f"round {round_no}: killed leader {leader}: produces resumed after "
                          f"{gap * 1000:.0f} ms")  # fmt: skip
                    cluster.start(leader)
                    cluster.wait_for_leaders(deadline=60)
            finally:
                producer.stop.set()
                producer.join(timeout=15)
    if gaps:
        print(f"fail-over over {len(gaps)} rounds: median {statistics.median(gaps) * 1000:.0f} ms,"
              f" max {max(gaps) * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
