"""This process's own IPv4 TCP sockets, read through /proc (Linux).

Tests read the options and timers the code under test left on sockets they
cannot reach otherwise (the connections a node accepted, the links it dialled).
``/proc/self/net/tcp`` lists every socket of the network namespace, other
processes' included: a socket is ours when one of our descriptors holds its
inode.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

TCP_ESTABLISHED = 0x01
# The "tr" column: which timer is pending. 2 is the socket's own timer, which
# on an established connection is the keepalive timer; 1 is retransmission.
TIMER_NONE = 0
TIMER_KEEPALIVE = 2
USER_HZ = 100  # tm->when is in clock ticks of 1/100 s


@dataclass(frozen=True, slots=True)
class TcpEntry:
    """One row of /proc/self/net/tcp."""

    local_port: int
    remote_port: int
    state: int
    timer: int
    when_s: float  # time left on that timer
    inode: int


@dataclass(frozen=True, slots=True)
class KeepaliveOptions:
    """What getsockopt says about keepalive on one socket."""

    enabled: bool
    idle_s: int
    interval_s: int
    probes: int
    user_timeout_ms: int


# ``[limits] tcp_keepalive_s`` and the client's ``tcp_keepalive`` by default:
# probes every 10 s after 30 idle, 3 of them, and unacknowledged data given up
# on at the same 60 s.
DEFAULT_KEEPALIVE = KeepaliveOptions(True, 30, 10, 3, 60_000)


def system_defaults() -> KeepaliveOptions:
    """What a socket nobody set keepalive on reports on this machine."""
    with socket.socket() as sock:
        return keepalive_of(sock)


def _port(address: str) -> int:
    return int(address.rpartition(":")[2], 16)


def tcp_table() -> list[TcpEntry]:
    entries = []
    with open("/proc/self/net/tcp") as table:
        next(table)  # the header
        for line in table:
            fields = line.split()
            timer, when = fields[5].split(":")
            entries.append(
                TcpEntry(
                    local_port=_port(fields[1]),
                    remote_port=_port(fields[2]),
                    state=int(fields[3], 16),
                    timer=int(timer, 16),
                    when_s=int(when, 16) / USER_HZ,
                    inode=int(fields[9]),
                )
            )
    return entries


def _own_socket_fds() -> dict[int, int]:
    """Socket inode -> one of this process's descriptors holding it."""
    fds: dict[int, int] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(f"/proc/self/fd/{name}")
            if target.startswith("socket:["):
                fds[int(target[8:-1])] = int(name)
    return fds


def established(match: Callable[[TcpEntry], bool]) -> list[TcpEntry]:
    """This process's established connections that ``match``."""
    ours = _own_socket_fds()
    return [e for e in tcp_table() if e.state == TCP_ESTABLISHED and e.inode in ours and match(e)]


def served_on(port: int) -> Callable[[TcpEntry], bool]:
    """Matches the accepting side of connections to ``port``."""
    return lambda entry: entry.local_port == port


def dialled_to(port: int) -> Callable[[TcpEntry], bool]:
    """Matches the dialling side of connections to ``port``."""
    return lambda entry: entry.remote_port == port


def keepalive_of(sock: socket.socket) -> KeepaliveOptions:
    def tcp(option: str) -> int:
        return sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, option))

    return KeepaliveOptions(
        enabled=bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)),
        idle_s=tcp("TCP_KEEPIDLE"),
        interval_s=tcp("TCP_KEEPINTVL"),
        probes=tcp("TCP_KEEPCNT"),
        user_timeout_ms=tcp("TCP_USER_TIMEOUT"),
    )


def keepalive_of_entry(entry: TcpEntry) -> KeepaliveOptions:
    """``keepalive_of`` the socket of ``entry``, through a duplicate of our descriptor."""
    fd = _own_socket_fds()[entry.inode]
    with socket.socket(fileno=os.dup(fd)) as sock:
        return keepalive_of(sock)


def keepalive_on(match: Callable[[TcpEntry], bool]) -> list[KeepaliveOptions]:
    """``keepalive_of`` each of this process's established connections that ``match``."""
    return [keepalive_of_entry(entry) for entry in established(match)]


@contextlib.contextmanager
def connected_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """An accepted and a dialled socket of one loopback connection, both closed after."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        dialled = stack.enter_context(socket.create_connection(server.getsockname()[:2]))
        accepted = stack.enter_context(server.accept()[0])
        yield accepted, dialled
