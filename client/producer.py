"""Batching producers: ``Producer`` (trio) and ``SyncProducer`` (blocking).

Records accumulate per partition until the batch reaches ``batch_size``
bytes or its first record is ``linger`` seconds old (Kafka's batch.size and
linger.ms); then the batch is encoded ONCE with ``encode_record_rows`` and sent as
one produce request (one Raft entry on the server). ``compression`` (gzip,
lz4, zstd: Kafka's compression.type) compresses each batch on the way out;
the nodes store it as it came and consumers decompress (client/compression.py).

Ordering and idempotence. Each partition has one sender loop that hands
batches to ``AsyncClient.send_pieces`` strictly in order, waiting until a
batch has its sequence number before starting the next; the client keeps at
most 5 batches in flight per partition (the server's dedup window) and
retries NOT_LEADER / timeouts with the SAME sequence, so a retried batch is
appended once and batches of a partition are appended in send order. A
batch that finally fails (delivery_timeout elapsed, a non-retriable error)
fails every record's delivery with that error; for a timeout the records may
still have been appended (outcome unknown, as everywhere in raftlog).

Topic limits. A batch is sealed under its topic's max_message_bytes as the
metadata last saw it. A batch the node refuses as too large (the limit was
lowered since) is split in halves until the pieces fit and sent again in its
place, under the sequence numbers it held (Kafka's KIP-126); only a record too
large by itself fails (AsyncClient.send_pieces).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .aio import AsyncClient, _as_bytes
from .compression import codec
from .errors import NotAvailableError, RecordTooLargeError, RequestTimeoutError
from .models import BatchMetadata, EncodedPiece, PieceOutcome, RecordMetadata
from .protocol import DEFAULT_MAX_BATCH_BYTES, encode_record_rows

if TYPE_CHECKING:
    from .sync import Client

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[RecordMetadata | None, BaseException | None], None]
_RECORD_OVERHEAD = 16  # msgpack array + timestamp + key framing, roughly
# A record over its topic's cached limit: how old the metadata may be before
# the producer reads it again rather than refuse the record (Kafka's
# retry.backoff.ms plays this part for its metadata requests).
LIMIT_RECHECK_S = 1.0


class Delivery:
    """The outcome of one ``send``: ``await delivery`` gives its RecordMetadata.

    Holds only its batch and its index in the batch: the batch carries the
    outcome, so finishing a batch of thousands of records touches only the
    deliveries somebody waits on or registered a callback for (``watched``),
    and the RecordMetadata is built only when asked for.
    """

    __slots__ = ("_batch", "_callbacks", "_event", "_index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self._batch = batch
        self._index = index
        self._event: trio.Event | None = None
        self._callbacks: list[DeliveryCallback] | None = None

    def done(self) -> bool:
        return self._batch.done

    def result(self) -> RecordMetadata:
        """The metadata if done (raises the delivery error); RuntimeError if pending."""
        batch = self._batch
        index = self._index
        if batch.parts is not None:  # sent split (max_message_bytes): find our piece
            batch, index = batch.part_of(index)
        if batch.error is not None:
            raise batch.error
        meta = batch.meta
        if meta is None:
            raise RuntimeError("delivery still pending")
        return RecordMetadata(meta.topic, meta.partition, meta.base_offset + index)

    def exception(self) -> BaseException | None:
        batch = self._batch
        if batch.parts is not None:
            batch = batch.part_of(self._index)[0]
        return batch.error

    def add_callback(self, fn: DeliveryCallback) -> None:
        batch = self._batch
        if batch.done:
            fn(*self._outcome())
            return
        if self._callbacks is None:
            self._callbacks = [fn]
            if self._event is None:
                batch.watched.append(self)
        else:
            self._callbacks.append(fn)

    async def wait(self) -> RecordMetadata:
        await self.wait_done()
        return self.result()

    async def wait_done(self) -> None:
        """Wait until acknowledged or failed (raises nothing)."""
        if not self._batch.done:
            if self._event is None:
                self._event = trio.Event()
                if self._callbacks is None:
                    self._batch.watched.append(self)
            await self._event.wait()

    def __await__(self) -> Any:
        return self.wait().__await__()

    def _outcome(self) -> tuple[RecordMetadata | None, BaseException | None]:
        """What a callback gets once done: (metadata, None) or (None, error)."""
        error = self.exception()
        return (self.result() if error is None else None), error

    def _notify(self) -> None:
        if self._event is not None:
            self._event.set()
        if self._callbacks:
            result, error = self._outcome()
            for fn in self._callbacks:
                try:
                    fn(result, error)
                except Exception:  # a user callback must not kill the sender
                    log.exception("event=delivery_callback_failed")


@dataclass(slots=True, eq=False)
class _Batch:
    # Rows in wire order ([timestamp_ms, key, value, headers], see
    # protocol.encode_record_rows): the batch is packed with one msgpack call.
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    size: int = 0
    sealed: bool = False
    done: bool = False
    meta: BatchMetadata | None = None
    error: BaseException | None = None
    watched: list[Delivery] = field(default_factory=list)  # deliveries someone waits on
    # Set when the batch went out as several requests, to fit its topic's
    # max_message_bytes: each piece's first index and its own outcome.
    parts: list[tuple[int, _Batch]] | None = None

    def finish(self, meta: BatchMetadata | None, error: BaseException | None) -> None:
        if self.done:
            return
        self.meta, self.error, self.done = meta, error, True
        for delivery in self.watched:
            delivery._notify()
        self.watched = []

    def finish_parts(self, parts: list[tuple[int, _Batch]]) -> None:
        """Finish a batch sent as ``parts`` (each one finished already)."""
        self.parts = parts
        self.finish(None, None)

    def part_of(self, index: int) -> tuple[_Batch, int]:
        """The piece holding record ``index`` of a split batch, and its index there."""
        assert self.parts is not None
        for start, piece in reversed(self.parts):
            if index >= start:
                return piece, index - start
        raise IndexError(index)


@dataclass(slots=True)
class _PartitionQueue:
    topic: str
    partition: int
    current: _Batch | None = None
    ready: deque[_Batch] = field(default_factory=deque)
    wakeup: trio.Event = field(default_factory=trio.Event)
    # min(batch_size, the topic's max_message_bytes), re-read for each new batch.
    batch_limit: int = 0
    topic_limit: int | None = None
    record_limit: int = 0  # the largest value a record may have (same moment)


class Producer:
    """Async batching producer on an ``AsyncClient``: ``async with Producer(client) as p``."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        batch_size: int = 64 * 1024,
        linger: float = 0.005,
        max_batch_records: int = 10_000,
        buffer_memory: int = 64 * 1024 * 1024,
        delivery_timeout: float = 30.0,
        compression: str = "none",
    ) -> None:
        if batch_size > DEFAULT_MAX_BATCH_BYTES:
            raise ValueError(f"batch_size must be <= {DEFAULT_MAX_BATCH_BYTES}")
        if compression != "none":
            codec(compression)  # unknown name or missing library: fail now, not per batch
        self.compression = compression
        self.client = client
        self.batch_size = batch_size
        self.linger = linger
        self.max_batch_records = max_batch_records
        self.buffer_memory = buffer_memory
        self.delivery_timeout = delivery_timeout
        self._queues: dict[tuple[str, int], _PartitionQueue] = {}
        self._sticky: dict[str, int] = {}  # topic -> partition for records without a key
        self._inflight: set[_Batch] = set()  # batches handed to the client, not finished
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        self._buffered = 0  # bytes accepted but not yet acknowledged
        self._space = trio.Event()
        self._outstanding = 0  # deliveries not yet finished
        self._idle = trio.Event()
        self._idle.set()
        self._closed = False
        self._refreshing = False  # a background metadata refresh is under way
        self.stats = {"batches": 0, "records": 0, "errors": 0, "failed_records": 0}

    async def __aenter__(self) -> Producer:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        try:
            if exc_info[0] is None:
                await self.flush()
        finally:
            self._closed = True
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()
            cm, self._nursery_cm = self._nursery_cm, None
        try:
            return await cm.__aexit__(*exc_info)
        finally:
            self._fail_unfinished()

    def _fail_unfinished(self) -> None:
        """After a close that did not flush: no delivery may stay pending forever."""
        for batch in self._inflight:  # sent: the outcome is unknown
            _fail_batch(
                batch,
                RequestTimeoutError(
                    "producer closed before the batch was acknowledged (outcome unknown)"
                ),
            )
        for queue in self._queues.values():  # never sent
            pending = [*queue.ready, *([queue.current] if queue.current else [])]
            for batch in pending:
                _fail_batch(batch, NotAvailableError("producer closed before sending"))
        self._inflight.clear()

    async def close(self) -> None:
        """Flush, then stop the sender tasks (same as leaving ``async with``)."""
        await self.__aexit__(None, None, None)

    # ------------------------------------------------------------ send

    async def send(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        partition: int | None = None,
        headers: dict[str, bytes] | None = None,
        timestamp_ms: int | None = None,
        callback: DeliveryCallback | None = None,
    ) -> Delivery:
        """Queue one record; returns its Delivery (awaitable) at once.

        Waits only when ``buffer_memory`` bytes are already queued (backpressure)
        or, the first time, for the topic's metadata.
        """
        # The hot path of every batching client: keep it to a few dict lookups
        # and appends (bench: about a third of the client's CPU per record).
        nursery = self._nursery
        if self._closed or nursery is None:
            raise RuntimeError("Producer is not open (use 'async with')")
        if type(value) is not bytes:
            value = _as_bytes(value)  # None stays None: a tombstone
        size = _RECORD_OVERHEAD if value is None else len(value) + _RECORD_OVERHEAD
        if key is not None:
            if type(key) is not bytes:
                key = _as_bytes(key)
            size += len(key)
        if headers:
            size += sum(len(k) + len(v) for k, v in headers.items())
        if self._buffered + size > self.buffer_memory:
            while self._buffered + size > self.buffer_memory and self._buffered > 0:
                await self._space.wait()
        if partition is None:
            if key is None:
                # Sticky partitioning (wire.md): records without a key fill one
                # partition's batch, then move on round-robin, so batches stay big.
                partition = self._sticky.get(topic)
                if partition is None:
                    partition = self._sticky[topic] = await self.client.choose_partition(
                        topic, None
                    )
            else:
                partition = await self.client.choose_partition(topic, key)
        queue = self._queues.get((topic, partition))
        if queue is None:
            # Its metadata (max_message_bytes), even when the partition was given,
            # and a connection: the nodes announce their limits in its hello.
            await self.client.partitions_for(topic)
            queue = self._queues.get((topic, partition))
        if queue is None:
            queue = self._queues[(topic, partition)] = _PartitionQueue(topic, partition)
            nursery.start_soon(self._sender, topic, partition, queue)
        batch = queue.current
        if batch is not None and batch.size + size > queue.batch_limit:
            self._seal(queue)
            batch = None
        if batch is None:
            self._read_topic_limit(queue)
        if size > queue.record_limit and value is not None and len(value) > queue.record_limit:
            if not await self._fits_a_newer_limit(queue, len(value)):
                raise self._too_large(queue, len(value))
            batch = queue.current  # the refresh awaited: linger may have sealed it
            if batch is not None and batch.size + size > queue.batch_limit:
                self._seal(queue)
                batch = None
        if batch is None:
            batch = queue.current = _Batch()
            if self.linger > 0:
                nursery.start_soon(self._linger, queue, batch)
        rows = batch.rows
        delivery = Delivery(batch, len(rows))
        # A tuple, not a list: a tuple of atoms (bytes, int, None) is untracked by
        # the cyclic GC once seen, so thousands of queued rows do not make every
        # collection longer (bench: GC time per worker 2.3-3.3 s -> 0.2-0.5 s).
        rows.append((timestamp_ms, key, value, headers))
        batch.size += size
        self._buffered += size
        self._outstanding += 1
        if self._outstanding == 1:
            self._idle = trio.Event()
        if callback is not None:
            delivery.add_callback(callback)
        if (
            batch.size >= queue.batch_limit
            or len(rows) >= self.max_batch_records
            or self.linger <= 0
        ):
            self._seal(queue)
        return delivery

    async def flush(self) -> None:
        """Send every queued record now and wait until all are acknowledged or failed."""
        for queue in self._queues.values():
            self._seal(queue)
        await self._idle.wait()

    # ------------------------------------------------------------ internals

    def _read_topic_limit(self, queue: _PartitionQueue) -> None:
        """Cap the next batch of ``queue`` at its topic's max_message_bytes, as the
        client's metadata last saw it (a limit changed since is met at the node),
        and at the nodes' max_batch_bytes."""
        cap = self.client.max_message_bytes(queue.topic)
        queue.topic_limit = cap
        queue.batch_limit = min(self.batch_size, self._send_limit(cap))
        max_record = self.client.max_record_bytes  # the nodes' (hello), unless set
        queue.record_limit = max_record if cap is None else min(max_record, cap)

    async def _fits_a_newer_limit(self, queue: _PartitionQueue, size: int) -> bool:
        """Would a record of ``size`` bytes fit under its topic's limit as the nodes
        have it now? The cached limit may have been raised since the metadata was
        read, and the producer would refuse records the nodes take until its next
        refresh (a jepsen run refused thousands after a lowered limit was removed).
        So before refusing, read the metadata again, at most once per
        ``LIMIT_RECHECK_S`` (concurrent refreshes share one request)."""
        if queue.topic_limit is None or size > self.client.max_record_bytes:
            return False  # the nodes' own limit: no topic config changes it
        if self.client.metadata_stale(LIMIT_RECHECK_S):
            await self.client.refresh_metadata_quietly()
        self._read_topic_limit(queue)
        return size <= queue.record_limit

    def _too_large(self, queue: _PartitionQueue, size: int) -> RecordTooLargeError:
        if queue.topic_limit is not None and size > queue.topic_limit:
            return RecordTooLargeError(
                f"record of {size} bytes exceeds topic {queue.topic!r}'s "
                f"max_message_bytes={queue.topic_limit}"
            )
        return RecordTooLargeError(
            f"record of {size} bytes exceeds max_record_bytes={self.client.max_record_bytes}"
        )

    def _send_limit(self, cap: int | None) -> int:
        """The largest encoded batch the nodes take for a topic whose limit is ``cap``."""
        node_cap = self.client.max_batch_bytes
        return node_cap if cap is None else min(cap, node_cap)

    def _seal(self, queue: _PartitionQueue) -> None:
        batch = queue.current
        if batch is None or batch.sealed:
            return
        batch.sealed = True
        queue.current = None
        if self._sticky.get(queue.topic) == queue.partition:
            del self._sticky[queue.topic]
        queue.ready.append(batch)
        queue.wakeup.set()

    async def _linger(self, queue: _PartitionQueue, batch: _Batch) -> None:
        await trio.sleep(self.linger)
        if queue.current is batch:
            self._seal(queue)

    async def _sender(self, topic: str, partition: int, queue: _PartitionQueue) -> None:
        assert self._nursery is not None
        while True:
            if not queue.ready:
                await queue.wakeup.wait()
                queue.wakeup = trio.Event()
                continue
            batch = queue.ready.popleft()
            self._keep_metadata_fresh()
            allocated = trio.Event()
            self._nursery.start_soon(self._send_batch, topic, partition, batch, allocated)
            # The next batch starts only once this one has its sequence: order kept.
            await allocated.wait()

    def _keep_metadata_fresh(self) -> None:
        """Refresh the client's metadata in the background once it is older than
        ``metadata_max_age`` (Kafka's metadata.max.age.ms), so that a topic limit
        raised since reaches the batches sealed from then on. Otherwise a producer
        that met a lowered limit would seal small batches until something else
        refreshed the metadata: nothing does while its partitions have leaders."""
        if self._refreshing or not self.client.metadata_stale():
            return
        assert self._nursery is not None
        self._refreshing = True
        self._nursery.start_soon(self._refresh_metadata)

    async def _refresh_metadata(self) -> None:
        try:
            await self.client.refresh_metadata_quietly()
        finally:
            self._refreshing = False

    async def _send_batch(
        self, topic: str, partition: int, batch: _Batch, allocated: trio.Event
    ) -> None:
        self._inflight.add(batch)
        rows, compression = batch.rows, self.compression
        blob, count, crc = encode_record_rows(rows, compression)
        limit = self._send_limit(self.client.max_message_bytes(topic))
        if len(blob) > limit and count > 1:
            # The sizes ``send`` adds up are estimates (headers, large values):
            # the encoded batch is what the node measures.
            pieces = _split_to_fit(rows, limit, compression)
            log.info(
                "event=batch_split topic=%s partition=%s pieces=%d limit=%d",
                topic, partition, len(pieces), limit,
            )  # fmt: skip
        else:
            pieces = [(0, blob, count, crc)]

        def resplit(first: int, n: int, limit: int) -> list[EncodedPiece]:
            return _split_to_fit(rows[first : first + n], limit, compression, first)

        batch.rows = []  # packed: only ``resplit`` keeps them, until the acknowledgement
        try:
            outcomes = await self.client.send_pieces(
                topic,
                partition,
                pieces,
                resplit=resplit,
                budget=self.delivery_timeout,
                on_allocated=allocated.set,
            )
        except Exception as exc:  # a bug: fail the deliveries, keep going
            outcomes = [PieceOutcome(0, None, exc)]
        finally:
            allocated.set()
        if len(outcomes) > len(pieces) or any(
            isinstance(o.error, RecordTooLargeError) for o in outcomes
        ):
            # Split by the node or refused: the topic's limit changed since our
            # metadata, and the next batches are sealed by the new one.
            await self.client.refresh_metadata_quietly()
        self._finish(topic, partition, batch, count, outcomes)

    def _finish(
        self,
        topic: str,
        partition: int,
        batch: _Batch,
        count: int,
        outcomes: list[PieceOutcome],
    ) -> None:
        """Settle ``batch``'s deliveries by its pieces' ``outcomes``; free its space."""
        ends = [o.first for o in outcomes[1:]] + [count]
        for outcome, end in zip(outcomes, ends, strict=True):
            if outcome.error is None:
                continue
            self.stats["errors"] += 1
            self.stats["failed_records"] += end - outcome.first
            log.warning(
                "event=batch_failed topic=%s partition=%s records=%s error=%s",
                topic, partition, end - outcome.first, outcome.error,
            )  # fmt: skip
        if len(outcomes) == 1:
            batch.finish(outcomes[0].meta, outcomes[0].error)
        else:
            parts = []
            for outcome in outcomes:
                piece = _Batch()
                piece.finish(outcome.meta, outcome.error)
                parts.append((outcome.first, piece))
            batch.finish_parts(parts)
        self.stats["batches"] += 1
        self.stats["records"] += count
        self._inflight.discard(batch)
        self._buffered -= batch.size
        self._space.set()
        self._space = trio.Event()
        self._outstanding -= count
        if self._outstanding == 0:
            self._idle.set()


def _split_to_fit(
    rows: list[tuple[Any, ...]], limit: int, compression: str, start: int = 0
) -> list[tuple[int, bytes, int, int]]:
    """``rows`` encoded as pieces of at most ``limit`` bytes each, in order, as
    (index of the first row, blob, count, crc). A piece of one record may still
    be larger: the node refuses it, as it would that record alone."""
    half = len(rows) // 2
    pieces: list[tuple[int, bytes, int, int]] = []
    for first, part in ((start, rows[:half]), (start + half, rows[half:])):
        blob, count, crc = encode_record_rows(part, compression)
        if len(blob) <= limit or count == 1:
            pieces.append((first, blob, count, crc))
        else:
            pieces.extend(_split_to_fit(part, limit, compression, first))
    return pieces


def _fail_batch(batch: _Batch, error: BaseException) -> None:
    batch.finish(None, error)


class SyncProducer:
    """Blocking facade over ``Producer`` running on a ``Client``'s loop.

    ``send`` returns a ``SyncDelivery`` at once: records are handed to the loop
    through a thread-safe queue drained in bulk (one wake-up for many records),
    not one cross-thread call per record, and a delivery costs a cross-thread
    call only when its ``result()`` is asked for before it is done. Callbacks
    run on the client's loop thread: keep them short.
    """

    def __init__(self, client: Client, **options: Any) -> None:
        self._client = client
        self._producer = Producer(client.async_client, **options)
        self._pending: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._stop: trio.Event | None = None
        self._drain_lock = trio.Lock()  # drains run one at a time: record order is kept
        self._ready = threading.Event()
        self._done = threading.Event()
        self._start_error: BaseException | None = None
        client.trio_token.run_sync_soon(self._start)
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error

    def _start(self) -> None:
        trio.lowlevel.spawn_system_task(self._main)

    async def _main(self) -> None:
        self._stop = trio.Event()
        try:
            async with self._producer:
                self._ready.set()
                await self._stop.wait()
                await self._drain()
        except trio.Cancelled:
            raise  # the client's loop is shutting down
        except Exception as exc:
            # A system task must not raise (it would crash the client's loop):
            # keep the error for the constructor / later calls.
            self._start_error = exc
        finally:
            self._ready.set()
            self._done.set()

    def send(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        partition: int | None = None,
        headers: dict[str, bytes] | None = None,
        timestamp_ms: int | None = None,
        callback: DeliveryCallback | None = None,
    ) -> SyncDelivery:
        handle = SyncDelivery(self)
        item = (topic, value, key, partition, headers, timestamp_ms, callback, handle)
        with self._lock:
            self._pending.append(item)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._client.trio_token.run_sync_soon(self._schedule_drain)
        return handle

    def _schedule_drain(self) -> None:
        trio.lowlevel.spawn_system_task(self._drain)

    async def _drain(self) -> None:
        async with self._drain_lock:
            await self._drain_locked()

    async def _drain_locked(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._scheduled = False
                    return
                items = list(self._pending)
                self._pending.clear()
            send = self._producer.send
            for topic, value, key, partition, headers, ts, callback, handle in items:
                try:
                    handle._delivery = await send(
                        topic, value, key, partition, headers, ts, callback
                    )
                except BaseException as exc:
                    handle._error = exc
                    if not isinstance(exc, Exception):
                        raise

    def flush(self, timeout: float | None = None) -> None:
        """Block until every record sent so far is acknowledged or failed."""
        deadline = math.inf if timeout is None else timeout

        async def _flush() -> None:
            with trio.fail_after(deadline):
                while True:
                    await self._drain()
                    await self._producer.flush()
                    with self._lock:
                        if not self._pending:
                            return

        self._client.run(_flush)

    def _wait(self, handle: SyncDelivery, timeout: float | None) -> None:
        async def wait() -> None:
            with trio.fail_after(math.inf if timeout is None else timeout):
                if handle._delivery is None and handle._error is None:
                    await self._drain()  # our record is queued: hand it over now
                if handle._delivery is not None:
                    await handle._delivery.wait_done()

        try:
            self._client.run(wait)
        except trio.TooSlowError:
            raise TimeoutError(f"no acknowledgement within {timeout}s") from None

    def close(self) -> None:
        """Flush and stop; further sends fail."""
        if self._stop is None or self._done.is_set():
            return
        self.flush()
        trio.from_thread.run_sync(self._stop.set, trio_token=self._client.trio_token)
        self._done.wait(timeout=30)

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class SyncDelivery:
    """The outcome of one ``SyncProducer.send`` (a small future-like handle)."""

    __slots__ = ("_delivery", "_error", "_producer")

    def __init__(self, producer: SyncProducer) -> None:
        self._producer = producer
        self._delivery: Delivery | None = None  # set on the loop thread by the drain
        self._error: BaseException | None = None  # send() itself failed

    def done(self) -> bool:
        return self._error is not None or (self._delivery is not None and self._delivery.done())

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Wait (at most ``timeout`` s) for the acknowledgement; raise the delivery error."""
        if not self.done():
            self._producer._wait(self, timeout)
        if self._error is not None:
            raise self._error
        assert self._delivery is not None
        return self._delivery.result()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The delivery's error, or None once acknowledged (TimeoutError if still pending)."""
        try:
            self.result(timeout)
        except TimeoutError:
            raise
        except Exception as exc:
            return exc
        return None
