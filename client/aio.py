"""``AsyncClient``: the trio client of a raftlog cluster.

Routing. Partition requests (produce, fetch, offsets, commits) go to the
partition's leader as known from cached metadata; metadata requests go to
the node that last answered them (the metadata group's leader). A NOT_LEADER
reply redirects to the ``leader_address`` it carries, or refreshes metadata.

Retries (within one per-call deadline, exponential backoff with full jitter)
happen ONLY when a retry cannot duplicate an effect:

* the request was never sent (connect refused, connection already closed);
* the reply is an error that guarantees no effect (NOT_LEADER, THROTTLED,
  NOT_AVAILABLE, UNKNOWN_TOPIC/PARTITION while metadata catches up);
* the operation is idempotent: reads, offset commits (setting the same value
  twice is harmless), init_producer, and produce with an idempotent
  (producer_id, sequence), which the server deduplicates (KIP-98 style) and
  answers with the original offset.

Anything else that ends with an unknown outcome surfaces as
RequestTimeoutError / ConnectionLostError: DESIGN.md §3 rule 3, a timeout
means "outcome unknown", never "failed".

Idempotent produce: the client obtains a producer id lazily (init_producer)
and numbers each partition's batches with the sequence of their first
record. At most ``MAX_IN_FLIGHT`` batches per partition are outstanding (the
server's dedup window). If a batch ends with an unknown outcome or is
definitely rejected, the sequence of that partition has a gap that the server
would refuse forever, so the partition moves to a fresh producer id starting
at sequence 0 (Kafka's epoch bump, simplified). A batch the node definitely
refuses as too large is split and sent again in its place under the same
sequence range (``send_pieces``, KIP-126): no gap, no bump.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import ssl
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from .connection import Connection
from .errors import (
    ClusterUnreachableError,
    ConnectionLostError,
    FencedError,
    InvalidRequestError,
    NotAppliedError,
    NotAvailableError,
    NotLeaderError,
    OutOfOrderSequenceError,
    RaftlogError,
    RecordTooLargeError,
    RequestTimeoutError,
    ThrottledError,
    UnauthorizedError,
    UnknownGroupError,
    UnknownPartitionError,
    UnknownTopicError,
    UnsupportedVersionError,
)
from .keepalive import DEFAULT_TCP_KEEPALIVE_S, keepalive_problem
from .models import (
    BatchMetadata,
    DeletedGroup,
    EncodedPiece,
    FetchResult,
    OffsetAndTimestamp,
    Offsets,
    PieceOutcome,
    RecordMetadata,
    Resplit,
    TopicMeta,
)
from .protocol import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
    LINEARIZABLE,
    decode_batch,
    encode_records,
)
from .replica_reads import check_consistency, read_from_replicas, replica_topic_meta
from .tls import TLSConfig, client_context
from .users import (
    METADATA_GROUP,
    applied_metadata,
    change_index,
    setting_arguments,
    user_fields,
)

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 5  # per partition per producer: the server's dedup window (wire.md)
DEFAULT_MAX_FETCH_BYTES = 1024 * 1024
BACKOFF_BASE = 0.02
BACKOFF_CAP = 1.0
# While a partition has no reachable leader (a node died, an election runs) a
# retry costs one small round trip and a new leader appears within about one
# election timeout (200-400 ms by default), so waiting longer than this between
# tries only adds to the outage a client sees. THROTTLED / NOT_AVAILABLE keep
# the long exponential cap: there, retrying sooner adds load to a busy node.
LEADER_BACKOFF_CAP = 0.1
SUSPECT_SECONDS = 1.0  # how long a node that failed us is tried only as a last resort
# How long a node whose request timed out gets to answer a probe before it is
# taken for paused or dead: it answers from memory, so a live node takes a
# round trip and its loop's turn, far less than this.
PROBE_TIMEOUT = 0.25
SUSPECT_PARTITIONS_MAX = 1024  # per-partition suspicions kept before the expired are swept
ATTEMPT_MIN = 2.0  # seconds: the least one attempt of an idempotent request may take
# wait_applied polls each node's applied index with backoff up to this: nodes
# apply a metadata change a heartbeat (a few ticks) after the controller did.
APPLIED_POLL_CAP = 0.1

# A record as accepted by produce_batch: a bare value, or (key, value[, headers[, timestamp_ms]]).
RecordLike = bytes | tuple[Any, ...]
RecordTuple = tuple[bytes | None, bytes, dict[str, bytes] | None, int | None]


def partition_for_key(key: bytes, partitions: int) -> int:
    """The documented key partitioner: crc32(key) % partitions (stable across languages)."""
    return zlib.crc32(key) % partitions


def normalize_record(rec: RecordLike) -> RecordTuple:
    if isinstance(rec, bytes | bytearray | memoryview):
        return (None, bytes(rec), None, None)
    key, value, *rest = rec
    headers = rest[0] if rest else None
    ts = rest[1] if len(rest) > 1 else None
    return (key, value, headers, ts)


def _as_bytes(value: bytes | str | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def parse_bootstrap(bootstrap: Sequence[str] | str) -> list[str]:
    parts = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
    out = [p.strip() for p in parts if p and p.strip()]
    if not out:
        raise ValueError("bootstrap: at least one HOST:PORT is required")
    return out


@dataclass(slots=True, eq=False)
class _Slot:
    """One idempotent batch of a partition, from window acquisition to completion."""

    count: int  # records from ``first`` on, which ``seq`` numbers
    first: int = 0  # index in the batch of the record ``seq`` numbers (see _renumber_from)
    producer_id: int = -1
    seq: int = -1
    epoch: int = -1  # epoch of (producer_id, seq); -1 = not numbered yet
    done: bool = False


@dataclass(slots=True)
class _SeqState:
    """Idempotence state of one partition: producer id, sequence numbering, batches in flight."""

    window: trio.Semaphore = field(default_factory=lambda: trio.Semaphore(MAX_IN_FLIGHT))
    producer_id: int | None = None  # None: the client's shared producer id
    epoch: int = 0  # bumped by every reset (fresh producer id, sequences from 0)
    next_seq: int = 0
    needs_reset: bool = False
    lock: trio.Lock = field(default_factory=trio.Lock)
    order: deque[_Slot] = field(default_factory=deque)  # unfinished-first, in batch order
    opening: _Slot | None = None  # holds sequence 0 of the current epoch until it finishes
    changed: trio.Event = field(default_factory=trio.Event)  # pulsed on every slot change

    def pulse(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


@dataclass(slots=True)
class _Attempts:
    """What the retries of one call have learnt: ``uncertain`` once an attempt
    may have taken effect without our knowing; ``timeouts``, how many attempts
    got no answer in time (each doubles the next attempt's cap); ``alive``, the
    nodes that answered a probe after one of them (``AsyncClient._answers``)."""

    uncertain: bool = False
    timeouts: int = 0
    alive: set[str] = field(default_factory=set)


class AsyncClient:
    """A trio client. Use as ``async with AsyncClient("127.0.0.1:7101") as client``.

    ``tls``: connect with TLS, to nodes whose cluster.toml has ``[tls]``: an
    ``ssl.SSLContext`` of your own, or ``TLSConfig(ca_file=..., cert_file=...,
    key_file=...)`` (the client certificate only where ``client_auth = true``).
    Each node's certificate must be valid for the host of the address dialled.

    ``prefer_replica``: the node id serializable reads try first where it holds
    the partition (``fetch(..., consistency="serializable")``; the node on
    this host, say). See client/replica_reads.py.

    ``connections_max_idle``: seconds a connection may sit unused before the
    client closes it and dials again at the next call (None: no limit of its
    own). A node announcing ``[limits] connections_max_idle_ms`` shortens it to
    90 % of that, so no request meets the node closing the connection.

    ``tcp_keepalive``: TCP keepalive idle seconds on every connection (0: off;
    client/keepalive.py), so an idle connection to a node whose host vanished
    is closed within about twice that and dialled afresh at the next call.
    """

    def __init__(
        self,
        bootstrap: Sequence[str] | str,
        *,
        client_id: str | None = None,
        credential: str | None = None,
        request_timeout: float = 10.0,
        connect_timeout: float = 3.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_record_bytes: int | None = None,
        idempotent: bool = True,
        tls: ssl.SSLContext | TLSConfig | None = None,
        metadata_max_age: float = 30.0,
        prefer_replica: str | None = None,
        connections_max_idle: float | None = 540.0,
        tcp_keepalive: int = DEFAULT_TCP_KEEPALIVE_S,
    ) -> None:
        self._bootstrap = parse_bootstrap(bootstrap)
        # Built once (TLSError now if a file is missing): contexts are shared
        # by every connection, which also lets TLS sessions be reused.
        self._ssl = client_context(tls)
        self.client_id = client_id or f"client-{uuid.uuid4().hex[:12]}"
        self.credential = credential
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        # A connection idle this long is closed and dialled again at its next
        # use (Kafka's connections.max.idle.ms, 9 minutes on its clients); the
        # node's own limit, as it announces it, shortens this (connection.py).
        if connections_max_idle is not None and not connections_max_idle > 0:
            raise ValueError(
                f"connections_max_idle must be > 0 or None, not {connections_max_idle!r}"
            )
        self.connections_max_idle = connections_max_idle
        problem = keepalive_problem(tcp_keepalive)
        if problem is not None:
            raise ValueError(f"tcp_keepalive {problem}")
        self.tcp_keepalive = tcp_keepalive
        self.max_frame_bytes = max_frame_bytes
        # None: follow the nodes' [limits], as each announces them in its hello
        # (protocol.py ANNOUNCED_LIMITS), so that raising the limit in
        # cluster.toml is enough: etcd users must raise it on every client too.
        self._record_limit_given = max_record_bytes
        self.max_record_bytes = max_record_bytes or DEFAULT_MAX_RECORD_BYTES
        # The largest batch a node takes (its max_batch_bytes), as announced.
        self.max_batch_bytes = DEFAULT_MAX_BATCH_BYTES
        self._announced: dict[str, dict[str, int]] = {}  # address -> a node's limits
        self.idempotent = idempotent
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        self._conns: dict[str, Connection] = {}
        self._dialing: dict[str, trio.Event] = {}
        self._nodes: dict[str, str] = {}  # node id -> address
        self._topics: dict[str, TopicMeta] = {}
        # Topic metadata older than this is refreshed before use (Kafka's
        # metadata.max.age.ms), so partitions added by alter_topic get used.
        self.metadata_max_age = metadata_max_age
        self._metadata_at = -math.inf  # trio clock of the last full refresh
        self._leaders: dict[tuple[str, int], str] = {}  # (topic, partition) -> leader address
        self._controller: str | None = None  # address that last answered a metadata-group op
        self._suspect: dict[str, float] = {}  # address -> trio time until which we avoid it
        # (address, topic, partition) -> the same, for that partition only
        self._suspect_partitions: dict[tuple[str, str, int], float] = {}
        self._meta_lock = trio.Lock()
        self._meta_generation = 0
        self._last_metadata: dict[str, Any] | None = None
        self._rr = itertools.count(random.randrange(1 << 16))
        self._topic_rr: dict[str, int] = {}
        self._producer_id: int | None = None
        self._pid_lock = trio.Lock()
        self._seq: dict[tuple[str, int], _SeqState] = {}
        self._rand = random.Random()
        # Serializable reads (client/replica_reads.py): the node to read from
        # first when it holds the partition, and the replica each partition was
        # last read from.
        self.prefer_replica = prefer_replica
        self._read_replicas: dict[tuple[str, int], str] = {}

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AsyncClient:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        await self.aclose()
        cm, self._nursery_cm = self._nursery_cm, None
        return await cm.__aexit__(*exc_info) if cm is not None else None

    async def aclose(self) -> None:
        """Close every connection (pending requests fail with ConnectionLostError)."""
        for conn in list(self._conns.values()):
            conn.close()
        self._conns.clear()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # ------------------------------------------------------------ connections

    async def _connection(self, address: str, budget: float) -> Connection:
        while True:
            conn = self._conns.get(address)
            if conn is not None and not conn.closed:
                if not conn.expired(trio.current_time()):
                    return conn
                log.debug("event=connection_retired address=%s idle_limit=%.1fs",
                          address, conn.max_idle)  # fmt: skip
                self._drop(address)
            dialing = self._dialing.get(address)
            if dialing is None:
                break
            with trio.move_on_after(budget):
                await dialing.wait()
            if address not in self._conns:
                raise ConnectionRefusedError(f"{address}: concurrent dial failed")
        if self._nursery is None:
            raise RuntimeError("AsyncClient used outside 'async with'")
        event = self._dialing[address] = trio.Event()
        try:
            conn = await Connection.open(
                self._nursery,
                address,
                client_id=self.client_id,
                credential=self.credential,
                connect_timeout=min(budget, self.connect_timeout),
                max_frame_bytes=self.max_frame_bytes,
                ssl_context=self._ssl,
                max_idle=self.connections_max_idle,
                tcp_keepalive=self.tcp_keepalive,
            )
            self._conns[address] = conn
            if conn.limits:
                self._adopt_limits(address, conn.limits)
            return conn
        finally:
            del self._dialing[address]
            event.set()

    @property
    def limits_known(self) -> bool:
        """Whether a node has announced its limits to this client yet."""
        return bool(self._announced)

    def _adopt_limits(self, address: str, limits: dict[str, int]) -> None:
        """Check records and batches against the smallest limits any node has
        announced (nodes may differ while a config change rolls out)."""
        self._announced[address] = limits
        known = self._announced.values()
        batch = [n["max_batch_bytes"] for n in known if "max_batch_bytes" in n]
        if batch:
            self.max_batch_bytes = min(batch)
        record = [n["max_record_bytes"] for n in known if "max_record_bytes" in n]
        if record and self._record_limit_given is None:
            self.max_record_bytes = min(record)

    def _drop(self, address: str) -> None:
        conn = self._conns.pop(address, None)
        if conn is not None:
            conn.close()

    def _all_addresses(self) -> list[str]:
        seen: dict[str, None] = {}
        for a in itertools.chain(self._nodes.values(), self._bootstrap):
            seen[a] = None
        return list(seen)

    def _pick(self, topic: str | None, partition: int | None, attempt: int) -> str:
        if topic is not None and partition is not None:
            leader = self._leaders.get((topic, partition))
            if leader is not None:
                return leader
        elif self._controller is not None and attempt == 0:
            return self._controller
        # Skip nodes that just failed us (for SUSPECT_SECONDS) unless all did;
        # prefer one we are already connected to, then rotate through the rest.
        now = trio.current_time()
        addresses = self._all_addresses()
        healthy = [a for a in addresses if self._suspect.get(a, 0.0) <= now]
        if topic is not None and partition is not None and self._suspect_partitions:
            suspects = self._suspect_partitions
            healthy = [a for a in healthy if suspects.get((a, topic, partition), 0.0) <= now]
        healthy = healthy or addresses
        if attempt == 0:
            for a in healthy:
                conn = self._conns.get(a)
                if conn is not None and not conn.closed:
                    return a
        return healthy[next(self._rr) % len(healthy)]

    async def _backoff(
        self, attempt: int, deadline: float, floor: float = 0.0, cap: float = BACKOFF_CAP
    ) -> None:
        delay = max(floor, self._rand.uniform(0, min(cap, BACKOFF_BASE * 2**attempt)))
        await trio.sleep(max(0.0, min(delay, deadline - trio.current_time())))

    # ------------------------------------------------------------ the retry loop

    async def _call(self, op: str, fields: dict[str, Any], **options: Any) -> dict[str, Any]:
        """Send ``op`` with retries as described in the module docstring.

        Once an attempt has ended with an unknown outcome (a timeout, or a
        connection lost after the request was sent), the request may have taken
        effect; a later attempt's definite error (UNKNOWN_TOPIC from a node with
        stale metadata, NOT_LEADER when the budget runs out, ...) no longer
        proves it did not. Such errors surface as RequestTimeoutError (outcome
        unknown) with the last error as the cause: reporting them as failures
        is the aborted-read anomaly jepsen's membership nemesis caught.
        """
        attempts = _Attempts()
        try:
            return await self._call_attempts(op, fields, attempts, **options)
        except RaftlogError as exc:
            # OUT_OF_ORDER_SEQUENCE stays definite: for a retry of the same
            # (producer id, sequence) the server's dedup window would have
            # answered with the original offsets had an earlier attempt landed.
            passes_through = isinstance(
                exc, RequestTimeoutError | ConnectionLostError | OutOfOrderSequenceError
            )
            if attempts.uncertain and not passes_through:
                raise RequestTimeoutError(
                    f"{op}: an earlier attempt's outcome is unknown and a retry failed "
                    f"with {exc}; the request may have taken effect",
                    cause=exc.code.value,
                ) from exc
            raise

    async def _call_attempts(
        self,
        op: str,
        fields: dict[str, Any],
        attempts: _Attempts,
        *,
        topic: str | None = None,
        partition: int | None = None,
        address: str | None = None,
        idempotent: bool,
        budget: float | None = None,
        server_timeout: bool = False,
        min_attempt: float = 0.0,
    ) -> dict[str, Any]:
        """The retry loop of ``_call``; records unknown outcomes in ``attempts``.

        ``address`` pins the request to one node (no redirects). With
        ``server_timeout`` the request carries ``timeout_ms`` a little under
        the remaining time, so the server answers TIMEOUT before we give up.
        """
        budget = self.request_timeout if budget is None else budget
        deadline = trio.current_time() + budget
        attempt = 0
        redirect: str | None = None
        refreshed = False
        last: RaftlogError | None = None
        ever_connected = False
        while True:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                raise self._give_up(op, last, ever_connected, budget)
            target = address or redirect or self._pick(topic, partition, attempt)
            redirect = None
            try:
                conn = await self._connection(target, remaining)
            except (OSError, RaftlogError) as exc:
                if isinstance(exc, RaftlogError) and not isinstance(exc, NotAvailableError):
                    raise  # hello refused: UNAUTHORIZED, UNSUPPORTED_VERSION, ...
                log.debug("event=connect_failed address=%s error=%s", target, exc)
                # A dial the call's own deadline cut short says nothing about the
                # node: keep the reason an earlier attempt found (say, a TLS
                # handshake a plaintext node refused), which the caller can act on.
                cut_short = isinstance(exc, TimeoutError) and remaining < self.connect_timeout
                if not (cut_short and last is not None):
                    last = ClusterUnreachableError(f"cannot connect to {target}: {exc}")
                self._forget_leader(target)
                attempt += 1
                await self._backoff(attempt, deadline, cap=LEADER_BACKOFF_CAP)
                continue
            ever_connected = True
            # An idempotent request gets a share of the budget per attempt, so a
            # node that holds it (an old leader cut off from its quorum) cannot
            # eat the whole deadline before we retry elsewhere.
            attempt_budget = deadline - trio.current_time()
            if attempt_budget <= 0:
                # The dial (or waiting for another task's dial) used up the rest
                # of the budget: nothing was sent on this attempt. The loop's top
                # gives up, as for any attempt that finds no time left.
                continue
            if idempotent and address is None:
                # Each attempt that timed out doubles the next one's cap: the
                # cap is there to leave an old leader cut off from its quorum,
                # but a leader whose commits are just slow (fsyncs of seconds on
                # a majority of disks) would otherwise see every retry cut off
                # before it commits, and nothing would ever be acknowledged.
                cap = self._attempt_cap(budget, min_attempt) * 2**attempts.timeouts
                attempt_budget = min(attempt_budget, cap)
                if partition is not None and attempt_budget > 2 * PROBE_TIMEOUT:
                    # The last attempt leaves time to probe its node should it
                    # time out (``_answers``): else that node is forgotten whole.
                    left = deadline - trio.current_time() - PROBE_TIMEOUT
                    attempt_budget = min(attempt_budget, left)
            if server_timeout:
                fields["timeout_ms"] = max(1, int(attempt_budget * 900))
            try:
                reply = await conn.request(op, fields, attempt_budget)
            except NotLeaderError as exc:
                last = exc
                attempt += 1
                leader = exc.leader_address
                if topic is not None and partition is not None:
                    if leader:
                        self._leaders[(topic, partition)] = leader
                    else:
                        self._leaders.pop((topic, partition), None)
                elif topic is None:
                    self._controller = leader
                if address is not None:
                    raise
                if leader and leader != target and attempt <= 3:
                    redirect = leader  # follow a known leader at once
                    continue
                if not leader:
                    await self._refresh_quietly(deadline)
                await self._backoff(attempt, deadline, cap=LEADER_BACKOFF_CAP)
                continue
            except ThrottledError as exc:
                last = exc
                attempt += 1
                retry_after = exc.details.get("retry_after_ms")
                floor = retry_after / 1000 if isinstance(retry_after, int | float) else 0.0
                await self._backoff(attempt, deadline, floor)
                continue
            except NotAvailableError as exc:
                last = exc
                attempt += 1
                if address is not None:
                    raise
                await self._backoff(attempt, deadline)
                continue
            except (UnknownTopicError, UnknownPartitionError) as exc:
                # The node may not have applied a just-committed topic yet; retry
                # only if fresh metadata says the partition does exist.
                if topic is None or refreshed or address is not None:
                    raise
                refreshed = True
                last = exc
                await self._refresh_quietly(deadline)
                meta = self._topics.get(topic)
                if meta is None or (partition is not None and partition >= len(meta.partitions)):
                    raise
                attempt += 1
                await self._backoff(attempt, deadline)
                continue
            except ConnectionLostError as exc:
                self._drop(target)
                self._forget_leader(target)
                if exc.details.get("sent") is not False:
                    attempts.uncertain = True
                if not idempotent and exc.details.get("sent") is not False:
                    raise
                last = exc
                attempt += 1
                await self._backoff(attempt, deadline, cap=LEADER_BACKOFF_CAP)
                continue
            except RequestTimeoutError as exc:
                if not idempotent:
                    raise
                attempts.uncertain = True
                attempts.timeouts += 1
                last = exc
                attempt += 1
                answered = exc.details.get("node_answered")
                if (
                    topic is not None
                    and partition is not None
                    and (answered or await self._answers(conn, deadline, attempts))
                ):
                    # The node answered other requests meanwhile, or a probe: it
                    # is alive, and maybe a stale leader of this one partition
                    # (cut off from its group's quorum) or its group is slow. Its
                    # other partitions keep their routes.
                    self._suspect_partition_leader(target, topic, partition)
                else:  # silent (paused, dead, or the link is): stop routing to it
                    self._forget_leader(target)
                await self._backoff(attempt, deadline)
                continue
            if topic is None and address is None:
                self._controller = target
            return reply

    def _attempt_cap(self, budget: float, min_attempt: float) -> float:
        """Longest single attempt of an idempotent request: a third of its budget,
        at most half the client's request_timeout, at least ATTEMPT_MIN."""
        return max(ATTEMPT_MIN, min(budget / 3, self.request_timeout / 2), min_attempt)

    def _give_up(
        self, op: str, last: RaftlogError | None, ever_connected: bool, budget: float
    ) -> RaftlogError:
        if not ever_connected:
            return ClusterUnreachableError(
                f"{op}: no node reachable within {budget:.1f}s: {last}"
                if last
                else f"{op}: no node reachable"
            )
        if last is None or isinstance(last, RequestTimeoutError | ConnectionLostError):
            return RequestTimeoutError(f"{op}: no answer within {budget:.1f}s (outcome unknown)")
        return last

    async def _answers(self, conn: Connection, deadline: float, attempts: _Attempts) -> bool:
        """Whether the node behind ``conn`` answers a probe within PROBE_TIMEOUT.

        For a request that timed out with nothing else in flight on its
        connection (a sequential client's), so nothing told whether the node
        is alive. The probe is a serializable metadata read of no topic: the
        node answers it from memory, without its Raft groups, so only a node
        that is paused, dead or cut off from us fails it. Any answer, an error
        too, proves the node alive. With no time left to probe (the call's
        last attempt), an answer to this call's earlier probe stands in.
        """
        budget = min(PROBE_TIMEOUT, deadline - trio.current_time())
        if budget <= 0:
            return conn.address in attempts.alive
        try:
            await conn.request("metadata", {"consistency": "serializable", "topics": []}, budget)
        except (RequestTimeoutError, ConnectionLostError):
            attempts.alive.discard(conn.address)
            return False
        except RaftlogError:
            pass
        attempts.alive.add(conn.address)
        return True

    def _suspect_partition_leader(self, address: str, topic: str, partition: int) -> None:
        """A request of ``(topic, partition)`` timed out at ``address`` while the
        node answered others: route that partition elsewhere for now, only it."""
        now = trio.current_time()
        if len(self._suspect_partitions) >= SUSPECT_PARTITIONS_MAX:
            for key in [k for k, until in self._suspect_partitions.items() if until <= now]:
                del self._suspect_partitions[key]
        self._suspect_partitions[(address, topic, partition)] = now + SUSPECT_SECONDS
        if self._leaders.get((topic, partition)) == address:
            del self._leaders[(topic, partition)]

    def _forget_leader(self, address: str) -> None:
        """``address`` failed us (no answer, connection lost): stop routing to it for now."""
        self._suspect[address] = trio.current_time() + SUSPECT_SECONDS
        if self._controller == address:
            self._controller = None
        for tp in [tp for tp, a in self._leaders.items() if a == address]:
            del self._leaders[tp]

    # ------------------------------------------------------------ metadata

    async def _refresh_quietly(self, deadline: float) -> None:
        if trio.current_time() >= deadline or self._meta_lock.statistics().owner is (
            trio.lowlevel.current_task()
        ):
            return  # out of time, or called from inside a refresh
        try:
            await self._refresh_metadata(deadline)
        except RaftlogError as exc:
            log.debug("event=metadata_refresh_failed error=%s", exc)

    async def _refresh_metadata(self, deadline: float | None = None) -> dict[str, Any]:
        """Fetch cluster metadata and update the caches, by ``deadline`` if given
        (else within ``request_timeout``).

        Concurrent callers share one request: whoever waited for the lock while
        another refresh completed takes that result. The wait for the lock counts
        against ``deadline``: the request gets only what is left after it.
        """
        generation = self._meta_generation
        with trio.move_on_at(math.inf if deadline is None else deadline) as waited:
            await self._meta_lock.acquire()
        if waited.cancelled_caught:
            raise RequestTimeoutError("metadata: another refresh held the lock past the deadline")
        try:
            if self._meta_generation != generation and self._last_metadata is not None:
                return self._last_metadata
            budget = None if deadline is None else deadline - trio.current_time()
            if budget is not None and budget <= 0:
                raise RequestTimeoutError("metadata: no time left after waiting for the lock")
            reply = await self._call("metadata", {}, idempotent=True, budget=budget)
            self._metadata_at = trio.current_time()
            self._apply_metadata(reply, full=True)
            self._last_metadata = reply
            self._meta_generation += 1
        finally:
            self._meta_lock.release()
        return reply

    def _apply_metadata(self, reply: dict[str, Any], full: bool = False) -> None:
        """Update the caches; ``full``: the reply lists every topic (drop the others)."""
        nodes = reply.get("nodes") or []
        if nodes:
            self._nodes = {str(n["id"]): str(n["address"]) for n in nodes}
        if full:
            listed = {str(t["name"]) for t in reply.get("topics") or []}
            for name in [n for n in self._topics if n not in listed]:
                del self._topics[name]
        for t in reply.get("topics") or []:
            meta = TopicMeta.from_wire(t)
            self._topics[meta.name] = meta
            for p in meta.partitions:
                if p.leader_address:
                    self._leaders[(meta.name, p.partition)] = p.leader_address
                elif p.leader and p.leader in self._nodes:
                    self._leaders[(meta.name, p.partition)] = self._nodes[p.leader]

    async def _topic_meta(self, topic: str) -> TopicMeta:
        meta = self._topics.get(topic)
        if meta is not None and trio.current_time() - self._metadata_at > self.metadata_max_age:
            # Stale: refresh, but a failed refresh leaves the cached topic in use.
            await self._refresh_quietly(trio.current_time() + self.request_timeout)
            meta = self._topics.get(topic, meta)
        if meta is None:
            await self._refresh_metadata()
            meta = self._topics.get(topic)
        if meta is None:
            # Not listed: it does not exist, or this client's user may not see
            # it (cluster.toml [[auth.user]]); asked for by name, the node says
            # which (FORBIDDEN names the missing permission).
            reply = await self._call("metadata", {"topics": [topic]}, idempotent=True)
            self._apply_metadata(reply)
            meta = self._topics.get(topic)
            if meta is None:
                raise UnknownTopicError(f"topic {topic!r} does not exist", topic=topic)
        return meta

    def max_message_bytes(self, topic: str) -> int | None:
        """``topic``'s max_message_bytes (the largest batch it takes) as this
        client's metadata last saw it; None: no topic limit, or not known yet."""
        meta = self._topics.get(topic)
        return None if meta is None else meta.config.get("max_message_bytes")

    def metadata_stale(self, max_age: float | None = None) -> bool:
        """True when the last full metadata refresh is older than ``max_age``
        (default ``metadata_max_age``), or there was none: a cached topic config
        may be out of date."""
        limit = self.metadata_max_age if max_age is None else max_age
        return trio.current_time() - self._metadata_at > limit

    async def refresh_metadata_quietly(self) -> None:
        """Refresh the metadata now if a node answers within ``request_timeout``;
        a failure leaves the cache as it was (logged at debug)."""
        await self._refresh_quietly(trio.current_time() + self.request_timeout)

    async def metadata(self) -> dict[str, Any]:
        """The cluster's metadata (nodes, topics, partitions, leaders), refreshed now."""
        return _result(await self._refresh_metadata())

    async def partitions_for(self, topic: str, *, consistency: str = LINEARIZABLE) -> int:
        """How many partitions ``topic`` has; ``"serializable"``: as cached, else
        as any node sees it (works without a quorum, may be behind)."""
        if check_consistency(consistency):
            deadline = trio.current_time() + self.request_timeout
            return len((await replica_topic_meta(self, topic, deadline)).partitions)
        return len((await self._topic_meta(topic)).partitions)

    # ------------------------------------------------------------ topics

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replicas: int = 3,
        config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"topic": name, "partitions": partitions, "replicas": replicas}
        if config:
            fields["config"] = config
        # Not idempotent: a retry after an unknown outcome could answer TOPIC_EXISTS.
        reply = await self._call("create_topic", fields, idempotent=False, server_timeout=True)
        topic = reply.get("topic")
        if isinstance(topic, dict):
            self._apply_metadata({"topics": [topic]})
        return topic if isinstance(topic, dict) else {"name": name}

    async def alter_topic(
        self,
        name: str,
        *,
        partitions: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Grow topic ``name`` to ``partitions`` (never fewer: keyed records already
        went to the partitions that existed) and/or set ``config`` keys
        (``retention_ms``, ``retention_bytes``; a None value removes the key).

        Like Kafka, more partitions change which partition a key maps to from
        now on. Other clients see the new partitions within ``metadata_max_age``.
        """
        fields: dict[str, Any] = {"topic": name}
        if partitions is not None:
            fields["partitions"] = partitions
        if config:
            fields["config"] = config
        # Idempotent in effect: the same target again changes nothing.
        reply = await self._call("alter_topic", fields, idempotent=True, server_timeout=True)
        topic = reply.get("topic")
        if isinstance(topic, dict):
            self._apply_metadata({"topics": [topic]})
        return topic if isinstance(topic, dict) else {"name": name}

    async def delete_topic(self, name: str) -> None:
        await self._call("delete_topic", {"topic": name}, idempotent=False)
        self._topics.pop(name, None)
        for tp in [tp for tp in self._leaders if tp[0] == name]:
            del self._leaders[tp]

    async def list_topics(self) -> list[str]:
        reply = await self._call("list_topics", {}, idempotent=True)
        return list(reply.get("topics") or [])

    async def describe_topic(self, name: str) -> dict[str, Any]:
        reply = await self._call("describe_topic", {"topic": name}, idempotent=True)
        return dict(reply.get("topic") or {})

    # ------------------------------------------------------------ produce

    async def produce(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        partition: int | None = None,
        headers: dict[str, bytes] | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Append one record (one batch); return where it landed once committed.

        A None ``value`` is a tombstone: in a compacted topic it deletes ``key``
        (README, "Compacted topics")."""
        key_b = _as_bytes(key)
        if partition is None:
            partition = await self.choose_partition(topic, key_b)
        meta = await self.produce_batch(
            topic, partition, [(key_b, _as_bytes(value), headers, timestamp_ms)]
        )
        return RecordMetadata(topic, partition, meta.base_offset)

    async def choose_partition(self, topic: str, key: bytes | None) -> int:
        """Key partitioning (crc32(key) % n) or round-robin for records without a key."""
        n = await self.partitions_for(topic)
        if key is not None:
            return partition_for_key(key, n)
        i = self._topic_rr.get(topic, self._rand.randrange(n))
        self._topic_rr[topic] = (i + 1) % n
        return i

    async def produce_batch(
        self, topic: str, partition: int, records: Sequence[RecordLike]
    ) -> BatchMetadata:
        """Append ``records`` to one partition as ONE batch (one Raft entry)."""
        if not records:
            raise ValueError("produce_batch: no records")
        rows = [normalize_record(r) for r in records]
        largest = max((len(v) for _k, v, _h, _ts in rows if v is not None), default=0)
        if largest > self.max_record_bytes and not self.limits_known:
            await self.partitions_for(topic)  # connects: the nodes announce their limits
        if largest > self.max_record_bytes:
            raise RecordTooLargeError(
                f"record of {largest} bytes exceeds max_record_bytes={self.max_record_bytes}"
            )
        blob, count, crc = encode_records(rows)
        return await self.send_encoded(topic, partition, blob, count, crc)

    async def send_encoded(
        self,
        topic: str,
        partition: int,
        blob: bytes,
        count: int,
        crc: int,
        *,
        budget: float | None = None,
        on_allocated: Callable[[], None] | None = None,
    ) -> BatchMetadata:
        """Send an already encoded batch (``encode_records``) as one request.

        ``on_allocated`` is called once the batch holds its place in the
        partition's order (sequence allocated, frame about to be queued), so a
        caller can start the next batch without reordering them.
        """
        pieces = [(0, blob, count, crc)]
        if self.idempotent:  # the common case, without send_pieces' frame
            [outcome] = await self._send_idempotent(
                topic, partition, pieces, None, budget, on_allocated
            )
        else:
            [outcome] = await self.send_pieces(
                topic, partition, pieces, budget=budget, on_allocated=on_allocated
            )
        if outcome.error is not None:
            raise outcome.error
        assert outcome.meta is not None
        return outcome.meta

    async def send_pieces(
        self,
        topic: str,
        partition: int,
        pieces: Sequence[EncodedPiece],
        *,
        resplit: Resplit | None = None,
        budget: float | None = None,
        on_allocated: Callable[[], None] | None = None,
    ) -> list[PieceOutcome]:
        """Send the encoded ``pieces`` of one batch, in order, one request each;
        used by Producer. Returns each piece's outcome, in record order.

        The pieces keep the batch's place in the partition: they share its
        sequence range, and the next batch may go once ``on_allocated`` is called.

        ``resplit(first, count, limit)`` re-encodes the batch's records
        ``first .. first+count-1`` as pieces of at most ``limit`` bytes. With
        it, a piece of several records that the node refuses as too large
        (its topic's max_message_bytes was lowered since our metadata) is split
        and sent again in place, like Kafka's producer does (KIP-126), instead
        of failing. A refused piece of one record fails alone; the others go on.
        """
        if self.idempotent:
            return await self._send_idempotent(
                topic, partition, pieces, resplit, budget, on_allocated
            )
        if on_allocated is not None:
            on_allocated()
        deadline = trio.current_time() + (self.request_timeout if budget is None else budget)
        outcomes: list[PieceOutcome] = []
        pending = deque(pieces)  # the head is the piece being sent
        while pending:
            first, blob, count, crc = pending[0]
            try:
                reply = await self._call(
                    "produce",
                    _produce_fields(topic, partition, blob, count, crc),
                    topic=topic,
                    partition=partition,
                    idempotent=False,
                    budget=max(deadline - trio.current_time(), 0.001),
                    server_timeout=True,
                )
            except RecordTooLargeError as exc:
                if not self._split_head(pending, resplit, topic, exc):
                    outcomes.append(PieceOutcome(first, None, exc))
                continue
            except RaftlogError as exc:
                # This piece and the ones after it fail alike (not sent: unordered
                # retries of the rest would put them ahead of this one).
                outcomes.extend(PieceOutcome(piece[0], None, exc) for piece in pending)
                break
            pending.popleft()
            outcomes.append(PieceOutcome(first, _batch_meta(topic, partition, count, reply), None))
        return outcomes

    def _split_head(
        self,
        pending: deque[EncodedPiece],
        resplit: Resplit | None,
        topic: str,
        refusal: RecordTooLargeError,
    ) -> bool:
        """Take the head of ``pending``, which the node refused as too large, off
        the queue, and put it back as smaller pieces in its place if it can be
        split (several records, and a ``resplit``); False if it cannot. The
        limit is the one the node named (``limit`` in its error), else half the
        refused piece: a node too old to name it gets pieces that shrink until
        they fit."""
        first, blob, count, _crc = pending.popleft()
        size = len(blob)
        if resplit is None or count < 2:
            return False
        named = refusal.details.get("limit")
        limit = named if isinstance(named, int) and 0 < named < size else size - 1
        pieces = resplit(first, count, limit)
        log.info(
            "event=batch_resplit topic=%s records=%d bytes=%d limit=%d pieces=%d",
            topic, count, size, limit, len(pieces),
        )  # fmt: skip
        pending.extendleft(reversed(pieces))
        return True

    async def _shared_producer_id(self) -> int:
        if self._producer_id is None:
            async with self._pid_lock:
                if self._producer_id is None:
                    self._producer_id = await self._new_producer_id()
        return self._producer_id

    async def _new_producer_id(self) -> int:
        reply = await self._call("init_producer", {}, idempotent=True)
        return int(reply["producer_id"])

    async def _reset(self, state: _SeqState) -> None:
        """Move the partition to a fresh producer id, sequences from 0 (an epoch bump)."""
        async with state.lock:
            if not state.needs_reset:
                return
            state.producer_id = await self._new_producer_id()
            state.epoch += 1
            state.next_seq = 0
            state.opening = None
            state.needs_reset = False
            state.pulse()
            log.info("event=producer_reset producer_id=%s epoch=%s", state.producer_id, state.epoch)

    def _try_number(self, state: _SeqState, slot: _Slot) -> bool:
        """``_number`` without waiting, for the common case; False if it would wait."""
        if state.needs_reset or state.opening is not None:
            return False
        for other in state.order:
            if other is not slot and not other.done and other.epoch != state.epoch:
                return False
        pid = state.producer_id if state.producer_id is not None else self._producer_id
        if pid is None:
            return False
        slot.producer_id, slot.seq, slot.epoch = pid, state.next_seq, state.epoch
        state.next_seq += slot.count
        if slot.seq == 0:
            state.opening = slot
        state.pulse()
        return True

    async def _number(self, state: _SeqState, slot: _Slot) -> None:
        """Give ``slot`` the next sequence of the current epoch, strictly in batch order.

        A slot waits until every older unfinished slot is numbered in the
        current epoch (so a reset re-numbers retried batches in their original
        order) and, while the batch holding sequence 0 of a fresh producer id
        is unfinished, until it is: a server that does not know the id yet
        only accepts sequence 0, so nothing may overtake that batch.
        """
        while True:
            if state.needs_reset:
                await self._reset(state)
                continue
            if state.producer_id is None and self._producer_id is None:
                await self._shared_producer_id()
                continue
            blocked = state.opening is not None and state.opening is not slot
            for other in state.order:
                if other is slot or blocked:
                    break
                blocked = not other.done and other.epoch != state.epoch
            if blocked:
                await state.changed.wait()
                continue
            pid = state.producer_id if state.producer_id is not None else self._producer_id
            assert pid is not None
            slot.producer_id, slot.seq, slot.epoch = pid, state.next_seq, state.epoch
            state.next_seq += slot.count
            if slot.seq == 0:
                state.opening = slot
            state.pulse()
            return

    async def _send_idempotent(
        self,
        topic: str,
        partition: int,
        pieces: Sequence[EncodedPiece],
        resplit: Resplit | None,
        budget: float | None,
        on_allocated: Callable[[], None] | None = None,
    ) -> list[PieceOutcome]:
        state = self._seq.get((topic, partition))
        if state is None:
            state = self._seq[(topic, partition)] = _SeqState()
        budget = self.request_timeout if budget is None else budget
        deadline = trio.current_time() + budget
        total = pieces[0][2] if len(pieces) == 1 else sum(piece[2] for piece in pieces)
        # The window counts batches from the OLDEST unfinished one, not just
        # concurrent ones: a slot is released only when every older batch has
        # finished too. Otherwise a batch stuck in retries could be overtaken by
        # more than MAX_IN_FLIGHT newer ones and fall out of the server's dedup
        # window (its retry would get DUPLICATE_SEQUENCE, its offset lost).
        try:
            state.window.acquire_nowait()  # the common case: no scheduling round-trip
        except trio.WouldBlock:
            with trio.move_on_after(budget) as scope:
                await state.window.acquire()
            if scope.cancelled_caught:
                error = RequestTimeoutError(
                    f"produce: no in-flight slot within {budget:.1f}s (not sent)"
                )
                return [PieceOutcome(piece[0], None, error) for piece in pieces]
        slot = _Slot(total)
        state.order.append(slot)
        outcomes: list[PieceOutcome] = []
        pending = deque(pieces)  # the head is the piece being sent
        try:
            try:
                if not self._try_number(state, slot):
                    await self._number_before(state, slot, deadline)
                if on_allocated is not None:
                    on_allocated()
                # One piece at a time: a piece is sent once the one before it is
                # answered, so this batch never has two requests in the server's
                # dedup window at once.
                while pending:
                    first, blob, count, crc = pending[0]
                    fields = _produce_fields(topic, partition, blob, count, crc)
                    try:
                        meta = await self._produce_in_slot(state, slot, fields, first, deadline)
                    except RecordTooLargeError as exc:
                        if self._split_head(pending, resplit, topic, exc):
                            continue  # the same records, so the same sequences
                        outcomes.append(PieceOutcome(first, None, exc))
                        if slot.epoch == state.epoch:
                            # Its sequences were never appended: a gap the server
                            # would refuse forever under this producer id.
                            state.needs_reset = True
                        if pending:
                            await self._renumber_from(state, slot, pending[0][0], deadline)
                        continue
                    pending.popleft()
                    outcomes.append(PieceOutcome(first, meta, None))
            except RaftlogError as exc:
                # This piece and the ones after it fail alike: most often the
                # deadline they share ran out.
                outcomes.extend(PieceOutcome(piece[0], None, exc) for piece in pending)
                if slot.epoch == state.epoch and slot.epoch >= 0:
                    # Unknown outcome or a rejection: a possible gap in the
                    # sequence that the server would refuse forever.
                    state.needs_reset = True
            return outcomes
        except BaseException:
            if slot.epoch == state.epoch and slot.epoch >= 0:
                state.needs_reset = True  # cancelled mid-request: the outcome is unknown
            raise
        finally:
            slot.done = True
            if state.opening is slot:
                state.opening = None
            while state.order and state.order[0].done:
                state.order.popleft()
                state.window.release()
            state.pulse()

    async def _produce_in_slot(
        self, state: _SeqState, slot: _Slot, fields: dict[str, Any], first: int, deadline: float
    ) -> BatchMetadata:
        """One piece of ``slot``'s batch, starting at record ``first``, until it
        is appended or definitely refused; retried while the server answers
        OUT_OF_ORDER_SEQUENCE (older batches not applied yet, or an epoch bump)."""
        topic, partition = fields["topic"], fields["partition"]
        oldest_rejections = 0
        while True:
            # No checkpoint between numbering and queueing the frame when the
            # connection is up, so batches leave in sequence order.
            fields["producer_id"] = slot.producer_id
            fields["sequence"] = slot.seq + first - slot.first
            epoch = slot.epoch
            try:
                reply = await self._call(
                    "produce",
                    fields,
                    topic=topic,
                    partition=partition,
                    idempotent=True,
                    budget=max(deadline - trio.current_time(), 0.001),
                    server_timeout=True,
                )
                return _batch_meta(topic, partition, fields["count"], reply)
            except OutOfOrderSequenceError as exc:
                # Definitely not appended, so renumbering it is safe.
                log.debug(
                    "event=out_of_order_sequence topic=%s partition=%s pid=%s seq=%s "
                    "epoch=%s/%s error=%s",
                    topic,
                    partition,
                    slot.producer_id,
                    fields["sequence"],
                    epoch,
                    state.epoch,
                    exc,
                )
                if state.epoch != epoch or state.needs_reset:
                    await self._renumber_from(state, slot, first, deadline)
                    continue
                if _oldest(state) is slot:
                    # Older batches may have been applied after this reply was
                    # computed (the server reorders concurrent requests), so
                    # retry a few times before calling it a gap.
                    oldest_rejections += 1
                    if oldest_rejections >= 3:
                        state.needs_reset = True
                        await self._renumber_from(state, slot, first, deadline)
                        oldest_rejections = 0
                        continue
                if trio.current_time() >= deadline:
                    raise
                await trio.sleep(
                    min(0.005 * 2**oldest_rejections, max(0.0, deadline - trio.current_time()))
                )

    async def _renumber_from(
        self, state: _SeqState, slot: _Slot, first: int, deadline: float
    ) -> None:
        """Number ``slot`` again in the current epoch for its records from
        ``first`` on: those before it were answered already (appended, or
        refused alone), so the new sequence range starts at ``first``."""
        slot.count -= first - slot.first
        slot.first = first
        await self._number_before(state, slot, deadline)

    async def _number_before(self, state: _SeqState, slot: _Slot, deadline: float) -> None:
        with trio.move_on_after(max(0.0, deadline - trio.current_time())) as scope:
            await self._number(state, slot)
        if scope.cancelled_caught:
            raise RequestTimeoutError(
                "produce: deadline passed while waiting for earlier batches (not sent)"
            )

    # ------------------------------------------------------------ fetch and offsets

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_records: int | None = None,
        max_bytes: int = DEFAULT_MAX_FETCH_BYTES,
        max_wait: float = 0.0,
        *,
        consistency: str = LINEARIZABLE,
    ) -> FetchResult:
        """Records from ``offset`` on, long-polling up to ``max_wait`` s.

        ``consistency="linearizable"`` (the default): the partition's leader
        answers after a ReadIndex round, so the end offset covers every record
        acknowledged before the call. ``"serializable"``: any replica answers
        from its own copy, without that round: every record is committed and
        at its final offset, but the end may lag (client/replica_reads.py).
        """
        serializable = check_consistency(consistency)
        fields: dict[str, Any] = {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "max_bytes": max_bytes,
            "max_wait_ms": int(max_wait * 1000),
        }
        if max_records is not None:
            fields["max_records"] = max_records
        budget = self.request_timeout + max_wait
        if serializable:
            reply = await read_from_replicas(
                self, "fetch", fields, topic=topic, partition=partition,
                budget=budget, attempt_budget=max_wait + ATTEMPT_MIN,
            )  # fmt: skip
        else:
            reply = await self._call(
                "fetch",
                fields,
                topic=topic,
                partition=partition,
                idempotent=True,
                budget=budget,
                min_attempt=max_wait + ATTEMPT_MIN,
            )
        records = []
        # Past the last batch returned: in a compacted topic (README, "Compacted
        # topics") its last records may be gone, and a fetch that found only
        # removed records must still move the reader on.
        after = offset
        for base, ts, _count, blob in reply.get("batches") or []:
            if base + _count <= offset:
                continue
            records.extend(decode_batch(base, ts, blob, offset))
            after = max(after, base + _count)
        if max_records is not None and len(records) > max_records:
            del records[max_records:]
            after = records[-1].offset + 1
        return FetchResult(records, int(reply["start_offset"]), int(reply["end_offset"]), after)

    async def list_offsets(
        self, topic: str, partition: int, *, consistency: str = LINEARIZABLE
    ) -> Offsets:
        """The partition's start and end offsets; ``consistency`` as for ``fetch``."""
        reply = await self._list_offsets(topic, partition, consistency)
        return Offsets(int(reply["start_offset"]), int(reply["end_offset"]))

    async def _list_offsets(
        self, topic: str, partition: int, consistency: str, **extra: Any
    ) -> dict[str, Any]:
        fields = {"topic": topic, "partition": partition, **extra}
        if check_consistency(consistency):
            return await read_from_replicas(
                self, "list_offsets", fields, topic=topic, partition=partition,
                budget=self.request_timeout, attempt_budget=ATTEMPT_MIN,
            )  # fmt: skip
        return await self._call(
            "list_offsets", fields, topic=topic, partition=partition, idempotent=True
        )

    async def offset_for_time(
        self, topic: str, partition: int, timestamp_ms: int, *, consistency: str = LINEARIZABLE
    ) -> OffsetAndTimestamp | None:
        """The first record of the partition stamped at or after ``timestamp_ms`` (ms
        since the epoch), or None when every retained record is older (start
        consuming at the end offset then). Stamps are the leader's append times,
        which never go backwards within a partition; a time before the first
        retained record gives the start offset. ``consistency`` as for ``fetch``."""
        if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int) or timestamp_ms < 0:
            raise ValueError(f"timestamp_ms must be an int >= 0, got {timestamp_ms!r}")
        reply = await self._list_offsets(topic, partition, consistency, timestamp_ms=timestamp_ms)
        if "offset" not in reply:
            raise UnsupportedVersionError(
                "the node answered without an offset: it predates lookups by time"
            )
        if reply["offset"] is None:
            return None
        return OffsetAndTimestamp(int(reply["offset"]), int(reply["timestamp_ms"]))

    async def offsets_for_time(
        self,
        topic: str,
        timestamp_ms: int,
        *,
        partitions: Sequence[int] | None = None,
        consistency: str = LINEARIZABLE,
    ) -> dict[int, OffsetAndTimestamp | None]:
        """``offset_for_time`` for every partition of ``topic`` (or ``partitions``),
        asked concurrently."""
        if partitions is None:
            partitions = range(await self.partitions_for(topic))
        found: dict[int, OffsetAndTimestamp | None] = {}

        async def one(p: int) -> None:
            found[p] = await self.offset_for_time(topic, p, timestamp_ms, consistency=consistency)

        async with trio.open_nursery() as nursery:
            for p in partitions:
                nursery.start_soon(one, p)
        return dict(sorted(found.items()))

    async def commit_offset(
        self,
        group: str,
        topic: str,
        partition: int,
        offset: int,
        metadata: str = "",
        *,
        generation: int | None = None,
        reset: bool = False,
    ) -> None:
        """Commit ``offset`` (the next offset to consume) for ``group``, through Raft.

        ``reset``: an operator moves the group (``raftlog group reset-offsets``),
        not a consumer recording progress; the node writes an audit line for it.

        ``generation``: the committing member's group generation (the group-managed
        Consumer passes it); the partition then refuses the commit with FencedError
        once a newer generation of ``group`` has committed there. Without it the
        commit is unfenced, and refused only on a partition where ``group``
        commits with generations (log/partition.py).
        """
        fields: dict[str, Any] = {
            "group": group,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "metadata": metadata,
        }
        if generation is not None:
            fields["generation"] = generation
        if reset:
            fields["reset"] = True
        await self._call(
            "commit_offset",
            fields,
            topic=topic,
            partition=partition,
            idempotent=True,
        )

    async def committed(self, group: str, topic: str, partition: int) -> int | None:
        """The group's committed offset for the partition, or None if it never committed."""
        reply = await self._call(
            "fetch_committed",
            {"group": group, "topic": topic, "partition": partition},
            topic=topic,
            partition=partition,
            idempotent=True,
        )
        offset = reply.get("offset")
        return int(offset) if offset is not None else None

    async def delete_group(self, group: str, *, topic: str | None = None) -> DeletedGroup:
        """Delete consumer group ``group`` and its committed offsets (Kafka's
        ``kafka-consumer-groups --delete``). The group must have no members
        (GroupNotEmptyError: stop its consumers first).

        The controller first commits the group's tombstone, which takes the
        group's next generation number; then every partition of its topic
        forgets the group's offset, fenced at that number, so no member of the
        deleted group can commit its old position back. A consumer that joins
        the name afterwards starts a new group, with no committed offsets
        (``auto_offset_reset``) and generations counting on from the deletion.

        ``topic`` names the group's topic. It is needed only for a group the
        controller never knew (UnknownGroupError otherwise): one whose consumers
        committed by hand (manual assignment), whose offsets are then deleted
        without a generation. Running it again for a deleted group deletes its
        offsets again: the way to finish a deletion that stopped half way.
        """
        fields: dict[str, Any] = {"group": group}
        if topic is not None:
            fields["topic"] = topic
        generation: int | None
        try:
            reply = await self._call("group_delete", fields, idempotent=True)
        except UnknownGroupError:
            if topic is None:
                raise
            generation = None
        else:
            topic, generation = str(reply["topic"]), int(reply["generation"])
        assert topic is not None
        try:
            count = await self.partitions_for(topic)
        except UnknownTopicError:
            count = 0  # the topic is gone, and its offsets with it
        deleted: list[int] = []
        kept: list[int] = []
        for partition in range(count):
            offset_fields: dict[str, Any] = {
                "group": group, "topic": topic, "partition": partition,
            }  # fmt: skip
            if generation is not None:
                offset_fields["generation"] = generation
            try:
                await self._call(
                    "delete_offset", offset_fields,
                    topic=topic, partition=partition, idempotent=True,
                )  # fmt: skip
            except FencedError:
                if generation is None:
                    raise  # a group the controller does not know, yet fenced: stop
                kept.append(partition)
            else:
                deleted.append(partition)
        return DeletedGroup(group, topic, generation, tuple(deleted), tuple(kept))

    # ------------------------------------------------------------ cluster

    async def cluster_status(self, node: str | None = None) -> dict[str, Any]:
        """One node's view (``node`` = id or HOST:PORT), or ``{node id: view}`` for all."""
        if node is not None:
            address = self._nodes.get(node, node)
            if address == node and ":" not in node:
                await self._refresh_metadata()
                address = self._nodes.get(node)
                if address is None:
                    raise InvalidRequestError(f"unknown node {node!r}")
            return _result(await self._call("cluster_status", {}, address=address, idempotent=True))
        if not self._nodes:
            await self._refresh_metadata()
        views: dict[str, Any] = {}
        for node_id, address in sorted(self._nodes.items()):
            try:
                views[node_id] = _result(
                    await self._call(
                        "cluster_status",
                        {},
                        address=address,
                        idempotent=True,
                        budget=min(self.request_timeout, 3.0),
                    )
                )
            except RaftlogError as exc:
                views[node_id] = {"node": node_id, "error": str(exc)}
        return views

    # Users kept in the metadata log (client/users.py). Each needs a user with
    # ``cluster = true`` (or a client_tokens token).

    async def create_user(
        self,
        name: str,
        *,
        token: str | None = None,
        read: Iterable[str] = (),
        write: Iterable[str] = (),
        admin: Iterable[str] = (),
        groups: Iterable[str] = (),
        deny_read: Iterable[str] = (),
        deny_write: Iterable[str] = (),
        deny_admin: Iterable[str] = (),
        deny_groups: Iterable[str] = (),
        cluster: bool = False,
        tls_names: Iterable[str] = (),
        requests_per_sec: float | None = None,
        produce_bytes_per_sec: float | None = None,
        fetch_bytes_per_sec: float | None = None,
        max_connections: int | None = None,
        expires_at_ms: int | None = None,
        wait: bool = False,
    ) -> dict[str, Any]:
        """Create user ``name``, known by ``token`` (``users.generate_token()``
        makes one) and/or the names of its TLS client certificate. Returns the
        user as ``list_users`` shows it, and ``metadata_index``: the metadata
        log index it was applied at (``wait_applied``). UserExistsError if
        there is one. ``deny_read``, ``deny_write``, ``deny_admin``,
        ``deny_groups``: patterns refused whatever the grants say (they need
        log format 7: UnsupportedVersionError before). ``expires_at_ms``: from
        then on (ms since the epoch, in the future) its token and certificate
        names are refused, on open connections too. ``wait``: return once
        every node applied it, not only the controller (``wait_applied``;
        NotAppliedError if some node did not within ``request_timeout``: the
        user exists all the same)."""
        given = setting_arguments(locals())
        fields = {"name": name, "user": user_fields(token, given)}
        # Not idempotent: a retry after an unknown outcome could answer USER_EXISTS.
        reply = await self._call("user_create", fields, idempotent=False, server_timeout=True)
        return await self._user_changed(reply, wait)

    async def alter_user(
        self,
        name: str,
        *,
        token: str | None = None,
        read: Iterable[str] | None = None,
        write: Iterable[str] | None = None,
        admin: Iterable[str] | None = None,
        groups: Iterable[str] | None = None,
        deny_read: Iterable[str] | None = None,
        deny_write: Iterable[str] | None = None,
        deny_admin: Iterable[str] | None = None,
        deny_groups: Iterable[str] | None = None,
        cluster: bool | None = None,
        tls_names: Iterable[str] | None = None,
        requests_per_sec: float | None = None,
        produce_bytes_per_sec: float | None = None,
        fetch_bytes_per_sec: float | None = None,
        max_connections: int | None = None,
        expires_at_ms: int | None = None,
        remove: Iterable[str] = (),
        wait: bool = False,
    ) -> dict[str, Any]:
        """Change what is given (None: unchanged; a grant or deny list given
        replaces that list, and an empty deny list removes it). ``token``: a
        new token, and the old one stops working at once, on open connections
        too. ``expires_at_ms``: a new expiry (one already
        past suspends the user at once). ``remove``: quotas to drop
        (``requests_per_sec``, ``produce_bytes_per_sec``, ``fetch_bytes_per_sec``,
        ``max_connections``) or ``expires_at_ms`` (never expires).
        UnknownUserError if there is no such user. Returns and waits as
        ``create_user``."""
        given = setting_arguments(locals())
        fields = {"name": name, "user": user_fields(token, given, remove, altering=True)}
        # Idempotent: the same changes applied twice leave the same user.
        reply = await self._call("user_alter", fields, idempotent=True, server_timeout=True)
        return await self._user_changed(reply, wait)

    async def delete_user(self, name: str, *, wait: bool = False) -> int | None:
        """Delete user ``name``; its connections are refused from their next request.
        Returns the metadata log index the deletion was applied at (None from a
        node too old to say); ``wait`` as ``create_user``."""
        reply = await self._call(
            "user_delete", {"name": name}, idempotent=False, server_timeout=True
        )
        return (await self._user_changed(reply, wait)).get("metadata_index")

    async def _user_changed(self, reply: dict[str, Any], wait: bool) -> dict[str, Any]:
        """What a user change returns: the user (if any) and its metadata_index,
        once every node applied it if ``wait``."""
        out = dict(reply.get("user") or {})
        if "metadata_index" in reply:
            out["metadata_index"] = reply["metadata_index"]
        if wait:
            await self.wait_applied(change_index(reply))
        return out

    async def wait_applied(
        self,
        index: int,
        *,
        nodes: Mapping[str, str] | None = None,
        budget_s: float | None = None,
    ) -> dict[str, int]:
        """Return once every node has applied the metadata log up to ``index``
        (a user change's ``metadata_index``): from then on each authenticates
        by that change. Returns how far each had applied when asked.

        ``nodes``: node id -> address to ask (default: the nodes the cluster
        reports). Each is polled with ``cluster_status`` of the metadata group,
        with a short backoff, for ``budget_s`` seconds at most (default
        ``request_timeout``); NotAppliedError then names the nodes that had
        not got there, and why (unreachable, or how far they were)."""
        budget = self.request_timeout if budget_s is None else budget_s
        deadline = trio.current_time() + budget
        if nodes is None:
            await self._refresh_metadata(deadline)
            nodes = dict(self._nodes)
        applied: dict[str, int] = {}
        behind: dict[str, str] = {}
        async with trio.open_nursery() as nursery:
            for node, address in sorted(nodes.items()):
                nursery.start_soon(
                    self._await_applied, node, address, index, deadline, applied, behind
                )
        if behind:
            raise NotAppliedError(index, behind, budget)
        return dict(sorted(applied.items()))

    async def _await_applied(
        self,
        node: str,
        address: str,
        index: int,
        deadline: float,
        applied: dict[str, int],
        behind: dict[str, str],
    ) -> None:
        """Poll one node until it applied ``index`` (into ``applied``) or the
        deadline passes (into ``behind``, with the last reason it had not)."""
        why = "not asked before the deadline"
        attempt = 0
        while (remaining := deadline - trio.current_time()) > 0:
            try:
                status = await self._call(
                    "cluster_status", {"groups": [METADATA_GROUP]},
                    address=address, idempotent=True, budget=remaining,
                )  # fmt: skip
            except UnauthorizedError as exc:  # FORBIDDEN, TLS: asking again fails alike
                behind[node] = f"{address}: {exc}"
                return
            except RaftlogError as exc:
                why = f"{address}: {exc}"
            else:
                at = applied_metadata(status)
                if at is not None and at >= index:
                    applied[node] = at
                    return
                why = f"{address}: applied the metadata log to {at}, not yet to {index}"
            attempt += 1
            await self._backoff(attempt, deadline, cap=APPLIED_POLL_CAP)
        behind[node] = why

    async def list_users(self) -> list[dict[str, Any]]:
        """Every user: those of the metadata log (``source`` "metadata") and the
        answering node's cluster.toml ones ("file"). No tokens, no hashes."""
        reply = await self._call("user_list", {}, idempotent=True)
        return list(reply.get("users") or [])

    async def member_list(self) -> list[dict[str, Any]]:
        reply = await self._call("member_list", {}, idempotent=True)
        return list(reply.get("nodes") or [])

    # Day-2 operations (server/membership_ops.py). Each continues a change
    # where it stopped, so retrying one is safe (idempotent=True).

    async def member_add(self, node: str, address: str, budget_s: float = 60.0) -> dict[str, Any]:
        """Register ``node`` and make it a voter of the metadata group (it must be
        running with ``join = true``: the call waits until it caught up)."""
        return _result(
            await self._call("member_add", {"node": node, "address": address},
                             idempotent=True, budget=budget_s, server_timeout=True)
        )  # fmt: skip

    async def member_remove(self, node: str, budget_s: float = 60.0) -> dict[str, Any]:
        """Remove ``node`` from the metadata group. It must hold no replica any more
        (move them with ``partition_reassign``; ``raftlog member remove`` does both)."""
        return _result(
            await self._call("member_remove", {"node": node},
                             idempotent=True, budget=budget_s, server_timeout=True)
        )  # fmt: skip

    async def partition_reassign(
        self, topic: str, partition: int, replicas: Sequence[str], budget_s: float = 60.0
    ) -> dict[str, Any]:
        """Move a partition to ``replicas`` online (learners first, then one voter switch)."""
        fields = {"topic": topic, "partition": partition, "replicas": list(replicas)}
        reply = _result(
            await self._call("partition_reassign", fields, topic=topic, partition=partition,
                             idempotent=True, budget=budget_s, server_timeout=True)
        )  # fmt: skip
        if not reply.get("metadata_updated"):
            # The partition's leader does not lead the metadata group: the
            # metadata half goes there (NOT_LEADER redirects find it).
            reply = _result(
                await self._call("partition_reassign", {**fields, "phase": "metadata"},
                                 idempotent=True, budget=budget_s, server_timeout=True)
            )  # fmt: skip
        return reply

    async def leader_transfer(
        self, topic: str, partition: int, to: str, budget_s: float = 30.0
    ) -> dict[str, Any]:
        """Hand the partition's leadership to replica ``to``."""
        return _result(
            await self._call("leader_transfer",
                             {"topic": topic, "partition": partition, "to": to},
                             topic=topic, partition=partition, idempotent=True,
                             budget=budget_s, server_timeout=True)
        )  # fmt: skip

    async def metadata_leader_transfer(self, to: str, budget_s: float = 30.0) -> dict[str, Any]:
        """Hand the metadata group's (the controller's) leadership to node ``to``,
        e.g. before restarting the node that holds it. Returns ``{"leader",
        "leader_address"}`` once ``to`` leads (a no-op if it already does)."""
        return _result(
            await self._call("metadata_leader_transfer", {"to": to},
                             idempotent=True, budget=budget_s, server_timeout=True)
        )  # fmt: skip

    async def request(self, op: str, idempotent: bool = False, **fields: Any) -> dict[str, Any]:
        """Escape hatch: any op of the protocol, with the same routing and retries."""
        topic = fields.get("topic")
        partition = fields.get("partition")
        return _result(
            await self._call(op, fields, topic=topic, partition=partition, idempotent=idempotent)
        )


def _oldest(state: _SeqState) -> _Slot | None:
    return next((s for s in state.order if not s.done), None)


def _produce_fields(
    topic: str, partition: int, blob: bytes, count: int, crc: int
) -> dict[str, Any]:
    return {"topic": topic, "partition": partition, "records": blob, "count": count, "crc": crc}


def _batch_meta(topic: str, partition: int, count: int, reply: dict[str, Any]) -> BatchMetadata:
    return BatchMetadata(
        topic, partition, int(reply["base_offset"]), count, bool(reply.get("duplicate", False))
    )


def _result(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k not in ("id", "ok")}
