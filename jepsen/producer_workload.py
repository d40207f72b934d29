"""The ``producer`` workload: the batching ``Producer`` under faults.

The ``log`` workload sends one record per request and waits for it. Real
services send through ``raftlog.client.Producer``: records batched per
partition, up to five batches of a partition in flight at once, retried under
the same sequence numbers, split and resent when a node refuses a batch as
too large. This workload puts that path under the nemesis.

Half of the workers (at least one) each own one ``AsyncClient`` and one
``Producer`` for the whole run, and send bursts of records to a random
partition without waiting between them, so that batches hold several records
and several batches of a partition are in flight. The other workers run the
``log`` worker's mix (single-record sends, fetches, end offsets), so reads
observe the batched records while the faults go on.

Every record is its own operation in the history, under its own process id
(``p<worker>.<n>``): its invoke is recorded when it is handed to the
producer, its completion when the producer reports its delivery (ok with the
offset; ``fail`` only for an error that guarantees it was never appended;
``info`` otherwise). Each send also names its producer and its place in that
producer's sending order (``producer``, ``seq``), which the log checker's
``producer-reorder`` stage uses: one idempotent producer's records lie in a
partition in the order it sent them, however the batches were retried, split
or renumbered (jepsen/checker_log.py).
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from typing import Any

import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import RaftlogError
from raftlog.client.models import RecordMetadata
from raftlog.client.producer import Producer

from .history import OpType, classify_error, error_name
from .workload import TOPIC, Workload

log = logging.getLogger(__name__)

MAX_BURST = 16  # records sent back to back to one partition
LINGER_S = 0.01  # long enough for a burst to share batches
BATCH_BYTES = 512  # small: a burst spans several batches, so several are in flight


def _error_text(exc: BaseException) -> str:
    return error_name(exc) + f" {exc}"[:200]


def producer_workers(concurrency: int) -> int:
    """How many of ``concurrency`` workers own a Producer (the rest run ``log``)."""
    return max(1, concurrency // 2)


class ProducerWorkers:
    """The producer workers, recording into ``workload``'s history."""

    def __init__(self, workload: Workload) -> None:
        self.wl = workload
        self._sent = itertools.count()  # makes each record's process id unique
        # Every producer's stats, summed when it closes: the run's results show
        # how many records shared each produce request.
        self.stats: Counter[str] = Counter()

    def _record_delivery(self, inv: Any, value: dict[str, Any]):
        """The callback for one record: its completion in the history."""
        wl = self.wl

        def done(meta: RecordMetadata | None, exc: BaseException | None) -> None:
            if exc is None and meta is not None:
                key = value["key"]
                wl._known_end[key] = max(wl._known_end.get(key, 0), meta.offset + 1)
                wl.recorder.complete(inv, OpType.OK, {**value, "offset": meta.offset})
                return
            assert exc is not None
            if not isinstance(exc, RaftlogError | OSError):
                log.warning("event=unexpected_producer_error error=%r", exc)
            wl.recorder.complete(inv, classify_error("send", exc), value, error=_error_text(exc))

        return done

    async def send(self, worker: int, producer: Producer, key: int, seq: int) -> bool:
        """Hand one record to the producer; its delivery completes it later.
        False: refused at once (completed already)."""
        wl = self.wl
        v = next(wl._values)
        value = {"key": key, "value": v, "producer": f"p{worker}", "seq": seq}
        inv = wl.recorder.invoke(f"p{worker}.{next(self._sent)}", "send", value)
        try:
            await producer.send(
                TOPIC, str(v).encode(), partition=key, callback=self._record_delivery(inv, value)
            )
        except Exception as exc:
            # Refused before it was queued (a record too large, a closed
            # producer): never sent, unless the error says otherwise.
            wl.recorder.complete(inv, classify_error("send", exc), value, error=_error_text(exc))
            return False
        except BaseException:
            wl.recorder.complete(inv, OpType.INFO, value, error="harness stopped")
            raise
        return True

    async def worker(self, worker: int, stop: trio.Event) -> None:
        wl = self.wl
        seq = itertools.count()
        async with AsyncClient(
            wl.bootstrap,
            client_id=f"jepsen-p{worker}",
            request_timeout=wl.config.request_timeout,
            tls=wl.tls,
        ) as client:
            # delivery_timeout: a few request timeouts, so that a batch stuck
            # behind a fault ends as info well before the run's drain.
            async with Producer(
                client,
                linger=LINGER_S,
                batch_size=BATCH_BYTES,
                delivery_timeout=4 * wl.config.request_timeout,
            ) as producer:
                while not stop.is_set():
                    key = wl.rng.randrange(wl.config.partitions)
                    for _ in range(wl.rng.randint(1, MAX_BURST)):
                        if not await self.send(worker, producer, key, next(seq)):
                            # Refused at once (a lowered limit): the rest of the
                            # burst would be too, as fast as the loop spins.
                            break
                    await wl._pace()
                # Leaving the block flushes: every record sent gets its completion.
            self.stats.update(producer.stats)

    def summary(self) -> dict[str, Any]:
        """Batches and records the producers sent (retries and splits not counted
        apart), and records per batch."""
        out: dict[str, Any] = dict(self.stats)
        out["records_per_batch"] = round(out["records"] / max(1, out["batches"]), 2)
        return out
