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

The producers differ the way services' producers do: each takes a profile
(``PROFILES``, by worker number) that sets its batch compression, whether its
records carry keys (the client's key partitioner picks the partition; the
history names the partition that key must map to, and the checker's
``wrong-partition`` stage compares it with the acknowledged one) and whether
its client is idempotent. A producer with idempotence off may reorder its
records (several batches in flight, retried apart, as in Kafka), so
``producer-reorder`` skips it; it must still never duplicate one, since its
client reports an ambiguous produce instead of retrying it.
"""

from __future__ import annotations

import itertools
import logging
import zlib
from collections import Counter
from dataclasses import dataclass
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
RECORD_KEYS = 64  # keyed producers pick one of this many keys per burst


@dataclass(frozen=True, slots=True)
class ProducerProfile:
    """How one producer worker's Producer and client are set up."""

    compression: str = "none"  # Producer(compression=...)
    keyed: bool = False  # records carry a key; the client partitions them
    idempotent: bool = True  # AsyncClient(idempotent=...)

    def describe(self) -> str:
        keys = "keyed" if self.keyed else "partition"
        idem = "idempotent" if self.idempotent else "not-idempotent"
        return f"{self.compression}/{keys}/{idem}"


# Worker w gets PROFILES[w % len(PROFILES)]. The first is the plain case; any
# three consecutive producers cover compression, keys and idempotence off.
PROFILES = (
    ProducerProfile(),
    ProducerProfile(compression="zstd", keyed=True),
    ProducerProfile(compression="lz4", idempotent=False),
    ProducerProfile(compression="gzip", keyed=True),
    ProducerProfile(keyed=True, idempotent=False),
)


def profile_for(worker: int) -> ProducerProfile:
    return PROFILES[worker % len(PROFILES)]


def key_partition(record_key: str, partitions: int) -> int:
    """Where a keyed record must go: the README's documented partitioner,
    crc32(key) % partitions, written out here rather than taken from the client,
    so that a client whose partitioner drifts from it (another hash, one that
    differs between processes) is caught as wrong-partition."""
    return zlib.crc32(record_key.encode()) % partitions


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
        self.profiles: dict[str, str] = {}  # producer name -> ProducerProfile.describe()

    def _record_delivery(self, inv: Any, value: dict[str, Any]):
        """The callback for one record: its completion in the history."""
        wl = self.wl

        def done(meta: RecordMetadata | None, exc: BaseException | None) -> None:
            if exc is None and meta is not None:
                # The partition the record landed in, as acknowledged: the
                # checker compares it with the one the history expects.
                p = meta.partition
                wl._known_end[p] = max(wl._known_end.get(p, 0), meta.offset + 1)
                done_value = {**value, "offset": meta.offset, "partition": p}
                wl.recorder.complete(inv, OpType.OK, done_value)
                return
            assert exc is not None
            if not isinstance(exc, RaftlogError | OSError):
                log.warning("event=unexpected_producer_error error=%r", exc)
            wl.recorder.complete(inv, classify_error("send", exc), value, error=_error_text(exc))

        return done

    async def send(
        self,
        worker: int,
        producer: Producer,
        key: int,
        seq: int,
        record_key: str | None = None,
        idempotent: bool = True,
    ) -> bool:
        """Hand one record for partition ``key`` to the producer; its delivery
        completes it later. With ``record_key`` the record carries that key and
        the client picks the partition (``key`` is where it must go).
        False: refused at once (completed already)."""
        wl = self.wl
        v = next(wl._values)
        value: dict[str, Any] = {"key": key, "value": v, "producer": f"p{worker}", "seq": seq}
        if record_key is not None:
            value["record_key"] = record_key
        if not idempotent:
            value["idempotent"] = False
        inv = wl.recorder.invoke(f"p{worker}.{next(self._sent)}", "send", value)
        try:
            await producer.send(
                TOPIC,
                str(v).encode(),
                key=record_key,
                partition=None if record_key is not None else key,
                callback=self._record_delivery(inv, value),
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
        profile = profile_for(worker)
        self.profiles[f"p{worker}"] = profile.describe()
        async with AsyncClient(
            wl.bootstrap,
            client_id=f"jepsen-p{worker}",
            request_timeout=wl.config.request_timeout,
            tls=wl.tls,
            idempotent=profile.idempotent,
        ) as client:
            # delivery_timeout: a few request timeouts, so that a batch stuck
            # behind a fault ends as info well before the run's drain.
            async with Producer(
                client,
                linger=LINGER_S,
                batch_size=BATCH_BYTES,
                delivery_timeout=4 * wl.config.request_timeout,
                compression=profile.compression,
            ) as producer:
                while not stop.is_set():
                    record_key = None
                    if profile.keyed:
                        # One key per burst, like one entity's events.
                        record_key = f"k{wl.rng.randrange(RECORD_KEYS)}"
                        key = key_partition(record_key, wl.config.partitions)
                    else:
                        key = wl.rng.randrange(wl.config.partitions)
                    for _ in range(wl.rng.randint(1, MAX_BURST)):
                        sent = await self.send(
                            worker, producer, key, next(seq), record_key, profile.idempotent
                        )
                        if not sent:
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
        out["profiles"] = dict(sorted(self.profiles.items()))
        return out
