"""The node's TCP listeners (DESIGN.md §4): its address serves clients and
peers; its optional peer_address serves the other nodes only (their peer links
and snapshot transfers), so that a flood of client connections cannot delay a
peer's redial.

Every connection starts with a hello. Clients then pipeline requests, which
run concurrently and are answered as they complete (out of order); peers
stream one-way Raft frames that go straight to the driver.

Bad input never kills the node: a framing error (oversized, not msgpack, not a
map) closes THAT connection; a well-framed but invalid request gets an
INVALID_REQUEST reply and the connection carries on; a handler that blows up
answers INTERNAL for that request only.

A node holds at most ``[limits] max_client_connections`` client connections
(counted from an admitted hello to the connection's end); one more client hello
is answered NOT_AVAILABLE and that connection closed, so the client retries
another node. Peer connections are never counted nor refused, and neither are
a node's snapshot-transfer connections (role ``replica`` below): a node full
of clients must still let a lagging follower catch up, or a burst of clients
would cost the partition its redundancy. Those connections skip the client
quotas too, as Kafka's replication traffic does. Connections not past their
hello yet are bounded separately, by ``[limits] max_pending_connections``: the
oldest is closed when one more arrives (server/pending_connections.py).

With ``[tls]`` every connection is a TLS handshake first (server/tls.py,
bounded and counted), then the hello; a peer's hello must come with a
certificate valid for that peer's host. Over TLS the connection uses the
stream API (``socket_fd`` is None for a TLS stream); without it the
per-connection cost is one ``is None`` test and the request paths are
unchanged.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import (
    NOT_SAID,
    PROTOCOL_VERSION,
    REPLICA_CLIENT_PREFIX,
    REQUESTS,
    FrameDecoder,
    FrameError,
    FrameTooLargeError,
    NotSaid,
    RequestError,
    encode_frame,
    error_reply,
    hello_ok,
    ok_reply,
    validate_request,
)
from raftlog.client.sockio import read_chunk, socket_fd, write_now
from raftlog.client.tls import TLS_HANDSHAKE_BYTE
from raftlog.log.features import BASELINE_LOG_FORMAT, log_format_problem

from . import acl
from .accept_loop import AcceptRate, serve_accepting
from .acl import User
from .address_limits import AddressOverrides, ConnectionRate
from .audit import audit, is_audited
from .clock_skew import wall_time
from .config import ClusterConfig, QuotaConfig, parse_address
from .connection_sweeper import ConnectionSweeper
from .errors import HandlerError
from .log_format import LogFormats
from .log_throttle import LogThrottle
from .metadata_users import MetadataUsers
from .metrics import Metrics
from .pending_connections import PendingConnections
from .tls import RevocationWatch, TLSAcceptor, cert_identities, peer_cert_problem
from .token_bucket import TokenBucket

log = logging.getLogger(__name__)

RECEIVE_CHUNK = 256 * 1024
# A TLS record of type handshake, version 3.x: a TLS client's first bytes.
_TLS_RECORD_START = bytes((TLS_HANDSHAKE_BYTE, 0x03))
# A tenant reconnecting in a loop against a full node must not flood the log:
# at most one refusal line per this many seconds, with the count since the last.
REFUSAL_LOG_INTERVAL_S = 1.0
# The key under which an admitted fetch's request fields carry its quota
# reservation to ``Quotas.settle_fetch`` (not a wire field: added after the
# request was validated, read by no handler).
FETCH_RESERVATION = "_fetch_reservation"


class IncarnationBook(Protocol):
    """Trust-on-first-use record of each peer's incarnation (DESIGN.md §3 rule 7)."""

    def get(self, node_id: str) -> str | None: ...

    def set(self, node_id: str, incarnation: str) -> None: ...


@dataclass(slots=True)
class MemoryIncarnationBook:
    """An IncarnationBook in memory (tests; a node uses its NodeStore's record)."""

    known: dict[str, str] = field(default_factory=dict)

    def get(self, node_id: str) -> str | None:
        return self.known.get(node_id)

    def set(self, node_id: str, incarnation: str) -> None:
        self.known[node_id] = incarnation


@dataclass(slots=True)
class StoreIncarnationBook:
    """Adapts log.store.NodeStore (peer_incarnation / set_peer_incarnation)."""

    store: Any

    def get(self, node_id: str) -> str | None:
        return self.store.peer_incarnation(node_id)

    def set(self, node_id: str, incarnation: str) -> None:
        self.store.set_peer_incarnation(node_id, incarnation)


def as_incarnation_book(obj: Any) -> IncarnationBook:
    # A NodeStore first: its own get/set (if it ever grows some) mean something else.
    if hasattr(obj, "peer_incarnation") and hasattr(obj, "set_peer_incarnation"):
        return StoreIncarnationBook(obj)
    if hasattr(obj, "get") and hasattr(obj, "set"):
        return obj
    raise TypeError(f"{obj!r} is not an IncarnationBook")


@dataclass(slots=True)
class RequestContext:
    """Who sent a request; handlers use client_id for producer bookkeeping and logs."""

    client_id: str
    peer_address: str
    connection_id: int
    node_id: str
    # Another node's snapshot transfer (see _check_hello): exempt from quotas.
    replica: bool = False
    # The [[auth.user]] whose token the hello carried (server/acl.py); None: no
    # users apply (no [auth], a client_tokens token, a snapshot transfer).
    user: User | None = None


RequestHandler = Callable[[RequestContext, str, dict[str, Any]], Awaitable[dict[str, Any]]]
# Called with (reply fields, None) or (None, error) when a task-less request ends.
Done = Callable[[dict[str, Any] | None, HandlerError | None], None]
# Starts a request without a task of its own if it can (then True, and ``done``
# is called exactly once later); False: serve it with the RequestHandler.
RequestStarter = Callable[[RequestContext, str, dict[str, Any], Done], bool]
PeerHandler = Callable[[str, list[tuple[int, bytes]]], None]


class _Reject(Exception):
    """A hello refused with a wire error code; the connection is closed after the reply.

    ``logged``: the refusal was already logged (rate-limited) where it was decided.
    """

    def __init__(self, code: ErrorCode, message: str, *, logged: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.logged = logged


# ---------------------------------------------------------------- quotas


class Quotas:
    """Per client id buckets, shared by all the connections of one client id.

    Client ids are the clients' own choice, so a bucket per id ever seen would
    grow without bound (a client that reconnects under a new id each time). A
    bucket that has refilled is exactly what a new one would be, so every
    ``SWEEP_INTERVAL_S`` the full ones are dropped: memory follows the ids
    active in the last seconds, and no client gains anything by it.
    """

    SWEEP_INTERVAL_S = 10.0

    def __init__(self, cfg: QuotaConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        # Keyed by client id, or by ("user", name): a client cannot pick a client
        # id that lands in a user's bucket.
        self._requests: dict[str | tuple[str, str], TokenBucket] = {}
        self._produce: dict[str | tuple[str, str], TokenBucket] = {}
        self._fetch: dict[str | tuple[str, str], TokenBucket] = {}
        self._next_sweep = clock() + self.SWEEP_INTERVAL_S

    @property
    def buckets(self) -> int:
        return len(self._requests) + len(self._produce) + len(self._fetch)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.SWEEP_INTERVAL_S
        for table in (self._requests, self._produce, self._fetch):
            for key in [k for k, bucket in table.items() if bucket.full_at(now)]:
                del table[key]

    def check(
        self, client_id: str, op: str, fields: dict[str, Any], user: User | None = None
    ) -> tuple[str, float] | None:
        """None if admitted, else (quota name, seconds to wait).

        A user's buckets are shared by all its connections, whatever client ids
        they give (a tenant cannot escape its quota by renaming its clients),
        and its own rates, when set, replace [quotas]'. Without a user the
        buckets are per client id, as Kafka's client-id quotas.
        """
        now = self.clock()
        if now >= self._next_sweep:
            self._sweep(now)
        key: str | tuple[str, str] = client_id if user is None else ("user", user.name)
        rate = self._rate("requests_per_sec", user)
        if rate is not None:
            wait = _bucket(self._requests, key, rate, now).take(1.0, now)
            if wait:
                return "requests_per_sec", wait
        if op == "produce":
            rate = self._rate("produce_bytes_per_sec", user)
            if rate is not None:
                bucket = _bucket(self._produce, key, rate, now)
                wait = bucket.take(float(len(fields.get("records", b""))), now)
                if wait:
                    return "produce_bytes_per_sec", wait
        elif op == "fetch":
            return self._admit_fetch(key, fields, user, now)
        return None

    def _rate(self, name: str, user: User | None) -> float | None:
        """Quota ``name``'s rate for ``user``: its own when set, else [quotas]'
        (None: no such quota)."""
        own = None if user is None else getattr(user, name)
        return getattr(self.cfg, name) if own is None else own

    def _admit_fetch(
        self, key: str | tuple[str, str], fields: dict[str, Any], user: User | None, now: float
    ) -> tuple[str, float] | None:
        """fetch_bytes_per_sec: a fetch's size is known only once it is read, so
        the bytes are charged after the reply (``settle_fetch``) and a fetch is
        refused while the bucket is in debt.

        An admitted fetch asks for at most the balance not yet reserved by the
        fetches in flight (``max_bytes`` cut to it, and reserved until it is
        answered), so concurrent fetches (one per partition, long polls) share
        one balance instead of each being given all of it. A first batch
        larger than what a fetch may ask still comes whole (``max_bytes`` is at
        least 1): the debt a reply leaves is at most a batch per fetch in
        flight, and a consumer is slowed to the rate rather than stopped for
        seconds. A long poll that waits holds its reservation meanwhile, which
        only makes its neighbours ask for less, never refuses them."""
        rate = self._rate("fetch_bytes_per_sec", user)
        if rate is None:
            return None
        bucket = _bucket(self._fetch, key, rate, now)
        wait = bucket.take(0.0, now)
        if wait:
            return "fetch_bytes_per_sec", wait
        free = max(1, int(bucket.tokens - bucket.reserved))
        asked = fields.get("max_bytes") or None  # 0 asks for the default, as None does
        granted = free if asked is None else min(asked, free)
        fields["max_bytes"] = granted
        bucket.reserved += granted
        fields[FETCH_RESERVATION] = (key, granted)
        return None

    def settle_fetch(self, fields: dict[str, Any], reply: dict[str, Any] | None) -> None:
        """A fetch that ``check`` admitted is over: release its reservation and
        charge the record bytes its reply carries (None: it failed or was
        cancelled, nothing was served). Nothing if no fetch quota applied."""
        reservation = fields.pop(FETCH_RESERVATION, None)
        if reservation is None:
            return
        key, granted = reservation
        bucket = self._fetch.get(key)  # kept by the sweep while anything is reserved
        if bucket is None:
            return
        bucket.reserved = max(0.0, bucket.reserved - granted)
        if reply is not None:
            nbytes = sum(len(batch[3]) for batch in reply.get("batches", ()))
            bucket.charge(float(nbytes), self.clock())


def _bucket(
    table: dict[str | tuple[str, str], TokenBucket],
    key: str | tuple[str, str],
    rate: float,
    now: float,
) -> TokenBucket:
    """``key``'s bucket in ``table`` at ``rate``: a full one for a new key, the
    old one retuned if the rate changed (a reload, ``raftlog user alter``)."""
    bucket = table.get(key)
    if bucket is None:
        bucket = table[key] = TokenBucket.full(rate, now)
    elif bucket.rate != rate:
        bucket = table[key] = bucket.retuned(rate, now)
    return bucket


# ---------------------------------------------------------------- server


@dataclass(slots=True)
class Listener:
    """Everything the connections of one node share; ``handle_stream`` serves one.

    ``serve`` binds the TCP address; tests drive ``handle_stream`` directly
    with in-memory streams to control the scheduling.
    """

    cfg: ClusterConfig
    node_id: str
    book: IncarnationBook
    on_request: RequestHandler
    on_peer_msgs: PeerHandler
    metrics: Metrics
    quotas: Quotas
    start_request: RequestStarter | None = None
    # Called with the peer's id when a peer connection is admitted (its hello).
    on_peer_connected: Callable[[str], None] | None = None
    conn_ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    # Client connections holding a slot of [limits] max_client_connections: from
    # an admitted hello until the connection ends, however it ends.
    client_connections: int = 0
    # Client connections per [[auth.user]] name (only users that hold some).
    user_connections: dict[str, int] = field(default_factory=dict)
    # Client connections per remote address (only addresses that hold some),
    # held against max_client_connections_per_address.
    address_connections: dict[str, int] = field(default_factory=dict)
    refusal_log: LogThrottle = field(default_factory=lambda: LogThrottle(REFUSAL_LOG_INTERVAL_S))
    peer_refusal_log: LogThrottle = field(
        default_factory=lambda: LogThrottle(REFUSAL_LOG_INTERVAL_S)
    )
    tls: TLSAcceptor | None = None  # [tls]: handshake before the hello
    # The cluster's log format and the one each peer link said it reads
    # (server/log_format.py); None: peers are not checked nor recorded.
    log_formats: LogFormats | None = None
    # Closes idle and revoked client connections (server/connection_sweeper.py);
    # its task runs in ``serve``. None: connections are not swept.
    sweeper: ConnectionSweeper | None = None
    # The users kept in the metadata log (server/metadata_users.py), followed by
    # the driver; ``serve`` passes the node's.
    metadata_users: MetadataUsers = field(default_factory=MetadataUsers)
    # Connections not past their hello, bounded by closing the oldest
    # (server/pending_connections.py). Set by ``create``.
    pending: PendingConnections = field(init=False)
    # The same bound, kept apart, for the node's peer_address (if any): a
    # flood on one address never pushes out the other's handshakes.
    peer_pending: PendingConnections = field(init=False)
    # [limits] max_connection_rate_per_address (server/address_limits.py).
    connection_rate: ConnectionRate = field(init=False)
    # The per-address limits with their overrides, for lookups by address.
    address_overrides: AddressOverrides = field(init=False)
    rate_refusal_log: LogThrottle = field(
        default_factory=lambda: LogThrottle(REFUSAL_LOG_INTERVAL_S)
    )
    address_refusal_log: LogThrottle = field(
        default_factory=lambda: LogThrottle(REFUSAL_LOG_INTERVAL_S)
    )

    @classmethod
    def create(
        cls,
        cfg: ClusterConfig,
        node_id: str,
        *,
        store_incarnations: Any,
        on_request: RequestHandler,
        on_peer_msgs: PeerHandler,
        metrics: Metrics,
        start_request: RequestStarter | None = None,
    ) -> Listener:
        cfg.node(node_id)  # ConfigError if unknown
        return cls(
            tls=TLSAcceptor.create(cfg, node_id, metrics),  # ConfigError if a file is bad
            cfg=cfg,
            node_id=node_id,
            book=as_incarnation_book(store_incarnations),
            on_request=on_request,
            on_peer_msgs=on_peer_msgs,
            metrics=metrics,
            quotas=Quotas(cfg.quotas),
            start_request=start_request,
            sweeper=ConnectionSweeper.for_limit(
                cfg.limits.connections_max_idle_ms,
                metrics,
                lambda: cfg.auth.revoked_grace_s,  # changed in place by an [auth] reload
            ),
        )

    @property
    def auth_generation(self) -> int:
        """Moves whenever a credential may have changed: an [auth] reload or a
        change of the metadata log's users. Open connections compare it."""
        return self.cfg.auth.generation + self.metadata_users.generation

    def __post_init__(self) -> None:
        limits = self.cfg.limits
        self.address_overrides = AddressOverrides.of(limits)
        # One book per listener, under the same limits, each with its own gauge.
        self.pending, self.peer_pending = (
            PendingConnections(
                limits.max_pending_connections,
                self.metrics,
                limits.max_pending_connections_per_address,
                share_overrides=self.address_overrides.pending_share_table,
                gauge=gauge,
            )
            for gauge in (self.metrics.pending_connections, self.metrics.peer_pending_connections)
        )
        self.connection_rate = ConnectionRate(
            limits.max_connection_rate_per_address,
            overrides=self.address_overrides.connection_rate_table,
        )

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """A connection to the node's address: clients, and peers."""
        await _connection(self, stream, peer_port=False)

    async def handle_peer_stream(self, stream: trio.abc.Stream) -> None:
        """A connection to the node's peer_address: the other nodes only."""
        await _connection(self, stream, peer_port=True)

    def admit_client(self, user: User | None = None, address: str = "") -> None:
        """Take a client connection slot, or raise _Reject(NOT_AVAILABLE).

        Called with no checkpoint between the check and the increment, so
        concurrent hellos cannot both take the last slot. NOT_AVAILABLE is
        retriable: the client library tries another node (client/aio.py).
        A user with ``max_connections`` also holds one of its own slots, and
        so does the remote address under max_client_connections_per_address:
        one tenant or one host cannot take every slot of the node.
        """
        per_address = self.address_overrides.client_connections(address)
        if per_address:
            held = self.address_connections.get(address, 0)
            if held >= per_address:
                raise self._refuse_client(
                    self.address_refusal_log,
                    f"address={address}",
                    ("max_client_connections_per_address", held, per_address),
                    f"node {self.node_id} has {held} client connections from {address} "
                    f"(max_client_connections_per_address); close some, or retry another node",
                )
        if user is not None and user.max_connections is not None:
            held = self.user_connections.get(user.name, 0)
            if held >= user.max_connections:
                self.metrics.client_connections_refused.inc()
                raise _Reject(
                    ErrorCode.NOT_AVAILABLE,
                    f"user {user.name!r} has {held} connections to node {self.node_id} "
                    f"(its max_connections); close some, or retry another node",
                )
        limit = self.cfg.limits.max_client_connections
        if self.client_connections >= limit:
            raise self._refuse_client(
                self.refusal_log,
                "",
                ("max_client_connections", self.client_connections, limit),
                f"node {self.node_id} has {self.client_connections} client connections "
                f"(max_client_connections); retry another node",
            )
        self.client_connections += 1
        self.metrics.client_connections.inc()
        if user is not None:
            _take(self.user_connections, user.name)
        if per_address:
            _take(self.address_connections, address)

    def _refuse_client(
        self, throttle: LogThrottle, whose: str, limit: tuple[str, int, int], message: str
    ) -> _Reject:
        """Count and log (at most once per throttle interval) a refused client hello.

        ``whose``: what the limit is per (``address=...``), or "" for the node's;
        ``limit``: its name, what is held and the limit.
        """
        self.metrics.client_connections_refused.inc()
        refusals = throttle.count()
        if refusals:
            name, held, most = limit
            log.warning(
                "event=client_connection_refused node=%s %sopen=%d %s=%d "
                "refused_since_last_log=%d",
                self.node_id, f"{whose} " if whose else "", held, name, most, refusals,
            )  # fmt: skip
        return _Reject(ErrorCode.NOT_AVAILABLE, message, logged=True)

    def release_client(self, user: User | None = None, address: str = "") -> None:
        self.client_connections -= 1
        self.metrics.client_connections.dec()
        if user is not None:
            _give_back(self.user_connections, user.name)
        _give_back(self.address_connections, address)

    def admit_connection_rate(self, address: str, conn_id: int) -> bool:
        """max_connection_rate_per_address, at the accept: False if refused."""
        if self.connection_rate.admit(address):
            return True
        self.metrics.connections_rate_limited.inc()
        refusals = self.rate_refusal_log.count()
        if refusals:
            log.warning(
                "event=connection_rate_limited conn=%d address=%s "
                "max_connection_rate_per_address=%d refused_since_last_log=%d",
                conn_id, address, self.connection_rate.rate_for(address), refusals,
            )  # fmt: skip
        return False


def _take(held: dict[str, int], key: str) -> None:
    held[key] = held.get(key, 0) + 1


def _give_back(held: dict[str, int], key: str) -> None:
    """Undo ``_take``; a key that holds nothing is dropped (no-op if absent)."""
    left = held.pop(key, 0) - 1
    if left > 0:
        held[key] = left


async def serve(
    cfg: ClusterConfig,
    node_id: str,
    *,
    store_incarnations: Any,
    on_request: RequestHandler,
    on_peer_msgs: PeerHandler,
    metrics: Metrics,
    start_request: RequestStarter | None = None,
    on_peer_connected: Callable[[str], None] | None = None,
    log_formats: LogFormats | None = None,
    metadata_users: MetadataUsers | None = None,
    task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept clients and peers on this node's address, and peers alone on its
    peer_address if it has one, until cancelled.

    ``task_status.started(listeners)`` once bound (tests read the port): the
    address's listeners, then the peer_address's.
    """
    node = cfg.node(node_id)
    listener = Listener.create(
        cfg,
        node_id,
        store_incarnations=store_incarnations,
        on_request=on_request,
        on_peer_msgs=on_peer_msgs,
        metrics=metrics,
        start_request=start_request,
    )
    listener.on_peer_connected = on_peer_connected
    listener.log_formats = log_formats
    if metadata_users is not None:
        listener.metadata_users = metadata_users
    # None: trio's default, the largest backlog the system allows.
    backlog = cfg.limits.listen_backlog or None
    listeners = await trio.open_tcp_listeners(node.port, host=node.host, backlog=backlog)
    peer_listeners: list[trio.SocketListener] = []
    if node.peer_address is not None:
        peer_host, peer_port = parse_address(node.peer_address)
        peer_listeners = await trio.open_tcp_listeners(peer_port, host=peer_host, backlog=backlog)
    log.info(
        "event=listening node=%s address=%s peer_address=%s",
        node_id, node.address, node.peer_address or "-",
    )  # fmt: skip
    task_status.started(listeners + peer_listeners)
    async with trio.open_nursery() as nursery:
        if listener.sweeper is not None:
            nursery.start_soon(listener.sweeper.run)
        if peer_listeners:
            # No max_connection_rate here (Kafka exempts its inter-broker
            # listener too): a handful of nodes dial it, and one redialling
            # after a restart must not queue behind a client flood.
            nursery.start_soon(
                serve_accepting, peer_listeners, listener.handle_peer_stream, AcceptRate(0),
                metrics, "peer_address", cfg.limits.tcp_keepalive_s,
            )  # fmt: skip
        rate = AcceptRate(cfg.limits.max_connection_rate)
        await serve_accepting(
            listeners, listener.handle_stream, rate, metrics, "address", cfg.limits.tcp_keepalive_s
        )


def _remote_address(remote: str) -> str:
    """The IP of ``_peer_name``'s "host:port" (as itself when it has no port)."""
    host, sep, port = remote.rpartition(":")
    return host if sep and port.isdigit() else remote


def _peer_name(stream: trio.abc.Stream) -> str:
    # A TLS stream's socket is its transport's.
    sock = getattr(getattr(stream, "transport_stream", stream), "socket", None)
    if sock is None:
        return "memory"
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


async def _connection(shared: Listener, stream: trio.abc.Stream, *, peer_port: bool) -> None:
    # trio.serve_listeners lets a handler's exception crash the whole server:
    # whatever one connection does wrong, the node keeps serving the others.
    try:
        await _connection_inner(shared, stream, peer_port)
    except Exception:
        log.exception("event=connection_failed remote=%s", _peer_name(stream))


@dataclass(slots=True)
class _Admitted:
    """A connection past its hello: what serving it needs."""

    stream: trio.abc.Stream  # the TLS stream with [tls]
    decoder: FrameDecoder
    role: str  # "client", "replica" or "peer"
    ident: str
    user: User | None
    # What the client authenticated with, kept (never logged) to check it
    # again after an [auth] reload: its token, else its certificate.
    credential: Any
    leftover: list[dict[str, Any]]  # frames that came with the hello
    log_format: int
    tls_watch: RevocationWatch | None
    # The credentials' generation the hello was checked against (Listener
    # ``auth_generation``), taken with the check: a reload while the hello_ok
    # is on its way must still make the connection check its credential again.
    auth_generation: int
    # A peer's own peer_address as its hello said it (None: it has none;
    # NOT_SAID: an older node, or a client).
    peer_address: str | NotSaid | None = NOT_SAID


async def _connection_inner(shared: Listener, stream: trio.abc.Stream, peer_port: bool) -> None:
    conn_id = next(shared.conn_ids)
    remote = _peer_name(stream)
    address = _remote_address(remote)
    # The per-address rate is for fairness between client hosts: the peer
    # listener has none, as it has no max_connection_rate.
    if not peer_port and not shared.admit_connection_rate(address, conn_id):
        await trio.aclose_forcefully(stream)  # nothing to say: no hello was read
        return
    book = shared.peer_pending if peer_port else shared.pending
    with book.hold(conn_id, address) as pending:
        admitted = await _admit(shared, stream, conn_id, remote, address, peer_port)
    if pending.cancelled_caught:  # pushed out by newer connections; _admit closed it
        log.debug("event=pending_connection_evicted conn=%d remote=%s", conn_id, remote)
        return
    if admitted is None:
        return
    # A client holds a slot from _admit on (no checkpoint in between); the
    # finally gives it back however the connection ends (EOF, broken stream,
    # cancellation, a bug).
    try:
        async with admitted.stream:
            await _serve_admitted(shared, admitted, conn_id, remote)
    finally:
        if admitted.role == "client":
            shared.release_client(admitted.user, address)


async def _admit(
    shared: Listener,
    stream: trio.abc.Stream,
    conn_id: int,
    remote: str,
    address: str,
    peer_port: bool,
) -> _Admitted | None:
    """TLS handshake (with [tls]), hello, and a client's slot.

    The connection admitted, or None once it was refused and closed. A
    cancellation (the node stopping, or newer connections pushing this one
    out of max_pending_connections) closes it and passes through.
    """
    peer_cert: dict[str, Any] | None = None
    tls_watch: RevocationWatch | None = None
    if shared.tls is not None:
        secured = await shared.tls.accept(stream, remote)
        if secured is None:
            return None  # counted, logged and closed by accept
        stream = secured
        peer_cert = secured.getpeercert() or None
        tls_watch = shared.tls.watch(secured)
    decoder = FrameDecoder(shared.cfg.limits.max_frame_bytes)
    try:
        hello, leftover = await _read_hello(stream, decoder, shared.cfg.limits.hello_timeout_ms)
        role, ident, user = _check_hello(shared, hello, peer_cert, peer_port=peer_port)
        checked_generation = shared.auth_generation  # no checkpoint since the check
        if role == "client":
            shared.admit_client(user, address)  # peers are never counted nor refused
    except _Reject as rej:
        shared.metrics.hello_rejected.inc(code=rej.code.value)
        if not rej.logged:
            log.warning(
                "event=hello_rejected conn=%d remote=%s code=%s reason=%r",
                conn_id, remote, rej.code.value, rej.message,
            )  # fmt: skip
        await _send_quietly(stream, encode_frame(error_reply(0, rej.code, rej.message)))
    except FrameError as exc:
        _framing_error(shared, conn_id, remote, exc)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
        pass
    except BaseException:  # cancelled: the node stopping, or pushed out
        await trio.aclose_forcefully(stream)
        raise
    else:
        credential = (
            (hello.get("credential"), peer_cert) if shared.cfg.auth.authenticates_clients else None
        )
        log_format = hello.get("log_format", BASELINE_LOG_FORMAT)
        return _Admitted(
            stream, decoder, role, ident, user, credential, leftover, log_format, tls_watch,
            checked_generation, hello.get("peer_address", NOT_SAID),
        )  # fmt: skip
    await stream.aclose()  # after a refusal's reply: a graceful close lets it arrive
    return None


async def _serve_admitted(shared: Listener, admitted: _Admitted, conn_id: int, remote: str) -> None:
    stream, role, ident = admitted.stream, admitted.role, admitted.ident
    welcome = hello_ok(shared.node_id, shared.cfg.name, _announced_limits(shared))
    if not await _send_quietly(stream, encode_frame(welcome)):
        return
    shared.metrics.connections.inc(role=role)
    log.debug("event=connected conn=%d remote=%s role=%s id=%s", conn_id, remote, role, ident)
    try:
        if role == "peer":
            formats = shared.log_formats
            if formats is not None:
                formats.peer_connected(ident, conn_id, admitted.log_format, admitted.peer_address)
            try:
                await _serve_peer(
                    shared, stream, admitted.decoder, ident, admitted.leftover, conn_id,
                    admitted.tls_watch,
                )  # fmt: skip
            finally:
                if formats is not None:
                    formats.peer_gone(ident, conn_id)
        else:
            ctx = RequestContext(
                ident, remote, conn_id, shared.node_id, role == "replica", admitted.user
            )
            credential = admitted.credential
            # A snapshot transfer proven by the peer token carries no client token.
            if role == "replica" and shared.cfg.auth.peer_token is not None:
                credential = None
            connection = _ClientConnection(
                shared, stream, admitted.decoder, ctx, credential, admitted.tls_watch,
                auth_generation=admitted.auth_generation,
            )  # fmt: skip
            await connection.run(admitted.leftover)
    finally:
        shared.metrics.connections.dec(role=role)


async def _send_quietly(stream: trio.abc.Stream, data: bytes) -> bool:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


def _framing_error(shared: Listener, conn_id: int, remote: str, exc: FrameError) -> None:
    reason = "too_large" if isinstance(exc, FrameTooLargeError) else "malformed"
    shared.metrics.frame_errors.inc(reason=reason)
    log.warning("event=connection_closed conn=%d remote=%s reason=%s detail=%r",
                conn_id, remote, reason, str(exc))  # fmt: skip


async def _read_hello(
    stream: trio.abc.Stream, decoder: FrameDecoder, timeout_ms: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    # A dialler that never says hello must not hold a task and a socket forever
    # ([limits] hello_timeout_ms).
    with trio.fail_after(timeout_ms / 1000):
        first = True
        while True:
            data = await stream.receive_some(RECEIVE_CHUNK)
            if not data:
                raise trio.BrokenResourceError("closed before hello")
            if first and data[:2] == _TLS_RECORD_START:
                # A frame length of 0x1603.... (369 MB) would be refused as too
                # large anyway; say what it really is, for the operator's log.
                raise FrameError("a TLS handshake, but this node serves plaintext (no [tls])")
            first = False
            frames = decoder.feed(data)
            if frames:
                return frames[0], frames[1:]


def _check_hello(
    shared: Listener,
    hello: dict[str, Any],
    peer_cert: dict[str, Any] | None = None,
    *,
    peer_port: bool = False,
) -> tuple[str, str, User | None]:
    """Validate a hello; return (role, id, user) or raise _Reject.

    The role returned is the hello's, except that a client-role hello from
    another node's snapshot transfer comes back as ``replica`` (not counted
    against max_client_connections, not throttled). ``peer_cert``: the
    verified certificate of a TLS connection (None: none presented, or no TLS).
    ``user``: the [[auth.user]] the client's credential names, if any.
    ``peer_port``: the hello came to the node's peer_address, which serves
    peers and snapshot transfers only.
    """
    cfg = shared.cfg
    if hello.get("type") != "hello":
        raise _Reject(ErrorCode.INVALID_REQUEST, "the first frame must be a hello")
    version = hello.get("version")
    if version != PROTOCOL_VERSION:
        raise _Reject(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version!r} not supported (this node speaks {PROTOCOL_VERSION})",
        )
    role, ident = hello.get("role"), hello.get("id")
    if role not in ("client", "peer"):
        raise _Reject(ErrorCode.INVALID_REQUEST, f"hello role must be client or peer: {role!r}")
    if not isinstance(ident, str) or not ident:
        raise _Reject(ErrorCode.INVALID_REQUEST, "hello id must be a non-empty string")
    cluster = hello.get("cluster")
    credential = hello.get("credential")
    if role == "client":
        # A client may not know the cluster's name; if it says one, it must match.
        if cluster is not None and cluster != cfg.name:
            raise _Reject(
                ErrorCode.CLUSTER_MISMATCH, f"this node is in cluster {cfg.name!r}, not {cluster!r}"
            )
        replica = _is_replica_transfer(cfg, ident, hello.get("peer_credential")) and (
            shared.tls is None or _replica_cert_ok(cfg, ident, peer_cert)
        )
        if peer_port and not replica:
            raise _Reject(ErrorCode.INVALID_REQUEST, _peer_address_message(shared))
        if replica and cfg.auth.peer_token is not None:
            return "replica", ident, None  # proven by the peer token: no client token needed
        user = _client_user(cfg, credential, peer_cert, shared.metadata_users)
        return ("replica" if replica else role), ident, user
    if cluster != cfg.name:
        raise _Reject(
            ErrorCode.CLUSTER_MISMATCH, f"peer of cluster {cluster!r}, this node is in {cfg.name!r}"
        )
    if cfg.auth.peer_token is not None and credential != cfg.auth.peer_token:
        raise _Reject(ErrorCode.UNAUTHORIZED, "missing or invalid peer credential")
    if ident not in cfg.node_ids() or ident == shared.node_id:
        raise _Reject(ErrorCode.CLUSTER_MISMATCH, f"peer {ident!r} is not a member of this cluster")
    if shared.tls is not None:
        problem = peer_cert_problem(cfg, peer_cert, ident)
        if problem is not None:
            raise _Reject(ErrorCode.UNAUTHORIZED, problem)
    _check_peer_log_format(shared, ident, hello.get("log_format", BASELINE_LOG_FORMAT))
    incarnation = hello.get("incarnation")
    if not isinstance(incarnation, str) or not incarnation:
        raise _Reject(ErrorCode.INVALID_REQUEST, "peer hello needs an incarnation")
    _check_said_peer_address(hello)
    known = shared.book.get(ident)
    if known is None:
        shared.book.set(ident, incarnation)  # trust on first use
        log.info("event=peer_incarnation_recorded peer=%s incarnation=%s", ident, incarnation)
    elif known != incarnation:
        # DESIGN §3 rule 7: a node restarted on a wiped data dir lost the log it
        # voted and acked with; letting it speak as its old self could elect a
        # leader without a committed entry. It must rejoin as a new member.
        log.error(
            "event=peer_refused peer=%s reason=incarnation_changed known=%s got=%s "
            "hint='its data dir was wiped or replaced; re-add it as a new member'",
            ident, known, incarnation,
        )  # fmt: skip
        raise _Reject(
            ErrorCode.CLUSTER_MISMATCH,
            f"peer {ident!r} has incarnation {incarnation}, expected {known}",
        )
    return role, ident, None


def _check_said_peer_address(hello: dict[str, Any]) -> None:
    """_Reject a peer hello whose ``peer_address`` (its own listener for the nodes,
    recorded by the controller) is neither nil nor a host:port."""
    said = hello.get("peer_address")
    if said is None:
        return  # none configured, or an older node that does not say
    try:
        if not isinstance(said, str):
            raise ValueError(f"not a string: {said!r}")
        parse_address(said)
    except ValueError as exc:
        raise _Reject(
            ErrorCode.INVALID_REQUEST, f"peer hello: bad peer_address {said!r}: {exc}"
        ) from None


def _announced_limits(shared: Listener) -> dict[str, int]:
    """What a client should check records and batches against, and how long
    the node keeps an idle connection: this node's."""
    limits = shared.cfg.limits
    announced = {
        "max_record_bytes": limits.max_record_bytes,
        "max_batch_bytes": limits.max_batch_bytes,
    }
    if limits.connections_max_idle_ms > 0:  # the client retires idle connections before
        announced["connections_max_idle_ms"] = limits.connections_max_idle_ms
    return announced


def _check_peer_log_format(shared: Listener, ident: str, peer_format: Any) -> None:
    """_Reject a peer that cannot read what this cluster writes (log/features.py):
    joined, it would skip the entries it cannot decode and diverge."""
    problem = log_format_problem(peer_format)
    if problem is not None:
        raise _Reject(ErrorCode.INVALID_REQUEST, f"peer hello: {problem}")
    if shared.log_formats is None:
        return
    cluster_format = shared.log_formats.cluster()
    if peer_format >= cluster_format:
        return
    message = (
        f"this cluster writes log format {cluster_format}; node {ident!r} reads only up to "
        f"{peer_format}: run a raftlog version on it that reads format {cluster_format} "
        "(or lift its [cluster] max_log_format)"
    )
    refusals = shared.peer_refusal_log.count()
    if refusals:
        log.error(
            "event=peer_refused peer=%s reason=log_format cluster=%d peer_reads=%d "
            "refused_since_last_log=%d",
            ident, cluster_format, peer_format, refusals,
        )  # fmt: skip
    raise _Reject(ErrorCode.UNSUPPORTED_VERSION, message, logged=True)


def _client_user(
    cfg: ClusterConfig,
    credential: Any,
    peer_cert: dict[str, Any] | None = None,
    metadata_users: MetadataUsers | None = None,
) -> User | None:
    """The user a hello's credential names (_named_user), unless that user's
    ``expires_at_ms`` has passed on this node's wall clock: _Reject UNAUTHORIZED,
    naming when (an expired token is no secret any more)."""
    user = _named_user(cfg, credential, peer_cert, metadata_users)
    if user is not None and user.expired(wall_time() * 1000):
        raise _Reject(ErrorCode.UNAUTHORIZED, _expired_message(user))
    return user


def _expired_message(user: User) -> str:
    return (
        f"the credentials of user {user.name!r} expired at {user.expiry_text()}: an operator "
        f"can extend them (raftlog user alter {user.name} --expires-in DURATION)"
    )


def _named_user(
    cfg: ClusterConfig,
    credential: Any,
    peer_cert: dict[str, Any] | None = None,
    metadata_users: MetadataUsers | None = None,
) -> User | None:
    """The user a client credential names (None: a full-access client_tokens
    token, or no client authentication); _Reject UNAUTHORIZED when it names nobody.

    A token, when sent, decides. Without one, a verified TLS client certificate
    (``peer_cert``, [tls] client_auth) names the user whose ``tls_names`` holds
    one of its names. cluster.toml's users come first, then those kept in the
    metadata log (``metadata_users``). The file's tokens are compared in
    constant time, and every one is compared, so the reply's timing does not
    tell how much of a guess was right; the log's are found by their SHA-256,
    whose lookup tells nothing about the token either."""
    auth = cfg.auth
    if not auth.authenticates_clients:
        return None
    found: User | None = None
    valid = False
    if not (isinstance(credential, str) and credential) and peer_cert:
        names = cert_identities(peer_cert)
        found = auth.user_of_cert(names)
        if found is None and metadata_users is not None:
            found = metadata_users.user_of_cert(names, auth.user_names)
        if found is not None:
            return found
        raise _Reject(
            ErrorCode.UNAUTHORIZED,
            "no client credential, and the TLS client certificate names no user "
            f"(its names: {', '.join(names) or 'none'})",
        )
    if isinstance(credential, str) and credential:
        given = credential.encode()
        for user in auth.users:
            if user.token is not None and hmac.compare_digest(given, user.token.encode()):
                found, valid = user, True
        for token in auth.client_tokens:
            if hmac.compare_digest(given, token.encode()):
                valid = True
        if not valid and metadata_users is not None:
            found = metadata_users.user_of_token(given, auth.user_names)
            valid = found is not None
    if not valid:
        raise _Reject(ErrorCode.UNAUTHORIZED, "missing or invalid client credential")
    return found


def _peer_address_message(shared: Listener) -> str:
    node = shared.cfg.node(shared.node_id)
    return (
        f"{node.peer_address} is node {shared.node_id}'s peer_address, for the other nodes "
        f"only; clients connect to its address, {node.address}"
    )


def _is_replica_transfer(cfg: ClusterConfig, ident: str, peer_credential: Any) -> bool:
    """A snapshot transfer (server/snapshot_transfer.py) names itself
    ``replica:<node>`` and proves it is a node with ``[auth] peer_token``.

    Without a peer_token the cluster trusts its clients anyway (any of them
    could speak the peer role), so the name alone is taken. A wrong or
    missing proof is no error: the connection is then an ordinary, counted
    client, and replica_fetch refuses it (UNAUTHORIZED).
    """
    if not ident.startswith(REPLICA_CLIENT_PREFIX):
        return False
    token = cfg.auth.peer_token
    if token is None:
        return True
    return isinstance(peer_credential, str) and hmac.compare_digest(
        peer_credential.encode(), token.encode()
    )


def _replica_cert_ok(cfg: ClusterConfig, ident: str, peer_cert: dict[str, Any] | None) -> bool:
    """Over TLS a snapshot transfer is exempt from the client limits only with
    the certificate of the node it names (it dials with that node's certificate)."""
    node = ident[len(REPLICA_CLIENT_PREFIX) :]
    return node in cfg.node_ids() and peer_cert_problem(cfg, peer_cert, node) is None


# ---------------------------------------------------------------- peer role


async def _receive(stream: trio.abc.Stream, fd: int | None, drained: bool) -> bytes:
    """The next chunk of ``stream`` (b"" at EOF); see client.sockio."""
    if fd is None:
        return await stream.receive_some(RECEIVE_CHUNK)
    return await read_chunk(fd, RECEIVE_CHUNK, drained)


def _raft_msgs(frame: dict[str, Any]) -> list[tuple[int, bytes]]:
    msgs = frame.get("msgs")
    if not isinstance(msgs, list):
        raise FrameError("raft frame without a msgs list")
    out: list[tuple[int, bytes]] = []
    for item in msgs:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not isinstance(item[0], int)
            or isinstance(item[0], bool)
            or not isinstance(item[1], bytes)
        ):
            raise FrameError("raft msgs must be [group_id, bytes] pairs")
        out.append((item[0], item[1]))
    return out


async def _serve_peer(
    shared: Listener,
    stream: trio.abc.Stream,
    decoder: FrameDecoder,
    peer: str,
    frames: list[dict[str, Any]],
    conn_id: int,
    tls_watch: RevocationWatch | None = None,
) -> None:
    remote = _peer_name(stream)
    fd = socket_fd(stream)
    drained = True
    if shared.on_peer_connected is not None:
        shared.on_peer_connected(peer)
    try:
        while True:
            if tls_watch is not None and tls_watch.revoked():
                # A peer whose certificate is revoked must not vote or append
                # one more message: close; its redial meets the CRL in the handshake.
                shared.metrics.tls_connections_revoked.inc(role="peer")
                log.warning("event=tls_connection_revoked conn=%d remote=%s peer=%s",
                            conn_id, remote, peer)  # fmt: skip
                return
            for frame in frames:
                if frame.get("type") != "raft":
                    raise FrameError(f"unexpected peer frame type {frame.get('type')!r}")
                msgs = _raft_msgs(frame)
                shared.metrics.peer_frames_in.inc(peer=peer)
                if msgs:
                    shared.on_peer_msgs(peer, msgs)
            data = await _receive(stream, fd, drained)
            if not data:
                return
            drained = len(data) < RECEIVE_CHUNK
            frames = decoder.feed(data)
    except FrameError as exc:
        _framing_error(shared, conn_id, remote, exc)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return


# ---------------------------------------------------------------- client role


class _ClientConnection:
    """Pipelined requests on one client connection."""

    def __init__(
        self,
        shared: Listener,
        stream: trio.abc.Stream,
        decoder: FrameDecoder,
        ctx: RequestContext,
        credential: tuple[Any, dict[str, Any] | None] | None = None,
        tls_watch: RevocationWatch | None = None,
        *,
        auth_generation: int,
    ) -> None:
        self.shared = shared
        self.stream = stream
        self.decoder = decoder
        self.ctx = ctx
        # (token, TLS certificate) the hello authenticated with (None: no client
        # authentication), checked again whenever [auth] was reloaded since.
        self.credential = credential
        # The generation ``credential`` was last checked at: the hello's (a
        # reload since then makes the first request or sweep check it again).
        self.auth_generation = auth_generation
        self.revoked: str | None = None  # why every request is refused from now on
        # The user's expiry, ms since the epoch (None: never), checked before
        # every request and at every sweep: a connection made before its user
        # expired is refused from then on, as a rotated token's is.
        self.expires_at_ms = ctx.user.expires_at_ms if ctx.user is not None else None
        # [tls] crl_file: a reload's CRL may revoke the client's certificate.
        self.tls_watch = tls_watch
        self.window = shared.cfg.limits.max_pending_requests_per_connection
        self.pending = trio.Semaphore(self.window)
        self.outbox: list[bytes | memoryview] = []
        self.wake = trio.Event()
        self.reading_done = False
        self.writing = False  # the writer task is inside send_all
        # The reply to a connection's only request in flight (a client waiting
        # on each call) is written by its handler when the writer is idle: one
        # task switch less on that request's critical path. Pipelined replies
        # go through the writer, which coalesces a turn's replies into one write.
        self.fd = socket_fd(stream)
        # Requests started without a task (Listener.start_request) and not yet
        # answered; they are not in the handlers nursery, so EOF waits for them.
        self.taskless = 0
        self.taskless_idle = trio.Event()
        # Set before the stream closes: a task-less request answered later (its
        # callback runs in the driver's turn) must not write to a closed, or
        # reused, descriptor.
        self.closed = False
        # For the sweeper (server/connection_sweeper.py): socket reads so far,
        # and the scope that ends the connection when it closes one.
        self.reads = 0
        self.scope: trio.CancelScope | None = None

    async def run(self, first_frames: list[dict[str, Any]]) -> None:
        # Errors are handled where they happen and never cross a nursery
        # boundary: with strict exception groups (trio >= 0.25) they would
        # arrive wrapped and slip past an `except FrameError` out here.
        sweeper = self.shared.sweeper
        try:
            async with trio.open_nursery() as conn:
                self.scope = conn.cancel_scope
                if sweeper is not None:
                    sweeper.add(self, trio.current_time())
                conn.start_soon(self._writer, conn.cancel_scope)
                async with trio.open_nursery() as handlers:
                    clean_eof = await self._reader(handlers, first_frames)
                    if not clean_eof:
                        conn.cancel_scope.cancel()
                        return
                # EOF from the client: every request has its answer (task-less
                # ones end by their deadline at the latest); flush and close.
                while self.taskless > 0:
                    idle = self.taskless_idle = trio.Event()
                    await idle.wait()
                self.reading_done = True
                self.wake.set()
        finally:
            self.closed = True
            if sweeper is not None:
                sweeper.discard(self)

    # What the sweeper asks (connection_sweeper.SweptConnection).

    def busy(self) -> bool:
        # A request holds its window slot until its reply is on the wire.
        return self.pending.value < self.window

    def check_credentials(self) -> None:
        """Refuse the connection from now on if a reload revoked what it
        authenticated with (its TLS certificate or its [auth] token or user),
        or its user expired."""
        if self.revoked is not None:
            return
        if self.tls_watch is not None and self.tls_watch.revoked():
            self._certificate_revoked()
            return
        if self.credential is not None and self.shared.auth_generation != self.auth_generation:
            self._reauthenticate()
        expires_at_ms = self.expires_at_ms
        if (
            expires_at_ms is not None
            and self.revoked is None
            and wall_time() * 1000 >= expires_at_ms
        ):
            self._expired()

    def close_by_node(self, reason: str) -> None:
        ctx = self.ctx
        level = logging.DEBUG if reason == "idle" else logging.INFO
        log.log(level, "event=connection_closed_by_node conn=%d remote=%s client_id=%s reason=%s",
                ctx.connection_id, ctx.peer_address, ctx.client_id, reason)  # fmt: skip
        if self.scope is not None:
            self.scope.cancel()

    async def _reader(self, handlers: trio.Nursery, frames: list[dict[str, Any]]) -> bool:
        """Dispatch frames until EOF (True) or a broken/undecodable stream (False)."""
        drained = True
        try:
            while True:
                for frame in frames:
                    # Bounded pipelining: when the window is full, stop reading the
                    # socket; TCP flow control then pushes back on the client.
                    try:
                        self.pending.acquire_nowait()  # no scheduler round trip per frame
                    except trio.WouldBlock:
                        await self.pending.acquire()
                    self._dispatch(handlers, frame)
                data = await _receive(self.stream, self.fd, drained)
                if not data:
                    return True
                self.reads += 1
                drained = len(data) < RECEIVE_CHUNK
                frames = self.decoder.feed(data)
        except FrameError as exc:
            _framing_error(self.shared, self.ctx.connection_id, self.ctx.peer_address, exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        return False

    def _dispatch(self, handlers: trio.Nursery, frame: dict[str, Any]) -> None:
        raw_id = frame.get("id")
        usable = isinstance(raw_id, int) and not isinstance(raw_id, bool) and raw_id > 0
        reply_id = raw_id if usable else 0
        try:
            req_id, op, fields = validate_request(frame)
        except RequestError as exc:
            self._count(str(frame.get("type")), exc.code)
            self._reply(error_reply(reply_id, exc.code, exc.message))
            return
        self.check_credentials()
        if self.revoked is not None:
            self._refuse(req_id, op, fields, ErrorCode.UNAUTHORIZED, self.revoked)
            return
        user = self.ctx.user
        if user is not None:
            denied = acl.check(user, op, fields)
            if denied is not None:
                # Refused before quotas and handlers: it cost the user nothing and did nothing.
                self.shared.metrics.forbidden.inc(user=user.name, op=op)
                self._refuse(req_id, op, fields, ErrorCode.FORBIDDEN, denied)
                return
        throttled = (
            None
            if self.ctx.replica
            else self.shared.quotas.check(self.ctx.client_id, op, fields, user)
        )
        if throttled is not None:
            quota, wait = throttled
            self.shared.metrics.throttled.inc(quota=quota)
            if user is not None:
                self.shared.metrics.user_throttled.inc(user=user.name, quota=quota)
            retry_ms = max(1, int(wait * 1000))
            message = f"quota {quota} exceeded"
            self._refuse(req_id, op, fields, ErrorCode.THROTTLED, message, retry_after_ms=retry_ms)
            return
        starter = self.shared.start_request
        if starter is not None and self._start_taskless(starter, req_id, op, fields):
            return
        handlers.start_soon(self._handle, req_id, op, fields)

    def _reauthenticate(self) -> None:
        """[auth] was reloaded (server/auth_reload.py), or the metadata log's users
        changed (server/metadata_users.py): check this connection's credential
        again, as a new hello would be. Still valid: the connection
        serves on with the grants and quotas its token has now. Revoked or
        rotated away: every request is refused from now on, so a leaked token
        stops working on the connections already made with it too."""
        if self.revoked is not None:
            return
        self.auth_generation = self.shared.auth_generation
        old = self.ctx.user
        try:
            users = self.shared.metadata_users
            user = _named_user(self.shared.cfg, *self.credential, users)
        except _Reject:
            who = f"user {old.name!r}" if old is not None else "a client_tokens token"
            self.revoked = (
                f"the credential this connection authenticated with ({who}) names no user "
                "any more: it was revoked or rotated ([auth], or raftlog user delete or "
                "alter --rotate-token); reconnect with a current one"
            )
            ctx = self.ctx
            log.warning("event=connection_token_revoked conn=%d remote=%s client_id=%s",
                        ctx.connection_id, ctx.peer_address, ctx.client_id)  # fmt: skip
            return
        # Still valid: its grants, quotas and expiry as they are now (an alter
        # may have moved the expiry either way; check_credentials checks it next).
        self.ctx.user = user
        self.expires_at_ms = user.expires_at_ms if user is not None else None

    def _expired(self) -> None:
        """The connection's user expired while it was open: like a rotated token,
        every request is refused from now on (a reconnect is refused at its hello)."""
        assert self.ctx.user is not None  # only users expire
        self.revoked = _expired_message(self.ctx.user)
        ctx = self.ctx
        log.warning("event=connection_user_expired conn=%d remote=%s client_id=%s user=%s",
                    ctx.connection_id, ctx.peer_address, ctx.client_id, ctx.user.name)  # fmt: skip

    def _certificate_revoked(self) -> None:
        """A reload's crl_file revokes the certificate this connection's handshake
        presented: like a revoked token, every request is refused from now on
        (the client's reconnect then fails its handshake, naming the revocation)."""
        self.revoked = (
            "the TLS certificate this connection presented was revoked ([tls] crl_file, "
            "reloaded by the node); reconnect with a current certificate"
        )
        self.shared.metrics.tls_connections_revoked.inc(role="client")
        ctx = self.ctx
        log.warning("event=tls_connection_revoked conn=%d remote=%s client_id=%s",
                    ctx.connection_id, ctx.peer_address, ctx.client_id)  # fmt: skip

    def _start_taskless(
        self, starter: RequestStarter, req_id: int, op: str, fields: dict[str, Any]
    ) -> bool:
        """Try to serve the request with no task (see RequestStarter); False: not taken."""
        started = time.perf_counter()
        answered = False

        def done(result: dict[str, Any] | None, error: HandlerError | None) -> None:
            nonlocal answered
            if answered:
                return
            answered = True
            self._taskless_ended()
            self._answer(req_id, op, started, result, error)

        self.taskless += 1
        try:
            taken = starter(self.ctx, op, fields, done)
        except Exception:
            log.exception("event=handler_failed op=%s conn=%d", op, self.ctx.connection_id)
            done(None, HandlerError(ErrorCode.INTERNAL, f"internal error handling {op}"))
            return True
        if not taken:
            self._taskless_ended()
        return taken

    def _taskless_ended(self) -> None:
        self.taskless -= 1
        if self.taskless == 0:
            self.taskless_idle.set()  # an EOF may be waiting for the last one

    async def _handle(self, req_id: int, op: str, fields: dict[str, Any]) -> None:
        started = time.perf_counter()
        result: dict[str, Any] | None = None
        error: HandlerError | None = None
        try:
            result = await self.shared.on_request(self.ctx, op, fields)
        except HandlerError as exc:
            error = exc
        except Exception:
            # One broken request must not take the connection (or the node) down.
            log.exception("event=handler_failed op=%s conn=%d", op, self.ctx.connection_id)
            error = HandlerError(ErrorCode.INTERNAL, f"internal error handling {op}")
        except BaseException:  # cancelled: the connection closed (or the node stops)
            if op == "fetch":
                self.shared.quotas.settle_fetch(fields, None)
            if is_audited(op, fields):
                audit(self.ctx, op, fields, "CANCELLED",
                      "no answer: the connection or the node closed first (it may have "
                      "happened)", time.perf_counter() - started)  # fmt: skip
            raise
        self._answer(req_id, op, started, result, error)
        if op == "fetch":
            self.shared.quotas.settle_fetch(fields, result)
        if is_audited(op, fields):
            outcome = "OK" if error is None else error.code.value
            message = None if error is None else error.message
            audit(self.ctx, op, fields, outcome, message, time.perf_counter() - started)

    def _answer(
        self,
        req_id: int,
        op: str,
        started: float,
        result: dict[str, Any] | None,
        error: HandlerError | None,
    ) -> None:
        if error is None:
            reply = ok_reply(req_id, **(result or {}))
            code = "OK"
        else:
            reply = error_reply(req_id, error.code, error.message, **error.details)
            code = error.code.value
        self.shared.metrics.requests.inc(op=op, code=code)
        self.shared.metrics.request_latency.observe(time.perf_counter() - started, op=op)
        self._reply(reply)

    def _refuse(
        self,
        req_id: int,
        op: str,
        fields: dict[str, Any],
        code: ErrorCode,
        message: str,
        **details: Any,
    ) -> None:
        """Answer a request refused before any handler ran (counted, and audited if
        it is an audited one: audit.is_audited)."""
        self._count(op, code)
        self._reply(error_reply(req_id, code, message, **details))
        if is_audited(op, fields):
            audit(self.ctx, op, fields, code.value, message, 0.0)

    def _count(self, op: str, code: ErrorCode) -> None:
        # Bound label cardinality: garbage op names are counted under one label.
        self.shared.metrics.requests.inc(op=op if op in REQUESTS else "unknown", code=code.value)

    def _reply(self, reply: dict[str, Any]) -> None:
        if self.closed:
            return  # a task-less request answered after its connection ended
        try:
            frame = encode_frame(reply)
        except Exception:
            # A handler returned something msgpack cannot carry: a bug, but one
            # request's bug, answered as such.
            log.exception("event=reply_unencodable conn=%d", self.ctx.connection_id)
            frame = encode_frame(
                error_reply(reply.get("id", 0), ErrorCode.INTERNAL, "reply could not be encoded")
            )
        alone = self.window - self.pending.value == 1
        if alone and self.fd is not None and not self.writing and not self.outbox:
            written = write_now(self.fd, frame)
            if written == len(frame):
                self.pending.release()  # the reply is on the wire
                return
            frame = memoryview(frame)[written:]  # no copy of a large reply's tail
        self.outbox.append(frame)
        self.wake.set()

    async def _writer(self, conn_scope: trio.CancelScope) -> None:
        while True:
            await self.wake.wait()
            # Let every handler that completes in this scheduling batch add its
            # reply first, so they all go out in ONE write (DESIGN §9 coalesce).
            await trio.lowlevel.cancel_shielded_checkpoint()
            self.wake = trio.Event()
            batch, self.outbox = self.outbox, []
            if batch:
                self.writing = True
                try:
                    await self.stream.send_all(b"".join(batch))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    conn_scope.cancel()
                    return
                finally:
                    self.writing = False
                # A request leaves the window only once its reply is on the wire:
                # a client that stops reading stops being read, instead of piling
                # up replies in our memory.
                for _ in batch:
                    self.pending.release()
            if self.reading_done and not self.outbox:
                conn_scope.cancel()
                return
