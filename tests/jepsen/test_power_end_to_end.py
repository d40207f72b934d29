"""Whole jepsen runs under the power nemesis, real node processes on 127.0.0.1,
each data dir on a lazyfs (jepsen/lazyfs.py): a power cut loses every write
its node had not fsynced. A majority or all of the nodes lose power at once.

With fsync on, nothing acknowledged may be lost. The same seed with
``fsync = false`` must be caught losing acknowledged records: otherwise the
fault would not be testing anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from raftlog.jepsen.runner import RunOptions, run

from .fuse_support import FUSE_MISSING
from .test_end_to_end import assert_replicas_agree, drains, history_ops, ok_count

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(FUSE_MISSING is not None, reason=f"lazyfs: {FUSE_MISSING}"),
]


def options(out: Path, *, fsync: bool) -> RunOptions:
    return RunOptions(
        out=out, nodes=3, workload="log", nemesis=["power"], power_targets=["all", "majority"],
        time_limit=12, nemesis_interval=3, concurrency=8, seed=1, recovery=2, quiet=1,
        fsync=fsync,
    )  # fmt: skip


def any_mount_under(path: Path) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1].startswith(str(path)) for line in mounts)


def power_cuts(run_dir: Path) -> list[list[str]]:
    return [op["value"]["nodes"] for op in history_ops(run_dir) if op["f"] == "start-power"]


async def test_power_cuts_of_a_majority_lose_nothing_acknowledged(tmp_path: Path) -> None:
    opts = options(tmp_path / "run", fsync=True)
    results = await run(opts)
    assert results["valid"], {k: results[k] for k in ("log", "notes", "liveness")}
    assert ok_count(results, "send") > 100 and ok_count(results, "drain") == opts.partitions
    assert_replicas_agree(results, opts)
    assert not acknowledged_but_not_drained(tmp_path / "run")
    cuts = power_cuts(tmp_path / "run")
    assert len(cuts) >= 2 and all(len(nodes) >= 2 for nodes in cuts)
    # The disks are unmounted and back where the data dirs were.
    assert not any_mount_under(tmp_path)
    assert (tmp_path / "run" / "data" / "n1" / "CURRENT").exists()


async def test_without_fsync_the_same_power_cuts_lose_acknowledged_records(
    tmp_path: Path,
) -> None:
    results = await run(options(tmp_path / "run", fsync=False))
    assert not results["valid"]
    # The history itself: an acknowledged value is missing from the final drain.
    assert acknowledged_but_not_drained(tmp_path / "run"), "no acknowledged record was lost"
    # And the checker names it. Which anomaly depends on timing:
    # - "lost-write": a later read got past the lost offset (checker_log check_lost);
    # - "unseen-after-drain": the final drain ended before it (the log's tail was lost
    #   and not rewritten);
    # - "inconsistent-offsets": the value had been read before the cut, and a later
    #   record took its offset (check_lost counts a value read once as not lost; the
    #   clean-clone CI of 864ad57 showed only this one).
    lost = {"lost-write", "unseen-after-drain", "inconsistent-offsets"}
    assert lost & set(results["log"]["anomaly_types"]), results["log"]["anomaly_types"]


def acknowledged_but_not_drained(run_dir: Path) -> list[tuple[int, Any]]:
    """(key, value) of every acknowledged send that the final drain of its key
    does not hold (keys without a final drain are not judged)."""
    drained: dict[int, set[Any]] = {}
    for drain in drains(run_dir):
        drained.setdefault(drain["key"], set()).update(v for _, v in drain["records"])
    return [
        (op["value"]["key"], op["value"]["value"])
        for op in history_ops(run_dir)
        if op["f"] == "send" and op["type"] == "ok" and op["value"]["key"] in drained
        and op["value"]["value"] not in drained[op["value"]["key"]]
    ]
