"""A short ``compact`` jepsen run against real node processes.

The topic is compacted and the leaders sweep every 200 ms while nodes are killed
and partitioned; workers send keyed records and tombstones and read, also from
offset 0. The compacted-topic checker must find the history valid (nothing
removed that no later record replaced, no tombstone gone before its retention,
no read that skipped a record still there) and every replica must agree.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from raftlog.jepsen.runner import RunOptions, run

pytestmark = pytest.mark.integration


async def test_short_compact_run_under_kill_and_partition_is_valid(tmp_path: Path) -> None:
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="compact", nemesis=["kill", "partition"],
        time_limit=20, nemesis_interval=3, concurrency=6, seed=5, recovery=3, quiet=1,
        delete_retention_ms=3000,
    )
    results = await run(opts)
    assert results["valid"], {k: results.get(k) for k in ("log", "replicas", "liveness")}
    assert "linearizability" not in results  # a dense-log model: not for holes
    stats = results["log"]["stats"]
    assert stats["tombstone_check"] is True
    assert results["counts"]["send"]["ok"] > 200
    # The sweeps ran during the run: most records are gone, each partition keeps
    # about one per key (six keys).
    assert stats["removed"] > results["counts"]["send"]["ok"] // 2, stats
    for part in stats["partitions"].values():
        assert part["drained"] and part["held"] <= 20, part
    assert results["replicas"]["checked"] and results["replicas"]["valid"]
