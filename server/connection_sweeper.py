"""Closing client connections that nobody uses, or whose credentials were revoked.

Two kinds of client connection would otherwise stay open for good:

* **Idle ones** (``[limits] connections_max_idle_ms``, Kafka's
  ``connections.max.idle.ms``): a client whose host died without a FIN, or an
  application that opened connections and forgot them, holds a slot of
  ``max_client_connections`` and a task on the node. A connection with no
  request in flight and nothing read for that long is closed. The node
  announces the limit in its hello_ok and the client library retires its own
  idle connections at 90 % of it (client/connection.py ``expired``), so a
  request never travels into a connection the node is closing.
* **Revoked ones**: an ``[auth]`` reload that drops the connection's token or
  user, or a ``[tls]`` reload whose CRL revokes its certificate. A request on
  such a connection is answered UNAUTHORIZED (server/listener.py); a
  connection that sends nothing would keep its slot until it did. The sweep
  asks each connection to check its credentials (one int compare each until a
  reload happened) and closes a revoked one ``[auth] revoked_grace_s`` (5 s by
  default) after it found it revoked, once nothing of it is in flight: the
  replies already owed to it still go out, and a client still using it learns
  from the refusal of its next request why (a new connection would only be
  told its credential is unknown). The grace is read at every sweep, so an
  ``[auth]`` reload that changes it applies to connections already found.

One task per listener sweeps every ``interval`` seconds: at most one second,
and a quarter of the idle limit when that is shorter. A connection counts as
quiet from the first sweep that finds it with nothing in flight, not busy at
the sweep before either, and nothing read since, so it is closed between
``max_idle_s`` and ``max_idle_s + 2 * interval`` after its last activity:
never early. Peer connections are not swept: they carry the nodes'
heartbeats, which check their certificate (server/listener.py
``_serve_peer``), so closing one for idleness would only make it redial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from .config import DEFAULT_REVOKED_GRACE_S
from .metrics import Metrics

MAX_INTERVAL_S = 1.0
MIN_INTERVAL_S = 0.05
CLOSE_REASONS = ("idle", "revoked")


class SweptConnection(Protocol):
    """What the sweep needs of a client connection (server/listener.py)."""

    @property
    def reads(self) -> int:
        """How many times data was read from the socket: changes when the client sends."""
        ...

    @property
    def revoked(self) -> str | None:
        """Why the connection's credentials no longer count, or None."""
        ...

    def busy(self) -> bool:
        """A request is in flight: read, and its reply not yet on the wire."""
        ...

    def check_credentials(self) -> None:
        """Check the credentials against the latest reloads (may set ``revoked``)."""
        ...

    def close_by_node(self, reason: str) -> None:
        """End the connection now; nothing is in flight."""
        ...


@dataclass(slots=True)
class _Quiet:
    """What the last sweep saw of one connection."""

    reads: int
    since: float  # when the sweeps first saw it with nothing in flight and no new reads
    busy: bool = False  # at the last sweep: its request may have ended just after it
    revoked_at: float | None = None  # when the sweeps first saw it revoked


class ConnectionSweeper:
    """The client connections of one listener, swept every ``interval`` seconds."""

    def __init__(
        self,
        max_idle_s: float | None,
        metrics: Metrics,
        revoked_grace_s: Callable[[], float] = lambda: DEFAULT_REVOKED_GRACE_S,
    ) -> None:
        self.max_idle_s = max_idle_s  # None: idle connections are kept
        self.metrics = metrics
        # A function, not a value: [auth] revoked_grace_s as the node's config holds
        # it now, which a reload may change (server/auth_reload.py).
        self._revoked_grace_s = revoked_grace_s
        self.interval = MAX_INTERVAL_S
        if max_idle_s is not None:
            self.interval = max(MIN_INTERVAL_S, min(MAX_INTERVAL_S, max_idle_s / 4))
        self._quiet: dict[SweptConnection, _Quiet] = {}
        for reason in CLOSE_REASONS:
            metrics.client_connections_closed.inc(0, reason=reason)

    @classmethod
    def for_limit(
        cls,
        max_idle_ms: int,
        metrics: Metrics,
        revoked_grace_s: Callable[[], float] = lambda: DEFAULT_REVOKED_GRACE_S,
    ) -> ConnectionSweeper:
        """From ``[limits] connections_max_idle_ms`` (0: never close idle ones)."""
        return cls(max_idle_ms / 1000 if max_idle_ms > 0 else None, metrics, revoked_grace_s)

    @property
    def revoked_grace_s(self) -> float:
        """Seconds a revoked connection stays open once a sweep found it."""
        return self._revoked_grace_s()

    def __len__(self) -> int:
        return len(self._quiet)

    def add(self, conn: SweptConnection, now: float) -> None:
        self._quiet[conn] = _Quiet(conn.reads, now)

    def discard(self, conn: SweptConnection) -> None:
        self._quiet.pop(conn, None)

    def sweep(self, now: float) -> int:
        """Close what is due at ``now``; returns how many were closed."""
        closed = 0
        grace = self.revoked_grace_s
        for conn, quiet in list(self._quiet.items()):
            conn.check_credentials()
            busy = conn.busy()
            reads = conn.reads
            if conn.revoked is not None and quiet.revoked_at is None:
                quiet.revoked_at = now
            if (
                quiet.revoked_at is not None
                and not busy  # every reply it was owed is on the wire
                and now - quiet.revoked_at >= grace
            ):
                reason = "revoked"
            elif busy or quiet.busy or reads != quiet.reads:
                # Active since the last sweep: the quiet starts now at the earliest.
                quiet.reads, quiet.since, quiet.busy = reads, now, busy
                continue
            elif self.max_idle_s is not None and now - quiet.since >= self.max_idle_s:
                reason = "idle"
            else:
                continue
            del self._quiet[conn]
            self.metrics.client_connections_closed.inc(reason=reason)
            conn.close_by_node(reason)
            closed += 1
        return closed

    async def run(self) -> None:
        """Sweep until cancelled (the listener's lifetime)."""
        while True:
            await trio.sleep(self.interval)
            self.sweep(trio.current_time())
