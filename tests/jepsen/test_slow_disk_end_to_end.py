"""A whole jepsen run under the slow-disk nemesis: real node processes on
127.0.0.1, each data dir on a lazyfs (jepsen/lazyfs.py) whose fsyncs wait a
second while its node is a target.

One slow disk at a time, the leader's or another's: nothing acknowledged may
be lost, and the cluster must stay available through every window (the stalled
leader loses its leadership and the others go on). The reverse, a leader that
keeps its leadership while its disk holds every commit back, is the failure
etcd users met (etcd #7970) and what this guards against.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from raftlog.jepsen.runner import RunOptions, run

from .fuse_support import FUSE_MISSING
from .test_end_to_end import assert_replicas_agree, history_ops, ok_count

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(FUSE_MISSING is not None, reason=f"lazyfs: {FUSE_MISSING}"),
]

STALL_MS = 1000.0


def windows(run_dir: Path) -> list[tuple[dict, list[float]]]:
    """Each slow-disk window's start value, with the times of the sends acked in it."""
    ops = history_ops(run_dir)
    out: list[tuple[dict, list[float]]] = []
    start: dict | None = None
    for op in ops:
        if op["f"] == "start-slow-disk":
            start = op
        elif op["f"] == "stop-slow-disk" and start is not None:
            acked = [
                o["time_ns"] / 1e9
                for o in ops
                if o["f"] == "send"
                and o["type"] == "ok"
                and start["time_ns"] <= o["time_ns"] <= op["time_ns"]
            ]
            out.append((start["value"], acked))
            start = None
    return out


async def test_one_slow_disk_costs_a_fail_over_not_availability_or_data(tmp_path: Path) -> None:
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="log", nemesis=["slow-disk"],
        slow_disk_targets=["leader", "one"], slow_disk_ms=[STALL_MS], time_limit=16,
        nemesis_interval=4, concurrency=8, seed=1, recovery=2, quiet=1,
    )  # fmt: skip
    results = await run(opts)
    assert results["valid"], {k: results[k] for k in ("log", "notes", "liveness")}
    assert ok_count(results, "send") > 100 and ok_count(results, "drain") == opts.partitions
    assert_replicas_agree(results, opts)
    seen = windows(tmp_path / "run")
    assert len(seen) >= 2
    slowed = set()
    for value, acked in seen:
        assert value["fsync_delay_ms"] == STALL_MS and len(value["nodes"]) == 1
        slowed.update(value["nodes"])
        assert acked, f"no send was acknowledged while {value['nodes']}'s disk was slow"
    # The fault bit: each slowed node's own log names the stall.
    for nid in slowed:
        log_text = (tmp_path / "run" / "logs" / f"{nid}.log").read_text()
        assert "event=slow_fsync" in log_text, nid
