"""Batch compression: the Producer compresses, the cluster stores the bytes as
they came, every reader decompresses (client/compression.py)."""

from __future__ import annotations

import os
import threading

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from raftlog.client import compression
from raftlog.client.aio import AsyncClient
from raftlog.client.compression import MAGIC, CompressionError
from raftlog.client.producer import Producer
from raftlog.client.protocol import crc_of, decode_batch, encode_record_rows

from .fake_server import FakeCluster

CODECS = ["gzip", "lz4", "zstd"]


def produce_requests(fake: FakeCluster) -> list[dict]:
    return [f for node, op, f in fake.requests if op == "produce" and node == fake.leader]


@pytest.mark.parametrize("codec", CODECS)
async def test_compressed_batches_travel_compressed_and_read_back_exactly(
    fake: FakeCluster, codec: str
):
    values = [b'{"user": %d, "event": "click", "page": "/home"}' % i for i in range(300)]
    async with AsyncClient(fake.bootstrap()) as client:
        async with Producer(client, batch_size=4096, linger=10.0, compression=codec) as producer:
            deliveries = [
                await producer.send("t", v, key=b"k%d" % (i % 3), partition=0, headers={"n": b"1"})
                for i, v in enumerate(values)
            ]
        offsets = [(await d).offset for d in deliveries]
        # A read from the middle of a compressed batch starts at the offset asked for.
        middle = await client.fetch("t", 0, 150, max_records=10)
    assert offsets == list(range(300))
    batches = produce_requests(fake)
    assert len(batches) > 1
    for batch in batches:
        blob = batch["records"]
        assert blob[:2] == bytes((MAGIC, compression.codec(codec).codec_id))
        assert batch["crc"] == crc_of(blob)  # the CRC covers the bytes that travel
        raw = msgpack.packb(msgpack.unpackb(compression.decompress(blob)), use_bin_type=True)
        assert len(blob) < len(raw) / 2
    assert fake.values("t", 0) == values
    assert [(r.offset, r.value, r.key, r.headers) for r in middle.records[:2]] == [
        (150, values[150], b"k0", {"n": b"1"}),
        (151, values[151], b"k1", {"n": b"1"}),
    ]


async def test_a_batch_that_does_not_shrink_goes_uncompressed(fake: FakeCluster):
    values = [os.urandom(100) for _ in range(50)]
    async with AsyncClient(fake.bootstrap()) as client:
        async with Producer(client, linger=10.0, compression="zstd") as producer:
            for v in values:
                await producer.send("t", v, partition=1)
        records = (await client.fetch("t", 1, 0)).records
    (batch,) = produce_requests(fake)
    assert batch["records"][0] != MAGIC  # a plain msgpack array
    assert [r.value for r in records] == values


async def test_compressed_and_plain_batches_mix_in_one_partition(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        for codec in ("none", "lz4", "none", "gzip"):
            async with Producer(client, linger=10.0, compression=codec) as producer:
                for i in range(20):
                    await producer.send("t", b"%s-%d" % (codec.encode(), i) * 4, partition=0)
        records = (await client.fetch("t", 0, 0, max_records=1000)).records
    kinds = [b["records"][0] == MAGIC for b in produce_requests(fake)]
    assert kinds == [False, True, False, True]
    assert [r.offset for r in records] == list(range(80))
    assert records[25].value == b"lz4-5" * 4


async def test_an_unknown_compression_is_refused_when_the_producer_is_made(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        with pytest.raises(ValueError, match="unknown compression 'snappy'"):
            Producer(client, compression="snappy")


def test_a_corrupt_or_unknown_compressed_batch_is_a_clear_error():
    blob, _, _ = encode_record_rows([[None, None, b"v" * 200, None]] * 20, "zstd")
    assert blob[0] == MAGIC
    with pytest.raises(CompressionError, match="corrupt zstd batch"):
        decode_batch(0, 0, blob[:-5] + b"\x00" * 5)
    with pytest.raises(CompressionError, match="unknown codec id 9"):
        decode_batch(0, 0, bytes((MAGIC, 9)) + blob[2:])
    with pytest.raises(CompressionError, match="too short"):
        decode_batch(0, 0, bytes((MAGIC,)))


@pytest.mark.parametrize("codec", CODECS)
def test_bounded_decompression_refuses_a_batch_that_grows_past_the_bound(codec):
    packed = b"\x00" * 1_000_000  # a "zip bomb": a few KiB that inflate a thousandfold
    blob = compression.compress(packed, codec)
    assert len(blob) < 10_000
    assert compression.decompress(blob, len(packed)) == packed  # the bound is inclusive
    with pytest.raises(CompressionError, match="more than 999999 bytes"):
        compression.decompress(blob, len(packed) - 1)


@pytest.mark.parametrize("codec", CODECS)
def test_threads_compress_and_decompress_at_once(codec):
    """A node checks and compacts batches in worker threads, several at once: a
    codec shared between threads must give every one of them its own bytes."""
    payloads = [os.urandom(200) * (50 + i) for i in range(16)]
    blobs = [compression.compress(p, codec) for p in payloads]
    failures: list[str] = []

    def work(start: int) -> None:
        try:
            for n in range(300):
                i = (n + start) % len(payloads)
                assert compression.decompress(blobs[i], 1 << 20) == payloads[i]
                again = compression.compress(payloads[i], codec)
                assert compression.decompress(again, 1 << 20) == payloads[i]
        except Exception as exc:  # collected: an exception in a thread fails nothing
            failures.append(repr(exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_bounded_zstd_without_a_content_size_in_its_frame():
    import zstandard

    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"z" * 100_000)
    blob = bytes((MAGIC, compression.codec("zstd").codec_id)) + frame
    assert compression.decompress(blob, 100_000) == b"z" * 100_000
    with pytest.raises(CompressionError, match="more than 99999 bytes"):
        compression.decompress(blob, 99_999)


rows = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 2**40)),
        st.one_of(st.none(), st.binary(max_size=20)),
        st.binary(max_size=300),
        st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.binary(max_size=5))),
    ).map(list),
    min_size=1,
    max_size=40,
)


@given(rows=rows, codec=st.sampled_from(["none", *CODECS]), base=st.integers(0, 2**40))
def test_every_batch_decodes_to_what_was_encoded(rows, codec, base):
    blob, count, crc = encode_record_rows(rows, codec)
    assert count == len(rows) and crc == crc_of(blob)
    records = decode_batch(base, 7, blob)
    assert [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in records] == [
        (base + i, 7 if ts is None else ts, key, value, headers)
        for i, (ts, key, value, headers) in enumerate(rows)
    ]
