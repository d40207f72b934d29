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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from .metrics import Metrics


class PendingConnections:
    def __init__(self, limit: int, metrics: Metrics) -> None:
        if limit < 1:
            raise ValueError(f"max_pending_connections must be >= 1, got {limit}")
        self.limit = limit
        self._metrics = metrics
        # Oldest first: insertion order is accept order.
        self._scopes: OrderedDict[int, trio.CancelScope] = OrderedDict()

    def __len__(self) -> int:
        return len(self._scopes)

    @contextmanager
    def hold(self, conn_id: int) -> Iterator[trio.CancelScope]:
        """Count connection ``conn_id`` as pending for the ``with`` block.

        Yields the block's cancel scope: if the block was cut short because
        newer connections pushed this one out, ``scope.cancelled_caught`` is
        true and the caller must close the connection. Any other cancellation
        (the node stopping) passes through.
        """
        scope = trio.CancelScope()
        self._scopes[conn_id] = scope
        if len(self._scopes) > self.limit:
            _, oldest = self._scopes.popitem(last=False)
            oldest.cancel()  # counted when its block ends, if it was really cut short
        self._metrics.pending_connections.set(len(self._scopes))
        try:
            with scope:
                yield scope
        finally:
            self._scopes.pop(conn_id, None)
            self._metrics.pending_connections.set(len(self._scopes))
            if scope.cancelled_caught:
                self._metrics.pending_connections_evicted.inc()
