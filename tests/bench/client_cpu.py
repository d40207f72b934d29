"""The client library's own CPU per produce request, with the network cut out.

    python -m tests.bench.client_cpu [--requests 50000] [--rounds 5]

``AsyncClient.send_encoded`` (what ``produce`` and every batch end in) runs
its idempotence bookkeeping (window, sequence numbers, outcome) around one
``_call``. Here ``_call`` answers at once, so the figure is that bookkeeping
alone, the best of ``--rounds``. Compare two builds with it (``PYTHONPATH``
pointing at the other one) before trusting an end-to-end bench: a change of a
microsecond or two is far below the 2-core VM's noise there.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import trio
from raftlog.client.aio import AsyncClient


class InstantClient(AsyncClient):
    """An AsyncClient whose requests are answered at once, without a socket."""

    async def _call(self, op: str, fields: dict[str, Any], **options: Any) -> dict[str, Any]:
        if op == "init_producer":
            return {"producer_id": 1}
        return {"base_offset": 0}


async def measure(requests: int, rounds: int) -> float:
    """CPU seconds per ``send_encoded``, the best of ``rounds`` runs (after a warm-up)."""
    client = InstantClient(["127.0.0.1:1"])  # never dialled
    blob = b"x" * 100
    for _ in range(requests // 20):
        await client.send_encoded("t", 0, blob, 1, 0)
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(requests):
            await client.send_encoded("t", 0, blob, 1, 0)
        best = min(best, (time.process_time() - started) / requests)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    per_request = trio.run(measure, args.requests, args.rounds)
    print(f"client CPU: {per_request * 1e6:.2f} µs per produce request (best of {args.rounds})")


if __name__ == "__main__":
    main()
