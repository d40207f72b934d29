"""TCP keepalive on the long-lived connections of nodes and clients.

A connection whose far host vanished (power loss, a NAT or firewall that
dropped its state) sends no FIN nor RST: without keepalive the kernel keeps it
open for as long as nothing is written to it. A node would hold an idle
consumer's connection, a long-polling fetch, or the reading end of a peer's
link that way for good. Keepalive probes the idle connection after ``idle_s``
seconds, then every ``interval_s``, and the kernel resets it after
``probes`` unanswered ones: the reader wakes with an error and the connection
is cleaned up as any broken one is (Go, hence etcd, turns keepalive on for
every TCP connection by default; Kafka sets SO_KEEPALIVE on its sockets).

Keepalive never probes a connection that has data waiting to be acknowledged,
and a dead peer's unacknowledged data is retransmitted for ``tcp_retries2``,
about 15 minutes. A busy peer link nearly always has some (heartbeats every
few ticks), so keepalive alone would not end it. Where the platform has it (Linux),
``TCP_USER_TIMEOUT`` bounds that wait to the same time keepalive takes to give
up, ``idle_s + interval_s * probes``. Its price: a reader that keeps its
receive window shut that long (its process stopped) is cut off too, as any
broken connection is: peers redial, clients dial at their next call.

Every option is set on its own and a missing or refused one is skipped: a
platform without ``TCP_KEEPIDLE`` still gets SO_KEEPALIVE with its system's
timings.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from typing import Protocol

import trio

# Idle seconds before the first probe; a dead far end is found after twice this
# (3 probes, a third of it apart). Twice etcd's 15 s: a node holds thousands of
# client connections and each probe is a packet, while a minute to let go of a
# vanished host is still short next to connections_max_idle_ms's 10 minutes.
DEFAULT_TCP_KEEPALIVE_S = 30
# The largest TCP_KEEPIDLE Linux takes (MAX_TCP_KEEPIDLE); beyond it setsockopt fails.
MAX_TCP_KEEPALIVE_S = 32767
KEEPALIVE_PROBES = 3

# TCP_KEEPALIVE is macOS's name for TCP_KEEPIDLE.
_IDLE_OPTION: int | None = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))


class _Socket(Protocol):
    def setsockopt(self, level: int, optname: int, value: int, /) -> None: ...


@dataclass(frozen=True, slots=True)
class KeepaliveTimes:
    """What one ``tcp_keepalive`` setting means on a socket."""

    idle_s: int  # TCP_KEEPIDLE
    interval_s: int  # TCP_KEEPINTVL
    probes: int  # TCP_KEEPCNT

    @property
    def user_timeout_ms(self) -> int:
        """TCP_USER_TIMEOUT: when keepalive itself would give up."""
        return (self.idle_s + self.interval_s * self.probes) * 1000


def keepalive_problem(idle_s: object) -> str | None:
    """Why ``idle_s`` is not a keepalive setting (a message), or None."""
    if not isinstance(idle_s, int) or isinstance(idle_s, bool):
        return f"must be an int, got {type(idle_s).__name__} {idle_s!r}"
    if not 0 <= idle_s <= MAX_TCP_KEEPALIVE_S:
        return f"must be from 0 (off) to {MAX_TCP_KEEPALIVE_S} seconds, got {idle_s}"
    return None


def keepalive_times(idle_s: int) -> KeepaliveTimes | None:
    """The probe timings of ``idle_s`` (None: 0, keepalive off)."""
    if idle_s == 0:
        return None
    return KeepaliveTimes(idle_s, max(1, idle_s // KEEPALIVE_PROBES), KEEPALIVE_PROBES)


def set_keepalive(sock: _Socket, idle_s: int) -> None:
    """Turn keepalive on for ``sock`` (a trio or a stdlib socket); 0 leaves it as it is."""
    times = keepalive_times(idle_s)
    if times is None:
        return
    options = (
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, _IDLE_OPTION, times.idle_s),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), times.interval_s),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), times.probes),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), times.user_timeout_ms),
    )
    for level, option, value in options:
        # A socket the far end already reset may refuse; its reader finds out anyway.
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, option, value)


async def open_tcp_stream(host: str, port: int, idle_s: int) -> trio.SocketStream:
    """``trio.open_tcp_stream`` with ``set_keepalive(idle_s)`` on its socket: how
    the client and the node dial (before any TLS wraps the stream)."""
    stream = await trio.open_tcp_stream(host, port)
    set_keepalive(stream.socket, idle_s)
    return stream
