"""The consumer-group checker on hand-written histories: each anomaly kind caught,
a history with rebalance duplicates valid, the liveness notes and statistics."""

from __future__ import annotations

from typing import Any

from raftlog.jepsen.checker_groups import check
from raftlog.jepsen.history import OpType

from .builders import HistoryBuilder

LOG = [(0, 10), (1, 11), (2, 12), (3, 13)]  # partition 0: offset -> value


def gpoll(h: HistoryBuilder, consumer: str, generation: int | None, records: list[tuple],
          t0: int, t1: int, *, stint: int = 0, assigned: list[int] | None = None,
          member: str | None = None) -> None:
    """A group poll: records are (partition, offset, value)."""
    value = {"consumer": consumer, "member": member or f"m-{consumer}",
             "generation": generation, "stint": stint,
             "assigned": [0] if assigned is None else assigned,
             "records": [list(r) for r in records]}
    h.op(consumer, "gpoll", {"consumer": consumer}, t0, t1, OpType.OK, value)


def gcommit(h: HistoryBuilder, consumer: str, offsets: dict[int, int], t0: int, t1: int,
            type_: OpType = OpType.OK) -> None:
    value: dict[str, Any] = {"consumer": consumer, "offsets": [[p, o] for p, o in offsets.items()]}
    h.op(consumer, "gcommit", value, t0, t1, type_, value)


def final(h: HistoryBuilder, key: int, offset: int | None, t: int) -> None:
    h.op("final", "gcommitted", {"group": "g", "key": key}, t, t + 1, OpType.OK,
         {"group": "g", "key": key, "offset": offset})


def rebalance_history() -> HistoryBuilder:
    """c0 owns p0 in generation 1, reads 0..2 but its revoke commits 2 (offset 2 was
    handed out, not processed); c1 owns p0 in generation 2 and reads 2 again, then 3."""
    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10), (0, 1, 11)], 10, 20)
    gcommit(h, "c0", {0: 2}, 21, 25)
    gpoll(h, "c0", 1, [(0, 2, 12)], 26, 30)
    gpoll(h, "c0", 2, [], 40, 50, stint=1, assigned=[])  # generation 2: c0 has nothing
    gpoll(h, "c1", 2, [(0, 2, 12), (0, 3, 13)], 41, 60)
    h.nemesis("heal", 55)
    gcommit(h, "c1", {0: 4}, 61, 65)
    h.drain(0, LOG, 100, 110)
    final(h, 0, 4, 120)
    return h


def test_rebalance_duplicates_are_valid_and_counted() -> None:
    result = check(rebalance_history().build())
    assert result.valid and result.anomalies == [], result.to_dict()
    assert result.liveness == []
    s = result.stats
    assert s["duplicates"] == 1 and s["explained_by_rebalance"] == 1 and s["unexplained"] == 0
    assert s["delivered_distinct"] == 4
    assert s["rebalances_seen"] == 1  # c0 went from generation 1 to 2
    assert s["final_committed"] == {"0": 4} and s["drained_end"] == {"0": 4}


def test_a_new_coordinator_reusing_a_generation_number_is_a_new_stint() -> None:
    # Generations restart on a new coordinator and member ids are kept: only the
    # stint tells the two assignments apart, so rereading offset 0 is a duplicate.
    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10), (0, 1, 11)], 10, 20, stint=0)
    gpoll(h, "c0", None, [], 30, 40, stint=1, assigned=[])
    gpoll(h, "c0", 1, [(0, 0, 10), (0, 1, 11), (0, 2, 12), (0, 3, 13)], 50, 60, stint=2)
    h.drain(0, LOG, 100, 110)
    final(h, 0, 4, 120)
    result = check(h.build())
    assert result.valid, result.to_dict()
    assert result.stats["explained_by_rebalance"] == 2
    assert result.stats["rebalances_seen"] == 1


def test_final_commit_past_an_undelivered_record_is_group_lost() -> None:
    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10)], 10, 20)
    gpoll(h, "c1", 2, [(0, 2, 12), (0, 3, 13)], 30, 40)  # started at 2: offset 1 never read
    h.drain(0, LOG, 100, 110)
    final(h, 0, 4, 120)
    result = check(h.build())
    assert not result.valid
    lost = [a for a in result.anomalies if a.type == "group-lost"]
    assert {a.type for a in result.anomalies} == {"group-lost"}
    assert lost[0].details["missing"] == [1] and lost[0].details["committed"] == 4


def test_a_commit_acknowledged_before_its_records_were_delivered_is_group_lost() -> None:
    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10), (0, 1, 11)], 10, 20)
    gcommit(h, "c0", {0: 3}, 21, 25)  # offset 2 not delivered yet
    gpoll(h, "c1", 2, [(0, 2, 12), (0, 3, 13)], 30, 40)  # delivered only later
    h.drain(0, LOG, 100, 110)
    final(h, 0, 4, 120)
    result = check(h.build())
    assert {a.type for a in result.anomalies} == {"group-lost"}
    (lost,) = result.anomalies
    assert lost.details == {"committed": 3, "undelivered": 2, "commits": 1}
    assert lost.ops[0].f == "gcommit"


def test_an_unacknowledged_commit_is_not_judged() -> None:
    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10)], 10, 20)
    gcommit(h, "c0", {0: 3}, 21, 25, OpType.INFO)
    gpoll(h, "c0", 1, [(0, 1, 11), (0, 2, 12), (0, 3, 13)], 30, 40)
    h.drain(0, LOG, 100, 110)
    final(h, 0, 4, 120)
    assert check(h.build()).valid


def test_gap_between_polls_of_one_generation_is_group_skip() -> None:
    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10), (0, 1, 11)], 10, 20)
    gpoll(h, "c0", 1, [(0, 3, 13)], 30, 40)
    gpoll(h, "c1", 2, [(0, 2, 12)], 50, 60)  # someone else reads 2: still a skip in c0
    h.drain(0, LOG, 100, 110)
    final(h, 0, 4, 120)
    result = check(h.build())
    assert {a.type for a in result.anomalies} == {"group-skip"}
    assert result.anomalies[0].details["prev"] == 1 and result.anomalies[0].details["next"] == 3


def test_gap_inside_one_poll_is_group_skip() -> None:
    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10), (0, 2, 12)], 10, 20)
    h.drain(0, LOG, 100, 110)
    assert {a.type for a in check(h.build()).anomalies} == {"group-skip"}


def test_going_back_inside_one_generation_is_group_nonmonotonic() -> None:
    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10), (0, 1, 11), (0, 2, 12)], 10, 20)
    gpoll(h, "c0", 1, [(0, 1, 11)], 30, 40)
    h.drain(0, LOG, 100, 110)
    final(h, 0, 3, 120)
    result = check(h.build())
    assert {a.type for a in result.anomalies} == {"group-nonmonotonic"}
    assert result.stats["unexplained"] == 1  # the same stint read offset 1 twice


def test_final_committed_offset_beyond_the_drained_end() -> None:
    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10), (0, 1, 11), (0, 2, 12), (0, 3, 13)], 10, 20)
    h.drain(0, LOG, 100, 110)
    final(h, 0, 5, 120)
    result = check(h.build())
    assert "group-commit-beyond-end" in {a.type for a in result.anomalies}
    beyond = next(a for a in result.anomalies if a.type == "group-commit-beyond-end")
    assert beyond.details == {"committed": 5, "end": 4}


def test_delivered_value_differing_from_the_drain_is_group_wrong_value() -> None:
    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10), (0, 1, 99)], 10, 20)  # the log holds 11 at offset 1
    gpoll(h, "c0", 1, [(0, 2, 12), (0, 3, 13), (0, 4, 14)], 30, 40)  # 4 is past the end
    h.drain(0, LOG, 100, 110)
    final(h, 0, 4, 120)
    result = check(h.build())
    assert {a.type for a in result.anomalies} == {"group-wrong-value"}
    assert sorted(a.details["offset"] for a in result.anomalies) == [1, 4]


def test_undelivered_records_and_no_delivery_after_the_heal_is_a_liveness_note() -> None:
    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10)], 10, 20)
    h.nemesis("heal", 30)
    gpoll(h, "c0", 1, [], 40, 50)  # owned, but nothing comes any more
    h.drain(0, LOG, 100, 110)
    h.drain(1, [(0, 20)], 100, 110)  # partition 1: nobody ever owned it
    final(h, 0, 1, 120)
    result = check(h.build())
    assert result.valid  # safety holds; the group is stuck
    assert any("partition 0 delivered nothing after the final heal" in n
               for n in result.liveness), result.liveness
    assert any("partition 1 was never assigned" in n for n in result.liveness)


def test_unowned_time_is_the_gap_between_owners() -> None:
    s = 10**9  # one second in history time
    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10)], 0, 1 * s)
    gpoll(h, "c0", 1, [(0, 1, 11)], 1 * s, 2 * s)
    gpoll(h, "c0", 2, [], 3 * s, 4 * s, stint=1, assigned=[])
    gpoll(h, "c1", 2, [(0, 2, 12)], 4 * s, 5 * s)  # p0 unowned from 2 s to 5 s
    gpoll(h, "c1", 2, [(0, 3, 13)], 5 * s, 6 * s)
    gpoll(h, "c0", 2, [], 6 * s, 7 * s, stint=1, assigned=[])  # the end: 1 s more
    h.drain(0, LOG, 8 * s, 9 * s)
    result = check(h.build())
    assert result.valid, result.to_dict()
    assert result.stats["unowned"]["0"] == {"total_s": 4.0, "max_s": 3.0, "windows": 2}


def test_check_history_runs_the_group_checker_and_the_summary_names_its_anomalies() -> None:
    from raftlog.jepsen.report import group_lines
    from raftlog.jepsen.runner import check_history

    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10), (0, 2, 12)], 10, 20)
    h.drain(0, LOG, 100, 110)
    results = check_history(h.build(), linearizability=False)
    assert not results["valid"] and results["groups"]["anomaly_types"] == ["group-skip"]
    lines = group_lines(results)
    assert lines[0].startswith("groups: 2 deliveries in 1 polls")
    assert any(line.startswith("anomaly group-skip: 1") for line in lines)


def test_a_stuck_group_makes_check_history_invalid_through_liveness() -> None:
    from raftlog.jepsen.runner import check_history

    h = HistoryBuilder()
    gpoll(h, "c0", 1, [(0, 0, 10)], 10, 20)
    h.nemesis("heal", 30)
    h.drain(0, LOG, 100, 110)
    h.send(1, 0, 10, 0, 1, 2).send(1, 0, 11, 1, 3, 4).send(1, 0, 12, 2, 5, 6)
    h.send(1, 0, 13, 3, 7, 8)
    results = check_history(h.build(), linearizability=False)
    assert results["log"]["valid"] and results["groups"]["valid"]
    assert not results["valid"] and results["liveness"], results["liveness"]
