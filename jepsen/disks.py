"""Per-node tmpfs data dirs, for the ``disk-full`` nemesis.

Each node's data dir is its own tmpfs mount, made at cluster setup with a
generous size (tmpfs only takes memory for what is written). Filling a disk
is then a remount with a size just above what the mount uses now, so that the
node's next writes fail with ENOSPC; freeing it is a remount at the generous
size again. Nothing is written to fill the disk: the node's own writes hit
the limit, as they would on a real disk that another tenant filled up.

Mounting needs root (CAP_SYS_ADMIN). The calls go through the ``mount`` and
``umount`` programs (util-linux), which name the reason when they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PAGE = 4096  # tmpfs counts and limits in pages
DEFAULT_MARGIN = 64 * 1024  # room left above the usage when a disk is "filled"
SHRINK_ATTEMPTS = 8  # the node keeps writing while we read its usage: retry


class DiskError(RuntimeError):
    """A mount, remount or unmount failed; the message says which and why."""


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    except FileNotFoundError as exc:
        raise DiskError(f"{args[0]} is not installed ({exc})") from exc


def _why(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stderr or result.stdout).strip().replace("\n", " ") or (
        f"exit code {result.returncode}"
    )


def mount(path: Path, size: int) -> None:
    """Mount a fresh tmpfs of ``size`` bytes on the (existing, empty) directory ``path``."""
    if os.geteuid() != 0:
        raise DiskError(
            f"cannot mount a tmpfs on {path}: mounting needs root (CAP_SYS_ADMIN), "
            f"and this process runs as uid {os.geteuid()}"
        )
    result = _run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)])
    if result.returncode != 0:
        raise DiskError(
            f"cannot mount a tmpfs on {path}: {_why(result)} "
            "(mounting needs root with CAP_SYS_ADMIN, e.g. not an unprivileged container)"
        )


def remount(path: Path, size: int) -> bool:
    """Change the size limit of the tmpfs on ``path``; False if the kernel refused
    (tmpfs refuses a size below what it already uses)."""
    return _run(["mount", "-o", f"remount,size={size}", str(path)]).returncode == 0


def unmount(path: Path) -> None:
    """Unmount ``path``; if it is busy (a process still has a file open), detach
    it lazily (``umount -l``) so that no mount is left behind."""
    result = _run(["umount", str(path)])
    if result.returncode == 0 or not os.path.ismount(path):
        return
    lazy = _run(["umount", "-l", str(path)])
    if lazy.returncode != 0 and os.path.ismount(path):
        raise DiskError(f"cannot unmount {path}: {_why(result)}; umount -l: {_why(lazy)}")


def used_bytes(path: Path) -> int:
    """Bytes the filesystem on ``path`` holds (pages in use, tmpfs: data and metadata)."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def full_size(used: int, margin: int = DEFAULT_MARGIN, page: int = PAGE) -> int:
    """The size limit that makes a disk using ``used`` bytes "full": ``margin``
    bytes of room, rounded up to whole pages (tmpfs rounds the limit to pages
    anyway; rounding here makes the limit we record the one in force)."""
    if used < 0 or margin < 0:
        raise ValueError(f"negative usage or margin: {used}, {margin}")
    want = used + margin
    return max(page, -(-want // page) * page)


def shrink(path: Path, margin: int = DEFAULT_MARGIN) -> int:
    """Remount ``path`` so that only about ``margin`` bytes are left; the new size.

    The node may write between our statvfs and the remount, and tmpfs refuses a
    limit below its usage: read the usage again and retry (a few times)."""
    for _ in range(SHRINK_ATTEMPTS):
        size = full_size(used_bytes(path), margin)
        if remount(path, size):
            return size
    raise DiskError(f"cannot shrink the tmpfs on {path}: remounting kept failing "
                    f"(usage now {used_bytes(path)} bytes)")


def clear(path: Path) -> None:
    """Delete everything under the mount point ``path`` (a mount point itself
    cannot be removed while mounted)."""
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def fuse_unmount(path: Path, *, lazy: bool) -> None:
    """Unmount the FUSE filesystem on ``path`` (``fusermount -u``; ``lazy``: also
    when its process is dead or a file is open, ``-z``). A no-op if nothing is
    mounted there."""
    if not is_mounted(path):
        return
    tool = shutil.which("fusermount") or shutil.which("fusermount3") or "fusermount"
    result = _run([tool, "-u", *(["-z"] if lazy else []), str(path)])
    if result.returncode != 0 and is_mounted(path):
        if not lazy:
            fuse_unmount(path, lazy=True)
            return
        raise DiskError(f"cannot unmount {path}: {_why(result)}")


def mount_lazyfs(backing: Path, mountpoint: Path, output: Any, timeout: float = 10.0,
                 delay_file: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a lazyfs process (jepsen/lazyfs.py) mounting ``backing`` on
    ``mountpoint``, its output to ``output``; return it once the mount is there.
    Its fsyncs wait what ``delay_file`` says (``set_fsync_delay``). DiskError (the
    process stopped) if it does not mount within ``timeout``."""
    extra = [] if delay_file is None else [str(delay_file)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftlog.jepsen.lazyfs", str(backing), str(mountpoint), *extra],
        stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    end = time.monotonic() + timeout
    while not is_mounted(mountpoint):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            proc.wait(timeout=10)
            fuse_unmount(mountpoint, lazy=True)
            raise DiskError(f"cannot mount lazyfs on {mountpoint} (needs /dev/fuse, "
                            "libfuse2 and fusepy)")
        time.sleep(0.02)
    return proc


def set_fsync_delay(delay_file: Path, ms: float) -> None:
    """Make the lazyfs reading ``delay_file`` wait ``ms`` per fsync (0: none).
    Replaced whole, so a reader never sees half a number."""
    if ms <= 0:
        delay_file.unlink(missing_ok=True)
        return
    tmp = delay_file.with_name(delay_file.name + ".tmp")
    tmp.write_text(f"{ms:g}\n")
    os.replace(tmp, delay_file)


def is_mounted(path: Path) -> bool:
    """Is something mounted on ``path``? Unlike ``os.path.ismount`` also true for
    a FUSE mount whose process died (stat fails there: "not connected")."""
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)
