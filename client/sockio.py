"""Socket I/O beside trio's streams, for the request/response hot paths.

trio's ``send_all`` yields to the scheduler even when the kernel takes every
byte at once, and ``receive_some`` first tries a read that fails when nothing
has arrived yet (the usual case when waiting for a reply). A request then
costs a scheduling pass and a failed syscall more than it needs. Client and
server use these helpers on the stream's own descriptor instead; the stream
still owns the socket (and closes it), and its ``send_all`` remains the path
that waits for a full socket.
"""

from __future__ import annotations

import os

import trio


def socket_fd(stream: trio.abc.Stream) -> int | None:
    """The descriptor of a SocketStream; None for other streams (tests' memory streams)."""
    sock = getattr(stream, "socket", None)
    return sock.fileno() if sock is not None else None


def write_now(fd: int, data: bytes | memoryview) -> int:
    """Write what the kernel takes at once, never blocking; the number of bytes taken.

    0 also when the connection is broken: the caller hands the rest to its
    ``send_all`` path, which meets the same error and closes the connection.
    """
    try:
        return os.write(fd, data)
    except OSError:  # BlockingIOError (full) or a broken connection
        return 0


async def read_chunk(fd: int, size: int, drained: bool) -> bytes:
    """The next chunk of at most ``size`` bytes (b"" at EOF).

    ``drained``: the previous read returned less than a full chunk, so wait for
    readability before reading; after a full chunk (a large frame) more is
    likely there already, so read at once.
    """
    if drained:
        await trio.lowlevel.wait_readable(fd)
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
