"""A producer's batches on the leader, put in sequence order before they are proposed.

``in_sequence_order`` sorts one proposal's batches; ``hold_early_batches``
holds a batch that reaches the leader ahead of its predecessor.

A producer pipelines up to MAX_IN_FLIGHT batches per partition. When their
attempts fail together (the leader died, the connection dropped) each batch
retries on its own, after its own jittered backoff, so the retries reach the
new leader in any order. Proposed as they come, a batch whose predecessor has
not arrived yet is refused at apply (OUT_OF_ORDER_SEQUENCE: nothing appended),
a whole replicated entry spent on a refusal, and the client retries it after
another commit, and again while the predecessor is still on its way.

So the leader holds such a batch back ("parks" it) until the batch before it
has been proposed, for at most a bounded time (``hold_s``), and then proposes
it in sequence order with its predecessor (``in_sequence_order``). This is
only a delay, never a decision: the apply's sequence check (KIP-98, in
log/partition.py) still judges every batch against the committed state. A
held batch is unanswered, so proposing it after commands that arrived later
is still a valid linearization. When the hold runs out the batch is proposed
anyway and the apply refuses it as before, so a predecessor that never comes
costs the client ``hold_s`` once per attempt, not its answer.

Only producers the partition knows are held: an unknown producer's first
batch must be sequence 0, and a client opens a new producer id with sequence
0 alone (client/aio.py ``_SeqState.opening``). A later sequence from an
unknown producer means the partition forgot it (producer expiry), and the
predecessor will never come: the refusal is what tells the client to start a
fresh producer id, so it is given at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from raftlog.log.commands import Produce

from .waiters import Waiter


@dataclass(slots=True)
class Parked:
    """A command held back until ``until`` (trio clock)."""

    cmd: Any
    waiter: Waiter
    until: float


class HoldOutcome(NamedTuple):
    """What ``hold_early_batches`` decided for one turn of a group."""

    to_propose: list[tuple[Any, Waiter]]
    parked: list[Parked]
    # Batches in ``to_propose`` still ahead of their predecessor: their hold ran
    # out (or the cap let them go), so the apply will refuse them as
    # OUT_OF_ORDER_SEQUENCE. Counted for raftlog_produce_batches_overdue_total.
    overdue: int


def hold_early_batches(
    live: list[tuple[Any, Waiter]],
    parked: list[Parked],
    next_sequence: Callable[[int], int | None],
    now: float,
    hold_s: float,
    max_parked: int,
) -> HoldOutcome:
    """Split the parked and the newly queued commands into (to propose, to park).

    ``next_sequence(pid)`` is the sequence the producer's next batch must
    have, counting batches proposed and not yet applied; None for a producer
    the partition does not know. For each producer, its batches are walked in
    sequence order from there: a batch at the expected sequence is proposed
    and moves the expectation past itself; one below it (a retry, or a
    duplicate) is proposed for the apply to answer; one above it waits, unless
    its hold has run out. At most ``max_parked`` stay parked (those held
    longest are released first). Waiters already answered (their handler gave
    up) are dropped. The commands to propose keep their arrival order, parked
    ones first: ``in_sequence_order`` then orders each producer's batches.
    """
    if not parked and _all_expected(live, next_sequence):
        return HoldOutcome(live, parked, 0)  # the common case: nothing held, nothing copied
    held: list[tuple[Any, Waiter, float | None]] = [
        (p.cmd, p.waiter, p.until) for p in parked if not p.waiter.done
    ]
    candidates = held + [(cmd, waiter, None) for cmd, waiter in live]
    by_producer: dict[int, list[int]] = {}
    for i, (cmd, _, _) in enumerate(candidates):
        if (pid := sequenced_producer(cmd)) is not None:
            by_producer.setdefault(pid, []).append(i)
    park: set[int] = set()
    ahead: set[int] = set()  # batches whose predecessor has not been proposed
    for pid, indexes in by_producer.items():
        expected = next_sequence(pid)
        if expected is None:
            continue  # unknown producer: the apply's refusal is the answer
        for i in sorted(indexes, key=lambda i: candidates[i][0].sequence):
            cmd, _, until = candidates[i]
            if cmd.sequence == expected:
                expected += cmd.count
            elif cmd.sequence > expected:
                ahead.add(i)
                if until is None or now < until:
                    park.add(i)
    if len(park) > max_parked:
        by_age = sorted(park, key=lambda i: _until(candidates[i][2], now, hold_s))
        park.difference_update(by_age[: len(park) - max_parked])
    to_propose = [(cmd, waiter) for i, (cmd, waiter, _) in enumerate(candidates) if i not in park]
    still_parked = [
        Parked(cmd, waiter, _until(until, now, hold_s))
        for i, (cmd, waiter, until) in enumerate(candidates)
        if i in park
    ]
    return HoldOutcome(to_propose, still_parked, len(ahead) - len(park))


def _all_expected(
    live: list[tuple[Any, Waiter]], next_sequence: Callable[[int], int | None]
) -> bool:
    """No sequenced produce in ``live`` (in its order) is ahead of its producer."""
    expected: dict[int, int | None] = {}
    for cmd, _ in live:
        if (pid := sequenced_producer(cmd)) is None:
            continue
        want = expected[pid] if pid in expected else next_sequence(pid)
        if want is None:
            continue  # unknown producer: never held
        if cmd.sequence > want:
            return False
        # As hold_early_batches walks: only the batch at the expected sequence
        # moves it (a retry below it does not).
        expected[pid] = want + cmd.count if cmd.sequence == want else want
    return True


def _until(until: float | None, now: float, hold_s: float) -> float:
    return now + hold_s if until is None else until


def in_sequence_order(live: list[tuple[Any, Waiter]]) -> list[tuple[Any, Waiter]]:
    """``live`` with each producer's idempotent produces sorted by sequence.

    A producer's pipelined batches can reach the leader out of order: after a
    timeout the client forgets the leader, and its next batches of the
    partition go to other nodes and come back by redirects of different
    lengths (a node stalled in a slow fsync answers seconds late). In one
    proposal, a batch ahead of its predecessor would be refused at apply
    (OUT_OF_ORDER_SEQUENCE) and its retry would wait for another commit. The
    commands of one proposal are all unanswered, so any order of them is a
    valid linearization: putting a producer's batches in sequence order costs
    nothing. Each producer's batches keep the positions its batches had, so
    other commands do not move. Batches in different proposals are still
    judged in log order at apply.
    """
    if len(live) < 2:
        return live
    last: dict[int, int] = {}
    for cmd, _ in live:
        if (pid := sequenced_producer(cmd)) is not None:
            previous = last.get(pid)
            if previous is not None and cmd.sequence < previous:
                break
            last[pid] = cmd.sequence
    else:
        return live  # the common case: already in order
    positions: dict[int, list[int]] = {}
    for i, (cmd, _) in enumerate(live):
        if (pid := sequenced_producer(cmd)) is not None:
            positions.setdefault(pid, []).append(i)
    ordered = list(live)
    for indexes in positions.values():
        # sorted() is stable: a retry queued with its original stays after it.
        by_sequence = sorted((live[i] for i in indexes), key=lambda item: item[0].sequence)
        for i, item in zip(indexes, by_sequence, strict=True):
            ordered[i] = item
    return ordered


def sequenced_producer(cmd: Any) -> int | None:
    """The producer id of an idempotent produce with a sequence, else None."""
    if type(cmd) is Produce and cmd.sequence is not None:
        return cmd.producer_id
    return None
