"""The batching producer's own CPU per record, with no network and no node.

    python -m tests.bench.producer_cpu [--records 600000] [--value-bytes 100]

``Producer.send`` is the hot path of every batching client (about a third of
the client's CPU per record in ``raftlog bench produce --batch``). This runs it
against a stand-in client whose ``send_pieces`` answers at once, so the
figure is the producer's batching, sealing and encoding alone: compare two
builds with it (``PYTHONPATH`` pointing at the other one) before trusting an
end-to-end bench, whose noise on this 2-core VM is larger than a change to
``send`` usually is.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio
from raftlog.client.models import BatchMetadata, EncodedPiece, PieceOutcome, Resplit
from raftlog.client.producer import Producer
from raftlog.client.protocol import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_RECORD_BYTES


class InstantClient:
    """What Producer uses of an AsyncClient: one partition, every batch acknowledged."""

    max_record_bytes = DEFAULT_MAX_RECORD_BYTES
    max_batch_bytes = DEFAULT_MAX_BATCH_BYTES

    def max_message_bytes(self, topic: str) -> int | None:
        return None

    def metadata_stale(self, max_age: float | None = None) -> bool:
        return False

    async def partitions_for(self, topic: str) -> int:
        return 1

    async def choose_partition(self, topic: str, key: bytes | None) -> int:
        return 0

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
        if on_allocated is not None:
            on_allocated()
        return [
            PieceOutcome(first, BatchMetadata(topic, partition, 0, count), None)
            for first, _blob, count, _crc in pieces
        ]


async def measure(records: int, value_bytes: int) -> float:
    """CPU seconds per record of ``records`` sends and a flush (after a warm-up)."""
    client: Any = InstantClient()
    value = b"x" * value_bytes
    async with Producer(client, linger=10.0) as producer:
        send = producer.send
        for _ in range(records // 20):  # warm-up: the queue, the sender task
            await send("t", value)
        await producer.flush()
        started = time.process_time()
        for _ in range(records):
            await send("t", value)
        await producer.flush()
        return (time.process_time() - started) / records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=600_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    args = parser.parse_args()
    per_record = trio.run(measure, args.records, args.value_bytes)
    print(f"producer CPU: {per_record * 1e6:.2f} µs per record ({args.records:,} records)")


if __name__ == "__main__":
    main()
