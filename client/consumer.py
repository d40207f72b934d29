"""Consumers: ``Consumer`` (trio, async iterator) and ``SyncConsumer`` (blocking).

A consumer reads one topic's partitions in offset order and remembers, per
partition, its *position*: the offset of the next record to hand out. It
starts from the group's committed offset (``group`` may be None for a
consumer that never commits), or, when the group never committed there, from
``auto_offset_reset`` ("earliest" = the partition's start offset, "latest" =
its end offset). ``commit()`` stores the positions through each partition's
Raft log, so a consumer restarted with the same group resumes exactly after
the last committed record (at-least-once for what was consumed but not yet
committed).

There is NO group rebalancing protocol: a consumer reads the partitions it is
given (``partitions=[...]``) or all of the topic's partitions. Two consumers of
one group on the same partition would both read it and overwrite each
other's commits; assign partitions explicitly to split work.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import trio

from .aio import DEFAULT_MAX_FETCH_BYTES, AsyncClient
from .errors import OutOfRangeError
from .models import FetchResult
from .protocol import Record

if TYPE_CHECKING:
    from .sync import Client

RESET_POLICIES = ("earliest", "latest")


class Consumer:
    """Reads ``topic``'s partitions for ``group``; ``async for partition, record in consumer``."""

    def __init__(
        self,
        client: AsyncClient,
        group: str | None,
        topic: str,
        partitions: list[int] | None = None,
        *,
        auto_offset_reset: str = "earliest",
        max_wait: float = 0.5,
        max_records: int | None = None,
        max_bytes: int = DEFAULT_MAX_FETCH_BYTES,
    ) -> None:
        if auto_offset_reset not in RESET_POLICIES:
            raise ValueError(f"auto_offset_reset must be one of {RESET_POLICIES}")
        self.client = client
        self.group = group
        self.topic = topic
        self.auto_offset_reset = auto_offset_reset
        self.max_wait = max_wait
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._assigned = list(partitions) if partitions is not None else None
        self._positions: dict[int, int] = {}
        self._ends: dict[int, int] = {}  # last end_offset seen per partition
        self._committed_positions: dict[int, int] = {}
        self._buffer: deque[tuple[int, Record]] = deque()  # fetched, not handed out
        self._started = False

    # ------------------------------------------------------------ positions

    @property
    def partitions(self) -> list[int]:
        if self._assigned is None:
            raise RuntimeError("consumer not started: call await consumer.start()")
        return list(self._assigned)

    async def start(self) -> None:
        """Resolve the partitions and their starting positions (done on first use)."""
        if self._started:
            return
        if self._assigned is None:
            self._assigned = list(range(await self.client.partitions_for(self.topic)))
        for p in self._assigned:
            if p in self._positions:
                continue  # seek() before start wins
            committed = (
                await self.client.committed(self.group, self.topic, p)
                if self.group is not None
                else None
            )
            if committed is not None:
                self._positions[p] = committed
                self._committed_positions[p] = committed
            else:
                self._positions[p] = await self._reset_position(p)
        self._started = True

    async def _reset_position(self, partition: int) -> int:
        offsets = await self.client.list_offsets(self.topic, partition)
        self._ends[partition] = offsets.end_offset
        if self.auto_offset_reset == "earliest":
            return offsets.start_offset
        return offsets.end_offset

    def seek(self, partition: int, offset: int) -> None:
        """Make ``offset`` the next record handed out for ``partition``."""
        if self._assigned is not None and partition not in self._assigned:
            raise ValueError(f"partition {partition} is not assigned to this consumer")
        self._positions[partition] = offset
        self._buffer = deque((p, r) for p, r in self._buffer if p != partition)

    def position(self, partition: int) -> int:
        """The offset of the next record this consumer will hand out for ``partition``."""
        return self._positions[partition]

    def at_end(self) -> bool:
        """True when every partition's position has reached the end offset last seen."""
        return (
            not self._buffer
            and all(self._positions.get(p, 0) >= self._ends.get(p, 0) for p in self._assigned or [])
            and all(p in self._ends for p in self._assigned or [])
        )

    # ------------------------------------------------------------ reading

    async def poll(self, max_wait: float | None = None) -> list[tuple[int, Record]]:
        """Records not handed out yet, as (partition, record); may be empty.

        Fetches every partition; if none has records, long-polls them all for
        up to ``max_wait`` seconds and returns as soon as one has data. The
        returned records count as consumed (positions advance past them).
        """
        await self._fill(max_wait)
        out = list(self._buffer)
        self._buffer.clear()
        for p, record in out:
            self._positions[p] = record.offset + 1
        return out

    async def _fill(self, max_wait: float | None = None) -> None:
        """Fetch into the buffer (if it is empty) WITHOUT advancing positions."""
        await self.start()
        if self._buffer:
            return
        wait = self.max_wait if max_wait is None else max_wait
        results = await self._fetch_all(0.0)
        if not any(r.records for r in results.values()) and wait > 0:
            results = await self._fetch_all(wait)
        for p in self.partitions:
            result = results.get(p)
            if result is not None and result.records:
                self._buffer.extend((p, r) for r in result.records)

    def _take(self) -> tuple[int, Record]:
        """Hand out the next buffered record: only now does its position advance."""
        p, record = self._buffer.popleft()
        self._positions[p] = record.offset + 1
        return p, record

    async def _fetch_one(self, partition: int, wait: float) -> FetchResult:
        offset = self._positions[partition]
        try:
            result = await self.client.fetch(
                self.topic, partition, offset, self.max_records, self.max_bytes, wait
            )
        except OutOfRangeError as exc:
            # Retention removed our position, or it is past the end (the log was
            # truncated/recreated): apply the reset policy.
            start, end = exc.details.get("start_offset"), exc.details.get("end_offset")
            if not (isinstance(start, int) and isinstance(end, int)):
                self._positions[partition] = await self._reset_position(partition)
                return FetchResult([], 0, self._ends.get(partition, 0))
            self._positions[partition] = start if self.auto_offset_reset == "earliest" else end
            self._ends[partition] = end
            return FetchResult([], start, end)
        self._ends[partition] = result.end_offset
        return result

    async def _fetch_all(self, wait: float) -> dict[int, FetchResult]:
        parts = self.partitions
        if len(parts) == 1:
            return {parts[0]: await self._fetch_one(parts[0], wait)}
        results: dict[int, FetchResult] = {}
        async with trio.open_nursery() as nursery:

            async def one(p: int) -> None:
                result = await self._fetch_one(p, wait)
                results[p] = result
                if result.records and wait > 0:
                    nursery.cancel_scope.cancel()  # data: stop the other long polls

            for p in parts:
                nursery.start_soon(one, p)
        return results

    async def __aiter__(self) -> AsyncIterator[tuple[int, Record]]:
        # Positions advance record by record, so breaking out of the loop and
        # committing never skips records that were fetched but not handed out.
        while True:
            await self._fill()
            while self._buffer:
                yield self._take()

    # ------------------------------------------------------------ commits

    async def commit(self, offsets: dict[int, int] | None = None) -> dict[int, int]:
        """Commit ``offsets`` (partition -> next offset to consume), default the positions.

        Only partitions whose position moved since the last commit are sent.
        Returns what was committed.
        """
        if self.group is None:
            raise ValueError("commit() needs a consumer group")
        await self.start()
        todo = (
            dict(offsets)
            if offsets is not None
            else {
                p: pos
                for p, pos in self._positions.items()
                if self._committed_positions.get(p) != pos
            }
        )
        for p, offset in sorted(todo.items()):
            await self.client.commit_offset(self.group, self.topic, p, offset)
            self._committed_positions[p] = offset
        return todo

    async def committed(self) -> dict[int, int | None]:
        """The group's committed offsets, per assigned partition (None: never committed)."""
        if self.group is None:
            raise ValueError("committed() needs a consumer group")
        await self.start()
        return {p: await self.client.committed(self.group, self.topic, p) for p in self.partitions}


class SyncConsumer:
    """Blocking facade over ``Consumer`` on a ``Client``: ``for partition, record in c``."""

    def __init__(self, client: Client, group: str | None, topic: str, **options: Any) -> None:
        self._client = client
        self._consumer = Consumer(client.async_client, group, topic, **options)

    @property
    def consumer(self) -> Consumer:
        return self._consumer

    def poll(self, max_wait: float | None = None) -> list[tuple[int, Record]]:
        return self._client.run(self._consumer.poll, max_wait)

    def __iter__(self) -> Iterator[tuple[int, Record]]:
        return self.records(follow=True)

    def records(self, *, follow: bool = False) -> Iterator[tuple[int, Record]]:
        """Iterate (positions advance record by record); without ``follow`` stop
        once every partition is drained."""
        consumer = self._consumer
        while True:
            self._client.run(consumer._fill, None if follow else 0.0)
            if not consumer._buffer:
                if not follow and consumer.at_end():
                    return
                continue
            while consumer._buffer:
                yield consumer._take()

    def commit(self, offsets: dict[int, int] | None = None) -> dict[int, int]:
        return self._client.run(self._consumer.commit, offsets)

    def committed(self) -> dict[int, int | None]:
        return self._client.run(self._consumer.committed)

    def seek(self, partition: int, offset: int) -> None:
        self._consumer.seek(partition, offset)

    def position(self, partition: int) -> int:
        self._client.run(self._consumer.start)
        return self._consumer.position(partition)

    @property
    def partitions(self) -> list[int]:
        self._client.run(self._consumer.start)
        return self._consumer.partitions

    def at_end(self) -> bool:
        return self._consumer.at_end()

    def close(self) -> None:
        """Nothing to release (the Client owns connections); for symmetry."""

    def __enter__(self) -> SyncConsumer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
