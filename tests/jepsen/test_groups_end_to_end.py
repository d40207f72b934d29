"""A short ``groups`` jepsen run against real node processes.

Group-managed consumers (2 s sessions) read while nodes are killed and
partitioned, so members expire, the coordinator (the metadata leader) fails
over and consumers rebalance; the history must be valid for the group checker
(no record passed by a commit undelivered, no gap inside a generation, nothing
committed past the end, no wrong value), the log checker and linearizability.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from raftlog.jepsen.runner import RunOptions, run

pytestmark = pytest.mark.integration


async def test_short_groups_run_under_kill_and_partition_is_valid(tmp_path: Path) -> None:
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="groups", nemesis=["kill", "partition"],
        time_limit=20, nemesis_interval=3, concurrency=6, consumers=3, seed=4, recovery=4,
        quiet=1,
    )
    results = await run(opts)
    assert results["valid"], {k: results.get(k) for k in ("groups", "log", "liveness", "notes")}
    groups = results["groups"]
    assert groups["anomaly_types"] == [] and results["liveness"] == []
    stats = groups["stats"]
    assert stats["rebalances_seen"] >= 1, stats
    assert stats["deliveries"] > 50
    # Every partition was drained and its committed offset read after the consumers closed.
    assert set(stats["final_committed"]) == set(stats["drained_end"]) == {
        str(p) for p in range(opts.partitions)}
    assert results["counts"]["gclose"].get("ok", 0) >= opts.consumers
    assert results["linearizability"]["verdict"] == "linearizable"


async def test_short_groups_run_with_static_members_is_valid(tmp_path: Path) -> None:
    """The same faults with group_instance_ids: a worker's restart takes its old
    member's place (tests/client/test_consumer_static.py checks that directly);
    members that faults expire still rebalance, and nothing may be lost."""
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="groups", nemesis=["kill", "partition"],
        time_limit=20, nemesis_interval=3, concurrency=6, consumers=3, seed=4, recovery=4,
        quiet=1, static_members=True,
    )
    results = await run(opts)
    assert results["valid"], {k: results.get(k) for k in ("groups", "log", "liveness", "notes")}
    assert results["groups"]["anomaly_types"] == [] and results["liveness"] == []
    assert set(results["groups"]["stats"]["final_committed"]) == {
        str(p) for p in range(opts.partitions)}
    assert results["linearizability"]["verdict"] == "linearizable"


async def test_short_groups_run_with_cooperative_and_eager_members_is_valid(
    tmp_path: Path,
) -> None:
    """The same faults with every other consumer cooperative (client/consumer.py):
    those keep reading through rebalances, withheld partitions move only after
    their owner let go, and nothing may be lost or skipped within a stint."""
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="groups", nemesis=["kill", "partition"],
        time_limit=20, nemesis_interval=3, concurrency=6, consumers=3, seed=4, recovery=4,
        quiet=1, rebalance="mixed",
    )
    results = await run(opts)
    assert results["valid"], {k: results.get(k) for k in ("groups", "log", "liveness", "notes")}
    assert results["groups"]["anomaly_types"] == [] and results["liveness"] == []
    stats = results["groups"]["stats"]
    assert stats["rebalances_seen"] >= 1, stats
    assert set(stats["final_committed"]) == {str(p) for p in range(opts.partitions)}
    assert results["linearizability"]["verdict"] == "linearizable"
