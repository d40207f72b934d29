"""A node whose disk fills up, with real processes on 127.0.0.1.

n3's data dir is on a small tmpfs (mounting one needs root; the test is
skipped where it cannot). Records are produced until n3 runs out of space.
What must hold: n3 stops with a clear error instead of serving from a state
it could not persist; the other two keep acknowledging produces; once space
is freed n3 restarts and catches up; every acknowledged record is in the log
exactly once, in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from raftlog.client.errors import RaftlogError
from raftlog.client.sync import Client

from .cluster_harness import LocalCluster

pytestmark = pytest.mark.integration

WAIT_S = 60.0
SMALL = "48m"  # RocksDB's WAL (the memtable is 64 MiB) outgrows it before any flush
RECORD = 32 * 1024


def _mount(path: Path, size: str, *, remount: bool = False) -> bool:
    opts = f"remount,size={size}" if remount else f"size={size}"
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
        capture_output=True, check=False,
    )  # fmt: skip
    return result.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "small"
    path.mkdir()
    if os.geteuid() != 0 or not _mount(path, SMALL):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def wait_until(predicate: Callable[[], object], what: str, within: float = WAIT_S) -> None:
    end = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < end, f"timed out after {within}s waiting for {what}"
        time.sleep(0.05)


def test_a_node_whose_disk_fills_stops_and_catches_up_once_space_is_freed(
    small_disk: Path, local_cluster: Callable[..., LocalCluster]
) -> None:
    # small_disk first: fixtures are torn down in reverse, so the nodes stop
    # before the tmpfs under n3 is unmounted.
    cluster = local_cluster(3)
    n3 = cluster.cfg.node("n3")
    cluster.cfg = dataclasses.replace(
        cluster.cfg,
        nodes=[
            dataclasses.replace(n, data_dir=small_disk / "n3") if n.id == "n3" else n
            for n in cluster.cfg.nodes
        ],
    )
    cluster.write_config()
    assert cluster.cfg.node("n3").data_dir != n3.data_dir
    cluster.start_all()
    cluster.wait_for_leaders(deadline=WAIT_S)
    acked: list[tuple[int, bytes]] = []
    with Client(cluster.addresses(), request_timeout=30.0) as client:
        client.create_topic("t", partitions=1, replicas=3)
        i = 0
        end = time.monotonic() + WAIT_S
        while cluster.is_running("n3"):
            assert time.monotonic() < end, "n3's disk never filled"
            value = b"%08d" % i + os.urandom(RECORD)
            with contextlib.suppress(RaftlogError):  # n3 leading while it fails
                acked.append((client.produce("t", value, partition=0).offset, value))
            i += 1
        code = cluster.procs["n3"].wait(timeout=WAIT_S)
        log = cluster.log_text("n3")
        assert code == 1, log[-3000:]
        # Its last words say what to fix, without a traceback to dig through.
        assert f"node n3 stopped: it cannot write its data dir {small_disk / 'n3'}" in log
        # It stopped at the first failed write, saying why (not at a later symptom).
        first = next(line for line in log.splitlines() if " CRITICAL " in line)
        assert "No space left on device" in first, log[-3000:]
        # The other two still form a majority and acknowledge.
        for _ in range(20):
            value = b"after" + os.urandom(64)
            acked.append((client.produce("t", value, partition=0).offset, value))

        assert _mount(small_disk, "512m", remount=True)
        cluster.start("n3", deadline=WAIT_S)
        group = client.describe_topic("t")["partitions"][0]["group"]

        def n3_caught_up() -> bool:
            with contextlib.suppress(Exception):
                mine = next(g for g in cluster.status("n3")["groups"] if g["group"] == group)
                return mine["applied"] >= acked[-1][0] + 1
            return False

        wait_until(n3_caught_up, "n3 to apply every acknowledged record")
        got: list[tuple[int, bytes]] = []
        offset = 0
        while offset <= acked[-1][0]:
            batch = client.fetch("t", 0, offset).records
            assert batch, f"nothing at offset {offset}"
            got += [(r.offset, r.value) for r in batch]
            offset = got[-1][0] + 1
    by_offset = dict(got)
    assert [o for o, _ in got] == list(range(len(got)))  # no gap, no repeat
    for offset, value in acked:
        assert by_offset[offset] == value
