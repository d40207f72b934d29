"""A whole jepsen run under the disk-full nemesis, real node processes on 127.0.0.1.

Every data dir is a tmpfs of the run (root only: skipped elsewhere). The run
must be valid, and a node must really have stopped on a full disk: a run in
which no write ever failed proves nothing about the fault.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from raftlog.jepsen.runner import RunOptions, run

from .test_end_to_end import assert_replicas_agree, ok_count

pytestmark = pytest.mark.integration


@pytest.fixture
def can_mount_tmpfs(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    ok = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
        capture_output=True, check=False,
    ).returncode == 0  # fmt: skip
    if not ok:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    subprocess.run(["umount", str(probe)], capture_output=True, check=True)


async def test_short_run_under_disk_full_is_valid_and_nodes_stop_on_the_full_disk(
    tmp_path: Path, can_mount_tmpfs: None
) -> None:
    # The smallest margin: a target's next page of writes fails, so every
    # window whose targets write (all of them: every node replicates every
    # partition) stops them well within it, even on a loaded machine.
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="log", nemesis=["disk-full"],
        disk_full_targets=["one", "minority", "leader"], disk_full_margins=[4096],
        time_limit=12, nemesis_interval=3, concurrency=8, seed=21, recovery=3, quiet=1,
    )
    results = await run(opts)
    assert results["valid"], {k: results[k] for k in ("log", "notes", "liveness")}
    assert results["linearizability"]["verdict"] == "linearizable"
    d = results["disk_full"]
    assert d["windows"] >= 2 and d["nodes_stopped"] >= 1, d
    assert ok_count(results, "send") > 100 and ok_count(results, "drain") == opts.partitions
    assert_replicas_agree(results, opts)
    assert_run_dir_after_disk_full(tmp_path / "run", opts.nodes)


def assert_run_dir_after_disk_full(run_dir: Path, nodes: int) -> None:
    history = (run_dir / "history.jsonl").read_text()
    assert '"disk-full-stopped"' in history and '"node-crashed"' not in history
    # A node's last words name the full disk.
    logs = "".join(p.read_text() for p in (run_dir / "logs").glob("n*.log"))
    assert "stopped: it cannot write its data dir" in logs
    assert "No space left on device" in logs
    # No mount left behind, and the data dirs were kept on the real disk.
    assert str(run_dir) not in Path("/proc/mounts").read_text()
    for i in range(nodes):
        assert (run_dir / "data" / f"n{i + 1}" / "CURRENT").is_file()
