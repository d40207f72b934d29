"""The multi-raft driver and request handlers, three nodes in one trio run.

Real Raft cores, real RocksDB stores (fsync off), an in-memory transport:
see inproc_cluster.py. Every wait is bounded and polls a condition.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import threading
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import decode_batch, encode_records
from raftlog.log.commands import Produce, decode_entry_commands
from raftlog.log.store import NodeStore
from raftlog.raft.types import Role
from raftlog.server import driver as driver_module
from raftlog.server.config import Limits
from raftlog.server.driver import MultiRaft, StorageFailedError
from raftlog.server.errors import HandlerError
from raftlog.server.metrics import Metrics

from .inproc_cluster import InProcCluster, small_config


@pytest.fixture
async def cluster(tmp_path: Any, nursery: trio.Nursery) -> AsyncIterator[InProcCluster]:
    cfg = small_config(tmp_path, limits=Limits(max_batch_bytes=64 * 1024))
    async with InProcCluster(cfg, nursery).running() as c:
        yield c


async def _fetch_all(c: InProcCluster, node: str, topic: str, partition: int) -> list[bytes]:
    values: list[bytes] = []
    offset = 0
    for _ in range(1000):
        reply = await c.call(node, "fetch", topic=topic, partition=partition, offset=offset)
        if not reply["batches"]:
            break
        for base, ts, _count, blob in reply["batches"]:
            for record in decode_batch(base, ts, blob, offset):
                assert record.offset == offset
                values.append(record.value)
                offset += 1
    return values


async def test_metadata_group_elects_a_leader_and_registers_every_node(cluster):
    leader = await cluster.wait_leader(0)
    meta = cluster.driver(leader).metadata
    await cluster.wait_for(lambda: len(meta.nodes) == 3, what="3 registered nodes")
    assert sorted(meta.nodes) == ["n1", "n2", "n3"]


async def test_create_topic_creates_a_led_group_per_partition_on_every_replica(cluster):
    topic = await cluster.create_topic("orders", partitions=3, replicas=3)
    gids = [p["group"] for p in topic["partitions"]]
    assert len(set(gids)) == 3 and 0 not in gids
    for gid in gids:
        await cluster.wait_leader(gid)
        for node in cluster.node_ids:
            assert gid in cluster.driver(node).groups
    # The first replica of each partition campaigned at once: leaders are spread.
    leaders = {p["replicas"][0] for p in topic["partitions"]}
    assert len(leaders) == 3


async def test_produce_then_fetch_returns_every_record_in_order(cluster):
    topic = await cluster.create_topic("t", partitions=1)
    gid = topic["partitions"][0]["group"]
    leader = await cluster.wait_leader(gid)
    sent = []
    for i in range(20):
        values = [f"r{i}-{j}".encode() for j in range(5)]
        reply = await cluster.produce(leader, "t", values)
        assert reply == {"base_offset": i * 5, "duplicate": False}
        sent += values
    assert await _fetch_all(cluster, leader, "t", 0) == sent
    offsets = await cluster.call(leader, "list_offsets", topic="t", partition=0)
    assert offsets == {"start_offset": 0, "end_offset": 100}


async def test_concurrent_produces_are_coalesced_into_fewer_proposals(cluster):
    topic = await cluster.create_topic("t", partitions=1)
    gid = topic["partitions"][0]["group"]
    leader = await cluster.wait_leader(gid)
    driver = cluster.driver(leader)
    before = driver.stats["proposals"]
    results: list[int] = []

    async def one(i: int) -> None:
        reply = await cluster.produce(leader, "t", [str(i).encode()])
        results.append(reply["base_offset"])

    async with trio.open_nursery() as n:
        for i in range(50):
            n.start_soon(one, i)
    assert sorted(results) == list(range(50))
    assert driver.stats["proposals"] - before < 50


async def test_the_leader_lets_undelivered_appends_go_before_its_fsync(cluster, monkeypatch):
    """With links the driver cannot write itself (TLS), it waits for the
    transport's writers before an inline fsync, so the followers' fsyncs
    overlap its own (thesis §10.2.1) instead of following it."""
    topic = await cluster.create_topic("d", partitions=1)
    leader = await cluster.wait_leader(topic["partitions"][0]["group"])
    driver = cluster.driver(leader)
    events: list[str] = []
    save = driver.store.save

    def recording_save(readies: Any, *, sync: bool = True) -> None:
        events.append(f"save sync={sync}")
        save(readies, sync=sync)

    class WriterOnlyLinks:  # what a TLS PeerTransport looks like to the driver
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def send(
            self, peer: str, msgs: list[tuple[int, bytes]], *, flush_follows: bool = False
        ) -> None:
            self.inner.send(peer, msgs)

        def flush(self) -> None:
            self.inner.flush()

        def is_connected(self, peer: str) -> bool:
            return self.inner.is_connected(peer)

        def undelivered(self) -> bool:
            return True

        async def deliver(self) -> None:
            events.append("deliver")
            await trio.lowlevel.checkpoint()

    monkeypatch.setattr(driver, "transport", WriterOnlyLinks(driver.transport))
    monkeypatch.setattr(driver.store, "save", recording_save)
    monkeypatch.setattr(driver.store, "fsync", True)  # the harness runs without fsync
    assert (await cluster.produce(leader, "d", [b"x"]))["base_offset"] == 0
    synced = events.index("save sync=True")
    assert synced > 0 and events[synced - 1] == "deliver", events
    assert "deliver" not in [events[i - 1] for i, e in enumerate(events) if e == "save sync=False"]


async def test_a_slow_fsync_is_logged_once_per_interval_with_its_count(
    cluster, monkeypatch, caplog
):
    """A disk whose fsync stalls is named in the log (etcd's "slow fdatasync"),
    so an operator can tell an election the disk caused; a stalling disk logs
    one line per interval, not one per save."""
    topic = await cluster.create_topic("slow", partitions=1)
    leader = await cluster.wait_leader(topic["partitions"][0]["group"])
    driver = cluster.driver(leader)
    save = driver.store.save
    # Half the configured election timeout, not a fixed figure.
    cfg = cluster.cfg
    assert driver.slow_fsync_s == pytest.approx(cfg.election_ticks * cfg.tick_ms / 2000)
    stall = driver.slow_fsync_s + 0.01

    def slow_save(readies: Any, *, sync: bool = True) -> None:
        save(readies, sync=sync)
        if sync:
            time.sleep(stall)  # the fsync part of a save, stalled

    monkeypatch.setattr(driver.store, "save", slow_save)
    monkeypatch.setattr(driver.store, "fsync", True)  # the harness runs without fsync
    caplog.set_level("WARNING", logger="raftlog.server.driver")
    for i in range(3):
        await cluster.produce(leader, "slow", [b"%d" % i])
    lines = [r.getMessage() for r in caplog.records if "event=slow_fsync" in r.getMessage()]
    assert len(lines) == 1, lines  # three slow saves or more, one line
    assert f"node={leader} " in lines[0] and "count=1" in lines[0]
    assert driver.stats["fsyncs"] >= 3


async def test_a_slow_disk_moves_saves_off_the_event_loop_until_fsync_is_fast(
    cluster, monkeypatch, nursery
):
    """Inline, a stalled fsync stops the loop (no answer, no peer frame goes
    out); after one slow small save the next ones run in a worker thread,
    and the first fast one brings them back inline."""
    topic = await cluster.create_topic("disk", partitions=1)
    leader = await cluster.wait_leader(topic["partitions"][0]["group"])
    driver = cluster.driver(leader)
    save = driver.store.save
    stall = driver_module.SLOW_DISK_INLINE_MAX_S * 3
    stalling = [True]
    beats = [0]
    # (in a worker thread?, stalled?, loop beats during the save)
    saves: list[tuple[bool, bool, int]] = []

    async def heartbeat() -> None:
        while True:
            beats[0] += 1
            await trio.sleep(0.002)

    def watched_save(readies: Any, *, sync: bool = True) -> None:
        save(readies, sync=sync)
        if sync:
            before = beats[0]
            stalled = stalling[0]
            if stalled:
                time.sleep(stall)
            worker = threading.current_thread() is not threading.main_thread()
            saves.append((worker, stalled, beats[0] - before))

    nursery.start_soon(heartbeat)
    monkeypatch.setattr(driver.store, "save", watched_save)
    monkeypatch.setattr(driver.store, "fsync", True)  # the harness runs without fsync
    for i in range(3):
        await cluster.produce(leader, "disk", [b"%d" % i])
    stalling[0] = False
    for i in range(3):
        await cluster.produce(leader, "disk", [b"fast%d" % i])
    assert saves[0] == (False, True, 0), saves  # inline: the loop stood still
    for (_, was_stalled, _), (worker, _, _) in itertools.pairwise(saves):
        assert worker == was_stalled, saves  # each save follows the last one's fsync
    threaded_stalls = [beats for worker, stalled, beats in saves if worker and stalled]
    assert threaded_stalls and all(b > 0 for b in threaded_stalls), saves  # the loop ran on
    assert saves[-1][:2] == (False, False), saves  # fast again: back inline


async def test_idempotent_retry_is_appended_once(cluster):
    topic = await cluster.create_topic("t", partitions=1)
    leader = await cluster.wait_leader(topic["partitions"][0]["group"])
    meta_leader = await cluster.wait_leader(0)
    pid = (await cluster.call(meta_leader, "init_producer"))["producer_id"]
    pid2 = (await cluster.call(meta_leader, "init_producer"))["producer_id"]
    assert pid != pid2
    first = await cluster.produce(leader, "t", [b"a", b"b"], producer_id=pid, sequence=0)
    retry = await cluster.produce(leader, "t", [b"a", b"b"], producer_id=pid, sequence=0)
    assert first == {"base_offset": 0, "duplicate": False}
    assert retry == {"base_offset": 0, "duplicate": True}
    nxt = await cluster.produce(leader, "t", [b"c"], producer_id=pid, sequence=2)
    assert nxt == {"base_offset": 2, "duplicate": False}
    gap = await cluster.call_error(
        leader,
        "produce",
        topic="t",
        partition=0,
        producer_id=pid,
        sequence=9,
        **_batch([b"x"]),
    )
    assert gap.code is ErrorCode.OUT_OF_ORDER_SEQUENCE
    assert await _fetch_all(cluster, leader, "t", 0) == [b"a", b"b", b"c"]


def _produces_in_log(group: Any, lo: int) -> list[Produce]:
    """The Produce commands in the group's Raft log from index ``lo`` on."""
    entries = group.raft.raft_log.slice(lo, group.raft.last_index + 1)
    return [
        cmd
        for entry in entries
        if entry.data
        for cmd in decode_entry_commands(entry.data)
        if isinstance(cmd, Produce)
    ]


@dataclasses.dataclass
class _RetrySetup:
    """A one-partition topic, its leader's driver and group, and a producer id."""

    cluster: InProcCluster
    driver: MultiRaft
    group: Any
    producer_id: int

    def command(self, sequence: int, values: list[bytes]) -> Produce:
        fields = {"topic": "t", "producer_id": self.producer_id, "sequence": sequence}
        leader = self.driver.node_id
        return self.cluster.handlers[leader]._produce_command({**fields, **_batch(values)})

    def submit(self, command: Produce) -> Any:
        return self.driver.submit(self.group.gid, command)

    def withhold_acks(self) -> None:
        """The leader hears nothing from its followers: nothing commits."""
        for follower in (n for n in self.cluster.node_ids if n != self.driver.node_id):
            self.cluster.net.cut.add((follower, self.driver.node_id))

    async def wait_attached(self, count: int) -> None:
        await self.cluster.wait_for(
            lambda: self.driver.stats["retries_attached"] == count, what="the retry attached"
        )


@contextlib.asynccontextmanager
async def _retry_setup(tmp_path: Any, nursery: trio.Nursery) -> AsyncIterator[_RetrySetup]:
    # 1 s election timeout: a leader that hears no acks keeps leading long
    # enough to retry under it (CheckQuorum ends it after that).
    async with InProcCluster(small_config(tmp_path, election_ticks=100), nursery).running() as c:
        topic = await c.create_topic("t", partitions=1)
        gid = topic["partitions"][0]["group"]
        leader = await c.wait_leader(gid)
        pid = (await c.call(await c.wait_leader(0), "init_producer"))["producer_id"]
        driver = c.driver(leader)
        yield _RetrySetup(c, driver, driver.groups[gid], pid)


async def test_a_retry_of_an_uncommitted_produce_is_answered_by_the_original_entry(
    tmp_path, nursery
):
    """A retry that arrives while its batch is in flight is not proposed again:
    it waits for the original entry and gets its offset (Kafka's leader matches
    it at append time). A second entry would be answered only when it commits."""
    async with _retry_setup(tmp_path, nursery) as r:
        command = r.command(0, [b"a", b"b"])
        r.withhold_acks()
        original = r.submit(command)
        await r.cluster.wait_for(lambda: r.group.inflight_produces, what="the original proposed")
        ((index, _),) = r.group.inflight_produces.values()
        retry = r.submit(command)
        await r.wait_attached(1)
        assert not original.done and not retry.done  # nothing answered before commit
        r.cluster.net.heal()
        await r.cluster.wait_for(lambda: original.done and retry.done, what="both answered")
        assert original.outcome is not None and retry.outcome is not None
        assert (original.outcome.value.base_offset, original.outcome.value.duplicate) == (0, False)
        assert (retry.outcome.value.base_offset, retry.outcome.value.duplicate) == (0, True)
        assert [p.sequence for p in _produces_in_log(r.group, index)] == [0]  # one entry only
        assert r.group.inflight_produces == {}
        assert await _fetch_all(r.cluster, r.driver.node_id, "t", 0) == [b"a", b"b"]


async def test_a_retry_attached_to_a_refused_entry_is_proposed_on_its_own_afterwards(
    tmp_path, nursery
):
    """The original's refusal is not passed on: here it came before its
    predecessor (out of order), and the retry, judged after that, is appended."""
    async with _retry_setup(tmp_path, nursery) as r:
        later, first = r.command(2, [b"c"]), r.command(0, [b"a", b"b"])
        r.withhold_acks()
        early = r.submit(later)  # overtakes its predecessor
        await r.cluster.wait_for(lambda: len(r.group.inflight_produces) == 1, what="proposed")
        predecessor = r.submit(first)
        await r.cluster.wait_for(lambda: len(r.group.inflight_produces) == 2, what="both")
        retry = r.submit(later)
        await r.wait_attached(1)
        r.cluster.net.heal()
        await r.cluster.wait_for(
            lambda: early.done and predecessor.done and retry.done, what="the answers"
        )
        assert early.outcome is not None and predecessor.outcome is not None
        assert retry.outcome is not None
        # Apply results (refusals too) travel as the outcome's value.
        assert early.outcome.value.error is ErrorCode.OUT_OF_ORDER_SEQUENCE
        assert predecessor.outcome.value.base_offset == 0
        assert retry.outcome.value.ok and retry.outcome.value.base_offset == 2
        assert await _fetch_all(r.cluster, r.driver.node_id, "t", 0) == [b"a", b"b", b"c"]


async def test_batches_of_one_producer_queued_out_of_order_are_proposed_in_sequence_order(
    tmp_path, nursery
):
    """Batches that reach the leader in one turn but out of order (redirected
    by different nodes) are put back in order in their entry: both appended.
    Proposed as they came, the later one would be refused at apply."""
    async with _retry_setup(tmp_path, nursery) as r:
        other = (await r.cluster.call(await r.cluster.wait_leader(0), "init_producer"))[
            "producer_id"
        ]
        first_index = r.group.raft.last_index + 1
        fields = {"topic": "t", "producer_id": other, "sequence": 0}
        handlers = r.cluster.handlers[r.driver.node_id]
        # No checkpoint between the submits: the driver sees them in one turn.
        later = r.submit(r.command(2, [b"c"]))
        unrelated = r.submit(handlers._produce_command({**fields, **_batch([b"x"])}))
        first = r.submit(r.command(0, [b"a", b"b"]))
        await r.cluster.wait_for(
            lambda: later.done and unrelated.done and first.done, what="the answers"
        )
        results = [w.outcome.value for w in (first, unrelated, later)]
        assert all(result.ok for result in results), results
        assert [p.sequence for p in _produces_in_log(r.group, first_index)] == [0, 0, 2]
        assert [p.producer_id for p in _produces_in_log(r.group, first_index)] == [
            r.producer_id,
            other,
            r.producer_id,
        ]
        assert await _fetch_all(r.cluster, r.driver.node_id, "t", 0) == [b"a", b"b", b"x", b"c"]


async def test_a_batch_ahead_of_its_predecessor_waits_for_it_on_the_leader(
    tmp_path, nursery, monkeypatch
):
    """A producer's batch 2 reaching the leader before its batch 1 (retries of
    a pipeline after a leader change) is held, not proposed; batch 1 brings it
    along, and both are appended in order. Proposed on arrival, batch 2 would
    have been refused at apply (OUT_OF_ORDER_SEQUENCE)."""
    monkeypatch.setattr(driver_module, "EARLY_BATCH_HOLD_S", 60.0)  # waits for batch 1 only
    async with _retry_setup(tmp_path, nursery) as r:
        r.driver.metrics = metrics = Metrics()
        opening = r.submit(r.command(0, [b"a"]))
        await r.cluster.wait_for(lambda: opening.done, what="batch 0 appended")
        first_index = r.group.raft.last_index + 1
        early = r.submit(r.command(2, [b"c"]))
        await r.cluster.wait_for(lambda: r.driver.stats["parked"] == 1, what="batch 2 held")
        assert not early.done and r.group.raft.last_index < first_index  # not in the log
        predecessor = r.submit(r.command(1, [b"b"]))
        await r.cluster.wait_for(lambda: early.done and predecessor.done, what="the answers")
        results = [w.outcome.value for w in (opening, predecessor, early)]
        assert [(x.ok, x.base_offset) for x in results] == [(True, 0), (True, 1), (True, 2)]
        assert [p.sequence for p in _produces_in_log(r.group, first_index)] == [1, 2]
        assert r.group.parked == []
        assert metrics.produce_batches_held.value() == 1
        assert metrics.produce_batches_overdue.value() == 0  # its predecessor came in time
        assert await _fetch_all(r.cluster, r.driver.node_id, "t", 0) == [b"a", b"b", b"c"]


async def test_a_held_batch_whose_predecessor_never_comes_is_refused_after_the_hold(
    tmp_path, nursery, monkeypatch
):
    monkeypatch.setattr(driver_module, "EARLY_BATCH_HOLD_S", 0.3)
    async with _retry_setup(tmp_path, nursery) as r:
        r.driver.metrics = metrics = Metrics()
        opening = r.submit(r.command(0, [b"a"]))
        await r.cluster.wait_for(lambda: opening.done, what="batch 0 appended")
        submitted = trio.current_time()
        gap = r.submit(r.command(5, [b"x"]))
        await r.cluster.wait_for(lambda: gap.done, what="the refusal")
        assert trio.current_time() - submitted >= 0.3  # held for the whole hold first
        assert r.driver.stats["parked"] == 1
        assert metrics.produce_batches_held.value() == 1
        assert metrics.produce_batches_overdue.value() == 1  # proposed still ahead, refused
        assert gap.outcome is not None
        assert gap.outcome.value.error is ErrorCode.OUT_OF_ORDER_SEQUENCE
        assert await _fetch_all(r.cluster, r.driver.node_id, "t", 0) == [b"a"]


async def test_a_held_batch_is_redirected_when_its_leader_steps_down(
    tmp_path, nursery, monkeypatch
):
    """A held batch never entered the log: when leadership goes, it gets a
    plain NOT_LEADER (the client retries at once), not an unknown outcome."""
    monkeypatch.setattr(driver_module, "EARLY_BATCH_HOLD_S", 60.0)
    async with _retry_setup(tmp_path, nursery) as r:
        opening = r.submit(r.command(0, [b"a"]))
        await r.cluster.wait_for(lambda: opening.done, what="batch 0 appended")
        early = r.submit(r.command(3, [b"d"]))
        await r.cluster.wait_for(lambda: r.driver.stats["parked"] == 1, what="batch 3 held")
        leader = r.driver.node_id
        r.cluster.net.isolate(leader, [n for n in r.cluster.node_ids if n != leader])
        await r.cluster.wait_for(lambda: early.done, what="the redirect")  # CheckQuorum
        assert early.outcome is not None and early.outcome.error is ErrorCode.NOT_LEADER
        assert r.group.parked == [] and r.group.role is not Role.LEADER


async def test_a_retry_attached_to_an_entry_that_loses_its_leader_gets_the_same_unknown_outcome(
    tmp_path, nursery
):
    async with _retry_setup(tmp_path, nursery) as r:
        command = r.command(0, [b"a"])
        leader = r.driver.node_id
        r.cluster.net.isolate(leader, [n for n in r.cluster.node_ids if n != leader])
        original = r.submit(command)
        await r.cluster.wait_for(lambda: r.group.inflight_produces, what="the original proposed")
        retry = r.submit(command)
        await r.wait_attached(1)
        # CheckQuorum steps the cut-off leader down: the entry may still commit
        # under the next leader, so both requests end as TIMEOUT (unknown).
        await r.cluster.wait_for(lambda: original.done and retry.done, what="both answered")
        assert original.outcome is not None and retry.outcome is not None
        assert original.outcome.error is ErrorCode.TIMEOUT
        assert retry.outcome.error is ErrorCode.TIMEOUT
        assert r.group.inflight_produces == {}


def _batch(values: list[bytes]) -> dict[str, Any]:
    blob, count, crc = encode_records([(None, v, None, None) for v in values])
    return {"records": blob, "count": count, "crc": crc}


async def test_produce_on_a_follower_redirects_to_the_leader(cluster):
    topic = await cluster.create_topic("t", partitions=1)
    gid = topic["partitions"][0]["group"]
    leader = await cluster.wait_leader(gid)
    follower = next(n for n in cluster.node_ids if n != leader)
    await cluster.wait_for(lambda: cluster.driver(follower).groups[gid].leader == leader)
    err = await cluster.call_error(follower, "produce", topic="t", partition=0, **_batch([b"x"]))
    assert err.code is ErrorCode.NOT_LEADER
    assert err.details["leader_address"] == cluster.cfg.node(leader).address
    err = await cluster.call_error(follower, "fetch", topic="t", partition=0, offset=0)
    assert err.code is ErrorCode.NOT_LEADER


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"crc": 1}, ErrorCode.CORRUPT_BATCH),
        ({"count": 0}, ErrorCode.INVALID_REQUEST),
        ({"records": b"x" * 70_000, "crc": None}, ErrorCode.RECORD_TOO_LARGE),
        ({"topic": "nope"}, ErrorCode.UNKNOWN_TOPIC),
        ({"partition": 7}, ErrorCode.UNKNOWN_PARTITION),
        ({"producer_id": 5}, ErrorCode.INVALID_REQUEST),
    ],
)
async def test_bad_produce_requests_get_their_error_code_and_append_nothing(cluster, change, code):
    topic = await cluster.create_topic("t", partitions=1)
    leader = await cluster.wait_leader(topic["partitions"][0]["group"])
    fields = {"topic": "t", "partition": 0, **_batch([b"x"]), **change}
    if fields["crc"] is None:
        fields["crc"] = zlib.crc32(fields["records"])
    err = await cluster.call_error(leader, "produce", **fields)
    assert err.code is code
    if code is ErrorCode.RECORD_TOO_LARGE:  # named, so a producer can split to fit
        assert err.details["limit"] == cluster.cfg.limits.max_batch_bytes
    offsets = await cluster.call(leader, "list_offsets", topic="t", partition=0)
    assert offsets["end_offset"] == 0


async def test_fetch_outside_the_log_is_out_of_range(cluster):
    topic = await cluster.create_topic("t", partitions=1)
    leader = await cluster.wait_leader(topic["partitions"][0]["group"])
    await cluster.produce(leader, "t", [b"a"])
    err = await cluster.call_error(leader, "fetch", topic="t", partition=0, offset=5)
    assert err.code is ErrorCode.OUT_OF_RANGE
    assert (err.details["start_offset"], err.details["end_offset"]) == (0, 1)


async def test_long_poll_fetch_returns_a_record_produced_while_it_waits(cluster):
    topic = await cluster.create_topic("t", partitions=1)
    leader = await cluster.wait_leader(topic["partitions"][0]["group"])
    got: list[dict] = []

    async def poll() -> None:
        got.append(
            await cluster.call(
                leader, "fetch", topic="t", partition=0, offset=0, max_wait_ms=20_000
            )
        )

    with trio.fail_after(15):
        async with trio.open_nursery() as n:
            n.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            await cluster.produce(leader, "t", [b"late"])
    batches = got[0]["batches"]
    assert [r.value for r in decode_batch(batches[0][0], batches[0][1], batches[0][3])] == [b"late"]


async def test_long_poll_with_nothing_new_returns_empty_after_max_wait(cluster):
    topic = await cluster.create_topic("t", partitions=1)
    leader = await cluster.wait_leader(topic["partitions"][0]["group"])
    reply = await cluster.call(leader, "fetch", topic="t", partition=0, offset=0, max_wait_ms=50)
    assert reply["batches"] == [] and reply["end_offset"] == 0


async def test_consumer_offsets_commit_through_the_partition_log(cluster):
    topic = await cluster.create_topic("t", partitions=1)
    leader = await cluster.wait_leader(topic["partitions"][0]["group"])
    empty = await cluster.call(leader, "fetch_committed", group="g", topic="t", partition=0)
    assert empty == {"offset": None, "metadata": None}
    await cluster.call(
        leader, "commit_offset", group="g", topic="t", partition=0, offset=42, metadata="m"
    )
    got = await cluster.call(leader, "fetch_committed", group="g", topic="t", partition=0)
    assert got == {"offset": 42, "metadata": "m"}


async def test_records_survive_a_restart_of_every_node(cluster):
    topic = await cluster.create_topic("t", partitions=2)
    sent: dict[int, list[bytes]] = {0: [], 1: []}
    for p in (0, 1):
        leader = await cluster.wait_leader(topic["partitions"][p]["group"])
        for i in range(10):
            value = f"p{p}-{i}".encode()
            await cluster.produce(leader, "t", [value], partition=p)
            sent[p].append(value)
    await cluster.stop_all()
    for node in cluster.node_ids:
        await cluster.start(node)
    for p in (0, 1):
        leader = await cluster.wait_leader(topic["partitions"][p]["group"])
        assert await _fetch_all(cluster, leader, "t", p) == sent[p]


async def test_a_new_leader_takes_over_when_the_leader_is_cut_off(cluster):
    topic = await cluster.create_topic("t", partitions=1)
    gid = topic["partitions"][0]["group"]
    old = await cluster.wait_leader(gid)
    await cluster.produce(old, "t", [b"before"])
    others = [n for n in cluster.node_ids if n != old]
    cluster.net.isolate(old, others)
    # The isolated leader cannot commit: the produce ends with TIMEOUT or
    # NOT_LEADER (CheckQuorum), never with an acknowledgement.
    err = await cluster.call_error(
        old, "produce", topic="t", partition=0, timeout_ms=3000, **_batch([b"lost?"])
    )
    assert err.code in (ErrorCode.TIMEOUT, ErrorCode.NOT_LEADER)
    new = await cluster.wait_for(
        lambda: next(
            (n for n in others if cluster.driver(n).groups[gid].role is Role.LEADER), None
        ),
        what="a new leader among the connected nodes",
    )
    await cluster.produce(new, "t", [b"after"])
    cluster.net.heal()
    values = await _fetch_all(cluster, new, "t", 0)
    assert values[0] == b"before" and values[-1] == b"after"
    assert values.count(b"after") == 1


async def test_garbage_from_a_peer_is_dropped_and_counted(cluster):
    topic = await cluster.create_topic("t", partitions=1)
    gid = topic["partitions"][0]["group"]
    leader = await cluster.wait_leader(gid)
    driver = cluster.driver(leader)
    other = next(n for n in cluster.node_ids if n != leader)
    driver.on_peer_msgs(other, [(gid, b"\xc1garbage"), (gid, b"")])
    await cluster.produce(leader, "t", [b"still works"])
    assert driver.stats["bad_peer_messages"] == 2


async def test_cluster_status_shows_replica_progress_on_the_leader(cluster):
    topic = await cluster.create_topic("t", partitions=1)
    gid = topic["partitions"][0]["group"]
    leader = await cluster.wait_leader(gid)
    await cluster.produce(leader, "t", [b"a"])
    status = await cluster.call(leader, "cluster_status")
    group = next(g for g in status["groups"] if g["group"] == gid)
    assert group["role"] == "leader" and group["leader"] == leader
    assert (group["topic"], group["partition"]) == ("t", 0)
    assert {r["node"] for r in group["replicas"]} == set(cluster.node_ids)
    assert group["commit"] == group["applied"] == group["last_index"]


async def test_delete_topic_removes_its_groups_everywhere(cluster):
    topic = await cluster.create_topic("t", partitions=2)
    gids = [p["group"] for p in topic["partitions"]]
    meta_leader = await cluster.wait_leader(0)
    await cluster.call(meta_leader, "delete_topic", topic="t")
    await cluster.wait_for(
        lambda: all(g not in cluster.driver(n).groups for n in cluster.node_ids for g in gids),
        what="groups deleted",
    )
    assert (await cluster.call(meta_leader, "list_topics"))["topics"] == []


async def test_describe_on_a_node_that_missed_a_delete_never_shows_the_deleted_topic(cluster):
    """The node still has the topic in its local metadata; describing it from
    there would be a stale read. It must confirm a read point first (and so
    answers NOT_AVAILABLE while it cannot)."""
    await cluster.create_topic("t", partitions=1)
    meta_leader = await cluster.wait_leader(0)
    lagging = next(n for n in cluster.node_ids if n != meta_leader)
    await cluster.wait_for(lambda: "t" in cluster.driver(lagging).metadata.topics)
    others = [n for n in cluster.node_ids if n != lagging]
    cluster.net.isolate(lagging, others)
    await cluster.call(meta_leader, "delete_topic", topic="t")
    assert "t" in cluster.driver(lagging).metadata.topics  # it did miss the delete
    err = await cluster.call_error(lagging, "describe_topic", topic="t")
    assert err.code is ErrorCode.NOT_AVAILABLE
    cluster.net.heal()
    await cluster.wait_for(
        lambda: "t" not in cluster.driver(lagging).metadata.topics,
        what="the healed node applies the delete",
    )
    gone = await cluster.call_error(lagging, "describe_topic", topic="t")
    assert gone.code is ErrorCode.UNKNOWN_TOPIC


async def test_topic_ops_on_a_metadata_follower_redirect(cluster):
    meta_leader = await cluster.wait_leader(0)
    follower = next(n for n in cluster.node_ids if n != meta_leader)
    await cluster.wait_for(lambda: cluster.driver(follower).groups[0].leader == meta_leader)
    err = await cluster.call_error(follower, "create_topic", topic="t", partitions=1, replicas=3)
    assert err.code is ErrorCode.NOT_LEADER
    assert err.details["leader_address"] == cluster.cfg.node(meta_leader).address
    exists = await cluster.create_topic("t")
    assert exists["name"] == "t"
    dup = await cluster.call_error(meta_leader, "create_topic", topic="t", partitions=1, replicas=3)
    assert dup.code is ErrorCode.TOPIC_EXISTS


async def test_leader_transfer_moves_leadership(cluster):
    topic = await cluster.create_topic("t", partitions=1)
    gid = topic["partitions"][0]["group"]
    leader = await cluster.wait_leader(gid)
    target = next(n for n in cluster.node_ids if n != leader)
    await cluster.produce(leader, "t", [b"a"])
    reply = await cluster.call(leader, "leader_transfer", topic="t", partition=0, to=target)
    assert reply["leader"] == target
    await cluster.wait_for(lambda: cluster.leader(gid) == target, what="transfer")
    await cluster.produce(target, "t", [b"b"])


async def test_metadata_leader_transfer_moves_the_controller_and_topic_ops_follow(cluster):
    old = await cluster.wait_leader(0)
    await cluster.wait_for(lambda: len(cluster.driver(old).metadata.nodes) == 3)
    target = next(n for n in cluster.node_ids if n != old)
    reply = await cluster.call(old, "metadata_leader_transfer", to=target)
    assert reply == {"leader": target, "leader_address": cluster.cfg.node(target).address}
    assert cluster.leader(0) == target
    # The old leader now redirects topic ops; the new one serves them.
    err = await cluster.call_error(old, "create_topic", topic="t", partitions=1, replicas=3)
    assert err.code is ErrorCode.NOT_LEADER and err.details["leader"] == target
    created = await cluster.call(target, "create_topic", topic="t", partitions=1, replicas=3)
    await cluster.produce(
        await cluster.wait_leader(created["topic"]["partitions"][0]["group"]), "t", [b"x"]
    )
    await cluster.wait_for(lambda: "t" in cluster.driver(old).metadata.topics, what="replicated")
    # Asking the leader for itself changes nothing (and bumps no term).
    term = cluster.driver(target).groups[0].raft.term
    again = await cluster.call(target, "metadata_leader_transfer", to=target)
    assert again["leader"] == target
    assert cluster.leader(0) == target and cluster.driver(target).groups[0].raft.term == term


async def test_metadata_leader_transfer_to_an_unknown_node_is_invalid(cluster):
    leader = await cluster.wait_leader(0)
    err = await cluster.call_error(leader, "metadata_leader_transfer", to="n9")
    assert err.code is ErrorCode.INVALID_REQUEST and "unknown node 'n9'" in err.message
    assert cluster.leader(0) == leader


async def test_metadata_leader_transfer_to_a_node_outside_group_0_is_invalid(tmp_path, nursery):
    cfg = small_config(tmp_path, nodes=4)
    cfg.nodes[3].join = True  # configured and running, but not a member of group 0 yet
    async with InProcCluster(cfg, nursery).running() as c:
        leader = await c.wait_leader(0)
        err = await c.call_error(leader, "metadata_leader_transfer", to="n4")
        assert err.code is ErrorCode.INVALID_REQUEST
        assert "'n4' is not a voter of the metadata group" in err.message
        assert c.leader(0) == leader


async def test_metadata_leader_transfer_to_an_unreachable_voter_is_not_available(cluster):
    leader = await cluster.wait_leader(0)
    target = next(n for n in cluster.node_ids if n != leader)
    await cluster.stop(target)
    await cluster.wait_for(
        lambda: not cluster.driver(leader)._node_alive(target, time.monotonic()),
        what="the stopped node to be seen as down",
    )
    err = await cluster.call_error(leader, "metadata_leader_transfer", to=target, timeout_ms=300)
    # Retriable: the node may be on its way back (the CLI retries until its deadline).
    assert err.code is ErrorCode.NOT_AVAILABLE and "not reachable" in err.message
    assert cluster.leader(0) == leader


async def test_metadata_leader_transfer_at_a_follower_redirects_to_the_leader(cluster):
    leader = await cluster.wait_leader(0)
    follower = next(n for n in cluster.node_ids if n != leader)
    await cluster.wait_for(lambda: cluster.driver(follower).groups[0].leader == leader)
    err = await cluster.call_error(follower, "metadata_leader_transfer", to=follower)
    assert err.code is ErrorCode.NOT_LEADER
    assert err.details["leader"] == leader
    assert err.details["leader_address"] == cluster.cfg.node(leader).address
    assert cluster.leader(0) == leader


async def test_idle_groups_quiesce_and_wake_on_demand(cluster):
    topic = await cluster.create_topic("many", partitions=12)
    gids = [p["group"] for p in topic["partitions"]]
    for gid in gids:
        await cluster.wait_leader(gid)

    def quiet_groups() -> int:
        return sum(1 for n in cluster.node_ids for g in gids if cluster.driver(n).groups[g].quiet)

    await cluster.wait_for(
        lambda: quiet_groups() == 3 * len(gids), within=20, what="all groups quiet"
    )
    ticks = sum(cluster.driver(n).stats["group_ticks"] for n in cluster.node_ids)
    await trio.sleep(0.3)  # a measurement window, not a wait for a condition
    ticked = sum(cluster.driver(n).stats["group_ticks"] for n in cluster.node_ids) - ticks
    # Only the metadata group's replicas may still tick.
    assert ticked <= 3 * 0.3 / (cluster.cfg.tick_ms / 1000) + 3
    leader = cluster.leader(gids[0])
    assert leader is not None
    reply = await cluster.produce(leader, "many", [b"wake"])
    assert reply["base_offset"] == 0


async def test_a_handler_bug_becomes_internal_for_that_request_only(cluster, monkeypatch):
    cluster.driver("n1").debug = False
    handlers = cluster.handlers["n1"]

    async def boom(ctx: Any, fields: dict) -> dict:
        raise RuntimeError("bug")

    monkeypatch.setitem(handlers._ops, "list_topics", boom)
    with pytest.raises(HandlerError) as info:
        await cluster.call("n1", "list_topics")
    assert info.value.code is ErrorCode.INTERNAL
    status = await cluster.call("n1", "cluster_status")
    assert status["node"] == "n1"


async def _unsafe_cluster(tmp_path: Any, nursery: trio.Nursery, **flags: Any) -> InProcCluster:
    c = InProcCluster(small_config(tmp_path, **flags), nursery)
    for node in c.node_ids:
        await c.start(node)
    return c


async def test_unsafe_ack_before_commit_acks_what_an_isolated_leader_cannot_commit(
    tmp_path, nursery
):
    c = await _unsafe_cluster(tmp_path, nursery, unsafe_ack_before_commit=True)
    try:
        topic = await c.create_topic("t", partitions=1)
        gid = topic["partitions"][0]["group"]
        leader = await c.wait_leader(gid)
        c.net.isolate(leader, [n for n in c.node_ids if n != leader])
        # The deliberately unsafe mode acknowledges an entry that cannot commit.
        reply = await c.produce(leader, "t", [b"doomed"])
        assert reply["base_offset"] == 0
        assert (
            c.driver(leader).groups[gid].raft.commit_index
            < c.driver(leader).groups[gid].raft.last_index
        )
    finally:
        await c.stop_all()


async def test_unsafe_follower_reads_serve_a_follower_without_read_index(tmp_path, nursery):
    c = await _unsafe_cluster(tmp_path, nursery, unsafe_follower_reads=True)
    try:
        topic = await c.create_topic("t", partitions=1)
        gid = topic["partitions"][0]["group"]
        leader = await c.wait_leader(gid)
        follower = next(n for n in c.node_ids if n != leader)
        reply = await c.call(follower, "list_offsets", topic="t", partition=0)
        assert reply == {"start_offset": 0, "end_offset": 0}
    finally:
        await c.stop_all()


async def test_metadata_describe_and_member_list_answer_from_any_node(cluster):
    topic = await cluster.create_topic("t", partitions=2)
    for p in range(2):
        await cluster.wait_leader(topic["partitions"][p]["group"])
    for node in cluster.node_ids:
        meta = await cluster.call(node, "metadata")
        assert meta["node"] == node and [t["name"] for t in meta["topics"]] == ["t"]
        described = await cluster.call(node, "describe_topic", topic="t")
        parts = described["topic"]["partitions"]
        assert [p["partition"] for p in parts] == [0, 1]
        assert all(p["end_offset"] == 0 for p in parts)
    members = await cluster.call("n1", "member_list")
    assert sorted(m["id"] for m in members["nodes"]) == ["n1", "n2", "n3"]
    assert all(len(m["groups"]) == 2 for m in members["nodes"])


async def test_five_nodes_three_replicas_place_groups_and_redirect_from_non_replicas(
    tmp_path, nursery
):
    c = InProcCluster(small_config(tmp_path, nodes=5), nursery)
    for node in c.node_ids:
        await c.start(node)
    try:
        topic = await c.create_topic("t", partitions=5, replicas=3)
        for p in topic["partitions"]:
            assert len(set(p["replicas"])) == 3
            gid = p["group"]
            leader = await c.wait_leader(gid)
            hosts = {n for n in c.node_ids if gid in c.driver(n).groups}
            assert hosts == set(p["replicas"])
            outsider = next(n for n in c.node_ids if n not in hosts)
            err = await c.call_error(
                outsider, "produce", topic="t", partition=p["partition"], **_batch([b"x"])
            )
            assert err.code is ErrorCode.NOT_LEADER
            assert err.details["leader_address"] == c.cfg.node(p["replicas"][0]).address
            reply = await c.produce(leader, "t", [b"x"], partition=p["partition"])
            assert reply["base_offset"] == 0
    finally:
        await c.stop_all()


async def test_uncommitted_bytes_budget_throttles_in_arrival_order(tmp_path, nursery):
    limits = Limits(max_uncommitted_bytes_per_group=2500)
    c = InProcCluster(small_config(tmp_path, limits=limits), nursery)
    for node in c.node_ids:
        await c.start(node)
    try:
        topic = await c.create_topic("t", partitions=1)
        gid = topic["partitions"][0]["group"]
        leader = await c.wait_leader(gid)
        driver = c.driver(leader)
        blob, count, crc = encode_records([(None, b"v" * 990, None, None)])
        # Five commands queued in one turn: two fit in the budget, the rest
        # are refused (nothing appended) and keep their order for the retry.
        waiters = [
            driver.submit(gid, Produce(records=blob, count=count, crc=crc), nbytes=len(blob))
            for _ in range(5)
        ]
        deadline = trio.current_time() + 10
        outcomes = [await w.wait(deadline) for w in waiters]
        assert [o.error for o in outcomes] == [None, None] + [ErrorCode.THROTTLED] * 3
        assert [o.value.base_offset for o in outcomes[:2]] == [0, 1]
        assert outcomes[2].details["retry_after_ms"] > 0
        again = await c.produce(leader, "t", [b"later"])
        assert again["base_offset"] == 2
    finally:
        await c.stop_all()


class _NoPeers:
    def send(
        self, peer: str, msgs: list[tuple[int, bytes]], *, flush_follows: bool = False
    ) -> None:
        raise AssertionError("a single-node cluster has no peers")

    def flush(self) -> None:
        pass

    def undelivered(self) -> bool:
        return False

    async def deliver(self) -> None:
        pass

    def is_connected(self, peer: str) -> bool:
        return False


async def test_a_failing_save_stops_the_node_instead_of_running_without_durability(
    tmp_path, monkeypatch
):
    cfg = small_config(tmp_path, nodes=1)
    store = NodeStore.open(cfg.nodes[0].data_dir, cluster=cfg.name, node_id="n1")
    try:
        driver = MultiRaft(cfg, "n1", store, _NoPeers(), debug=False)

        def broken_save(readies: Any) -> None:
            raise OSError("No space left on device")

        monkeypatch.setattr(store, "save", broken_save)
        # The single voter elects itself and must persist its vote: that fails.
        with pytest.raises(StorageFailedError), trio.fail_after(10):
            await driver.run()
    finally:
        store.close()


async def test_a_failing_apply_write_stops_the_node_instead_of_running_on(tmp_path, monkeypatch):
    """A full disk can fail the apply batch's write too (seen in
    test_disk_full_processes): the Readies of that turn are then half handled,
    and a loop that went on would build new Readies on unsaved entries."""
    cfg = small_config(tmp_path, nodes=1)
    store = NodeStore.open(cfg.nodes[0].data_dir, cluster=cfg.name, node_id="n1")
    try:
        driver = MultiRaft(cfg, "n1", store, _NoPeers(), debug=False)

        def broken_write(batch: Any, *, sync: bool = False) -> None:
            raise OSError("No space left on device")

        monkeypatch.setattr(store, "write", broken_write)
        # Elected alone, the node commits its first entry and applies it: that fails.
        with pytest.raises(StorageFailedError, match="No space left"), trio.fail_after(10):
            await driver.run()
        assert driver.stats["loop_errors"] == 0
    finally:
        store.close()


async def test_data_dir_free_space_is_a_gauge(cluster):
    driver = cluster.driver("n1")
    driver.metrics = metrics = Metrics()  # in-process nodes run without a registry
    driver._update_gauges()  # what the loop does every STATS_EVERY_S
    fs = os.statvfs(driver.store.path)
    free = metrics.data_dir_free.value()
    assert free > 0
    # Other tests write to the same filesystem meanwhile: equal within 64 MiB.
    assert abs(free - fs.f_bavail * fs.f_frsize) < 64 * 2**20
    assert metrics.data_dir_size.value() == fs.f_blocks * fs.f_frsize


async def test_rocksdb_gauges_follow_the_store(cluster):
    driver = cluster.driver("n1")
    driver.metrics = metrics = Metrics()
    rocksdb = metrics.rocksdb
    driver._update_gauges()
    before = rocksdb["total-sst-files-size"].value()
    driver.store.db.flush()  # the metadata group's writes, from the memtable into a file
    driver._update_gauges()
    assert rocksdb["total-sst-files-size"].value() > before
    assert rocksdb["estimate-live-data-size"].value() > 0
    assert rocksdb["is-write-stopped"].value() == 0
    assert rocksdb["actual-delayed-write-rate"].value() == 0
    assert rocksdb["num-running-compactions"].value() >= 0


async def test_deleting_a_topic_ends_a_waiting_long_poll(cluster):
    topic = await cluster.create_topic("gone", partitions=1)
    leader = await cluster.wait_leader(topic["partitions"][0]["group"])
    errors: list[HandlerError] = []

    async def poll() -> None:
        errors.append(
            await cluster.call_error(
                leader, "fetch", topic="gone", partition=0, offset=0, max_wait_ms=20_000
            )
        )

    with trio.fail_after(15):
        async with trio.open_nursery() as n:
            n.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            meta_leader = await cluster.wait_leader(0)
            await cluster.call(meta_leader, "delete_topic", topic="gone")
    assert errors[0].code is ErrorCode.UNKNOWN_TOPIC


async def test_a_new_metadata_leader_serves_topic_ops_after_the_old_one_is_cut_off(cluster):
    old = await cluster.wait_leader(0)
    await cluster.wait_for(lambda: len(cluster.driver(old).metadata.nodes) == 3)
    others = [n for n in cluster.node_ids if n != old]
    cluster.net.isolate(old, others)
    new = await cluster.wait_for(
        lambda: next((n for n in others if cluster.driver(n).groups[0].role is Role.LEADER), None),
        what="a new metadata leader",
    )
    reply = await cluster.call(new, "create_topic", topic="after", partitions=1, replicas=2)
    assert reply["topic"]["name"] == "after"
    cluster.net.heal()
    await cluster.wait_for(
        lambda: "after" in cluster.driver(old).metadata.topics, what="old leader catches up"
    )


async def test_a_quiesced_leader_that_is_cut_off_is_replaced_and_steps_down_when_woken(
    cluster,
):
    topic = await cluster.create_topic("q", partitions=1)
    gid = topic["partitions"][0]["group"]
    old = await cluster.wait_leader(gid)
    await cluster.produce(old, "q", [b"before"])
    await cluster.wait_for(
        lambda: all(cluster.driver(n).groups[gid].quiet for n in cluster.node_ids),
        within=20,
        what="the partition group quiet on every node",
    )
    others = [n for n in cluster.node_ids if n != old]
    cluster.net.isolate(old, others)
    # The followers stop hearing the leader's node, tick again and elect.
    new = await cluster.wait_for(
        lambda: next(
            (n for n in others if cluster.driver(n).groups[gid].role is Role.LEADER), None
        ),
        what="a new leader among the connected followers",
    )
    # The stale leader, still quiet, is woken by a produce it cannot commit.
    err = await cluster.call_error(
        old, "produce", topic="q", partition=0, timeout_ms=3000, **_batch([b"stale"])
    )
    assert err.code in (ErrorCode.TIMEOUT, ErrorCode.NOT_LEADER)
    await cluster.wait_for(
        lambda: cluster.driver(old).groups[gid].role is not Role.LEADER,
        what="CheckQuorum steps the stale leader down",
    )
    cluster.net.heal()
    assert (await cluster.produce(new, "q", [b"after"]))["base_offset"] >= 1


class _Answers:
    """What RequestHandlers.handle_nowait hands to its ``done`` callback."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, Any] | None, HandlerError | None]] = []
        self.event = trio.Event()

    def done(self, reply: dict[str, Any] | None, error: HandlerError | None) -> None:
        self.got.append((reply, error))
        self.event.set()

    async def one(self) -> tuple[dict[str, Any] | None, HandlerError | None]:
        with trio.fail_after(10):
            await self.event.wait()
        assert len(self.got) == 1, self.got  # done is called exactly once
        return self.got[0]


async def test_taskless_produce_is_answered_from_the_drivers_turn(cluster):
    """The listener's fast path: a produce to a partition this node leads is queued
    with no task; the outcome arrives through the callback, in offset order."""
    topic = await cluster.create_topic("t", partitions=1)
    leader = await cluster.wait_leader(topic["partitions"][0]["group"])
    handlers = cluster.handlers[leader]
    answers = [_Answers() for _ in range(3)]
    for i, a in enumerate(answers):
        fields = {"topic": "t", "partition": 0, **_batch([b"x%d" % i])}
        assert handlers.handle_nowait(None, "produce", fields, a.done) is True
    offsets = [(await a.one())[0]["base_offset"] for a in answers]  # type: ignore[index]
    assert offsets == [0, 1, 2]
    assert await _fetch_all(cluster, leader, "t", 0) == [b"x0", b"x1", b"x2"]


async def test_taskless_produce_errors_and_fallbacks(cluster):
    topic = await cluster.create_topic("t", partitions=1)
    leader = await cluster.wait_leader(topic["partitions"][0]["group"])
    follower = next(n for n in cluster.node_ids if n != leader)
    await cluster.wait_for(lambda: "t" in cluster.driver(follower).metadata.topics)
    gid = topic["partitions"][0]["group"]
    # A follower names the leader only once a message of the leader's term reached
    # it; until then NOT_LEADER carries no hint, which is also correct.
    await cluster.wait_for(
        lambda: cluster.driver(follower).groups[gid].leader == leader,
        what="the follower learns who leads",
    )
    fields = {"topic": "t", "partition": 0, **_batch([b"v"])}
    # A follower answers at once, with the leader to go to.
    a = _Answers()
    assert cluster.handlers[follower].handle_nowait(None, "produce", fields, a.done) is True
    _, err = await a.one()
    assert err is not None and err.code is ErrorCode.NOT_LEADER
    assert err.details["leader_address"] == cluster.cfg.node(leader).address
    # Bad input: the same codes as the task path.
    a = _Answers()
    bad = {**fields, "crc": fields["crc"] ^ 1}
    assert cluster.handlers[leader].handle_nowait(None, "produce", bad, a.done) is True
    assert (await a.one())[1].code is ErrorCode.CORRUPT_BATCH  # type: ignore[union-attr]
    # Not taken (nothing done, no callback): another op, or a topic unknown here,
    # which only a metadata read may call UNKNOWN_TOPIC.
    a = _Answers()
    unknown = {**fields, "topic": "nope"}
    assert cluster.handlers[leader].handle_nowait(None, "produce", unknown, a.done) is False
    assert cluster.handlers[leader].handle_nowait(None, "list_topics", {}, a.done) is False
    assert a.got == []


async def test_taskless_produce_times_out_when_the_leader_cannot_commit(cluster):
    """No task waits on it, so the driver's deadline expiry must answer it."""
    topic = await cluster.create_topic("t", partitions=1)
    gid = topic["partitions"][0]["group"]
    leader = await cluster.wait_leader(gid)
    cluster.net.isolate(leader, [n for n in cluster.node_ids if n != leader])
    a = _Answers()
    fields = {"topic": "t", "partition": 0, "timeout_ms": 300, **_batch([b"lost?"])}
    assert cluster.handlers[leader].handle_nowait(None, "produce", fields, a.done) is True
    _, err = await a.one()
    # TIMEOUT (outcome unknown) or NOT_LEADER once CheckQuorum steps it down:
    # never an acknowledgement.
    assert err is not None and err.code in (ErrorCode.TIMEOUT, ErrorCode.NOT_LEADER)


async def test_a_waiter_past_its_deadline_is_failed_by_the_loop(cluster):
    """submit(deadline=...) is for callers with no task waiting: the loop itself
    answers TIMEOUT (outcome unknown), here before the command is even proposed."""
    topic = await cluster.create_topic("t", partitions=1)
    gid = topic["partitions"][0]["group"]
    leader = await cluster.wait_leader(gid)
    driver = cluster.driver(leader)
    outcomes: list[Any] = []
    command = cluster.handlers[leader]._produce_command({"topic": "t", **_batch([b"late"])})
    waiter = driver.submit(gid, command, 0, deadline=trio.current_time() - 1.0)
    waiter.on_done(outcomes.append)
    await cluster.wait_for(lambda: outcomes, what="the expired waiter's outcome")
    assert [o.error for o in outcomes] == [ErrorCode.TIMEOUT]
    # A live deadline far away does not fire; the command commits normally.
    ok = driver.submit(gid, command, 0, deadline=trio.current_time() + 60.0)
    await cluster.wait_for(lambda: ok.done, what="the commit")
    assert ok.outcome is not None and ok.outcome.error is None
    # An answered waiter does not sit in the deadline heap until its deadline
    # (it would hold its request's memory): the next loop turns drop it.
    await cluster.wait_for(lambda: not driver._deadlines, what="the deadline heap emptied")
