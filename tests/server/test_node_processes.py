"""The data path through real `raftlog node start` processes on 127.0.0.1.

Crash tests: SIGKILL the partition leader (or every node) while an
idempotent producer is running, restart, and check that every acknowledged
record is in the log exactly once, at the offset it was acknowledged with.
A produce that failed with TIMEOUT has an unknown outcome: it may or may
not be there, but at most once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from raftlog.client.errors import RaftlogError
from raftlog.client.sync import Client

from .cluster_harness import LocalCluster

pytestmark = pytest.mark.integration

WAIT_S = 30.0


def wait_until(predicate: Callable[[], Any], what: str, within: float = WAIT_S) -> Any:
    end = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def cluster(local_cluster: Callable[..., LocalCluster]) -> Iterator[LocalCluster]:
    c = local_cluster(3, env={"RAFTLOG_DEBUG": "1"})
    c.start_all()
    c.wait_for_leaders(deadline=WAIT_S)
    yield c  # the local_cluster fixture stops every process, also on failure


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.addresses(), request_timeout=30.0) as c:
        yield c


def read_all(client: Client, topic: str, partition: int = 0) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    offset = 0
    for _ in range(10_000):
        result = client.fetch(topic, partition, offset)
        if not result.records:
            break
        for record in result.records:
            out.append((record.offset, record.value))
        offset = result.next_offset(offset)
    return out


def group_of(client: Client, topic: str, partition: int = 0) -> int:
    return client.describe_topic(topic)["partitions"][partition]["group"]


class Producing:
    """One idempotent producer in a thread: sequential produces, acks recorded in order."""

    def __init__(self, client: Client, topic: str) -> None:
        self.client = client
        self.topic = topic
        self.acked: list[tuple[int, bytes]] = []
        self.unknown: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set() and i < 100_000:
            value = f"v{i}".encode()
            try:
                meta = self.client.produce(self.topic, value, partition=0)
                self.acked.append((meta.offset, value))
            except RaftlogError:
                self.unknown.append(value)  # outcome unknown: allowed to be there, once
            i += 1

    def __enter__(self) -> Producing:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "producer thread did not stop"

    def wait_for_more(self, n: int) -> None:
        target = len(self.acked) + n
        wait_until(lambda: len(self.acked) >= target, f"{n} more acknowledged records")


def check_log(log: list[tuple[int, bytes]], acked: list[tuple[int, bytes]]) -> None:
    offsets = [o for o, _ in log]
    assert offsets == list(range(len(log))), "offsets are dense from 0"
    values = [v for _, v in log]
    assert len(values) == len(set(values)), "no record appears twice"
    by_offset = dict(log)
    for offset, value in acked:
        assert by_offset.get(offset) == value, f"acknowledged {value!r}@{offset} missing"
    acked_offsets = [o for o, _ in acked]
    assert acked_offsets == sorted(acked_offsets), "acks of one producer are in log order"


def test_create_produce_and_consume(client: Client) -> None:
    client.create_topic("t", partitions=2, replicas=3)
    sent = {0: [], 1: []}
    for i in range(100):
        p = i % 2
        value = f"m{i}".encode()
        meta = client.produce("t", value, partition=p)
        assert meta.offset == len(sent[p])
        sent[p].append(value)
    for p in (0, 1):
        assert [v for _, v in read_all(client, "t", p)] == sent[p]


def test_killing_the_partition_leader_loses_no_acknowledged_record(
    cluster: LocalCluster, client: Client
) -> None:
    client.create_topic("k", partitions=1, replicas=3)
    gid = group_of(client, "k")
    with Producing(client, "k") as producer:
        producer.wait_for_more(50)
        leader = cluster.leader_of(gid)
        cluster.kill(leader)
        producer.wait_for_more(50)  # the others elected a leader and go on
        cluster.start(leader)
        producer.wait_for_more(50)
    check_log(read_all(client, "k"), producer.acked)


def test_killing_every_node_at_once_loses_no_acknowledged_record(
    cluster: LocalCluster, client: Client
) -> None:
    client.create_topic("k", partitions=1, replicas=3)
    with Producing(client, "k") as producer:
        producer.wait_for_more(100)
        for node in cluster.node_ids():
            cluster.kill(node)
        acked_before_restart = len(producer.acked)
        cluster.start_all()
        producer.wait_for_more(20)
    assert len(producer.acked) > acked_before_restart
    check_log(read_all(client, "k"), producer.acked)


def test_long_poll_fetch_returns_a_new_record_before_max_wait(client: Client) -> None:
    client.create_topic("lp", partitions=1, replicas=3)
    end = client.list_offsets("lp", 0).end_offset
    result: list[Any] = []
    started = time.monotonic()
    poller = threading.Thread(
        target=lambda: result.append(client.fetch("lp", 0, end, max_wait=20.0)), daemon=True
    )
    poller.start()
    client.produce("lp", b"hello", partition=0)
    poller.join(timeout=30)
    elapsed = time.monotonic() - started
    assert [r.value for r in result[0].records] == [b"hello"]
    assert elapsed < 10.0, "the fetch waited for max_wait instead of waking on the record"


def test_a_read_after_an_acknowledged_write_sees_it(cluster: LocalCluster, client: Client) -> None:
    client.create_topic("lin", partitions=1, replicas=3)
    with Client(list(reversed(cluster.addresses())), request_timeout=30.0) as reader:
        for i in range(20):
            meta = client.produce("lin", f"w{i}".encode(), partition=0)
            assert reader.list_offsets("lin", 0).end_offset > meta.offset
            fetched = reader.fetch("lin", 0, meta.offset, max_records=1)
            assert fetched.records[0].value == f"w{i}".encode()


def test_sigterm_shuts_a_node_down_cleanly_and_it_rejoins(
    cluster: LocalCluster, client: Client
) -> None:
    client.create_topic("st", partitions=1, replicas=3)
    client.produce("st", b"before", partition=0)
    assert cluster.terminate("n1") == 0
    assert "Traceback" not in cluster.log_text("n1")
    client.produce("st", b"during", partition=0)
    cluster.start("n1")
    cluster.wait_for_leaders(deadline=WAIT_S)
    client.produce("st", b"after", partition=0)
    assert [v for _, v in read_all(client, "st")] == [b"before", b"during", b"after"]


def test_pausing_the_partition_leader_fails_over_and_it_steps_down_on_resume(
    cluster: LocalCluster, client: Client
) -> None:
    client.create_topic("pz", partitions=1, replicas=3)
    gid = group_of(client, "pz")
    with Producing(client, "pz") as producer:
        producer.wait_for_more(30)
        leader = cluster.leader_of(gid)
        cluster.pause(leader)  # SIGSTOP: alive but silent, like a long GC pause
        producer.wait_for_more(30)
        cluster.resume(leader)
        producer.wait_for_more(30)
    check_log(read_all(client, "pz"), producer.acked)

    def leaders() -> set[str]:
        statuses = cluster.wait_for_leaders(deadline=WAIT_S)
        return {
            s["node"]
            for s in statuses.values()
            for g in s.get("groups", [])
            if g["group"] == gid and g["role"] == "leader"
        }

    # The resumed old leader learns the new term from the next message and steps down.
    wait_until(lambda: len(leaders()) == 1, f"a single leader of group {gid} after resume")
