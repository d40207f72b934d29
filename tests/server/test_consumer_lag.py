"""Consumer lag metrics (server/consumer_lag.py): from the partitions a node leads,
computed when /metrics is scraped."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import trio
from raftlog.client.aio import AsyncClient
from raftlog.raft.types import Role
from raftlog.server.consumer_lag import GroupLag, consumer_lag, register_consumer_lag
from raftlog.server.groups import GroupKind
from raftlog.server.metrics import Registry

from .cluster_harness import make_config
from .test_producer_expiry import scrape
from .test_tls_cluster import FAST, running


def partition(topic: str, end: int, commits: dict[str, int], role: Role = Role.LEADER):
    sm = SimpleNamespace(next_offset=end, offsets={g: (o, "") for g, o in commits.items()})
    return SimpleNamespace(kind=GroupKind.PARTITION, role=role, topic=topic, sm=sm)


def test_lag_sums_and_maxes_over_led_partitions_only() -> None:
    groups = [
        partition("t", 10, {"g": 4, "h": 10}),
        partition("t", 7, {"g": 5}),
        partition("t", 100, {"g": 0}, role=Role.FOLLOWER),  # its leader reports it
        partition("u", 3, {"g": 9}),  # committed past the end: no negative lag
        partition("u", 8, {}),  # no commit: nothing to report
        SimpleNamespace(kind=GroupKind.METADATA, role=Role.LEADER, topic=None, sm=None),
    ]
    assert consumer_lag(groups) == {
        ("g", "t"): GroupLag(total=8, max=6, partitions=2),
        ("h", "t"): GroupLag(total=0, max=0, partitions=1),
        ("g", "u"): GroupLag(total=0, max=0, partitions=1),
    }


def test_the_gauges_are_read_at_scrape_time_with_escaped_labels() -> None:
    groups = [partition("t", 10, {'we"ird': 4})]
    registry = Registry()
    register_consumer_lag(registry, lambda: groups)
    text = registry.render()
    assert 'raftlog_consumer_group_lag_sum{group="we\\"ird",topic="t"} 6' in text
    assert "# TYPE raftlog_consumer_group_lag_max gauge" in text
    groups[0].sm.next_offset = 25  # no update call: the next scrape sees it
    assert 'raftlog_consumer_group_lag_max{group="we\\"ird",topic="t"} 21' in registry.render()


async def test_lag_over_the_cluster_follows_produces_and_commits(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 3, metrics=True, **FAST)

    async def cluster_lag(group: str) -> tuple[float, float, float]:
        """(sum, max, partitions) of ``group`` on topic t, over every node."""
        total = most = parts = 0.0
        for n in cfg.nodes:
            samples = await scrape(str(n.metrics_address))
            labels = f'{{group="{group}",topic="t"}}'
            total += samples.get(f"raftlog_consumer_group_lag_sum{labels}", 0)
            most = max(most, samples.get(f"raftlog_consumer_group_lag_max{labels}", 0))
            parts += samples.get(f"raftlog_consumer_group_lag_partitions{labels}", 0)
        return total, most, parts

    async def wait_lag(group: str, expected: tuple[float, float, float]) -> None:
        # A leader reports what it applied; a produce or commit is answered after
        # its apply, but wait (bounded by fail_after) in case leadership moved.
        while True:
            if await cluster_lag(group) == expected:
                return
            await trio.sleep(0.05)

    async with running(cfg):
        with trio.fail_after(60):
            async with AsyncClient([n.address for n in cfg.nodes]) as client:
                await client.create_topic("t", partitions=2, replicas=3)
                await client.produce_batch("t", 0, [b"r"] * 10)
                await client.produce_batch("t", 1, [b"r"] * 4)
                await client.commit_offset("g", "t", 0, 4)
                await client.commit_offset("g", "t", 1, 4)
                await client.commit_offset("h", "t", 0, 10)
                await wait_lag("g", (6, 6, 2))
                await wait_lag("h", (0, 0, 1))
                await client.produce_batch("t", 1, [b"r"] * 9)
                await wait_lag("g", (15, 9, 2))
                await wait_lag("h", (0, 0, 1))
                await client.commit_offset("g", "t", 1, 13)
                await wait_lag("g", (6, 6, 2))


def test_one_scrape_reads_the_partitions_once_for_all_three_gauges() -> None:
    groups = [partition("t", 10, {"g": 4})]
    reads = 0

    def counted() -> list[SimpleNamespace]:
        nonlocal reads
        reads += 1
        return groups

    registry = Registry()
    register_consumer_lag(registry, counted)
    text = registry.render()
    assert 'raftlog_consumer_group_lag_partitions{group="g",topic="t"} 1' in text
    assert reads == 1
    registry.render()
    assert reads == 2  # the next scrape reads afresh
