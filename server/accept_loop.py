"""The node's accept loop, paced by ``[limits] max_connection_rate``.

Every limit that refuses a connection after its accept (the per-address rate,
the pending bound) still pays for the accept, a task and a close. Against a
flood of new connections that is most of a node's loop: produces ran 2.5x
slower during one (README, Limits). The one refusal that costs the node
nothing is not to accept. Beyond ``max_connection_rate`` new connections a
second (Kafka's broker-wide ``max.connection.creation.rate``; a second's
worth as burst) this loop stops calling ``accept`` until the rate allows the
next one:

- the connections wait in the kernel's accept queue, at most
  ``listen_backlog`` of them (Kafka's ``socket.listen.backlog.size``); a
  connection waits at most about ``listen_backlog / max_connection_rate``
  seconds there;
- beyond the queue the kernel drops their SYNs, and the dialler's TCP resends
  them (after 1 s, then 3 s, ...), which slows a flooder down at its source.

Connections already open, peer links and clients alike, keep the node's
whole loop. The price is paid by every new connection to the node's address:
nothing tells a peer from a client before its hello, so a peer redialling
after a restart waits its turn in the same queue as the flood, unless the
node has a ``peer_address`` (cluster.toml): that listener has its own loop,
queue and pending bound, and no rate. Both keys default to off (0: no rate;
0: the system's largest backlog, ``net.core.somaxconn``).

Every accepted socket gets the node's TCP keepalive (``[limits]
tcp_keepalive_s``, client/keepalive.py) before its handler starts, whichever
listener took it: a peer link dialled in is only ever read, and a client's
connection may wait on a long poll (or idle for up to
``connections_max_idle_ms``), so nothing else notices soon that the far end
vanished.

Accept errors that mean the process or system is out of descriptors or
memory (``EMFILE`` and kin) pause the loop for 100 ms, as
``trio.serve_listeners`` (which this replaces) does; anything else propagates.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

import trio
from raftlog.client.keepalive import set_keepalive

from .log_throttle import LogThrottle
from .metrics import Metrics
from .token_bucket import TokenBucket

log = logging.getLogger(__name__)

# accept(2) errors that say the process or the system is overloaded, not that
# the listener is broken: wait and try again.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
CAPACITY_PAUSE_S = 0.1
THROTTLE_LOG_INTERVAL_S = 10.0

Handler = Callable[[trio.SocketStream], Awaitable[object]]


class AcceptRate:
    """``max_connection_rate``: when the accept loop may accept its next connection.

    A token bucket holding a second's worth; each accepted connection takes a
    whole token. The loop asks ``delay`` before each accept and reports each
    accept with ``accepted``.
    """

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0:
            raise ValueError(f"max_connection_rate must be >= 0, got {rate}")
        self.rate = rate  # 0: no limit
        self._clock = clock
        self._bucket = TokenBucket.full(rate, clock()) if rate else None

    def delay(self) -> float:
        """Seconds until a whole token is there (0: accept now)."""
        if self._bucket is None:
            return 0.0
        self._bucket.take(0.0, self._clock())  # refills it, charges nothing
        missing = 1.0 - self._bucket.tokens
        return missing / self.rate if missing > 0 else 0.0

    def accepted(self) -> None:
        # With several listeners (IPv4 and IPv6) two loops may both have seen
        # the same last token: the bucket then goes briefly below zero, which
        # only delays the next accept a little.
        if self._bucket is not None:
            self._bucket.tokens -= 1.0


async def serve_accepting(
    listeners: list[trio.SocketListener],
    handler: Handler,
    rate: AcceptRate,
    metrics: Metrics,
    name: str = "address",
    tcp_keepalive_s: int = 0,
) -> NoReturn:
    """Accept on every listener until cancelled, one ``handler`` task per connection.

    The handler's stream is closed when it returns, however it returns.
    ``name``: which of the node's listeners, for ``raftlog_connections_accepted_total``.
    ``tcp_keepalive_s``: each accepted socket's keepalive idle time (0: none).
    """
    throttle_log = LogThrottle(THROTTLE_LOG_INTERVAL_S)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(
                _accept_from, listener, handler, rate, name, metrics, throttle_log,
                tcp_keepalive_s,
            )  # fmt: skip
    raise AssertionError("the accept loops never return")  # pragma: no cover


async def _accept_from(
    listener: trio.SocketListener,
    handler: Handler,
    rate: AcceptRate,
    name: str,
    metrics: Metrics,
    throttle_log: LogThrottle,
    tcp_keepalive_s: int,
) -> NoReturn:
    async with listener, trio.open_nursery() as handlers:
        while True:
            wait = rate.delay()
            if wait > 0:
                metrics.accept_throttled_seconds.inc(wait)
                pauses = throttle_log.count()
                if pauses:
                    log.warning(
                        "event=accept_throttled max_connection_rate=%d pauses_since_last_log=%d",
                        rate.rate, pauses,
                    )  # fmt: skip
                await trio.sleep(wait)
                continue
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error(
                    "event=accept_failed error=%s retry_in_s=%.1f",
                    errno.errorcode.get(exc.errno, exc.errno), CAPACITY_PAUSE_S,
                )  # fmt: skip
                await trio.sleep(CAPACITY_PAUSE_S)
                continue
            rate.accepted()
            metrics.connections_accepted.inc(listener=name)
            set_keepalive(stream.socket, tcp_keepalive_s)
            handlers.start_soon(_run_handler, handler, stream)


async def _run_handler(handler: Handler, stream: trio.SocketStream) -> None:
    try:
        await handler(stream)
    finally:
        await trio.aclose_forcefully(stream)
