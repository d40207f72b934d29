"""Listening ports for node processes that are started later.

A test picks a node's port, writes it into cluster.toml, and the node binds it
a moment later. Asking the kernel for a free port (bind to 0, then release) is
not enough: that port comes from the ephemeral range, which is also where every
outgoing connection gets its local port. During a cluster's start, nodes dial
their peers again and again (through jepsen's proxies, too), and one of those
dials can take a port a node has not bound yet; the node then exits with
"address already in use" before it is ready (a CI run failed this way).

So the ports are picked below the ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``): the kernel never hands those out
for ``connect`` or ``bind(0)``, and only another explicit binder can take one.
Each candidate is bound (and held until all are picked) to prove it is free now.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Collection
from pathlib import Path

LOWEST_PORT = 10_000
# Where the kernel's default ephemeral range starts (used if /proc cannot be read).
DEFAULT_EPHEMERAL_LOW = 32_768
RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_low(range_file: Path = RANGE_FILE) -> int:
    """The first port of the kernel's ephemeral range."""
    try:
        return int(range_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_LOW


def free_ports(
    count: int,
    host: str = "127.0.0.1",
    *,
    range_file: Path = RANGE_FILE,
    avoid: Collection[int] = (),
) -> list[int]:
    """``count`` distinct ports that are free now and outside the ephemeral range.

    ``avoid``: ports picked earlier and not bound yet (a config's addresses, to
    which peer addresses are added), which being free would not keep out.
    Falls back to the kernel's choice (``bind(0)``) when the ephemeral range
    leaves too little room below it.
    """
    high = ephemeral_low(range_file)
    candidates = [port for port in range(LOWEST_PORT, high) if port not in avoid]
    random.shuffle(candidates)
    socks: list[socket.socket] = []
    try:
        for port in candidates:
            if len(socks) == count:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            socks.append(sock)
        held: list[socket.socket] = []  # the kernel's picks that are to be avoided
        while len(socks) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            (held if sock.getsockname()[1] in avoid else socks).append(sock)
        for sock in held:
            sock.close()
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()
