"""A whole jepsen run under the clock nemesis, real node processes on 127.0.0.1.

The test topic keeps records far longer than the run (retention_ms), so a
record deleted by time is a lost acknowledged record. The leader's wall clock
jumps an hour ahead or behind: ahead, it must refuse to delete by time; behind,
it must stamp with the nodes' median clock so that no later leader deletes
its records early. Without those two checks this seed loses records.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from raftlog.jepsen.runner import RunOptions, run

from .test_end_to_end import assert_replicas_agree, history_ops, ok_count

pytestmark = pytest.mark.integration


async def test_short_run_under_leader_clock_jumps_is_valid_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="log", nemesis=["clock"],
        clock_targets=["leader"], clock_offsets=[3600.0, -3600.0],
        time_limit=12, nemesis_interval=2, concurrency=8, seed=5, recovery=2, quiet=1,
    )  # fmt: skip
    results = await run(opts)
    assert results["valid"], {k: results[k] for k in ("log", "notes", "liveness")}
    assert ok_count(results, "send") > 100 and ok_count(results, "drain") == opts.partitions
    assert_replicas_agree(results, opts)
    run_dir = tmp_path / "run"
    starts = history_ops(run_dir)
    jumps = {
        o for op in starts if op["f"] == "start-clock" for o in op["value"]["offsets_s"].values()
    }
    assert jumps == {3600.0, -3600.0}  # the leader's clock went both ways
    logs = "".join(p.read_text() for p in (run_dir / "logs").glob("n*.log"))
    assert "event=retention_clock_refused" in logs  # a leader an hour ahead said no
    assert "event=retention_truncate" not in logs
