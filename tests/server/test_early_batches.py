"""producer_order.hold_early_batches: a batch ahead of its predecessor waits for it."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from raftlog.log.commands import CommitOffset, Produce
from raftlog.server.producer_order import Parked, hold_early_batches
from raftlog.server.waiters import Waiter

NOW = 100.0
HOLD = 0.5


def _produce(producer_id: int | None, sequence: int | None, count: int = 1) -> Produce:
    return Produce(records=b"r", count=count, crc=0, producer_id=producer_id, sequence=sequence)


def _known(next_seqs: dict[int, int]) -> Any:
    return next_seqs.get


def _apply_in_sequence_order(
    next_seqs: dict[int, int], commands: list[Any]
) -> tuple[dict[int, int], set[int]]:
    """The apply's KIP-98 check over ``commands``, each producer's in sequence
    order: (each producer's next sequence after them, ids of those refused for a gap)."""
    expected = dict(next_seqs)
    gaps: set[int] = set()
    batches = [c for c in commands if type(c) is Produce and c.producer_id in next_seqs]
    for cmd in sorted(batches, key=lambda c: c.sequence):
        want = expected[cmd.producer_id]
        if cmd.sequence == want:
            expected[cmd.producer_id] = want + cmd.count
        elif cmd.sequence > want:
            gaps.add(id(cmd))
    return expected, gaps


# Producers 1-2 are known to the partition (next sequence 0-4); 3 is not.
_next_seqs = st.fixed_dictionaries({1: st.integers(0, 4), 2: st.integers(0, 4)})
_command = st.one_of(
    st.builds(_produce, st.sampled_from([1, 2, 3]), st.integers(0, 10), st.integers(1, 3)),
    st.just(_produce(None, None)),
    st.just(CommitOffset(group="g", offset=0)),
)
# A parked command: held until before NOW (its hold ran out) or after it.
_parked = st.tuples(_command, st.sampled_from([NOW - 0.1, NOW + 0.1]), st.booleans())


@given(
    _next_seqs,
    st.lists(_parked, max_size=6),
    st.lists(_command, max_size=10),
    st.integers(0, 8),
)
def test_only_batches_ahead_of_their_predecessor_wait_and_nothing_is_lost(
    next_seqs, parked_spec, commands, max_parked
):
    parked = []
    for cmd, until, answered in parked_spec:
        waiter = Waiter()
        if answered:
            waiter.resolve(None)  # its handler gave up and it was answered meanwhile
        parked.append(Parked(cmd, waiter, until))
    live = [(cmd, Waiter()) for cmd in commands]
    to_propose, still, overdue = hold_early_batches(
        live, parked, _known(next_seqs), NOW, HOLD, max_parked
    )

    # Every unanswered command comes out exactly once; answered parked ones are dropped.
    came_in = [p.waiter for p in parked if not p.waiter.done] + [w for _, w in live]
    came_out = [w for _, w in to_propose] + [p.waiter for p in still]
    assert sorted(map(id, came_out)) == sorted(map(id, came_in))
    assert len(still) <= max_parked
    for p in still:
        # Only known producers' sequenced batches, and only while their hold lasts.
        assert type(p.cmd) is Produce and p.cmd.producer_id in next_seqs
        assert p.until > NOW
        assert p.until in (NOW + 0.1, NOW + HOLD)
    proposed = [cmd for cmd, _ in to_propose]
    expected, gaps = _apply_in_sequence_order(next_seqs, proposed)
    for p in still:
        assert p.cmd.sequence > expected[p.cmd.producer_id]  # still ahead: right to wait
    if len(still) < max_parked:
        # The cap forced nothing out: a proposed batch refused for a gap is one
        # whose hold ran out.
        expired = {id(p.cmd) for p in parked if p.until <= NOW and not p.waiter.done}
        assert gaps <= expired
    # What the leader counts as overdue (raftlog_produce_batches_overdue_total)
    # is exactly what the apply will refuse for a gap.
    assert overdue == len(gaps)


def test_the_retries_of_a_pipeline_arriving_in_any_order_are_proposed_in_order():
    """Batches 1-3 of a producer whose batch 0 is applied reach a new leader
    over three turns as 3, 2, 1: 3 and 2 wait, and 1 brings them all."""
    next_seqs = {7: 1}
    one, two, three = (_produce(7, s) for s in (1, 2, 3))
    parked: list[Parked] = []
    proposed: list[Any] = []
    holds: list[dict[int, float]] = []
    for turn, cmd in enumerate([three, two, one]):
        out, parked, overdue = hold_early_batches(
            [(cmd, Waiter())], parked, _known(next_seqs), NOW + turn * 0.1, HOLD, 16
        )
        assert overdue == 0
        proposed.append([c for c, _ in out])
        holds.append({p.cmd.sequence: p.until for p in parked})
    assert proposed[0] == [] and proposed[1] == []
    assert sorted(c.sequence for c in proposed[2]) == [1, 2, 3] and parked == []
    # Each hold ends HOLD after its batch arrived; a later turn does not extend it.
    assert holds[0] == {3: NOW + HOLD}
    assert holds[1] == {3: NOW + HOLD, 2: NOW + 0.1 + HOLD}


def test_a_held_batch_is_proposed_when_its_hold_runs_out():
    parked = [Parked(_produce(7, 5), Waiter(), NOW + HOLD)]
    out, still, overdue = hold_early_batches(
        [], parked, _known({7: 1}), NOW + HOLD - 0.01, HOLD, 16
    )
    assert out == [] and len(still) == 1 and overdue == 0
    out, still, overdue = hold_early_batches([], still, _known({7: 1}), NOW + HOLD, HOLD, 16)
    assert [c.sequence for c, _ in out] == [5] and still == []
    assert overdue == 1  # proposed still ahead of sequence 1: the apply refuses it


def test_unknown_producers_and_in_order_lists_are_never_held():
    unknown = [(_produce(9, 4), Waiter())]  # forgotten by expiry: the refusal resets it
    out, still, overdue = hold_early_batches(unknown, [], _known({7: 0}), NOW, HOLD, 16)
    assert out is unknown and still == [] and overdue == 0
    in_order = [(_produce(7, 0, count=2), Waiter()), (_produce(7, 2), Waiter())]
    out, still, overdue = hold_early_batches(in_order, [], _known({7: 0}), NOW, HOLD, 16)
    assert out is in_order and still == [] and overdue == 0


def test_beyond_the_cap_the_longest_held_are_released_first():
    parked = [Parked(_produce(7, s), Waiter(), NOW + s / 10) for s in (4, 3, 5)]
    out, still, overdue = hold_early_batches([], parked, _known({7: 0}), NOW, HOLD, 2)
    assert [c.sequence for c, _ in out] == [3] and overdue == 1
    assert sorted(p.cmd.sequence for p in still) == [4, 5]
