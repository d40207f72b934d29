"""Compacted topics over real sockets, with the client library: three nodes, a
Producer writing keyed records and tombstones, a Consumer reading the result,
and topic configs a node must refuse."""

from __future__ import annotations

import re
import time
import zlib
from pathlib import Path

import msgpack
import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.compression import compress
from raftlog.client.consumer import Consumer
from raftlog.client.errors import InvalidRequestError
from raftlog.client.producer import Producer
from raftlog.server.config import ClusterConfig, Limits, RetentionConfig

from .cluster_harness import make_config
from .test_producer_expiry import scrape
from .test_tls_cluster import DEADLINE_S, FAST, running

ROUNDS = 30
KEYS = [b"user-%d" % i for i in range(4)]


async def read_all(client: AsyncClient, topic: str) -> list[tuple[int, bytes | None, bytes | None]]:
    """Every record from offset 0 to the end, fetch after fetch."""
    out = []
    offset = 0
    while True:
        result = await client.fetch(topic, 0, offset)
        out += [(r.offset, r.key, r.value) for r in result.records]
        offset = result.next_offset(offset)
        if offset >= result.end_offset:
            return out


async def read_until(
    client: AsyncClient, topic: str, want: list[tuple[int, bytes | None, bytes | None]]
) -> None:
    """Read the whole partition again until it holds exactly ``want`` (the
    caller's deadline bounds the wait; the leaders check every 50 ms)."""
    while True:
        if await read_all(client, topic) == want:
            return
        await trio.sleep(0.02)


async def test_a_compacted_topic_keeps_the_latest_value_of_each_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAFTLOG_COMPACTION_DIRTY_RATIO", "0")  # sweep whenever anything is new
    cfg = make_config(tmp_path, 3, retention=RetentionConfig(interval_ms=50), **FAST)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient([n.address for n in cfg.nodes], request_timeout=3.0) as client:
                # A keyless record from before the topic became compacted stays.
                await client.create_topic("kv", 1, 3)
                await client.produce("kv", b"no key", None, partition=0)
                config = {"cleanup_policy": "compact", "delete_retention_ms": 1}
                await client.alter_topic("kv", config=config)
                expected: dict[bytes, bytes] = {}
                async with Producer(client, linger=0.001) as producer:
                    for i in range(ROUNDS):
                        for key in KEYS:
                            value = b"%s=%d" % (key, i)
                            await producer.send("kv", value, key, partition=0)
                            expected[key] = value
                    # Deleted: the tombstone goes too (delete_retention_ms = 1), so
                    # the partition's last offsets end up holding no record at all.
                    await producer.send("kv", None, KEYS[0], partition=0)
                    del expected[KEYS[0]]
                end = ROUNDS * len(KEYS) + 2
                want = sorted([*expected.items(), (None, b"no key")], key=repr)
                while True:
                    got = await read_all(client, "kv")
                    if sorted(((k, v) for _, k, v in got), key=repr) == want:
                        break
                    await trio.sleep(0.02)  # the next sweep: a round every 50 ms
                offsets = [o for o, _, _ in got]
                assert offsets == sorted(offsets) and offsets[-1] < end - 1

                # A consumer from the beginning gets exactly those records, and does not
                # stop short of the end: the removed last offsets are skipped.
                consumer = Consumer(client, None, "kv", [0], max_wait=0.0)
                consumer.seek(0, 0)
                seen = []
                while not (seen and consumer.at_end()):
                    seen += [(r.key, r.value) for _, r in await consumer.poll()]
                assert sorted(seen, key=repr) == want
                assert consumer.position(0) == end


async def test_topic_configs_of_compaction_are_checked(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 3, **FAST)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient([n.address for n in cfg.nodes], request_timeout=3.0) as client:
                for bad in (
                    {"cleanup_policy": "shred"},
                    {"cleanup_policy": 1},
                    {"delete_retention_ms": -1},
                    {"min_compaction_lag_ms": "1h"},
                    {"max_compaction_lag_ms": 0},
                    {"min_compaction_lag_ms": 2000, "max_compaction_lag_ms": 1000},
                    {"min_cleanable_dirty_ratio": 0},
                    {"min_cleanable_dirty_ratio": 1.5},
                    {"min_cleanable_dirty_ratio": "0.5"},
                    {"min_cleanable_dirty_ratio": True},
                ):
                    with pytest.raises(InvalidRequestError):
                        await client.create_topic("t", 1, 3, bad)
                await client.create_topic("t", 1, 3, {"cleanup_policy": "delete"})
                altered = await client.alter_topic("t", config={"cleanup_policy": "compact"})
                assert altered["config"] == {"cleanup_policy": "compact"}
                with pytest.raises(InvalidRequestError):
                    await client.alter_topic("t", config={"cleanup_policy": "shred"})
                assert (await client.produce("t", b"still serving", b"k")).offset == 0
                # Rules across keys hold for the altered config as a whole.
                await client.alter_topic("t", config={"max_compaction_lag_ms": 1000})
                with pytest.raises(InvalidRequestError, match="above max_compaction_lag_ms"):
                    await client.alter_topic("t", config={"min_compaction_lag_ms": 2000})
                altered = await client.alter_topic(
                    "t", config={"max_compaction_lag_ms": None, "min_cleanable_dirty_ratio": 0.25}
                )
                assert altered["config"] == {
                    "cleanup_policy": "compact",
                    "min_cleanable_dirty_ratio": 0.25,
                }


async def test_max_compaction_lag_sweeps_what_the_dirty_ratio_would_leave(
    tmp_path: Path,
) -> None:
    """Two topics get the same writes, both with a dirty ratio of 1 (only a sweep
    by a new leader or the max lag can run). Only the one with a max lag loses
    its key's old value; the other keeps it, so the topic's ratio was obeyed. The
    leaders' unswept-age gauge shows the difference too."""
    retention = RetentionConfig(interval_ms=50)
    cfg = make_config(tmp_path, 3, retention=retention, metrics=True, **FAST)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient([n.address for n in cfg.nodes], request_timeout=3.0) as client:
                lazy = {"cleanup_policy": "compact", "min_cleanable_dirty_ratio": 1}
                await client.create_topic("lagged", 1, 3, {**lazy, "max_compaction_lag_ms": 300})
                await client.create_topic("ratio", 1, 3, lazy)
                for topic in ("lagged", "ratio"):
                    # One batch: the leader's first sweep (new_leader) sees all ten,
                    # and leaves only the latest value.
                    await client.produce_batch(topic, 0, [(b"k", b"v%d" % i) for i in range(10)])
                for topic in ("lagged", "ratio"):
                    await read_until(client, topic, [(9, b"k", b"v9")])
                leaders = {t: await client.describe_topic(t) for t in ("lagged", "ratio")}
                before_new = time.monotonic()
                for topic in ("lagged", "ratio"):
                    await client.produce(topic, b"new", b"k", partition=0)
                # 1 dirty record against 1 live is under ratio 1; 300 ms later the
                # max lag makes the sweep due, and not before (the stamp is taken
                # after ``before_new``, on this machine's one clock).
                await read_until(client, "lagged", [(10, b"k", b"new")])
                assert time.monotonic() - before_new >= 0.3
                ratio_now = await client.describe_topic("ratio")
                if ratio_now["partitions"][0]["term"] == leaders["ratio"]["partitions"][0]["term"]:
                    # Same leader: nothing may have made its sweep due (a new
                    # leader would sweep once, legitimately).
                    assert await read_all(client, "ratio") == [(9, b"k", b"v9"), (10, b"k", b"new")]
                    ages = await unswept_ages(cfg)
                    # Only each partition's leader reports it: one sample per topic.
                    assert ages["ratio"] >= 0.3  # "new" waits, appended >= 0.3 s ago
                    assert ages["lagged"] < ages["ratio"]  # swept since (or anew)


async def test_a_sweep_whose_key_map_fills_up_is_continued_by_the_next(tmp_path: Path) -> None:
    """``[retention] compaction_map_bytes = 1``: a sweep maps the keys of one batch,
    stops after it, and the next sweep goes on from there, although the topic's
    dirty ratio of 1 would not start another. Five batches written before the
    topic becomes compacted take five sweeps, four of them cut short, and end
    fully compacted."""
    retention = RetentionConfig(interval_ms=50, compaction_map_bytes=1)
    cfg = make_config(tmp_path, 3, retention=retention, metrics=True, **FAST)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient([n.address for n in cfg.nodes], request_timeout=3.0) as client:
                await client.create_topic("kv", 1, 3)
                for i in range(5):  # batch i: offsets 2i (k) and 2i + 1 (only-i)
                    pairs = [(b"k", b"v%d" % i), (b"only-%d" % i, b"x")]
                    await client.produce_batch("kv", 0, pairs)
                config = {"cleanup_policy": "compact", "min_cleanable_dirty_ratio": 1}
                await client.alter_topic("kv", config=config)
                want = [(2 * i + 1, b"only-%d" % i, b"x") for i in range(4)]
                want += [(8, b"k", b"v4"), (9, b"only-4", b"x")]
                await read_until(client, "kv", want)
                cut_short = 0.0
                for node in cfg.nodes:
                    samples = await scrape(str(node.metrics_address))
                    cut_short += samples.get("raftlog_compaction_map_full_total", 0.0)
                assert cut_short >= 4  # one sweep per batch: all but the last stopped short


async def unswept_ages(cfg: ClusterConfig) -> dict[str, float]:
    """topic -> raftlog_compaction_unswept_age_seconds of its partition 0, from the
    one node that reports it (its leader)."""
    found: dict[str, list[float]] = {}
    for node in cfg.nodes:
        for key, value in (await scrape(str(node.metrics_address))).items():
            match = re.fullmatch(
                r'raftlog_compaction_unswept_age_seconds\{topic="(\w+)",partition="0"\}', key
            )
            if match:
                found.setdefault(match.group(1), []).append(value)
    assert all(len(v) == 1 for v in found.values()), found
    return {topic: values[0] for topic, values in found.items()}


async def test_a_compacted_topic_refuses_batches_it_could_not_compact(tmp_path: Path) -> None:
    """Keyless records, rows that are not records, a count that lies and a batch
    that inflates past the bound each get INVALID_REQUEST and append nothing;
    large batches (checked in a worker thread) are judged the same way; the
    node keeps serving the client that sent them."""
    limits = Limits(max_frame_bytes=1 << 20, max_batch_bytes=256 * 1024)
    cfg = make_config(tmp_path, 3, limits=limits, **FAST)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient([n.address for n in cfg.nodes], request_timeout=3.0) as client:
                await client.create_topic("kv", 1, 3, {"cleanup_policy": "compact"})
                with pytest.raises(InvalidRequestError, match="record 0 has no key"):
                    await client.produce("kv", b"v", None, partition=0)
                # One keyless record refuses its whole batch, as in Kafka.
                mixed = [(b"a", b"1"), (None, b"2"), (b"b", b"3")]
                with pytest.raises(InvalidRequestError, match="record 1 has no key"):
                    await client.produce_batch("kv", 0, mixed)
                assert (
                    await client.produce("kv", None, b"a", partition=0)
                ).offset == 0  # tombstone

                def raw(rows: object, count: int, codec: str | None = None) -> tuple:
                    blob = msgpack.packb(rows, use_bin_type=True)
                    if codec is not None:
                        blob = compress(blob, codec)
                    return blob, count, zlib.crc32(blob)

                def truncated(encoded: tuple) -> tuple:
                    blob, count, _ = encoded
                    return blob[:-1], count, zlib.crc32(blob[:-1])

                big = [[None, b"k%d" % i, b"x" * 100, None] for i in range(1500)]  # ~170 KiB
                refused = {
                    "not [timestamp_ms, key, value, headers]": raw([1, 2, 3], 3),
                    "holds 1 records but says 2": raw([[None, b"k", b"v", None]], 2),
                    "wrong type": raw([[None, b"k", "text, not bytes", None]], 1),
                    "undecodable": truncated(raw([[None, b"k", b"v", None]], 1)),
                    "more than 4194304 bytes": raw(
                        [[None, b"k", b"\0" * (4 << 20), None]], 1, "zstd"
                    ),
                    "record 1499 has no key": raw([*big[:-1], [None, None, b"x", None]], 1500),
                }
                for problem, encoded in refused.items():
                    with pytest.raises(InvalidRequestError, match=re.escape(problem)):
                        await client.send_encoded("kv", 0, *encoded)
                accepted = await client.send_encoded("kv", 0, *raw(big, len(big)))
                assert accepted.base_offset == 1
                result = await client.fetch("kv", 0, 0, max_bytes=1 << 20)
                assert [r.offset for r in result.records] == list(range(1501))
                assert result.records[0].value is None  # the tombstone, nothing refused


async def test_compressed_batches_to_a_compacted_topic_arrive_in_order(tmp_path: Path) -> None:
    """Compressed batches are checked in worker threads, where one can overtake the
    next; the idempotent producer's sequence numbers keep the partition's order."""
    no_sweeps = RetentionConfig(interval_ms=3_600_000)  # every record stays to be compared
    cfg = make_config(tmp_path, 3, retention=no_sweeps, **FAST)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient([n.address for n in cfg.nodes], request_timeout=3.0) as client:
                await client.create_topic("kv", 1, 3, {"cleanup_policy": "compact"})
                sent = [(b"key-%d" % (i % 7), b"value-%05d" % i) for i in range(2000)]
                async with Producer(
                    client, linger=0.002, batch_size=2048, compression="zstd"
                ) as producer:
                    for key, value in sent:
                        await producer.send("kv", value, key, partition=0)
                got = await read_all(client, "kv")
                assert [(k, v) for _, k, v in got] == sent
                assert [o for o, _, _ in got] == list(range(len(sent)))
