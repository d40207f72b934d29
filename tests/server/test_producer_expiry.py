"""Producer expiry (server/retention.py): partition leaders make their partitions
forget idle producers and cap how many they remember, through the Raft log."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.protocol import decode_batch
from raftlog.log.commands import ExpireProducers, Produce, encode_entry_commands
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.types import Entry
from raftlog.server.config import RetentionConfig
from raftlog.server.retention import RetentionManager
from raftlog.server.waiters import Waiter

from .cluster_harness import make_config
from .test_clock_skew import LeaderDriver
from .test_retention import Part, part  # noqa: F401  (the fixture)
from .test_tls_cluster import FAST, _group, _wait_all_applied, running


class ApplyingDriver(LeaderDriver):
    """A driver leading one partition (test_clock_skew's) whose commands are applied
    at once (``hold``: left in flight instead)."""

    def __init__(self, partition: Part, clock_ok: bool = True) -> None:
        super().__init__(partition, {}, clock_ok)
        self.part = partition
        self.hold = False

    def submit(self, gid: int, command: Any) -> Waiter:
        self.submitted.append(command)
        waiter = Waiter()
        if not self.hold:
            self.part.index += 1
            batch = self.part.store.new_batch()
            (results,) = self.part.sm.apply(
                [Entry(1, self.part.index, data=encode_entry_commands([command]))], batch
            )
            self.part.store.write(batch)
            waiter.resolve(results[0])
        return waiter


def producer(into: Part, pid: int, ts: int) -> None:
    seq = into.sm.producers[pid][-1].sequence + 1 if pid in into.sm.producers else 0
    into.run(Produce(b"", 1, 0, pid, seq, ts))


def expired(driver: ApplyingDriver, reason: str) -> float:
    return driver.metrics.producers_expired.value(reason=reason)


def manager(driver: ApplyingDriver, now_ms: int, expiry_ms: int, cap: int) -> RetentionManager:
    return RetentionManager(
        driver,
        interval_s=1.0,
        producer_expiry_ms=expiry_ms,
        max_producers=cap,
        clock_ms=lambda: now_ms,
    )


def test_the_leader_expires_idle_producers_and_counts_them(part: Part) -> None:  # noqa: F811
    producer(part, 1, ts=1_000)
    producer(part, 2, ts=5_000)
    driver = ApplyingDriver(part)
    assert manager(driver, now_ms=10_000, expiry_ms=6_000, cap=100).check_all() == 1
    assert driver.submitted == [ExpireProducers(4_000, 100)]
    assert list(part.sm.producers) == [2]
    assert (expired(driver, "idle"), expired(driver, "limit")) == (1, 0)
    # Nothing left to do: the next round proposes nothing.
    assert manager(driver, now_ms=10_000, expiry_ms=6_000, cap=100).check_all() == 0


def test_the_cap_applies_without_idle_producers(part: Part) -> None:  # noqa: F811
    for pid in (1, 2, 3):
        producer(part, pid, ts=9_000)
    driver = ApplyingDriver(part)
    assert manager(driver, now_ms=10_000, expiry_ms=6_000, cap=1).check_all() == 1
    assert list(part.sm.producers) == [3]
    assert (expired(driver, "idle"), expired(driver, "limit")) == (0, 2)


def test_a_leader_clock_ahead_expires_by_the_cap_only(part: Part) -> None:  # noqa: F811
    for pid in (1, 2, 3):
        producer(part, pid, ts=1_000)
    driver = ApplyingDriver(part, clock_ok=False)
    assert manager(driver, now_ms=10_000, expiry_ms=6_000, cap=5).check_all() == 0
    assert list(part.sm.producers) == [1, 2, 3]
    assert driver.metrics.retention_clock_refusals.value() == 1
    assert manager(driver, now_ms=10_000, expiry_ms=6_000, cap=2).check_all() == 1
    assert driver.submitted == [ExpireProducers(-1, 2)]
    assert list(part.sm.producers) == [2, 3]


def test_one_expiry_in_flight_per_partition(part: Part) -> None:  # noqa: F811
    producer(part, 1, ts=1_000)
    driver = ApplyingDriver(part)
    driver.hold = True
    rounds = manager(driver, now_ms=10_000, expiry_ms=1_000, cap=100)
    assert rounds.check_all() == 1
    assert rounds.check_all() == 0  # the first is not applied yet
    assert len(driver.submitted) == 1


def test_expiry_settings_come_from_cluster_toml_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = SimpleNamespace(
        retention=RetentionConfig(producer_expiry_ms=1234, max_producers_per_partition=7)
    )
    rounds = RetentionManager(SimpleNamespace(cfg=cfg))
    assert (rounds.producer_expiry_ms, rounds.max_producers) == (1234, 7)
    monkeypatch.setenv("RAFTLOG_RETENTION_MAX_PRODUCERS_PER_PARTITION", "3")
    assert RetentionManager(SimpleNamespace(cfg=cfg)).max_producers == 3


async def scrape(address: str) -> dict[str, float]:
    def get() -> str:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
            return reply.read().decode()

    samples = {}
    for line in (await trio.to_thread.run_sync(get)).splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


async def test_an_idle_client_produces_again_after_its_producer_expired(tmp_path: Path) -> None:
    """Three nodes with a 300 ms producer expiry. The client's producer is forgotten
    by every replica while it idles; its next produce is refused as an unknown
    producer's, the client moves to a fresh producer id and the record lands once.
    That id expires in turn, and then no replica remembers any producer."""
    retention = RetentionConfig(interval_ms=50, producer_expiry_ms=300)
    cfg = make_config(tmp_path, 3, metrics=True, retention=retention, **FAST)
    addresses = [n.address for n in cfg.nodes]

    async def wait_expired_idle(at_least: int) -> None:
        """Until the nodes' leaders have expired ``at_least`` idle producers (the
        caller's fail_after bounds it)."""
        while True:
            total = 0.0
            for n in cfg.nodes:
                samples = await scrape(str(n.metrics_address))
                total += samples.get('raftlog_producers_expired_total{reason="idle"}', 0)
            if total >= at_least:
                return
            await trio.sleep(0.05)

    async with running(cfg):
        with trio.fail_after(60):
            async with AsyncClient(addresses) as client:
                await client.create_topic("t", partitions=1, replicas=3)
                gid = (await client.describe_topic("t"))["partitions"][0]["group"]
                for i in range(3):
                    await client.produce("t", f"before{i}".encode(), partition=0)
                await wait_expired_idle(1)
                await client.produce("t", b"after", partition=0)
                await wait_expired_idle(2)
                # Nothing is proposed after the second expiry (nobody left to forget).
                views = await client.cluster_status()
                leader = next(v for v in views.values() if _group(v, "t")["role"] == "leader")
                await _wait_all_applied(client, "t", _group(leader, "t")["commit"])
    for n in cfg.nodes:
        with NodeStore.open(n.data_dir, cluster=cfg.name, node_id=n.id) as store:
            sm = PartitionStateMachine(store, gid)
            values = [r.value for b in sm.read(0, 1 << 20) for r in decode_batch(b[0], b[1], b[3])]
            assert values == [b"before0", b"before1", b"before2", b"after"], n.id
            assert sm.producers == {}, n.id
