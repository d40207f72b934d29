"""The log checker on hand-written histories: each anomaly caught, good ones pass."""

from __future__ import annotations

from raftlog.jepsen.checker_log import check
from raftlog.jepsen.history import OpType

from .builders import HistoryBuilder


def types_of(ops) -> set[str]:
    return {a.type for a in check(ops).anomalies}


def good_base() -> HistoryBuilder:
    h = HistoryBuilder()
    h.send(0, 0, 1, 0, 0, 10)
    h.send(1, 0, 2, 1, 5, 20)  # concurrent with the first
    h.send(0, 0, 3, 2, 30, 40)
    return h


def test_good_history_with_drain_is_valid() -> None:
    h = good_base()
    h.fetch(2, 0, 0, [(0, 1), (1, 2)], 25, 28)
    h.list_offsets(2, 0, 3, 45, 50)
    h.drain(0, [(0, 1), (1, 2), (2, 3)], 100, 110)
    result = check(h.build())
    assert result.valid, result.to_dict()
    assert result.anomalies == []
    assert result.stats["ops"]["send"]["ok"] == 3


def test_info_send_that_landed_is_fine_and_counted_recovered() -> None:
    h = good_base()
    h.send(3, 0, 4, None, 41, 60, OpType.INFO)
    h.drain(0, [(0, 1), (1, 2), (2, 3), (3, 4)], 100, 110)
    result = check(h.build())
    assert result.valid, result.to_dict()
    assert result.stats["info_sends_recovered"] == 1


def test_info_send_that_never_landed_is_fine() -> None:
    h = good_base()
    h.send(3, 0, 4, None, 41, None, OpType.INFO)  # never completed
    h.drain(0, [(0, 1), (1, 2), (2, 3)], 100, 110)
    result = check(h.build())
    assert result.valid, result.to_dict()
    assert result.stats["info_sends_recovered"] == 0


def test_lost_write_when_a_later_offset_was_read() -> None:
    h = good_base()
    h.drain(0, [(0, 1), (2, 3)], 100, 110)  # value 2 at offset 1 vanished
    result = check(h.build())
    assert not result.valid
    lost = [a for a in result.anomalies if a.type == "lost-write"]
    assert len(lost) == 1 and lost[0].details["value"] == 2
    assert lost[0].ops[0].f == "send"


def test_unseen_after_drain_is_a_failure_but_unseen_without_drain_is_not() -> None:
    h = good_base()
    h.drain(0, [(0, 1), (1, 2)], 100, 110)  # the last ack is beyond the drain's end
    assert "unseen-after-drain" in types_of(h.build())
    assert not check(h.build()).valid
    h2 = good_base()
    h2.fetch(2, 0, 0, [(0, 1), (1, 2)], 45, 50)
    result = check(h2.build())
    assert {a.type for a in result.anomalies} == {"unseen"}
    assert result.valid


def test_duplicate_value_at_two_offsets() -> None:
    h = good_base()
    h.drain(0, [(0, 1), (1, 2), (2, 3), (3, 2)], 100, 110)
    result = check(h.build())
    dups = [a for a in result.anomalies if a.type == "duplicate"]
    assert len(dups) == 1 and dups[0].details["offsets"] == [1, 3]
    assert not result.valid


def test_inconsistent_offsets_between_two_reads() -> None:
    h = good_base()
    h.send(4, 0, 9, None, 41, 42, OpType.INFO)
    h.fetch(2, 0, 2, [(2, 3)], 50, 55)
    h.fetch(3, 0, 2, [(2, 9)], 56, 60)
    result = check(h.build())
    inc = [a for a in result.anomalies if a.type == "inconsistent-offsets"]
    assert inc and inc[0].details["offset"] == 2
    assert set(inc[0].details["values"]) == {3, 9}


def test_ack_offset_disagreeing_with_read_is_inconsistent() -> None:
    h = good_base()
    h.drain(0, [(0, 2), (1, 1), (2, 3)], 100, 110)  # 1 and 2 swapped vs their acks
    assert {"inconsistent-offsets", "duplicate"} <= types_of(h.build())


def test_unexpected_read_of_a_value_never_sent() -> None:
    h = good_base()
    h.drain(0, [(0, 1), (1, 2), (2, 3), (3, 77)], 100, 110)
    assert "unexpected" in types_of(h.build())


def test_aborted_read_of_a_definitely_failed_send() -> None:
    h = good_base()
    h.send(3, 0, 5, None, 41, 43, OpType.FAIL)
    h.drain(0, [(0, 1), (1, 2), (2, 3), (3, 5)], 100, 110)
    result = check(h.build())
    ab = [a for a in result.anomalies if a.type == "aborted-read"]
    assert len(ab) == 1 and ab[0].details["value"] == 5
    assert [o.f for o in ab[0].ops] == ["send", "drain"]


def test_realtime_send_order_violation() -> None:
    h = HistoryBuilder()
    h.send(0, 0, 1, 1, 0, 10)  # acked at offset 1 ...
    h.send(1, 0, 2, 0, 20, 30)  # ... yet a later send landed before it
    h.drain(0, [(0, 2), (1, 1)], 100, 110)
    result = check(h.build())
    order = [a for a in result.anomalies if a.type == "realtime-send-order"]
    assert len(order) == 1
    assert [o.invoke.value["value"] for o in order[0].ops] == [1, 2]


def test_concurrent_sends_may_land_in_any_order() -> None:
    h = HistoryBuilder()
    h.send(0, 0, 1, 1, 0, 30)
    h.send(1, 0, 2, 0, 10, 20)
    h.drain(0, [(0, 2), (1, 1)], 100, 110)
    assert check(h.build()).valid


def test_stale_list_offsets() -> None:
    h = good_base()
    h.list_offsets(2, 0, 2, 45, 50)  # send at offset 2 was acked at 40
    stale = [a for a in check(h.build()).anomalies if a.type == "stale-read"]
    assert len(stale) == 1 and stale[0].details == {"observed": 2, "bound": 3}


def test_list_offsets_going_backwards() -> None:
    h = HistoryBuilder()
    h.send(0, 0, 1, 0, 0, 10)
    h.send(0, 0, 2, None, 11, None, OpType.INFO)
    h.list_offsets(1, 0, 2, 12, 15)
    h.list_offsets(1, 0, 1, 16, 18)
    assert "stale-read" in types_of(h.build())


def test_empty_fetch_after_an_ack_is_stale() -> None:
    h = good_base()
    h.fetch(2, 0, 2, [], 45, 50)
    assert "stale-read" in types_of(h.build())


def test_a_serializable_read_may_be_stale_but_bounds_later_reads() -> None:
    h = good_base()
    h.fetch(2, 0, 2, [], 45, 50, end=2, serializable=True)  # a lagging replica
    assert check(h.build()).valid
    # What it saw was committed: a later linearizable read must see it too.
    h = good_base()
    h.send(0, 0, 4, None, 41, None, OpType.INFO)
    h.fetch(2, 0, 3, [(3, 4)], 45, 50, serializable=True)
    h.list_offsets(3, 0, 3, 55, 60)
    stale = [a for a in check(h.build()).anomalies if a.type == "stale-read"]
    assert len(stale) == 1 and stale[0].details == {"observed": 3, "bound": 4}


def test_a_serializable_read_is_checked_for_everything_but_recency() -> None:
    h = good_base()
    h.send(3, 0, 5, None, 41, 43, OpType.FAIL)
    h.fetch(2, 0, 2, [(2, 3), (3, 5), (4, 77)], 45, 50, serializable=True)
    assert {"aborted-read", "unexpected"} <= types_of(h.build())
    h = good_base()
    h.fetch(2, 0, 1, [(1, 3)], 45, 50, serializable=True)
    assert "inconsistent-offsets" in types_of(h.build())


def test_read_gap_and_wrong_start_offset() -> None:
    h = good_base()
    h.fetch(2, 0, 0, [(0, 1), (2, 3)], 45, 50)
    h.fetch(3, 0, 0, [(1, 2)], 45, 50)
    kinds = types_of(h.build())
    assert {"int-poll-skip", "fetch-offset-mismatch"} <= kinds


def test_nonmonotonic_inside_one_read() -> None:
    h = good_base()
    h.fetch(2, 0, 1, [(1, 2), (0, 1)], 45, 50)
    assert "int-nonmonotonic-poll" in types_of(h.build())


def test_consumer_poll_skip_and_rewind() -> None:
    h = good_base()
    h.send(0, 0, 4, 3, 41, 42)
    h.fetch(5, 0, 0, [(0, 1)], 50, 51, f="poll", consumer="c1")
    h.fetch(5, 0, 2, [(2, 3)], 52, 53, f="poll", consumer="c1")  # skipped offset 1
    h.fetch(5, 0, 1, [(1, 2)], 54, 55, f="poll", consumer="c1")  # and went back
    kinds = types_of(h.build())
    assert {"poll-skip", "nonmonotonic-poll"} <= kinds


def test_consumer_assign_resets_its_position() -> None:
    h = good_base()
    h.fetch(5, 0, 0, [(0, 1), (1, 2)], 50, 51, f="poll", consumer="c1")
    h.op(5, "assign", {"consumer": "c1", "key": 0, "offset": 0}, 52, 53)
    h.fetch(5, 0, 0, [(0, 1)], 54, 55, f="poll", consumer="c1")
    kinds = types_of(h.build())
    assert "nonmonotonic-poll" not in kinds and "poll-skip" not in kinds


def test_committed_offset_going_backwards() -> None:
    h = HistoryBuilder()
    h.op(0, "commit", {"group": "g", "key": 0, "offset": 5}, 0, 10)
    h.op(1, "fetch_committed", {"group": "g", "key": 0}, 20, 30, OpType.OK,
         {"group": "g", "key": 0, "offset": 3})
    reg = [a for a in check(h.build()).anomalies if a.type == "committed-offset-regression"]
    assert len(reg) == 1 and reg[0].details == {"observed": 3, "bound": 5}


def test_committed_offset_read_concurrently_with_the_commit_may_be_old() -> None:
    h = HistoryBuilder()
    h.op(0, "commit", {"group": "g", "key": 0, "offset": 5}, 0, 30)
    h.op(1, "fetch_committed", {"group": "g", "key": 0}, 10, 20, OpType.OK,
         {"group": "g", "key": 0, "offset": None})
    h.op(1, "fetch_committed", {"group": "g", "key": 0}, 40, 50, OpType.OK,
         {"group": "g", "key": 0, "offset": 5})
    assert check(h.build()).valid


def test_node_divergence_in_per_node_drains() -> None:
    h = good_base()
    full = [(0, 1), (1, 2), (2, 3)]
    h.drain(0, full, 100, 110)
    h.drain(0, full, 100, 110, node="n1")
    h.drain(0, full[:2], 100, 110, node="n2")
    div = [a for a in check(h.build()).anomalies if a.type == "node-divergence"]
    assert [a.details["node"] for a in div] == ["n2"]


def test_result_dict_lists_bad_types_and_ops() -> None:
    h = good_base()
    h.drain(0, [(0, 1), (2, 3)], 100, 110)
    d = check(h.build()).to_dict()
    assert d["valid"] is False
    assert d["anomaly_types"] == ["int-poll-skip", "lost-write"]
    assert d["anomalies"]["lost-write"][0]["ops"][0]["invoke"] == {"key": 0, "value": 2}


# ---------------------------------------------------------------- producer order


def producer_send(h: HistoryBuilder, process: str, key: int, value: int, seq: int,
                  offset: int | None, t0: int, t1: int | None,
                  type_: OpType = OpType.OK, producer: str = "p0", *,
                  idempotent: bool = True, acked_in: int | None = None) -> None:
    """One record of a batching producer: its own process, its place in the order.
    ``acked_in``: the partition its ack names (default: ``key``)."""
    inv: dict = {"key": key, "value": value, "producer": producer, "seq": seq}
    if not idempotent:
        inv["idempotent"] = False
    partition = key if acked_in is None else acked_in
    result = {**inv, "offset": offset, "partition": partition} if type_ is OpType.OK else inv
    h.op(process, "send", inv, t0, t1, type_, result)


def test_producer_records_in_sending_order_are_valid() -> None:
    h = HistoryBuilder()
    # Three records in flight at once, acknowledged out of order (two batches).
    producer_send(h, "p0.0", 0, 1, 0, 0, 0, 30)
    producer_send(h, "p0.1", 0, 2, 1, 1, 1, 20)
    producer_send(h, "p0.2", 0, 3, 2, 2, 2, 20)
    # Another producer's records interleave: only each producer's own order counts.
    producer_send(h, "p1.0", 0, 4, 0, 3, 3, 25, producer="p1")
    h.drain(0, [(0, 1), (1, 2), (2, 3), (3, 4)], 100, 110)
    result = check(h.build())
    assert result.valid and result.anomalies == [], result.to_dict()


def test_producer_records_out_of_sending_order_are_caught() -> None:
    h = HistoryBuilder()
    # The acks look fine, but the log (the drain) holds seq 1 before seq 0: what a
    # retried batch overtaken by its successor would leave.
    producer_send(h, "p0.0", 0, 1, 0, None, 0, 30, OpType.INFO)
    producer_send(h, "p0.1", 0, 2, 1, 0, 1, 20)
    h.drain(0, [(0, 2), (1, 1)], 100, 110)
    result = check(h.build())
    assert not result.valid
    [anomaly] = result.by_type()["producer-reorder"]
    assert anomaly.details == {"producer": "p0", "seqs": [0, 1], "offsets": [1, 0]}
    assert [op.process for op in anomaly.ops] == ["p0.0", "p0.1"]


def test_producer_order_uses_the_log_over_the_acks() -> None:
    """Acks in order but the records read the other way round: the read decides
    (and the two sources disagreeing is an anomaly of its own)."""
    h = HistoryBuilder()
    producer_send(h, "p0.0", 0, 1, 0, 0, 0, 10)
    producer_send(h, "p0.1", 0, 2, 1, 1, 0, 10)
    h.drain(0, [(0, 2), (1, 1)], 100, 110)
    assert {"producer-reorder", "inconsistent-offsets"} <= types_of(h.build())


def test_producer_order_is_checked_in_every_read_not_only_the_first() -> None:
    """A log rewritten under earlier reads: the first read found the records in
    order, a later one finds them swapped. The first-place pass sees no reorder,
    the later read's view does (the moved records are anomalies of their own)."""
    h = HistoryBuilder()
    producer_send(h, "p0.0", 0, 1, 0, 0, 0, 10)
    producer_send(h, "p0.1", 0, 2, 1, 1, 0, 10)
    h.drain(0, [(0, 1), (1, 2)], 100, 110)
    h.drain(0, [(0, 2), (1, 1)], 200, 210)
    result = check(h.build())
    assert not result.valid
    [anomaly] = result.by_type()["producer-reorder"]
    assert anomaly.details == {"producer": "p0", "seqs": [0, 1], "offsets": [1, 0]}
    assert [op.process for op in anomaly.ops[:2]] == ["p0.0", "p0.1"]


def test_producer_records_without_a_place_say_nothing() -> None:
    h = HistoryBuilder()
    producer_send(h, "p0.0", 0, 1, 0, 0, 0, 10)
    producer_send(h, "p0.1", 0, 2, 1, None, 1, 10, OpType.FAIL)  # never appended
    producer_send(h, "p0.2", 0, 3, 2, None, 2, 50, OpType.INFO)  # lost with a fault
    producer_send(h, "p0.3", 0, 4, 3, 1, 3, 60)
    # The same producer on another partition keeps its own order there.
    producer_send(h, "p0.4", 1, 5, 4, 0, 4, 60)
    h.drain(0, [(0, 1), (1, 4)], 100, 110)
    h.drain(1, [(0, 5)], 100, 110)
    result = check(h.build())
    assert result.valid and result.anomalies == [], result.to_dict()


def test_a_non_idempotent_producers_reordered_records_are_allowed() -> None:
    """Idempotence off: two batches in flight may land in either order (Kafka's
    max.in.flight > 1 without idempotence), so the order check skips it."""
    h = HistoryBuilder()
    producer_send(h, "p2.0", 0, 1, 0, 1, 0, 30, producer="p2", idempotent=False)
    producer_send(h, "p2.1", 0, 2, 1, 0, 1, 20, producer="p2", idempotent=False)
    h.drain(0, [(0, 2), (1, 1)], 100, 110)
    result = check(h.build())
    assert result.valid and result.anomalies == [], result.to_dict()


def test_a_non_idempotent_producers_duplicate_is_still_caught() -> None:
    """Its client reports an ambiguous produce instead of retrying it, so a
    record in the log twice is a bug even without idempotence."""
    h = HistoryBuilder()
    producer_send(h, "p2.0", 0, 1, 0, 0, 0, 30, producer="p2", idempotent=False)
    h.drain(0, [(0, 1), (1, 1)], 100, 110)
    result = check(h.build())
    assert not result.valid
    [anomaly] = result.by_type()["duplicate"]
    assert anomaly.details == {"value": 1, "offsets": [0, 1]}


def test_a_record_acknowledged_in_another_partition_is_caught() -> None:
    """A keyed record whose ack names a partition other than the one its key
    maps to (the history's key): wrong-partition, besides the read anomalies
    the misplaced record causes."""
    h = HistoryBuilder()
    producer_send(h, "p1.0", 0, 1, 0, 0, 0, 10, producer="p1")
    producer_send(h, "p1.1", 0, 2, 1, 0, 11, 20, producer="p1", acked_in=1)
    h.drain(0, [(0, 1)], 100, 110)
    h.drain(1, [(0, 2)], 100, 110)
    result = check(h.build())
    assert not result.valid
    [anomaly] = result.by_type()["wrong-partition"]
    assert anomaly.key == 0 and anomaly.details == {"value": 2, "partition": 1}
    assert [op.process for op in anomaly.ops] == ["p1.1"]
