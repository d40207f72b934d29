"""Offsets retention (server/offsets_retention.py) on three real nodes over
sockets: a consumer group that stays empty for ``offsets_retention_ms`` is
deleted with its committed offsets on every partition, while a group with a
live member keeps its offsets; an offset committed by hand under a name that
never formed a group expires by its commit time unless committed again; and a
half-finished ``group delete`` is finished by the partitions' leaders."""

from __future__ import annotations

import time
from pathlib import Path

import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer
from raftlog.log.features import LOG_FORMAT
from raftlog.server.config import RetentionConfig

from .cluster_harness import make_config
from .test_log_format import wait_cluster_format
from .test_tls_cluster import DEADLINE_S, FAST, running

RETENTION_MS = 500
PARTITIONS = (0, 1)


async def committed(client: AsyncClient, group: str) -> list[int | None]:
    return [await client.committed(group, "events", p) for p in PARTITIONS]


async def wait_committed(client: AsyncClient, group: str, want: list[int | None]) -> None:
    """Until ``group``'s offsets read ``want`` (the caller's deadline bounds it;
    the nodes check every 50 ms)."""
    while True:
        if await committed(client, group) == want:
            return
        await trio.sleep(0.02)


async def test_an_empty_group_expires_with_its_offsets_and_a_live_one_stays(tmp_path: Path):
    retention = RetentionConfig(interval_ms=50, offsets_retention_ms=RETENTION_MS)
    cfg = make_config(tmp_path, 3, retention=retention, **FAST)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient([n.address for n in cfg.nodes]) as client:
                await client.create_topic("events", partitions=len(PARTITIONS), replicas=3)
                for i in range(6):
                    await client.produce("events", b"v%d" % i, partition=i % 2)
                # A live member with a long session: it must not expire meanwhile.
                live = Consumer(client, "live", "events", session_timeout=30.0)
                await live.start()
                await live.commit({0: 1, 1: 1})

                gone = Consumer(client, "gone", "events", session_timeout=2.0)
                await gone.start()
                gone_generation = gone.generation
                assert gone_generation is not None
                await gone.commit({0: 3, 1: 2})
                await gone.close()
                left_at = time.monotonic()

                await wait_committed(client, "gone", [None, None])
                assert time.monotonic() - left_at >= RETENTION_MS / 1000
                listed = await client.request("group_list", idempotent=True)
                assert [g["group"] for g in listed["groups"]] == ["live"]
                assert await committed(client, "live") == [1, 1]

                # The name joined again is a new group: from auto_offset_reset, with
                # generations counting on from the deletion.
                again = Consumer(client, "gone", "events", auto_offset_reset="latest")
                await again.start()
                assert again.generation is not None and again.generation > gone_generation + 1
                assert [again.position(p) for p in PARTITIONS] == [3, 3]
                await again.close()
                await live.close()


async def test_a_hand_committed_offset_expires_unless_committed_again(tmp_path: Path):
    retention = RetentionConfig(interval_ms=50, offsets_retention_ms=RETENTION_MS)
    cfg = make_config(tmp_path, 3, retention=retention, **FAST)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            await wait_cluster_format(cfg, LOG_FORMAT)  # commits carry their time
            async with AsyncClient([n.address for n in cfg.nodes]) as client:
                await client.create_topic("events", partitions=len(PARTITIONS), replicas=3)
                # Manual assignment: names that never form a group.
                await client.commit_offset("once", "events", 0, 2)
                committed_at = time.monotonic()
                steady_commits = 0

                async def keep_committing() -> None:
                    nonlocal steady_commits
                    while True:
                        steady_commits += 1
                        await client.commit_offset("steady", "events", 0, steady_commits)
                        await trio.sleep(RETENTION_MS / 1000 / 5)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(keep_committing)
                    while True:
                        if await client.committed("once", "events", 0) is None:
                            break
                        await trio.sleep(0.02)
                    nursery.cancel_scope.cancel()
                assert time.monotonic() - committed_at >= RETENTION_MS / 1000
                # Every round since the first has seen "steady" too: a commit
                # within the retention keeps it.
                assert steady_commits >= 5
                assert await client.committed("steady", "events", 0) in (
                    steady_commits - 1,
                    steady_commits,
                )


async def test_the_partition_leaders_finish_a_group_delete_the_client_left_half_done(
    tmp_path: Path,
):
    # A retention far beyond the test: only the tombstone can make offsets go.
    retention = RetentionConfig(interval_ms=50, offsets_retention_ms=3_600_000)
    cfg = make_config(tmp_path, 3, retention=retention, **FAST)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient([n.address for n in cfg.nodes]) as client:
                await client.create_topic("events", partitions=len(PARTITIONS), replicas=3)
                member = Consumer(client, "billing", "events", session_timeout=2.0)
                await member.start()
                await member.commit({0: 4, 1: 5})
                await member.close()
                # Only the controller's half of `group delete` (the tombstone), as when
                # the client is killed before it deletes a single offset.
                deleted = await client.request("group_delete", idempotent=True, group="billing")
                assert deleted["generation"] > 0
                await wait_committed(client, "billing", [None, None])
