"""jepsen/lazyfs.py, the power nemesis's disk: what was fsynced survives the
death of its process, nothing else does; a clean unmount keeps everything. And
the slow-disk nemesis's: each fsync waits what its delay file says.

Real FUSE mounts under tmp_path: needs /dev/fuse, libfuse2 and fusepy (.ci/run
installs them) and root to mount.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from raftlog.jepsen import disks

from .fuse_support import FUSE_MISSING

pytestmark = pytest.mark.skipif(FUSE_MISSING is not None, reason=f"lazyfs: {FUSE_MISSING}")


class Disk:
    def __init__(self, root: Path) -> None:
        self.backing = root / "backing"
        self.mount = root / "mnt"
        self.delay_file = root / "fsync-delay-ms"
        self.backing.mkdir()
        self.mount.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = disks.mount_lazyfs(
            self.backing, self.mount, subprocess.DEVNULL, delay_file=self.delay_file
        )

    def power_cut(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        disks.fuse_unmount(self.mount, lazy=True)
        self.start()

    def unmount(self) -> None:
        disks.fuse_unmount(self.mount, lazy=False)
        if self.proc is not None:
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    d = Disk(tmp_path)
    d.start()
    try:
        yield d
    finally:
        if d.proc is not None:
            d.proc.kill()
            d.proc.wait(timeout=10)
        disks.fuse_unmount(d.mount, lazy=True)


def write(path: Path, data: bytes, *, offset: int = 0, sync: bool) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, offset)
        if sync:
            os.fdatasync(fd)
    finally:
        os.close(fd)


def test_only_fsynced_writes_survive_a_power_cut(disk: Disk) -> None:
    synced, lost = disk.mount / "synced", disk.mount / "lost"
    write(synced, b"a" * 5000, sync=True)
    write(synced, b"b" * 100, offset=4090, sync=False)  # straddles a page edge
    write(lost, b"never synced", sync=False)
    # Before the cut, readers see everything (a page cache), the backing dir less.
    assert synced.read_bytes() == b"a" * 4090 + b"b" * 100 + b"a" * 810
    assert lost.read_bytes() == b"never synced"
    assert (disk.backing / "lost").read_bytes() == b""
    disk.power_cut()
    assert synced.read_bytes() == b"a" * 5000
    assert lost.exists() and lost.read_bytes() == b""  # created, contents gone


def test_an_unsynced_truncate_and_regrowth_are_lost_together(disk: Disk) -> None:
    path = disk.mount / "f"
    write(path, b"x" * 10_000, sync=True)
    os.truncate(path, 100)
    write(path, b"y" * 50, offset=8000, sync=False)
    data = path.read_bytes()
    assert len(data) == 8050 and data[:100] == b"x" * 100
    assert data[100:8000] == bytes(7900)  # the truncated bytes read as zeros, not old x's
    disk.power_cut()
    assert path.read_bytes() == b"x" * 10_000


def test_a_synced_truncate_and_a_rename_keep_what_was_synced(disk: Disk) -> None:
    path = disk.mount / "f"
    write(path, b"x" * 10_000, sync=True)
    fd = os.open(path, os.O_RDWR)
    os.ftruncate(fd, 100)
    os.pwrite(fd, b"z" * 10, 9000)
    os.fsync(fd)
    os.close(fd)
    os.rename(path, disk.mount / "g")  # renames are kept at once (module docstring)
    write(disk.mount / "g", b"lost", offset=0, sync=False)
    disk.power_cut()
    assert (disk.mount / "g").read_bytes() == b"x" * 100 + bytes(8900) + b"z" * 10
    assert not path.exists()


def test_a_clean_unmount_writes_everything_out(disk: Disk) -> None:
    write(disk.mount / "f", b"kept by a clean shutdown", sync=False)
    disk.unmount()
    assert (disk.backing / "f").read_bytes() == b"kept by a clean shutdown"


def timed_fsync(path: Path) -> float:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"data", 0)
        start = time.monotonic()
        os.fsync(fd)
        return time.monotonic() - start
    finally:
        os.close(fd)


def test_a_slow_disk_delays_each_fsync_until_it_is_fast_again(disk: Disk) -> None:
    path = disk.mount / "wal"
    disks.set_fsync_delay(disk.delay_file, 1500)  # read at each fsync: no remount
    assert timed_fsync(path) >= 1.5
    assert (disk.backing / "wal").read_bytes() == b"data"  # slow, but it did sync
    other = disk.mount / "other"
    other.write_bytes(b"reads and writes stay fast")  # no fsync: not held up
    assert other.read_bytes() == b"reads and writes stay fast"
    disks.set_fsync_delay(disk.delay_file, 0)
    assert not disk.delay_file.exists()
    assert timed_fsync(path) < 1.0  # well under the delay it had
