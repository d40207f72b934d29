"""Time from SIGKILL of a partition leader until produces succeed again.

    python -m tests.bench.failover [--rounds 5] [--nodes 3] [--signal kill|term] [--no-wait]

A sequential producer writes to a one-partition topic. Each round waits for
a few acknowledged produces, SIGKILLs the partition's leader, waits until 20
more produces are acknowledged, and reports the longest gap between two
consecutive acknowledgements around the kill: how long produces stalled (the
client redirects and retries by itself; its produce is idempotent). An ack
already in flight at the kill does not count as recovery. The killed node is
restarted after each round. Default cluster timing (tick 10 ms,
election 20 ticks) as in cluster.toml.

Before the next round, the restarted node must be linked to its peers and
caught up (as a careful rolling restart waits): until then the cluster runs on
two of three nodes, and stopping the next leader would remove a majority.

``--signal term`` stops the leader with SIGTERM instead: a controlled shutdown
that hands its groups over first (a rolling restart).

``--pipelined`` produces with the batching ``Producer`` instead, unpaced, so
several batches of the partition are in flight at the kill and are retried
together. Acks are then noted at most once per millisecond (``more`` counts
milliseconds with an ack), and each round also reports how many of the
client's attempts the new leader refused as OUT_OF_ORDER_SEQUENCE (a batch
that arrived ahead of its predecessor; counted from the client's debug log).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import tempfile
import threading
import time
from pathlib import Path

from raftlog.client import Client
from raftlog.client.producer import SyncProducer

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
            self.note_ack()
            n += 1

    def note_ack(self) -> None:
        with self.lock:
            self.acks.append(time.monotonic())

    def stall_after(self, first: int, more: int, deadline_s: float) -> float | None:
        """Longest gap between consecutive acks from ack ``first - 1`` on, once
        ``more`` acks followed ``first``; None if they did not come in time."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            with self.lock:
                if len(self.acks) >= first + more:
                    window = self.acks[max(first - 1, 0) : first + more]
                    return max(b - a for a, b in itertools.pairwise(window))
            time.sleep(0.01)
        return None

    def ack_count(self) -> int:
        with self.lock:
            return len(self.acks)


class _PipelinedProducer(_Producer):
    """Sends 100-byte records through a batching Producer as fast as it takes
    them; notes an ack time at most once per millisecond."""

    def __init__(self, client: Client, topic: str) -> None:
        super().__init__(client, topic)
        self.producer = SyncProducer(client, batch_size=16 * 1024, linger=0.002)
        self.errors = 0
        self._last = 0.0

    def _on_ack(self, _meta: object, error: BaseException | None) -> None:
        if error is not None:
            self.errors += 1
            return
        now = time.monotonic()
        if now - self._last >= 0.001:
            self._last = now
            self.note_ack()

    def run(self) -> None:
        value = b"x" * 100
        while not self.stop.is_set():
            for _ in range(200):  # then yield the GIL to the client's loop for a moment
                self.producer.send(self.topic, value, partition=0, callback=self._on_ack)
            time.sleep(0.002)
        self.producer.flush(timeout=30)
        self.producer.close()


class _Refusals(logging.Handler):
    """Counts the client's out-of-order refusals (its debug log line)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("event=out_of_order_sequence"):
            self.count += 1


def _group_of(client: Client, topic: str) -> int:
    info = client.describe_topic(topic)
    return int(info["partitions"][0]["group"])


def _wait_rejoined(
    cluster: LocalCluster, gid: int, node: str, others: list[str], seen: dict[str, int]
) -> None:
    """Until every peer logged a new link to ``node`` and no replica of ``gid`` lags."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        linked = all(
            f"peer_connected peer={node}" in cluster.log_text(n)[seen[n] :] for n in others
        )
        leader = cluster.leader_of(gid)
        groups = cluster.status(leader)["groups"] if leader else []
        group = next((g for g in groups if g["group"] == gid), None)
        if linked and group and group["replicas"] and all(r["lag"] == 0 for r in group["replicas"]):
            return
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--signal", choices=("kill", "term"), default="kill")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="stop the next leader as soon as the restarted node is ready, without "
        "waiting for it to rejoin (a hasty rolling restart: measures how fast peers "
        "re-link to a restarted node)",
    )
    parser.add_argument(
        "--pipelined",
        action="store_true",
        help="produce with the batching Producer, several batches in flight (see above)",
    )
    args = parser.parse_args()
    refusals = _Refusals()
    if args.pipelined:
        client_log = logging.getLogger("raftlog.client")
        client_log.setLevel(logging.DEBUG)
        client_log.addHandler(refusals)
    stop = "killed" if args.signal == "kill" else "stopped (SIGTERM)"
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(Path(tmp), nodes=args.nodes) as cluster:
        cluster.start_all()
        cluster.wait_for_leaders(deadline=60)
        with Client(cluster.addresses(), request_timeout=10.0) as client:
            client.create_topic("failover", partitions=1, replicas=args.nodes)
            gid = _group_of(client, "failover")
            producer = (_PipelinedProducer if args.pipelined else _Producer)(client, "failover")
            producer.start()
            gaps: list[float] = []
            try:
                for round_no in range(args.rounds):
                    target = producer.ack_count() + 20
                    deadline = time.monotonic() + 30
                    while producer.ack_count() < target and time.monotonic() < deadline:
                        time.sleep(0.01)
                    leader = cluster.leader_of(gid)
                    at_kill = producer.ack_count()
                    refused_before = refusals.count
                    others = [n for n in cluster.node_ids() if n != leader]
                    seen = {n: len(cluster.log_text(n)) for n in others}
                    (cluster.kill if args.signal == "kill" else cluster.terminate)(leader)
                    gap = producer.stall_after(at_kill, more=20, deadline_s=30)
                    if gap is None:
                        print(f"round {round_no}: {stop} {leader}: produces did not resume in 30 s")
                        break
                    gaps.append(gap)
                    cluster.start(leader)
                    cluster.wait_for_leaders(deadline=60)
                    # Until the restarted node is back in the quorum: killing the
                    # next leader before that removes a majority, which measures
                    # the restart, not a fail-over.
                    if not args.no_wait:
                        _wait_rejoined(cluster, gid, leader, others, seen)
                    # Refusals until now: the retries of the kill settle well before.
                    refused = refusals.count - refused_before
                    extra = f", {refused} out-of-order refusals" if args.pipelined else ""
                    print(f"round {round_no}: {stop} leader {leader}: produces stalled for "
                          f"{gap * 1000:.0f} ms{extra}")  # fmt: skip
            finally:
                producer.stop.set()
                producer.join(timeout=15)
    if args.pipelined:
        print(f"out-of-order refusals: {refusals.count} in all")
    if gaps:
        print(f"fail-over over {len(gaps)} rounds: median {statistics.median(gaps) * 1000:.0f} ms,"
              f" max {max(gaps) * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
