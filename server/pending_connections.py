"""Connections that have not said hello yet, bounded by closing the oldest.

A connection is *pending* from its accept until its hello is admitted or
refused (with ``[tls]``, its handshake included). Until then nothing tells a
peer from a client from a stranger, so ``max_client_connections`` cannot
count it, and each one holds a socket, a task and a file descriptor for up to
the hello timeout (10 s). Without a bound, a flood of connections that never
speak (a slowloris) would take every descriptor the process has: then no
peer could reconnect, no client could connect, and RocksDB could not open
its next file.

``[limits] max_pending_connections`` bounds them. Refusing the newest
connection at the bound would be the wrong choice: the flood, arriving
continuously, would hold every slot and lock out a peer redialling after a
restart. So the node closes the *oldest* pending connection instead. A
legitimate dialler finishes its hello within a round trip or a handshake
(milliseconds), so to push it out a flood would need to open a whole bound's
worth of connections within those milliseconds; a silent one lasts only
until that many newer connections have come. Peers and clients that are
pushed out anyway simply redial (both retry with backoff).

``[limits] max_pending_connections_per_address`` gives each remote address a
share of that bound: a connection beyond its address's share pushes out that
*address's* oldest pending connection instead of the node's oldest. One
host's flood then costs only its own slow handshakes; the other hosts'
pending connections are pushed out only by many flooding hosts together
(more than ``max_pending_connections / share`` of them). Peers are not
exempt (nothing tells them apart yet), which costs them nothing unless they
share their address with the flood: they say hello within milliseconds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from .address_limits import AddressTable
from .metrics import Gauge, Metrics


class PendingConnections:
    def __init__(
        self,
        limit: int,
        metrics: Metrics,
        per_address: int = 0,
        share_overrides: AddressTable | None = None,
        gauge: Gauge | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"max_pending_connections must be >= 1, got {limit}")
        if per_address < 0:
            raise ValueError(f"max_pending_connections_per_address must be >= 0, got {per_address}")
        self.limit = limit
        self.per_address = per_address  # 0: no share, only the node's bound
        # An address's own share (max_pending_connections_per_address_overrides).
        self._share_overrides = share_overrides or None
        self._metrics = metrics
        # The node address's book or the peer_address's (server/listener.py).
        self._gauge = gauge if gauge is not None else metrics.pending_connections
        # Oldest first: insertion order is accept order. A pending connection is
        # in both maps, under its id and under its remote address.
        self._scopes: OrderedDict[int, trio.CancelScope] = OrderedDict()
        self._by_address: dict[str, OrderedDict[int, trio.CancelScope]] = {}
        self._address_of: dict[int, str] = {}
        self._pushed_out_by: dict[int, str] = {}  # conn id -> the limit that did it

    def __len__(self) -> int:
        return len(self._scopes)

    def from_address(self, address: str) -> int:
        return len(self._by_address.get(address, ()))

    @contextmanager
    def hold(self, conn_id: int, address: str = "") -> Iterator[trio.CancelScope]:
        """Count connection ``conn_id`` from ``address`` as pending for the block.

        Yields the block's cancel scope: if the block was cut short because
        newer connections pushed this one out, ``scope.cancelled_caught`` is
        true and the caller must close the connection. Any other cancellation
        (the node stopping) passes through.
        """
        scope = trio.CancelScope()
        self._scopes[conn_id] = scope
        mine = self._by_address.setdefault(address, OrderedDict())
        mine[conn_id] = scope
        self._address_of[conn_id] = address
        share = (
            self.per_address
            if self._share_overrides is None
            else self._share_overrides.get(address, self.per_address)
        )
        if share and len(mine) > share:
            self._push_out(next(iter(mine)), "max_pending_connections_per_address")
        elif len(self._scopes) > self.limit:
            self._push_out(next(iter(self._scopes)), "max_pending_connections")
        self._gauge.set(len(self._scopes))
        try:
            with scope:
                yield scope
        finally:
            self._forget(conn_id)
            self._gauge.set(len(self._scopes))
            limit = self._pushed_out_by.pop(conn_id, None)
            # Counted only if really cut short: a push-out that lands after the
            # block's last checkpoint did not close anything.
            if limit is not None and scope.cancelled_caught:
                self._metrics.pending_connections_evicted.inc(limit=limit)

    def _push_out(self, conn_id: int, limit: str) -> None:
        scope = self._scopes[conn_id]
        self._forget(conn_id)  # at once: the next newcomer must pick another one
        self._pushed_out_by[conn_id] = limit
        scope.cancel()

    def _forget(self, conn_id: int) -> None:
        if self._scopes.pop(conn_id, None) is None:
            return
        address = self._address_of.pop(conn_id)
        mine = self._by_address[address]
        del mine[conn_id]
        if not mine:
            del self._by_address[address]
