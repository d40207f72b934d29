"""What the leader's ordering of a producer's batches costs per proposal.

    python -m tests.bench.producer_order_cost [--commands 21] [--number 20000]

Times ``hold_early_batches`` and ``in_sequence_order`` (server/producer_order.py)
on one proposal of ``--commands`` idempotent single-record produces, each of
another producer and each at its producer's next sequence: the common case,
where nothing is held or moved. The 64-client bench's entries carry about 21
produces. ``next_sequence`` is the real ``Group.next_sequence`` over the real
``PartitionStateMachine.next_sequence``, on stand-ins that hold only the
fields those read. Best of three timeit repeats.
"""

from __future__ import annotations

import argparse
import timeit
from typing import Any

from raftlog.log.commands import Produce
from raftlog.log.partition import PartitionStateMachine, ProducerBatch
from raftlog.server.groups import Group
from raftlog.server.producer_order import hold_early_batches, in_sequence_order
from raftlog.server.waiters import Waiter


class _StateMachine:
    next_sequence = PartitionStateMachine.next_sequence

    def __init__(self, producers: int) -> None:
        self.producers = {pid: [ProducerBatch(10, 1, 0, 0)] for pid in range(producers)}


class _Group:
    next_sequence = Group.next_sequence

    def __init__(self, producers: int) -> None:
        self.sm = _StateMachine(producers)
        self.proposed_next_seq: dict[int, int] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=21)
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    group = _Group(args.commands)
    live: list[tuple[Any, Waiter]] = [
        (Produce(b"r", 1, 0, pid, 11), Waiter()) for pid in range(args.commands)
    ]
    held, _, _ = hold_early_batches(live, [], group.next_sequence, 0.0, 0.5, 256)
    assert held is live  # the common case: nothing held
    for name, fn in (
        ("hold_early_batches", lambda: hold_early_batches(live, [], group.next_sequence, 0, 1, 1)),
        ("in_sequence_order", lambda: in_sequence_order(live)),
    ):
        best = min(timeit.repeat(fn, number=args.number, repeat=3)) / args.number
        print(
            f"{name}: {best * 1e6:.2f} µs per {args.commands}-command proposal, "
            f"{best * 1e6 / args.commands:.3f} µs per command"
        )


if __name__ == "__main__":
    main()
