"""The blocking Client, SyncProducer and SyncConsumer used from plain threads."""

from __future__ import annotations

import threading

import pytest
from raftlog.client.errors import UnknownTopicError
from raftlog.client.sync import Client

from .fake_server import FakeCluster


def test_sync_client_from_a_plain_thread(sync_fake: FakeCluster):
    with Client(sync_fake.bootstrap()) as client:
        md = client.produce("t", "hello", partition=0)
        assert md.offset == 0
        assert client.fetch("t", 0, 0).records[0].value == b"hello"
        with pytest.raises(UnknownTopicError):
            client.produce("missing", b"x")
        assert client.list_topics() == ["t"]


def test_sync_client_shared_by_many_threads(sync_fake: FakeCluster):
    with Client(sync_fake.bootstrap()) as client:
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for j in range(20):
                    client.produce("t", f"{i}-{j}", partition=1)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        assert client.list_offsets("t", 1).end_offset == 80
    assert sorted(sync_fake.values("t", 1)) == sorted(
        f"{i}-{j}".encode() for i in range(4) for j in range(20)
    )


def test_sync_producer_and_consumer_roundtrip(sync_fake: FakeCluster):
    with Client(sync_fake.bootstrap()) as client:
        with client.producer(linger=0.005) as producer:
            futures = [producer.send("t", b"m%d" % i, partition=0) for i in range(500)]
            producer.flush()
            assert [f.result(5).offset for f in futures] == list(range(500))
        consumer = client.consumer("g", "t", partitions=[0], max_records=100)
        values = [r.value for _p, r in consumer.records()]
        assert values == [b"m%d" % i for i in range(500)]
        consumer.commit()
        assert consumer.committed() == {0: 500}


def test_closed_client_refuses_calls(sync_fake: FakeCluster):
    client = Client(sync_fake.bootstrap())
    client.close()
    with pytest.raises(RuntimeError):
        client.list_topics()


def test_sync_delivery_result_times_out_while_pending(sync_fake: FakeCluster):
    sync_fake.blackhole.add("produce")
    with Client(sync_fake.bootstrap(), request_timeout=6) as client:
        producer = client.producer(linger=0.0, delivery_timeout=6)
        handle = producer.send("t", b"stuck", partition=0)
        with pytest.raises(TimeoutError):
            handle.result(timeout=0.2)
        assert not handle.done()
        sync_fake.blackhole.clear()
        # that attempt never answers; the next one (after 2 s) lands within the deadline
        assert handle.result(timeout=20).offset == 0
        assert handle.exception() is None
        producer.close()


def test_sync_consumer_positions_advance_per_record(sync_fake: FakeCluster):
    with Client(sync_fake.bootstrap()) as client:
        client.produce_batch("t", 1, [b"a", b"b", b"c", b"d"])
        consumer = client.consumer("g2", "t", partitions=[1])
        for _p, record in consumer.records():
            if record.value == b"b":
                break
        assert consumer.position(1) == 2
        consumer.commit()
        assert consumer.committed() == {1: 2}
