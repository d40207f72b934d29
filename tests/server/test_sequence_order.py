"""producer_order.in_sequence_order: a proposal's produces put back in each producer's order."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from raftlog.log.commands import CommitOffset, Produce
from raftlog.server.producer_order import in_sequence_order
from raftlog.server.waiters import Waiter


def _produce(producer_id: int | None, sequence: int | None) -> Produce:
    return Produce(records=b"r", count=1, crc=0, producer_id=producer_id, sequence=sequence)


# (producer id or None for a plain produce, sequence) or a non-produce command.
_commands = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([None, 1, 2, 3]), st.integers(0, 6)).map(
            lambda t: _produce(t[0], None if t[0] is None else t[1])
        ),
        st.just(CommitOffset(group="g", offset=0)),
    ),
    max_size=12,
)


def _idempotent(cmd: Any) -> bool:
    return type(cmd) is Produce and cmd.producer_id is not None


@given(_commands)
def test_each_producer_in_sequence_order_and_nothing_else_moves(commands):
    live = [(cmd, Waiter()) for cmd in commands]
    ordered = in_sequence_order(live)
    assert sorted(map(id, ordered)) == sorted(map(id, live))  # the same pairs, each once
    for (cmd, waiter), (was_cmd, was_waiter) in zip(ordered, live, strict=True):
        if not _idempotent(was_cmd):
            assert (cmd, waiter) == (was_cmd, was_waiter)  # stays where it was
        else:
            assert _idempotent(cmd) and cmd.producer_id == was_cmd.producer_id
    for pid in {cmd.producer_id for cmd in commands if _idempotent(cmd)}:
        batches = [cmd for cmd, _ in ordered if _idempotent(cmd) and cmd.producer_id == pid]
        sequences = [cmd.sequence for cmd in batches]
        assert sequences == sorted(sequences)


def test_a_retry_stays_after_its_original_and_an_ordered_list_is_returned_as_is():
    original, retry, later = _produce(1, 3), _produce(1, 3), _produce(1, 1)
    live = [(original, Waiter()), (retry, Waiter()), (later, Waiter())]
    ordered = [cmd for cmd, _ in in_sequence_order(live)]
    assert all(c is o for c, o in zip(ordered, [later, original, retry], strict=True)), ordered
    in_order = [(later, Waiter()), (original, Waiter())]
    assert in_sequence_order(in_order) is in_order
