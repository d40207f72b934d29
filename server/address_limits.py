"""Limits per remote address, for a node shared by many hosts.

The node-wide limits (``max_client_connections``, ``max_pending_connections``)
keep the node alive, but one misbehaving host can use all of them: its
connection storm pushes out everyone's handshakes, its leaked connections
take every client slot. Kafka answers with per-IP limits, and so does this
module, one rule for each moment of a connection (keys of ``[limits]``, each
0 = no limit):

- at the accept, ``max_connection_rate_per_address``: new connections a
  second from one address (Kafka's per-IP ``connection.creation.rate``
  quota). Beyond it the connection is closed at once, before any TLS
  handshake or hello, which is the cheapest refusal a node can make once the
  kernel has accepted. Peers cannot be told apart yet, so they count too:
  a peer dials at most a few times a second, far below any sane rate. It
  shares the node between hosts; it does not make a flood cheaper: a flooder
  whose connections are closed at once opens the next one sooner (measured
  in the README's Limits section).
- until the hello, ``max_pending_connections_per_address``: an address's
  share of the pending bound (server/pending_connections.py).
- at the hello, ``max_client_connections_per_address`` (Kafka's
  ``max.connections.per.ip``, with its ``overrides``): client connections
  held from one address, refused NOT_AVAILABLE as ``max_client_connections``
  are (server/listener.py ``Listener.admit_client``). Peers are never counted.

Addresses are the connections' remote IPs as the node sees them: clients
behind one NAT gateway or proxy share one, which is what the overrides are
for.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .token_bucket import TokenBucket


class ConnectionRate:
    """``max_connection_rate_per_address``: one token bucket per address.

    Buckets that have refilled are dropped every ``SWEEP_INTERVAL_S`` (a full
    bucket is what a new one would be), so memory follows the addresses that
    connected in the last seconds, not every address ever seen.
    """

    SWEEP_INTERVAL_S = 10.0

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0:
            raise ValueError(f"max_connection_rate_per_address must be >= 0, got {rate}")
        self.rate = rate  # 0: no limit
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._next_sweep = clock() + self.SWEEP_INTERVAL_S

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, address: str) -> bool:
        """Count one new connection from ``address``; False if over its rate."""
        if not self.rate:
            return True
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket.full(self.rate, now)
        bucket.take(0.0, now)  # refills it
        # A connection takes a whole token (no debt, unlike the request quotas):
        # the burst is exactly a second's worth. A refused one takes nothing, so
        # a flood keeps the bucket empty, not in ever deeper debt, and the host
        # gets its rate back as soon as it slows down.
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.SWEEP_INTERVAL_S
        for address in [a for a, bucket in self._buckets.items() if bucket.full_at(now)]:
            del self._buckets[address]
