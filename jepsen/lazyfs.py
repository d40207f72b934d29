"""A FUSE filesystem that loses every write not yet fsynced when it dies: the
``power`` nemesis's disk (Jepsen's LazyFS, in small).

``python -m raftlog.jepsen.lazyfs BACKING MOUNTPOINT [DELAY_FILE]`` mounts
BACKING at MOUNTPOINT. File data written through the mount stays in this process's memory
(4 KiB pages over the backing file) until the file is fsynced or fdatasynced:
only then does it reach BACKING (written, then fsynced there). Reads see the
unsynced data, as they would a kernel page cache. Killing this process is a
power failure of that "disk": everything unsynced is gone, and a new process
on the same BACKING shows only what was synced. The mount uses ``direct_io``,
so the kernel keeps no page cache of its own that could outlive us.

What it models and what it does not. Lost: file contents and sizes written
since the file's last fsync (also by a truncate). Kept at once: creating,
renaming and unlinking files and directories, as if every directory were
synced right away; a real power loss can also undo a rename or creation
whose directory was not fsynced, which this does not test. Nothing is torn
inside a page or reordered: the model loses whole unsynced writes.

A slow disk (the ``slow-disk`` nemesis). With DELAY_FILE, every fsync first
waits the milliseconds written in that file (none while it is missing or
empty), like a disk whose flushes queue behind a busy device (etcd #7617,
#13587: a VM's fsync stall that looked like a dead node). Reads and writes
stay fast; only durability is slow. The file is read at each fsync, so the
nemesis changes the delay under a running node by rewriting it.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from typing import Any

from fuse import FUSE, Operations

PAGE = 4096


class _Unsynced:
    """A file's writes since its last fsync: whole pages, its size, and where the
    backing bytes stop counting (a truncate since the last sync zeroes past it)."""

    __slots__ = ("pages", "size", "zero_from")

    def __init__(self, size: int) -> None:
        self.pages: dict[int, bytearray] = {}
        self.size = size
        self.zero_from = size


class LazyFS(Operations):
    """The FUSE operations over ``root`` (fusepy turns an OSError into its errno)."""

    # No lock operation: the kernel then keeps POSIX locks itself (RocksDB locks
    # its LOCK file); fusepy's inherited default would refuse every lock.
    lock = None

    def __init__(self, root: str, delay_file: str | None = None) -> None:
        self.root = os.path.realpath(root)
        self.delay_file = delay_file
        self._mutex = threading.RLock()
        self.unsynced: dict[str, _Unsynced] = {}

    def fsync_delay(self) -> float:
        """Seconds every fsync waits now (module docstring: a slow disk)."""
        if self.delay_file is None:
            return 0.0
        try:
            with open(self.delay_file) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return 0.0
        return max(0.0, float(text)) / 1000 if text else 0.0

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    # ------------------------------------------------------------ metadata

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = os.lstat(self._full(path))
        attrs = {
            key: getattr(st, key)
            for key in (
                "st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink",
                "st_size", "st_uid", "st_blocks",
            )
        }  # fmt: skip
        with self._mutex:
            state = self.unsynced.get(path)
            if state is not None:
                attrs["st_size"] = state.size
        return attrs

    def access(self, path: str, mode: int) -> None:
        if not os.access(self._full(path), mode):
            raise OSError(errno.EACCES, "access")

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._full(path))]

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._full(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._full(path))

    def unlink(self, path: str) -> None:
        os.unlink(self._full(path))
        with self._mutex:
            self.unsynced.pop(path, None)

    def rename(self, old: str, new: str) -> None:
        os.rename(self._full(old), self._full(new))
        with self._mutex:
            self.unsynced.pop(new, None)
            state = self.unsynced.pop(old, None)
            if state is not None:
                self.unsynced[new] = state

    def link(self, target: str, source: str) -> None:
        os.link(self._full(source), self._full(target))

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._full(path), mode)

    def utimens(self, path: str, times: tuple[float, float] | None = None) -> None:
        os.utime(self._full(path), times)

    def statfs(self, path: str) -> dict[str, Any]:
        st = os.statvfs(self._full(path))
        return {
            key: getattr(st, key)
            for key in (
                "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax",
            )
        }  # fmt: skip

    # ------------------------------------------------------------ files

    def open(self, path: str, flags: int) -> int:
        # Always read-write underneath: a write-only handle must still read the
        # backing pages it partly overwrites.
        flags = (flags & ~(os.O_WRONLY | os.O_APPEND)) | os.O_RDWR
        fd = os.open(self._full(path), flags)
        if flags & os.O_TRUNC:
            with self._mutex:
                self.unsynced.pop(path, None)
        return fd

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        fd = os.open(self._full(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)
        with self._mutex:
            self.unsynced.pop(path, None)
        return fd

    def release(self, path: str, fh: int) -> None:
        os.close(fh)  # closing is not syncing: the unsynced pages stay unsynced

    def flush(self, path: str, fh: int) -> None:
        pass

    def _state(self, path: str, fh: int) -> _Unsynced:
        state = self.unsynced.get(path)
        if state is None:
            state = self.unsynced[path] = _Unsynced(os.fstat(fh).st_size)
        return state

    def _page(self, state: _Unsynced, fh: int, number: int) -> bytearray:
        page = state.pages.get(number)
        if page is not None:
            return page
        start = number * PAGE
        data = bytearray(os.pread(fh, PAGE, start)) if start < state.zero_from else bytearray()
        if start + len(data) > state.zero_from:
            del data[state.zero_from - start :]
        data.extend(bytes(PAGE - len(data)))
        return data

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._mutex:
            state = self.unsynced.get(path)
            if state is None:
                return os.pread(fh, size, offset)
            end = min(offset + size, state.size)
            out = bytearray()
            pos = offset
            while pos < end:
                number, skip = divmod(pos, PAGE)
                take = min(end - pos, PAGE - skip)
                out += self._page(state, fh, number)[skip : skip + take]
                pos += take
            return bytes(out)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._mutex:
            state = self._state(path, fh)
            pos, done = offset, 0
            while done < len(data):
                number, skip = divmod(pos, PAGE)
                take = min(len(data) - done, PAGE - skip)
                page = self._page(state, fh, number)
                page[skip : skip + take] = data[done : done + take]
                state.pages[number] = page
                pos += take
                done += take
            state.size = max(state.size, offset + len(data))
            return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        with self._mutex:
            if fh is None:
                with open(self._full(path), "rb+") as f:
                    self._truncate(self._state(path, f.fileno()), f.fileno(), length)
            else:
                self._truncate(self._state(path, fh), fh, length)

    def _truncate(self, state: _Unsynced, fh: int, length: int) -> None:
        if length < state.size:
            number, keep = divmod(length, PAGE)
            if keep:
                page = self._page(state, fh, number)
                page[keep:] = bytes(PAGE - keep)
                state.pages[number] = page
            for n in [n for n in state.pages if n * PAGE >= length]:
                del state.pages[n]
            state.zero_from = min(state.zero_from, length)
        state.size = length

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        delay = self.fsync_delay()
        if delay:
            # Outside the mutex: a slow flush of one file does not hold up the
            # reads and writes of others (each FUSE request has its own thread).
            time.sleep(delay)
        self._sync(path, fh)

    def _sync(self, path: str, fh: int) -> None:
        with self._mutex:
            state = self.unsynced.pop(path, None)
            if state is not None:
                # Stale backing bytes past a truncate go first; then the pages;
                # then the size (a sparse tail reads as zeros).
                os.ftruncate(fh, min(state.zero_from, os.fstat(fh).st_size))
                for number, page in sorted(state.pages.items()):
                    start = number * PAGE
                    if start < state.size:
                        os.pwrite(fh, page[: min(PAGE, state.size - start)], start)
                os.ftruncate(fh, state.size)
            os.fsync(fh)

    def destroy(self, path: str) -> None:
        """A clean unmount (``fusermount -u``) is a clean shutdown: everything
        reaches the backing dir. Only killing this process loses data."""
        with self._mutex:
            for name in list(self.unsynced):
                try:
                    fd = os.open(self._full(name), os.O_RDWR)
                except OSError:
                    continue
                try:
                    self._sync(name, fd)  # an unmount is not slowed down
                finally:
                    os.close(fd)

    def fsyncdir(self, path: str, datasync: int, fh: int) -> None:
        pass  # directory changes are kept at once (module docstring)


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print("usage: python -m raftlog.jepsen.lazyfs BACKING MOUNTPOINT [DELAY_FILE]",
              file=sys.stderr)
        return 2
    backing, mountpoint = argv[1], argv[2]
    FUSE(
        LazyFS(backing, argv[3] if len(argv) == 4 else None),
        mountpoint,
        foreground=True,
        nothreads=False,
        direct_io=True,  # no kernel page cache that could outlive this process
        attr_timeout=0,
        entry_timeout=0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
