"""The client and the data-path CLI against real node processes (LocalCluster).

Slow-ish (starts 3 nodes per test): marked integration.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from raftlog.client.sync import Client
from raftlog.server.cli import main

from tests.server.cluster_harness import LocalCluster, local_cluster  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def started(local_cluster: Callable[..., LocalCluster]) -> LocalCluster:  # noqa: F811
    cluster = local_cluster(3)
    cluster.start_all()
    cluster.wait_for_leaders(deadline=60)
    return cluster


def test_cli_roundtrip_and_exit_codes_on_a_real_cluster(
    local_cluster: Callable[..., LocalCluster],  # noqa: F811
):
    cluster = started(local_cluster)
    cfg = ["--config", str(cluster.config_path)]
    runner = CliRunner()
    created = runner.invoke(main, ["topic", "create", "it", "--partitions", "2", *cfg])
    assert created.exit_code == 0, created.output
    exists = runner.invoke(main, ["topic", "create", "it", *cfg])
    assert exists.exit_code == 1 and "TOPIC_EXISTS" in exists.output
    produced = runner.invoke(main, ["produce", "it", "--partition", "1", *cfg], input="x\ny\nz\n")
    assert produced.exit_code == 0, produced.output
    first = runner.invoke(
        main, ["consume", "it", "--partition", "1", "--group", "g", "--max", "2", *cfg]
    )
    assert first.stdout.splitlines() == ["x", "y"]
    rest = runner.invoke(
        main, ["consume", "it", "--partition", "1", "--group", "g", "--format", "json", *cfg]
    )
    assert [json.loads(line)["value"] for line in rest.stdout.splitlines()] == ["z"]
    described = runner.invoke(main, ["topic", "describe", "it", "--json", *cfg])
    parts = json.loads(described.stdout)["partitions"]
    assert [(p["partition"], p["end_offset"]) for p in parts] == [(0, 0), (1, 3)]
    with Client(cluster.addresses()) as client:
        views = client.cluster_status()
        assert set(views) == set(cluster.node_ids())
        assert all("groups" in view for view in views.values())
        md = client.produce("it", b"v", key=b"k", headers={"h": b"1"}, timestamp_ms=1234)
        record = client.fetch("it", md.partition, md.offset).records[0]
        assert (record.key, record.value, record.headers, record.timestamp_ms) == (
            b"k",
            b"v",
            {"h": b"1"},
            1234,
        )
        # A compressed batch is stored as it came; every reader, the CLI too, decompresses.
        with client.producer(compression="zstd", linger=0.05) as producer:
            for i in range(40):
                producer.send("it", b"zipped record %d" % i, partition=0)
        zipped = runner.invoke(
            main, ["consume", "it", "--partition", "0", "--from-beginning", "--max", "40", *cfg]
        )
        assert zipped.stdout.splitlines() == [f"zipped record {i}" for i in range(40)]
    # topic alter: more partitions and a retention limit; a client that cached the
    # topic before sees the new partitions once its metadata is older than max age.
    with Client(cluster.addresses(), metadata_max_age=0.2) as watcher:
        assert watcher.partitions_for("it") == 2
        altered = runner.invoke(
            main, ["topic", "alter", "it", "--partitions", "4", "--retention-ms", "600000", *cfg]
        )
        assert altered.exit_code == 0, altered.output
        assert "altered topic it: 4 partition(s); retention_ms=600000" in altered.stdout
        end = time.monotonic() + 10
        while watcher.partitions_for("it") != 4:
            assert time.monotonic() < end, "the client never saw the new partitions"
            time.sleep(0.05)
        assert watcher.produce("it", b"new", partition=3).offset == 0
    shrink = runner.invoke(main, ["topic", "alter", "it", "--partitions", "2", *cfg])
    assert shrink.exit_code == 1 and "INVALID_REQUEST" in shrink.output
    assert "never shrink" in shrink.output
    nothing = runner.invoke(main, ["topic", "alter", "it", *cfg])
    assert nothing.exit_code == 2 and "nothing to alter" in nothing.output
    unlimited = runner.invoke(main, ["topic", "alter", "it", "--retention-ms", "0", *cfg])
    assert "4 partition(s); no retention limit" in unlimited.stdout, unlimited.output
    deleted = runner.invoke(main, ["topic", "delete", "it", *cfg])
    assert deleted.exit_code == 0, deleted.output
    gone = runner.invoke(main, ["topic", "describe", "it", *cfg])
    assert gone.exit_code == 1 and "UNKNOWN_TOPIC" in gone.output
    cluster.stop_all()
    down = runner.invoke(main, ["topic", "list", "--timeout", "1", *cfg])
    assert down.exit_code == 3


def test_producer_survives_leader_kill_exactly_once_in_order(
    local_cluster: Callable[..., LocalCluster],  # noqa: F811
):
    cluster = started(local_cluster)
    with Client(cluster.addresses(), request_timeout=30) as client:
        client.create_topic("kill", partitions=1, replicas=3)
        leader = client.describe_topic("kill")["partitions"][0]["leader"]
        killed = threading.Event()
        with client.producer(linger=0.002, batch_size=2000, delivery_timeout=60) as producer:
            futures = []
            for i in range(2000):
                futures.append(producer.send("kill", b"k%d" % i, partition=0))
                if i == 700:
                    futures[-1].result(30)  # the cluster is taking writes
                    cluster.kill(leader)
                    killed.set()
            producer.flush()
        acked = [(i, f.result().offset) for i, f in enumerate(futures) if f.exception() is None]
        values: list[bytes] = []
        offset = 0
        while True:
            batch = client.fetch("kill", 0, offset).records
            if not batch:
                break
            values.extend(r.value for r in batch)
            offset = batch[-1].offset + 1
    assert killed.is_set()
    assert len(values) == len(set(values)), "a record was appended twice"
    for i, off in acked:  # every acknowledged record is where its ack said
        assert values[off] == b"k%d" % i
    numbers = [int(v[1:]) for v in values]
    assert numbers == sorted(numbers), "records of one partition out of send order"
    assert len(acked) == 2000  # retries with the same sequence hid the failover


def test_consumer_resumes_from_its_commit_across_a_leader_kill(
    local_cluster: Callable[..., LocalCluster],  # noqa: F811
):
    cluster = started(local_cluster)
    with Client(cluster.addresses(), request_timeout=30) as client:
        client.create_topic("resume", partitions=1, replicas=3)
        client.produce_batch("resume", 0, [b"m%d" % i for i in range(10)])
        first = client.consumer("g", "resume", max_records=4)
        got = first.poll(0.0)
        assert [r.value for _p, r in got] == [b"m0", b"m1", b"m2", b"m3"]
        first.commit()
        first.close()  # a group member: leave, so the next member gets the partition
        leader = client.describe_topic("resume")["partitions"][0]["leader"]
        cluster.kill(leader)
        # A new consumer of the group (a restarted service) continues after the
        # commit, which survived the loss of the leader that accepted it.
        second = client.consumer("g", "resume")
        rest = [r.value for _p, r in second.records()]
        assert rest == [b"m%d" % i for i in range(4, 10)]
        second.commit()
        assert second.committed() == {0: 10}


def test_producer_survives_a_paused_leader_exactly_once_in_order(
    local_cluster: Callable[..., LocalCluster],  # noqa: F811
):
    # SIGSTOP keeps the old leader's sockets open but silent: the client must
    # give up on it per attempt (not per deadline) and find the new leader.
    cluster = started(local_cluster)
    with Client(cluster.addresses(), request_timeout=4) as client:
        client.create_topic("pause", partitions=1, replicas=3)
        leader = client.describe_topic("pause")["partitions"][0]["leader"]
        with client.producer(linger=0.002, batch_size=2000, delivery_timeout=60) as producer:
            futures = [producer.send("pause", b"p%d" % i, partition=0) for i in range(300)]
            futures[-1].result(30)
            cluster.pause(leader)
            try:
                futures += [
                    producer.send("pause", b"p%d" % i, partition=0) for i in range(300, 600)
                ]
                producer.flush()
            finally:
                cluster.resume(leader)
        acked = [(i, f.result().offset) for i, f in enumerate(futures) if f.exception() is None]
        values: list[bytes] = []
        offset = 0
        while True:
            batch = client.fetch("pause", 0, offset).records
            if not batch:
                break
            values.extend(r.value for r in batch)
            offset = batch[-1].offset + 1
    assert len(acked) == 600
    assert len(values) == len(set(values)) == 600
    assert [int(v[1:]) for v in values] == list(range(600))
    for i, off in acked:
        assert values[off] == b"p%d" % i
