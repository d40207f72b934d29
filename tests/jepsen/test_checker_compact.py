"""The compacted-topic checker on hand-written histories: each anomaly caught, and
the removals compaction is allowed to make pass."""

from __future__ import annotations

from typing import Any

from raftlog.jepsen import replicas
from raftlog.jepsen.checker_compact import check, is_compact_history
from raftlog.jepsen.history import OpType
from raftlog.jepsen.runner import check_history

from .builders import HistoryBuilder

MS = 1_000_000  # builder times are nanoseconds
RETENTION_MS = 1000


class CompactHistory(HistoryBuilder):
    """Sends and reads in the compact workload's shapes, on partition 0."""

    def config(self, retention_ms: int = RETENTION_MS) -> CompactHistory:
        value = {"cleanup_policy": "compact", "delete_retention_ms": retention_ms}
        self.op("setup", "topic_config", {}, 0, 0, OpType.OK, value)
        return self

    def put(self, p: Any, ident: int, k: str, offset: int | None, t0: int, t1: int | None,
            type_: OpType = OpType.OK, tombstone: bool = False) -> CompactHistory:
        inv = {"key": 0, "value": ident, "k": k, "tombstone": tombstone}
        result = {**inv, "offset": offset} if type_ is OpType.OK else inv
        self.op(p, "send", inv, t0, t1, type_, result)
        return self

    def read(self, p: Any, offset: int, rows: list[tuple[int, int, str, bool]], t0: int,
             t1: int, end: int | None = None, f: str = "fetch") -> CompactHistory:
        inv = {"key": 0, "offset": offset}
        res: dict[str, Any] = {**inv, "records": [list(r) for r in rows]}
        if end is not None:
            res["end"] = end
        self.op(f"{f}-{p}" if f == "drain" else p, f, inv, t0, t1, OpType.OK, res)
        return self

    def drain(self, rows: list[tuple[int, int, str, bool]], end: int,  # type: ignore[override]
              t0: int, t1: int) -> CompactHistory:
        return self.read("leader", 0, rows, t0, t1, end=end, f="drain")


def anomalies(h: HistoryBuilder) -> dict[str, int]:
    result = check(h.build())
    return {t: len(v) for t, v in result.by_type().items()}


def base() -> CompactHistory:
    """a@0, b@1, a@2 (replaces a@0), tombstone d@3, d@4 (replaces the tombstone)."""
    h = CompactHistory().config()
    h.put(0, 1, "a", 0, 1 * MS, 2 * MS)
    h.put(1, 2, "b", 1, 3 * MS, 4 * MS)
    h.put(0, 3, "a", 2, 5 * MS, 6 * MS)
    h.put(1, 4, "d", 3, 7 * MS, 8 * MS, tombstone=True)
    h.put(0, 5, "d", 4, 9 * MS, 10 * MS)
    return h


def test_removals_compaction_may_make_pass() -> None:
    h = base()
    h.read(2, 0, [(0, 1, "a", False), (1, 2, "b", False)], 11 * MS, 12 * MS, end=5)
    # Later a sweep removed a@0 and the tombstone: a read from 0 steps over them.
    h.read(2, 0, [(1, 2, "b", False), (2, 3, "a", False), (4, 5, "d", False)],
           20 * MS, 21 * MS, end=5)
    h.drain([(1, 2, "b", False), (2, 3, "a", False), (4, 5, "d", False)], 5, 30 * MS, 31 * MS)
    ops = h.build()
    assert is_compact_history(ops)
    result = check(ops)
    assert result.valid, result.to_dict()
    assert result.anomalies == []
    assert result.stats["partitions"]["0"]["removed"] == 2


def test_the_latest_record_of_a_key_going_is_a_lost_write() -> None:
    h = base()
    h.drain([(1, 2, "b", False), (4, 5, "d", False)], 5, 30 * MS, 31 * MS)  # a@2 gone too
    lost = check(h.build()).by_type()["lost-write"]
    # a@0 as well: the record that replaced it is gone, so nothing of key a is left.
    assert sorted(a.details["id"] for a in lost) == [1, 3]


def test_a_record_read_then_gone_unreplaced_is_a_vanished_read() -> None:
    h = CompactHistory().config()
    h.put(0, 1, "a", None, 1 * MS, None, OpType.INFO)  # landed, never answered
    h.read(1, 0, [(0, 1, "a", False)], 5 * MS, 6 * MS, end=1)
    h.drain([], 1, 30 * MS, 31 * MS)
    assert anomalies(h) == {"vanished-read": 1}


def test_an_unanswered_tombstone_of_the_key_may_explain_any_removal() -> None:
    h = base()
    # A tombstone of a, never answered: it may have landed after a@2 and expired.
    h.put(2, 6, "a", None, 12 * MS, None, OpType.INFO, tombstone=True)
    h.drain([(1, 2, "b", False), (4, 5, "d", False)], 6, 3000 * MS, 3001 * MS)
    assert anomalies(h) == {}


def test_a_tombstone_gone_before_its_retention_is_caught() -> None:
    h = CompactHistory().config()
    h.put(0, 1, "d", 0, 1 * MS, 2 * MS)
    h.put(0, 2, "d", 1, 3 * MS, 4 * MS, tombstone=True)
    early = CompactHistory().config()
    early._events = list(h._events)
    early.drain([], 2, 100 * MS, 101 * MS)  # 0.1 s after its send: too early
    assert anomalies(early) == {"early-tombstone-removal": 1}
    h.drain([], 2, 2000 * MS, 2001 * MS)  # 2 s after: past the 1 s retention
    assert anomalies(h) == {}


def test_a_read_missing_a_young_tombstone_needs_a_replacement_begun_before_it() -> None:
    h = CompactHistory().config()
    h.put(0, 1, "d", 0, 1 * MS, 2 * MS, tombstone=True)
    h.put(0, 2, "k", 1, 3 * MS, 4 * MS)
    h.read(1, 0, [(1, 2, "k", False)], 10 * MS, 11 * MS)  # the tombstone is missing
    later = CompactHistory().config()
    later._events = list(h._events)
    later.put(0, 3, "d", 2, 20 * MS, 21 * MS)  # a replacement, but sent after the read
    assert anomalies(later) == {"early-tombstone-removal": 1}
    h.put(2, 3, "d", None, 5 * MS, None, OpType.INFO)  # begun before it: may have landed
    assert anomalies(h) == {}


def test_no_tombstone_check_when_clocks_were_moved() -> None:
    h = CompactHistory().config()
    h.put(0, 1, "d", 0, 1 * MS, 2 * MS, tombstone=True)
    h.nemesis("start-clock", 3 * MS)
    h.nemesis("stop-clock", 4 * MS)
    h.drain([], 1, 100 * MS, 101 * MS)
    result = check(h.build())
    assert result.valid and result.stats["tombstone_check"] is False


def test_a_read_that_skips_a_record_the_drain_still_holds() -> None:
    h = base()
    h.read(2, 0, [(1, 2, "b", False), (4, 5, "d", False)], 11 * MS, 12 * MS, end=5)  # no a@2
    h.drain([(1, 2, "b", False), (2, 3, "a", False), (4, 5, "d", False)], 5, 30 * MS, 31 * MS)
    assert anomalies(h) == {"read-skip": 1}


def test_offsets_ids_and_sends_are_checked() -> None:
    h = base()
    h.read(2, 0, [(0, 9, "a", False)], 11 * MS, 12 * MS)  # offset 0 was id 1; nobody sent 9
    h.read(2, 1, [(1, 2, "b", True)], 13 * MS, 14 * MS)  # sent as a value, read as a tombstone
    h.read(2, 5, [(5, 1, "a", False)], 15 * MS, 16 * MS)  # id 1 at a second offset
    h.put(3, 7, "a", None, 17 * MS, 18 * MS, OpType.FAIL)
    h.read(2, 6, [(6, 7, "a", False), (6, 7, "a", False)], 19 * MS, 20 * MS)
    got = anomalies(h)
    assert got == {"inconsistent-offsets": 1, "duplicate": 1, "unexpected": 2,
                   "aborted-read": 2, "read-order": 1}, got


def test_stale_end_and_unseen_acknowledgement() -> None:
    h = base()
    h.read(2, 0, [(1, 2, "b", False)], 11 * MS, 12 * MS, end=3)  # begun after offset 4's ack
    h.drain([(1, 2, "b", False), (2, 3, "a", False), (3, 4, "d", True)], 4, 30 * MS, 31 * MS)
    got = anomalies(h)
    assert got == {"stale-read": 1, "unseen-after-drain": 1}, got


def test_runner_uses_this_checker_and_the_replica_check_allows_holes() -> None:
    h = base()
    rows = [(1, 2, "b", False), (2, 3, "a", False), (4, 5, "d", False)]
    h.drain(rows, 5, 30 * MS, 31 * MS)
    ops = h.build()
    results = check_history(ops)
    assert results["valid"] and "linearizability" not in results
    assert results["log"]["stats"]["removed"] == 2
    drains, sent = replicas.from_history(ops)
    assert drains[0].records == [(1, 2), (2, 3), (4, 5)]
    assert None in sent[0]  # a tombstone was sent: a replica may hold a None value
    copy = replicas.ReplicaCopy("n1", 0, 0, 5, [(1, 2), (2, 3), (3, None), (4, 5)])
    assert replicas.compare([copy], drains, sent, compacted=True).valid
    assert not replicas.compare([copy], drains, sent).valid  # the dense-log rule
    wrong = replicas.ReplicaCopy("n2", 0, 0, 5, [(1, 2), (2, 4)])
    assert not replicas.compare([copy, wrong], drains, sent, compacted=True).valid


def test_replicas_at_one_applied_index_must_hold_the_same_offsets() -> None:
    """A follower that skipped a compaction chunk holds more records, none different:
    only the applied index shows that it diverged."""
    drains = {0: replicas.DrainedLog([(1, 2), (2, 3)], 3)}
    sent = {0: {1, 2, 3}}
    swept = replicas.ReplicaCopy("n1", 0, 0, 3, [(1, 2), (2, 3)], applied_index=40)
    unswept = replicas.ReplicaCopy("n2", 0, 0, 3, [(0, 1), (1, 2), (2, 3)], applied_index=40)
    check = replicas.compare([swept, unswept], drains, sent, compacted=True)
    assert [a.type for a in check.anomalies] == ["replica-divergence"]
    assert check.anomalies[0].details["offsets"] == [0]
    behind = replicas.ReplicaCopy("n2", 0, 0, 3, [(0, 1), (1, 2), (2, 3)], applied_index=39)
    assert replicas.compare([swept, behind], drains, sent, compacted=True).valid
