"""Consumer: start positions, commits, resume, seek, long poll."""

from __future__ import annotations

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer

from .fake_server import FakeCluster


async def fill(client: AsyncClient, partition: int, n: int) -> None:
    await client.produce_batch("t", partition, [b"p%d-%d" % (partition, i) for i in range(n)])


async def test_consumer_reads_all_partitions_from_earliest(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        await fill(client, 0, 3)
        await fill(client, 1, 2)
        consumer = Consumer(client, "g", "t", max_wait=0.0)
        got = await consumer.poll()
        assert consumer.at_end()
    assert sorted((p, r.offset) for p, r in got) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]


async def test_consumer_resumes_from_committed_offset(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        await fill(client, 0, 5)
        first = Consumer(client, "g", "t", partitions=[0], max_records=2, max_wait=0.0)
        got = await first.poll()
        assert [r.offset for _p, r in got] == [0, 1]
        assert await first.commit() == {0: 2}
        assert await first.committed() == {0: 2}
        # a new consumer of the same group (a restart) continues after the commit
        second = Consumer(client, "g", "t", partitions=[0], max_wait=0.0)
        rest = await second.poll()
    assert [r.offset for _p, r in rest] == [2, 3, 4]
    assert fake.committed[("g", "t", 0)][0] == 2


async def test_latest_reset_skips_existing_records(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        await fill(client, 0, 4)
        consumer = Consumer(
            client, "fresh", "t", partitions=[0], auto_offset_reset="latest", max_wait=0.0
        )
        assert await consumer.poll() == []
        assert consumer.position(0) == 4
        await client.produce("t", b"new", partition=0)
        got = await consumer.poll()
    assert [(r.offset, r.value) for _p, r in got] == [(4, b"new")]


async def test_seek_and_position(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        await fill(client, 0, 5)
        consumer = Consumer(client, None, "t", partitions=[0], max_wait=0.0)
        consumer.seek(0, 3)
        got = await consumer.poll()
        assert [r.offset for _p, r in got] == [3, 4]
        assert consumer.position(0) == 5
        with pytest.raises(ValueError):
            await consumer.commit()  # no group


async def test_async_iteration_long_polls_for_new_records(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        consumer = Consumer(client, "g", "t", max_wait=5.0)
        got: list[bytes] = []

        async def read_two():
            async for _p, record in consumer:
                got.append(record.value)
                if len(got) == 2:
                    return

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_two)
                await fake.fetch_parked.wait()
                await client.produce("t", b"a", partition=0)
                await client.produce("t", b"b", partition=1)
    assert sorted(got) == [b"a", b"b"]


async def test_out_of_range_position_resets_to_start(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        await fill(client, 0, 4)
        fake.partitions[("t", 0)].start_offset = 2  # retention removed 0..1
        consumer = Consumer(client, None, "t", partitions=[0], max_wait=0.0)
        consumer.seek(0, 0)
        assert await consumer.poll() == []  # the reset itself
        got = await consumer.poll()
    assert consumer.position(0) == 4
    assert [r.offset for _p, r in got] == [2, 3]


async def test_breaking_out_of_iteration_commits_only_what_was_handed_out(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        await fill(client, 0, 10)  # one fetch returns all ten
        consumer = Consumer(client, "g", "t", partitions=[0], max_wait=0.0)
        seen = []
        async for _p, record in consumer:
            seen.append(record.offset)
            if len(seen) == 3:
                break
        assert await consumer.commit() == {0: 3}
        again = Consumer(client, "g", "t", partitions=[0], max_wait=0.0)
        rest = await again.poll()
    assert seen == [0, 1, 2]
    assert [r.offset for _p, r in rest] == list(range(3, 10))
