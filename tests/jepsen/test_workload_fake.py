"""Workloads and checkers end to end against the client tests' in-memory fake
cluster (no Raft, everything commits at once): fast, and a deliberately lossy
fake proves the whole pipeline (record -> drain -> check) catches loss."""

from __future__ import annotations

import random
from collections.abc import Callable

import msgpack
import trio
from raftlog.client import compression
from raftlog.client.aio import AsyncClient, partition_for_key
from raftlog.jepsen import checker_groups, checker_log, linearizable
from raftlog.jepsen.groups_workload import GROUP
from raftlog.jepsen.history import OpType, Recorder, pair
from raftlog.jepsen.workload import TOPIC, Workload, WorkloadConfig

from tests.client.fake_server import FakeCluster, FakeNode

PARTITIONS = 2


async def start_fake(nursery: trio.Nursery) -> FakeCluster:
    cluster = FakeCluster(leader="n2")  # clients bootstrap at n1: redirects exercised
    for i in (1, 2):
        await nursery.start(FakeNode(cluster, f"n{i}").serve)
    cluster.add_topic(TOPIC, partitions=PARTITIONS)
    return cluster


async def commit_past_undelivered(cluster: FakeCluster) -> None:
    """A broken consumer: appends records to partition 0 and commits past them
    although nobody received them."""
    async with AsyncClient(cluster.bootstrap(), client_id="broken") as client:
        for v in (10**9, 10**9 + 1):
            meta = await client.produce(TOPIC, str(v).encode(), partition=0)
        # With a generation newer than any the group formed: the members commit
        # with generations, so an unfenced commit would be refused (FENCED).
        await client.commit_offset(GROUP, TOPIC, 0, meta.offset + 1, generation=2**31)


async def run_workload(name: str, seconds: float, lose_tail: bool = False,
                       skip_commit: bool = False, *, rate: float = 100, seed: int = 3,
                       before_drain: Callable[[FakeCluster, Recorder], None] | None = None,
                       concurrency: int = 4) -> Recorder:
    recorder = Recorder()
    async with trio.open_nursery() as nursery:
        cluster = await start_fake(nursery)
        wl = Workload(WorkloadConfig(name, PARTITIONS, concurrency=concurrency,
                                     rate_per_worker=rate,
                                     request_timeout=2.0),
                      cluster.bootstrap(), recorder, random.Random(seed))
        stop = trio.Event()
        with trio.fail_after(30):
            async with trio.open_nursery() as workers:
                workers.start_soon(wl.run, stop)
                await trio.sleep(seconds)  # the workload's duration, not a wait for a condition
                stop.set()
            if lose_tail:
                # A server that forgets its newest acknowledged record.
                part = cluster.partitions[(TOPIC, 0)]
                _base, _ts, count, _blob = part.batches.pop()
                part.end_offset -= count
            if skip_commit:
                await commit_past_undelivered(cluster)
            if before_drain is not None:
                before_drain(cluster, recorder)
            notes = await wl.drain(deadline=10)
            if wl.groups is not None:
                notes += await wl.groups.final_committed(deadline=10)
        assert notes == []
        nursery.cancel_scope.cancel()
    return recorder


async def test_log_workload_history_is_complete_and_valid() -> None:
    recorder = await run_workload("log", 0.6)
    done = pair(recorder.ops)
    assert all(c.complete is not None for c in done)  # every invoke completed
    sends = [c for c in done if c.f == "send" and c.type is OpType.OK]
    assert len(sends) > 20
    values = [c.invoke.value["value"] for c in done if c.f == "send"]
    assert len(values) == len(set(values))  # unique values
    assert {c.f for c in done} >= {"send", "fetch", "list_offsets", "drain"}
    result = checker_log.check(recorder.ops)
    assert result.valid and result.anomalies == [], result.to_dict()
    assert linearizable.check(recorder.ops).valid


async def test_offsets_workload_polls_and_commits_validly() -> None:
    recorder = await run_workload("offsets", 0.8)
    done = pair(recorder.ops)
    fs = {c.f for c in done if c.type is OpType.OK}
    assert {"poll", "commit", "fetch_committed", "assign"} <= fs
    assert checker_log.check(recorder.ops).valid
    assert linearizable.check(recorder.ops).valid


async def test_a_server_losing_an_acknowledged_record_is_caught() -> None:
    recorder = await run_workload("log", 0.6, lose_tail=True)
    result = checker_log.check(recorder.ops)
    assert not result.valid
    # The lost batch is unseen-after-drain if no fetch read it before it went;
    # if one did, the drain's end offset is behind an end already observed.
    assert {"unseen-after-drain", "stale-read"} & {a.type for a in result.anomalies}
    assert not linearizable.check(recorder.ops).valid


async def test_groups_workload_consumers_share_partitions_and_the_history_is_valid() -> None:
    recorder = await run_workload("groups", 3.0)
    done = pair(recorder.ops)
    fs = {c.f for c in done if c.type is OpType.OK}
    assert {"gjoin", "gpoll", "gcommit", "gclose", "gcommitted", "send"} <= fs
    result = checker_groups.check(recorder.ops)
    assert result.valid and result.liveness == [], result.to_dict()
    # Three consumers on two partitions: every partition was delivered, and
    # every consumer closed (committed) at the end.
    assert {d.partition for d in checker_groups.deliveries(done)} == set(range(PARTITIONS))
    assert result.stats["final_committed"].keys() == {str(p) for p in range(PARTITIONS)}
    assert sum(1 for c in done if c.f == "gclose" and c.type is OpType.OK) >= 3
    assert checker_log.check(recorder.ops).valid


async def test_a_commit_past_undelivered_records_is_caught_as_group_lost() -> None:
    recorder = await run_workload("groups", 1.5, skip_commit=True)
    result = checker_groups.check(recorder.ops)
    assert not result.valid
    lost = [a for a in result.anomalies if a.type == "group-lost"]
    assert [a.key for a in lost] == [0]
    # The broken consumer's two records are missing (a workload record that
    # landed after the consumers stopped polling may be missing as well).
    details = lost[0].details
    assert details["missing"][-2:] == [details["committed"] - 2, details["committed"] - 1]


async def run_producer_workload(seconds: float, reorder: bool = False) -> Recorder:
    """The producer workload against the fake; ``reorder``: before the drain, a
    server that swaps the records of two equal-sized batches of one producer in
    partition 0."""

    def before_drain(cluster: FakeCluster, recorder: Recorder) -> None:
        batches = cluster.partitions[(TOPIC, 0)].batches
        # Several records per produce request: the batching path ran.
        assert max(count for _b, _ts, count, _blob in batches) > 1
        # The zstd and lz4 producers' batches are stored as they came.
        assert any(compression.is_compressed(blob) for _b, _ts, _c, blob in batches)
        if reorder:
            swap_equal_batches(batches, recorder)

    # Three producers (PROFILES[:3]): plain; zstd and keyed; lz4, not idempotent.
    return await run_workload("producer", seconds, rate=50, seed=5, before_drain=before_drain,
                              concurrency=6)


def swap_equal_batches(batches: list[tuple[int, int, int, bytes]], recorder: Recorder) -> None:
    """Swap the payloads of the first two multi-record batches of one size and of
    one idempotent producer (the history says whose each value is; a producer
    without idempotence promises no order)."""
    producer_of = {op.value["value"]: op.value["producer"] for op in recorder.ops
                   if op.f == "send" and "producer" in (op.value or {})
                   and op.value.get("idempotent") is not False}
    first_of: dict[tuple[int, str], int] = {}
    for i, (_base, _ts, count, blob) in enumerate(batches):
        packed = compression.decompress(blob) if compression.is_compressed(blob) else blob
        owner = producer_of.get(int(msgpack.unpackb(packed)[0][2]))
        if count < 2 or owner is None:
            continue
        if (count, owner) in first_of:
            j = first_of[(count, owner)]
            (bj, tj, cj, blob_j), (bi, ti, ci, blob_i) = batches[j], batches[i]
            batches[j], batches[i] = (bj, tj, cj, blob_i), (bi, ti, ci, blob_j)
            return
        first_of[(count, owner)] = i
    raise AssertionError("no two multi-record batches of one size and producer to swap")


async def test_producer_workload_history_is_complete_and_valid() -> None:
    recorder = await run_producer_workload(0.8)
    done = pair(recorder.ops)
    assert all(c.complete is not None for c in done)  # the producers flushed at the end
    batched = [c for c in done if c.f == "send" and "producer" in c.invoke.value]
    assert sum(c.type is OpType.OK for c in batched) > 50
    assert len({c.process for c in batched}) == len(batched)  # one process per record
    # Each producer numbers its records in sending order, one number each.
    for producer in {c.invoke.value["producer"] for c in batched}:
        seqs = [c.invoke.value["seq"] for c in batched if c.invoke.value["producer"] == producer]
        assert seqs == list(range(len(seqs)))
    assert any("producer" not in c.invoke.value for c in done if c.f == "send")  # log workers
    # Keyed records went where the key partitioner says, as the history expects.
    keyed = [c for c in batched if c.type is OpType.OK and "record_key" in c.invoke.value]
    assert keyed and {c.invoke.value["producer"] for c in keyed} == {"p1"}
    for c in keyed:
        want = partition_for_key(c.invoke.value["record_key"].encode(), PARTITIONS)
        assert c.value["partition"] == c.invoke.value["key"] == want
    # The producer without idempotence is marked so, and its records were acknowledged.
    unordered = [c for c in batched if c.invoke.value.get("idempotent") is False]
    assert {c.invoke.value["producer"] for c in unordered} == {"p2"}
    assert any(c.type is OpType.OK for c in unordered)
    result = checker_log.check(recorder.ops)
    assert result.valid and result.anomalies == [], result.to_dict()
    assert linearizable.check(recorder.ops).valid


async def test_a_server_reordering_one_producers_batches_is_caught() -> None:
    recorder = await run_producer_workload(0.8, reorder=True)
    result = checker_log.check(recorder.ops)
    assert not result.valid
    assert "producer-reorder" in result.by_type(), result.to_dict()["counts"]
