"""Producer batching, ordering, flush and delivery callbacks against the fake cluster."""

from __future__ import annotations

import math

import msgpack
import pytest
import trio
from raftlog.client import producer as producer_module
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import ErrorCode, RecordTooLargeError, UnknownTopicError
from raftlog.client.producer import Producer

from .fake_server import FakeCluster


def produce_requests(fake: FakeCluster) -> list[dict]:
    return [f for node, op, f in fake.requests if op == "produce" and node == fake.leader]


async def test_records_are_batched_up_to_batch_size(fake: FakeCluster):
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, batch_size=1000, linger=10.0) as producer,
    ):
        deliveries = [await producer.send("t", b"x" * 84, partition=0) for _ in range(30)]
        offsets = [(await d).offset for d in deliveries]
    assert offsets == list(range(30))
    batches = produce_requests(fake)
    # 100 bytes per record (84 + 16 overhead) => 10 per 1000-byte batch
    assert [b["count"] for b in batches] == [10, 10, 10]
    assert fake.values("t", 0) == [b"x" * 84] * 30


async def test_linger_sends_a_partial_batch_without_flush(fake: FakeCluster):
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, batch_size=1 << 20, linger=0.01) as producer,
    ):
        delivery = await producer.send("t", b"lonely", partition=1)
        with trio.fail_after(5):
            md = await delivery
        assert md.offset == 0 and md.partition == 1


async def test_flush_waits_for_every_delivery_and_keeps_order(fake: FakeCluster):
    fake.reply_delay["produce"] = 0.01
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, batch_size=200, linger=1.0) as producer,
    ):
        deliveries = [await producer.send("t", f"v{i}".encode(), partition=0) for i in range(200)]
        await producer.flush()
        assert all(d.done() for d in deliveries)
    assert fake.values("t", 0) == [f"v{i}".encode() for i in range(200)]
    assert [d.result().offset for d in deliveries] == list(range(200))
    assert len(produce_requests(fake)) > 5  # several batches were in flight together


async def test_batch_retried_after_not_leader_keeps_its_sequence(fake: FakeCluster):
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, batch_size=1 << 20, linger=0.0) as producer,
    ):
        await (await producer.send("t", b"first", partition=0))
        fake.errors["produce"] = [
            (ErrorCode.NOT_LEADER, {"leader": "n2", "leader_address": fake.address("n2")})
        ]
        md = await (await producer.send("t", b"second", partition=0))
    assert md.offset == 1
    seqs = [f["sequence"] for f in produce_requests(fake)]
    assert seqs[-2:] == [1, 1]  # the rejected attempt and its retry
    assert fake.values("t", 0) == [b"first", b"second"]


async def test_callbacks_report_metadata_and_errors(fake: FakeCluster):
    seen: list[tuple[object, object]] = []
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, linger=0.0) as producer,
    ):
        d = await producer.send(
            "t", b"a", partition=0, callback=lambda md, err: seen.append((md, err))
        )
        await d
        fake.errors["produce"] = [(ErrorCode.CORRUPT_BATCH, {})]
        bad = await producer.send(
            "t", b"b", partition=0, callback=lambda md, err: seen.append((md, err))
        )
        await producer.flush()
    assert seen[0][0].offset == 0 and seen[0][1] is None
    assert seen[1][0] is None and seen[1][1].code == ErrorCode.CORRUPT_BATCH
    assert bad.done()


async def test_keyed_records_go_to_their_partition_as_one_encoded_batch(fake: FakeCluster):
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, linger=0.05) as producer,
    ):
        deliveries = [await producer.send("t", b"v%d" % i, key=b"same") for i in range(5)]
        parts = {(await d).partition for d in deliveries}
    assert len(parts) == 1
    (batch,) = produce_requests(fake)
    rows = msgpack.unpackb(batch["records"], raw=False)
    assert [r[1] for r in rows] == [b"same"] * 5 and batch["count"] == 5


async def test_unknown_topic_raises_from_send(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client, Producer(client) as producer:
        try:
            await producer.send("missing", b"x")
        except UnknownTopicError:
            pass
        else:
            raise AssertionError("send to a missing topic did not raise")


async def test_a_retrying_batch_is_never_overtaken_beyond_the_dedup_window(fake: FakeCluster):
    # The first batch is applied but its reply is lost (connection dropped);
    # every batch then in flight retries. Newer batches must not move more than
    # 5 batches past the retrying one, or its retry falls out of the server's
    # dedup window (DUPLICATE_SEQUENCE) and its offset is lost.
    async with AsyncClient(fake.bootstrap()) as client:
        await client.produce("t", b"warm", partition=0)  # producer id + connection ready
        fake.drop_after_apply = 1
        # ...and the retries of that batch (sequence 1) are held back for a while.
        fake.produce_errors_by_seq[1] = [(ErrorCode.NOT_AVAILABLE, {})] * 5
        async with Producer(client, linger=0.0) as producer:
            deliveries = [await producer.send("t", b"r%d" % i, partition=0) for i in range(40)]
            await producer.flush()
    errors = [d.exception() for d in deliveries if d.exception() is not None]
    assert errors == []
    assert fake.values("t", 0) == [b"warm"] + [b"r%d" % i for i in range(40)]
    assert [d.result().offset for d in deliveries] == list(range(1, 41))


async def test_a_spurious_out_of_order_reply_does_not_reset_the_producer(fake: FakeCluster):
    # A real server may evaluate a batch before an older concurrent one is
    # applied and answer OUT_OF_ORDER_SEQUENCE even though there is no gap;
    # the client must retry the same sequence rather than switch producer id
    # (which would let later batches overtake it).
    fake.produce_errors_by_seq[1] = [(ErrorCode.OUT_OF_ORDER_SEQUENCE, {})]
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, linger=0.0) as producer,
    ):
        deliveries = [await producer.send("t", b"s%d" % i, partition=0) for i in range(10)]
        await producer.flush()
    assert [d.result().offset for d in deliveries] == list(range(10))
    assert fake.values("t", 0) == [b"s%d" % i for i in range(10)]
    pids = {f["producer_id"] for _n, op, f in fake.requests if op == "produce"}
    assert len(pids) == 1


async def test_records_without_key_stick_to_a_partition_per_batch(fake: FakeCluster):
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, batch_size=500, linger=10.0) as producer,
    ):
        deliveries = [await producer.send("t", b"v" * 34) for _ in range(40)]  # 50 B each
        await producer.flush()
    batches = produce_requests(fake)
    assert [b["count"] for b in batches] == [10, 10, 10, 10]  # full batches, not 1-record ones
    assert {b["partition"] for b in batches} == {0, 1}  # and they rotate
    assert sorted((d.result().partition, d.result().offset) for d in deliveries) == sorted(
        [(0, i) for i in range(20)] + [(1, i) for i in range(20)]
    )


async def test_closing_without_flush_fails_pending_deliveries(fake: FakeCluster):
    fake.blackhole.add("produce")  # the in-flight batch never gets an answer
    async with AsyncClient(fake.bootstrap()) as client:
        with trio.move_on_after(0.3):  # leave the block by cancellation: no flush
            async with Producer(client, linger=10.0, batch_size=100) as producer:
                sent = await producer.send("t", b"x" * 90, partition=0)  # fills a batch
                queued = await producer.send("t", b"y", partition=0)  # waits for linger
                await trio.sleep_forever()
    assert sent.done() and queued.done()
    assert sent.exception().code == ErrorCode.TIMEOUT  # outcome unknown
    assert queued.exception().code == ErrorCode.NOT_AVAILABLE  # never sent


async def test_batches_stay_under_the_topics_max_message_bytes(fake: FakeCluster):
    fake.topics["t"]["config"]["max_message_bytes"] = 1000
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, batch_size=64 * 1024, linger=10.0) as producer,
    ):
        deliveries = [await producer.send("t", b"x" * 84, partition=0) for _ in range(30)]
        offsets = [(await d).offset for d in deliveries]
    assert offsets == list(range(30))
    batches = produce_requests(fake)
    # The topic's cap, not batch_size, closes each batch: 10 estimated 100-byte records.
    assert [b["count"] for b in batches] == [10, 10, 10]
    assert all(len(b["records"]) <= 1000 for b in batches)
    assert fake.values("t", 0) == [b"x" * 84] * 30


async def test_a_batch_over_the_limit_once_encoded_goes_out_in_pieces_in_order(
    fake: FakeCluster,
):
    # Many small headers: the producer's size estimate counts their bytes, not
    # their framing, so a batch it closes at 2,000 bytes encodes much larger.
    limit = 2000
    fake.topics["t"]["config"]["max_message_bytes"] = limit
    headers = {f"h{i}": b"" for i in range(100)}
    got: list[tuple[int, BaseException | None]] = []
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, linger=10.0) as producer,
    ):
        deliveries = []
        for i in range(40):
            callback = (lambda md, exc: got.append((md.offset, exc))) if i % 7 == 0 else None
            deliveries.append(
                await producer.send("t", f"v{i}".encode(), partition=0, headers=headers,
                                    callback=callback)
            )  # fmt: skip
        await producer.flush()
    batches = produce_requests(fake)
    assert all(len(b["records"]) <= limit for b in batches)
    # The producer's estimate of a record (client/producer.py send), at its smallest.
    estimate = len("v0") + 16 + sum(len(k) for k in headers)
    sealed_at_most = math.ceil(40 / (limit // estimate))
    assert len(batches) > sealed_at_most  # split: more requests than batches sealed
    assert fake.values("t", 0) == [f"v{i}".encode() for i in range(40)]
    assert [d.result().offset for d in deliveries] == list(range(40))
    assert got == [(i, None) for i in range(0, 40, 7)]
    assert producer.stats["errors"] == 0


async def test_a_record_the_topic_cannot_take_fails_alone(fake: FakeCluster):
    fake.topics["t"]["config"]["max_message_bytes"] = 1000
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, linger=10.0) as producer,
    ):
        # A value over the limit by itself is refused before it is queued.
        with pytest.raises(RecordTooLargeError, match="max_message_bytes=1000"):
            await producer.send("t", b"x" * 1001, partition=0)
        # One that fits only without its framing goes out alone and is refused by
        # the node; its neighbours in the same batch land, in order.
        small = [await producer.send("t", b"a", partition=0) for _ in range(3)]
        edge = await producer.send("t", b"e" * 999, partition=0)
        after = [await producer.send("t", b"b", partition=0) for _ in range(3)]
        await producer.flush()
        assert isinstance(edge.exception(), RecordTooLargeError)
        assert [d.result().offset for d in small + after] == list(range(6))
        later = await producer.send("t", b"c", partition=0)  # the producer goes on
        assert (await later).offset == 6
    assert fake.values("t", 0) == [b"a"] * 3 + [b"b"] * 3 + [b"c"]


def _refusals(fake: FakeCluster, limit: int) -> int:
    """Produce requests the fake refused as over ``limit``."""
    return sum(len(b["records"]) > limit for b in produce_requests(fake))


@pytest.mark.parametrize("idempotent", [True, False])
async def test_a_batch_refused_under_a_lowered_limit_is_split_and_sent_in_its_place(
    fake: FakeCluster, idempotent: bool
):
    # Kafka's KIP-126: the topic's limit is lowered after the producer read its
    # metadata, so every batch in flight is refused as too large. Each is split
    # until its pieces fit and sent again in its place: nothing fails, nothing
    # is reordered, and the idempotent producer keeps its producer id (the
    # pieces reuse the refused batch's sequence numbers).
    limit = 1000
    values = [b"%03d" % i + b"." * 90 for i in range(120)]
    async with (
        AsyncClient(fake.bootstrap(), idempotent=idempotent) as client,
        Producer(client, batch_size=3000, linger=10.0) as producer,
    ):
        deliveries = [await producer.send("t", values[0], partition=0)]
        fake.topics["t"]["config"]["max_message_bytes"] = limit
        deliveries += [await producer.send("t", v, partition=0) for v in values[1:90]]
        await producer.flush()
        refused = _refusals(fake, limit)
        # The producer read the new limit: later batches are sealed under it.
        deliveries += [await producer.send("t", v, partition=0) for v in values[90:]]
        await producer.flush()
    assert refused >= 2  # several batches in flight were refused, each was split
    assert _refusals(fake, limit) == refused
    assert producer.stats["errors"] == 0
    stored = fake.values("t", 0)
    assert [stored[d.result().offset] for d in deliveries] == values  # each once, where told
    if idempotent:
        assert stored == values
        assert [d.result().offset for d in deliveries] == list(range(120))
        assert len({b["producer_id"] for b in produce_requests(fake)}) == 1
    else:
        # Without sequence numbers nothing holds a later batch back while a
        # refused one is split, as with any retry (Kafka without idempotence).
        assert sorted(stored) == values


async def test_a_node_that_names_no_limit_gets_halves_until_they_fit(fake: FakeCluster):
    # A node from before the split names no limit in its refusal: the producer
    # halves the batch until the pieces fit.
    fake.names_batch_limit = False
    values = [b"v%03d" % i + b"." * 60 for i in range(60)]
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, linger=10.0) as producer,
    ):
        deliveries = [await producer.send("t", values[0], partition=0)]
        fake.topics["t"]["config"]["max_message_bytes"] = 700
        deliveries += [await producer.send("t", v, partition=0) for v in values[1:]]
        await producer.flush()
    stored = [len(blob) for *_, blob in fake.partitions[("t", 0)].batches]
    assert len(stored) >= 4 and max(stored) <= 700
    # Halving makes a binary tree of pieces: one refusal per piece split.
    assert _refusals(fake, 700) == len(stored) - 1
    assert fake.values("t", 0) == values
    assert [d.result().offset for d in deliveries] == list(range(60))


async def test_a_record_too_large_alone_fails_and_the_records_around_it_land(fake: FakeCluster):
    # The lowered limit is under one record's size: that record fails with
    # RECORD_TOO_LARGE, and the records before and after it, in its batch and
    # in the batches behind it, land in order (under a fresh producer id: its
    # sequence number was never appended).
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, batch_size=4000, linger=10.0) as producer,
    ):
        before = [await producer.send("t", b"a%02d" % i, partition=0) for i in range(20)]
        fake.topics["t"]["config"]["max_message_bytes"] = 500
        big = await producer.send("t", b"B" * 600, partition=0)
        after = [await producer.send("t", b"c%02d" % i, partition=0) for i in range(20)]
        await producer.flush()
        assert isinstance(big.exception(), RecordTooLargeError)
        assert "max_message_bytes=500" in str(big.exception())
        landed = before + after
        assert [d.result().offset for d in landed] == list(range(40))
        assert producer.stats["failed_records"] == 1
    expected = [b"a%02d" % i for i in range(20)] + [b"c%02d" % i for i in range(20)]
    assert fake.values("t", 0) == expected


async def test_a_refusal_after_an_unknown_outcome_is_not_split(fake: FakeCluster):
    # The batch was appended but its reply was lost; its retry is refused as too
    # large. Split, its pieces would carry new (sequence, count) pairs the dedup
    # window does not know, and the records would be appended twice. The
    # outcome stays unknown instead.
    async with AsyncClient(fake.bootstrap()) as client:
        await client.produce("t", b"warm", partition=0)  # producer id + connection ready
        warm_up = len(fake.requests)
        fake.drop_after_apply = 1
        fake.errors_after_drop = [(ErrorCode.RECORD_TOO_LARGE, {"limit": 50})]
        async with Producer(client, linger=10.0) as producer:
            deliveries = [await producer.send("t", b"r%d" % i, partition=0) for i in range(10)]
            await producer.flush()
    assert all(d.exception().code == ErrorCode.TIMEOUT for d in deliveries)
    assert fake.values("t", 0) == [b"warm"] + [b"r%d" % i for i in range(10)]
    # Any node may have seen the retry (the client forgets a leader whose connection
    # dropped): every produce after the warm-up carried the whole batch, no pieces.
    counts = [f["count"] for _node, op, f in fake.requests[warm_up:] if op == "produce"]
    assert len(counts) >= 2 and counts == [10] * len(counts)


async def test_the_client_follows_the_limits_the_nodes_announce(fake: FakeCluster):
    # cluster.toml's [limits] reach the client in each node's hello: raising
    # max_record_bytes there is enough (etcd users must raise it on every
    # client too), and producers keep under the nodes' max_batch_bytes.
    fake.limits = {"max_record_bytes": 2 << 20, "max_batch_bytes": 3 << 20}
    big = b"b" * ((1 << 20) + 1)  # over the client's own default
    async with AsyncClient(fake.bootstrap()) as client:
        assert (await client.produce("t", big, partition=0)).offset == 0
        assert client.max_record_bytes == 2 << 20 and client.max_batch_bytes == 3 << 20
        with pytest.raises(RecordTooLargeError, match=f"max_record_bytes={2 << 20}"):
            await client.produce("t", b"x" * ((2 << 20) + 1), partition=0)
    fake.limits = {"max_record_bytes": 600, "max_batch_bytes": 1000}
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, linger=10.0) as producer,
    ):
        with pytest.raises(RecordTooLargeError, match="max_record_bytes=600"):
            await producer.send("t", b"x" * 601, partition=1)
        deliveries = [await producer.send("t", b"y" * 84, partition=1) for _ in range(30)]
        await producer.flush()
        assert [d.result().offset for d in deliveries] == list(range(30))
    assert all(len(b["records"]) <= 1000 for b in produce_requests(fake) if b["partition"] == 1)
    # A client told its own limit keeps it.
    async with AsyncClient(fake.bootstrap(), max_record_bytes=100) as client:
        with pytest.raises(RecordTooLargeError, match="max_record_bytes=100"):
            await client.produce("t", b"z" * 101, partition=0)


async def test_a_raised_limit_reaches_the_next_batches_within_metadata_max_age(
    fake: FakeCluster,
):
    # An operator lowers the limit, then raises it again. The producer learns the
    # lower one from the node's refusal; the raise it learns only from its
    # metadata, which it refreshes once older than metadata_max_age (Kafka's
    # metadata.max.age.ms). Before that refresh existed it sealed small batches
    # for good (seen in a jepsen run: 9 records a batch before a lowered limit,
    # 1.6 after it was removed).
    values = [b"%03d" % i + b"." * 90 for i in range(40)]
    async with (
        AsyncClient(fake.bootstrap(), metadata_max_age=0.2) as client,
        Producer(client, batch_size=3000, linger=10.0) as producer,
    ):
        await producer.send("t", values[0], partition=0)
        await producer.flush()
        fake.topics["t"]["config"]["max_message_bytes"] = 300
        for v in values[1:20]:
            await producer.send("t", v, partition=0)
        await producer.flush()
        assert client.max_message_bytes("t") == 300  # learnt from the refusal
        fake.topics["t"]["config"].pop("max_message_bytes")
        with trio.fail_after(5):
            while client.max_message_bytes("t") is not None:
                # Each batch sent gives the producer a chance to see its metadata
                # is stale: one record at a time, flushed.
                await producer.send("t", values[20], partition=0)
                await producer.flush()
        sent_before = len(produce_requests(fake))
        for v in values[21:]:
            await producer.send("t", v, partition=0)
        await producer.flush()
    # The last 19 records (about 110 bytes each) share one batch under 3000 bytes.
    assert len(produce_requests(fake)) == sent_before + 1
    assert fake.values("t", 0)[-19:] == values[21:]


@pytest.mark.parametrize("recheck_s", [0.0, 3600.0])
async def test_a_record_over_a_limit_raised_since_is_taken_after_a_metadata_refresh(
    fake: FakeCluster, monkeypatch: pytest.MonkeyPatch, recheck_s: float
):
    # The producer refuses a record over its topic's limit before queueing it,
    # by the limit its metadata last saw. Raised since, the record must not be
    # refused on stale metadata: the producer asks again, unless it did within
    # LIMIT_RECHECK_S (so a stream of records too large costs few requests).
    monkeypatch.setattr(producer_module, "LIMIT_RECHECK_S", recheck_s)
    fake.topics["t"]["config"]["max_message_bytes"] = 1000
    async with (
        AsyncClient(fake.bootstrap()) as client,
        Producer(client, linger=10.0) as producer,
    ):
        await producer.send("t", b"small", partition=0)
        await producer.flush()
        fake.topics["t"]["config"]["max_message_bytes"] = 5000
        asked = sum(op == "metadata" for _node, op, _f in fake.requests)
        if recheck_s > 0:
            with pytest.raises(RecordTooLargeError, match="max_message_bytes=1000"):
                await producer.send("t", b"x" * 2000, partition=0)
            assert sum(op == "metadata" for _node, op, _f in fake.requests) == asked
            return
        big = await producer.send("t", b"x" * 2000, partition=0)
        await producer.flush()
    assert big.result().offset == 1
    assert fake.values("t", 0) == [b"small", b"x" * 2000]
