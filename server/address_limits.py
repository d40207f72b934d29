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
for. Each of the three has an overrides table (``<key>_overrides``, Kafka's
``max.connections.per.ip.overrides`` and per-IP quota entities), whose keys
are addresses or networks (``"10.1.0.0/16"``): an address takes the value of
its own entry, else of the most specific network that holds it, else the
key's. A network's value still counts per address, not for the network as a
whole.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .config import Limits, canonical_address
from .token_bucket import TokenBucket

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AddressTable:
    """One ``[limits] ..._overrides`` table, ready for lookups: exact addresses
    in a dict, networks most specific first."""

    exact: Mapping[str, int]
    networks: tuple[tuple[Network, int], ...]

    @classmethod
    def of(cls, overrides: Mapping[str, int]) -> AddressTable:
        """From a table as config.py parsed it (canonical keys)."""
        exact: dict[str, int] = {}
        networks: list[tuple[Network, int]] = []
        for key, value in overrides.items():
            if "/" in key:
                networks.append((ipaddress.ip_network(key), value))
            else:
                exact[key] = value
        networks.sort(key=lambda item: item[0].prefixlen, reverse=True)
        return cls(exact, tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.exact or self.networks)

    def get(self, address: str, default: int) -> int:
        """The override for remote ``address``, or ``default``: also for an
        address that is not an IP (a test's in-memory stream)."""
        if not self:
            return default
        try:
            address = canonical_address(address)
        except ValueError:
            return default
        found = self.exact.get(address)
        if found is not None:
            return found
        if self.networks:
            ip = ipaddress.ip_address(address)
            for network, value in self.networks:
                if ip.version == network.version and ip in network:
                    return value
        return default


@dataclass(frozen=True, slots=True)
class AddressOverrides:
    """The three per-address limits of ``[limits]``, each with its overrides."""

    limits: Limits
    client_connections_table: AddressTable
    pending_share_table: AddressTable
    connection_rate_table: AddressTable

    @classmethod
    def of(cls, limits: Limits) -> AddressOverrides:
        return cls(
            limits,
            AddressTable.of(limits.max_client_connections_per_address_overrides),
            AddressTable.of(limits.max_pending_connections_per_address_overrides),
            AddressTable.of(limits.max_connection_rate_per_address_overrides),
        )

    def client_connections(self, address: str) -> int:
        """max_client_connections_per_address for ``address`` (0: no limit)."""
        return self.client_connections_table.get(
            address, self.limits.max_client_connections_per_address
        )

    def pending_share(self, address: str) -> int:
        """max_pending_connections_per_address for ``address`` (0: no share)."""
        return self.pending_share_table.get(
            address, self.limits.max_pending_connections_per_address
        )

    def connection_rate(self, address: str) -> int:
        """max_connection_rate_per_address for ``address`` (0: no limit)."""
        return self.connection_rate_table.get(address, self.limits.max_connection_rate_per_address)


class ConnectionRate:
    """``max_connection_rate_per_address``: one token bucket per address, at
    the address's own rate when ``overrides`` gives it one.

    Buckets that have refilled are dropped every ``SWEEP_INTERVAL_S`` (a full
    bucket is what a new one would be), so memory follows the addresses that
    connected in the last seconds, not every address ever seen. An address
    whose rate is 0 (no limit) holds None instead of a bucket, dropped alike.
    """

    SWEEP_INTERVAL_S = 10.0

    def __init__(
        self,
        rate: int,
        clock: Callable[[], float] = time.monotonic,
        overrides: AddressTable | None = None,
    ) -> None:
        if rate < 0:
            raise ValueError(f"max_connection_rate_per_address must be >= 0, got {rate}")
        self.rate = rate  # 0: no limit
        self._overrides = overrides or None
        self._clock = clock
        self._buckets: dict[str, TokenBucket | None] = {}
        self._next_sweep = clock() + self.SWEEP_INTERVAL_S

    def __len__(self) -> int:
        return len(self._buckets)

    def rate_for(self, address: str) -> int:
        """The rate ``address`` gets (0: no limit)."""
        if self._overrides is None:
            return self.rate
        return self._overrides.get(address, self.rate)

    def admit(self, address: str) -> bool:
        """Count one new connection from ``address``; False if over its rate."""
        if not self.rate and self._overrides is None:
            return True
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        if address in self._buckets:
            bucket = self._buckets[address]
        else:
            rate = self.rate_for(address)
            bucket = self._buckets[address] = TokenBucket.full(rate, now) if rate else None
        if bucket is None:
            return True
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
        idle = [a for a, bucket in self._buckets.items() if bucket is None or bucket.full_at(now)]
        for address in idle:
            del self._buckets[address]
