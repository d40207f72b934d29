"""The consumer-group checker: what server/group_coordinator.py promises, nothing more.

The promise is at-least-once with eager rebalancing: a partition has one
owner per generation (a dropped "zombie" may still read, and its commits
are refused only once the new owner has claimed the partition with its
generation, log/partition.py), an owner starts at the group's
committed offset, and a consumer commits only positions past records it
handed out. So duplicates across owners are expected; loss, gaps inside one
owner's stream and records that were never written are not.

Operation values this checker reads (written by jepsen/groups_workload.py):

    gpoll       invoke {"consumer"}
                ok     {"consumer", "member", "generation" (None while rebalancing),
                        "stint", "assigned": [partition, ...],
                        "records": [[partition, offset, value], ...]}
    gcommit     invoke/ok {"consumer", "member", "generation", "stint",
                           "offsets": [[partition, next offset], ...]}
    gcommitted  final committed offsets, read after every consumer closed:
                ok {"group", "key", "offset": int | None}
    drain       the final read of each partition (see checker_log)
    heal        nemesis line: the faults ended

A *stint* is one consumer incarnation ("consumer") holding one assignment:
the workload bumps ``stint`` whenever the (member, generation) it observes
after a poll changes. Generations alone are not enough: they count from 0
again on a new coordinator while member ids are kept (client/group_member.py).

Anomalies (all make the history invalid):

- ``group-lost``: a commit passed a record that nobody had delivered (the
  final committed offset, or an acknowledged commit at the time it completed).
- ``group-skip`` / ``group-nonmonotonic``: inside one stint, a partition's
  deliveries do not continue exactly where the previous ones ended.
- ``group-commit-beyond-end``: a final committed offset past the drained end.
- ``group-wrong-value``: a delivered record differs from the drain's record at
  that offset (or lies beyond the drained end).

Liveness (reported as notes, like a node that never came back): a partition
nobody ever owned, and one with undelivered records that saw no delivery
after the final heal.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .checker_log import MAX_EXAMPLES, Anomaly
from .history import NEMESIS, Completed, Op, OpType, pair

BAD_TYPES = frozenset(
    {
        "group-lost",
        "group-skip",
        "group-nonmonotonic",
        "group-commit-beyond-end",
        "group-wrong-value",
    }
)
NS = 1e9
StintKey = tuple[Any, Any, Any, Any]  # (consumer, stint, member, generation)


@dataclass(frozen=True, slots=True)
class Delivery:
    partition: int
    offset: int
    value: Any
    stint: StintKey
    complete_ns: int
    op: Completed


@dataclass(slots=True)
class GroupCheckResult:
    anomalies: list[Anomaly]
    stats: dict[str, Any]
    liveness: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not any(a.type in BAD_TYPES for a in self.anomalies)

    def to_dict(self) -> dict[str, Any]:
        grouped: dict[str, list[Anomaly]] = defaultdict(list)
        for a in self.anomalies:
            grouped[a.type].append(a)
        return {
            "valid": self.valid,
            "anomaly_types": sorted(grouped),
            "counts": {t: len(v) for t, v in sorted(grouped.items())},
            "anomalies": {t: [a.to_dict() for a in v[:MAX_EXAMPLES]]
                          for t, v in sorted(grouped.items())},
            "stats": self.stats,
            "liveness": self.liveness,
        }


# ------------------------------------------------------------------ extraction


def stint_of(c: Completed) -> StintKey:
    v = c.value or {}
    return (v.get("consumer"), v.get("stint", 0), v.get("member"), v.get("generation"))


def polls(done: Iterable[Completed]) -> list[Completed]:
    """Acknowledged group polls, in completion order (a consumer polls sequentially)."""
    ok = [c for c in done if c.f == "gpoll" and c.type is OpType.OK]
    return sorted(ok, key=lambda c: (c.complete_ns or 0, c.invoke.index))


def deliveries(done: Iterable[Completed]) -> list[Delivery]:
    out = []
    for c in polls(done):
        for p, o, v in (c.value or {}).get("records") or []:
            out.append(Delivery(int(p), int(o), v, stint_of(c), c.complete_ns or 0, c))
    return out


def drained(done: Iterable[Completed]) -> dict[int, tuple[dict[int, Any], int, Completed]]:
    """The last leader drain of each partition: offset -> value, its end, the op."""
    out: dict[int, tuple[dict[int, Any], int, Completed]] = {}
    for c in done:
        v = c.value or {}
        if c.f == "drain" and c.type is OpType.OK and not v.get("node"):
            out[int(v["key"])] = ({int(o): val for o, val in v.get("records") or []},
                                  int(v.get("end", 0)), c)
    return out


def final_committed(done: Iterable[Completed]) -> dict[int, tuple[int, Completed]]:
    out: dict[int, tuple[int, Completed]] = {}
    for c in done:
        v = c.value or {}
        if c.f == "gcommitted" and c.type is OpType.OK and v.get("offset") is not None:
            out[int(v["key"])] = (int(v["offset"]), c)
    return out


def last_heal_ns(ops: Sequence[Op]) -> int | None:
    heals = [op.time_ns for op in ops if op.process == NEMESIS and op.f == "heal"]
    return max(heals) if heals else None


# ------------------------------------------------------------------ safety rules


def check_values(ds: Sequence[Delivery],
                 drains: dict[int, tuple[dict[int, Any], int, Completed]]) -> list[Anomaly]:
    """A delivered record is the one the final log holds at that offset: sent there,
    and never rolled back (checker_log ties the drain to the sends)."""
    out = []
    for d in ds:
        if d.partition not in drains:
            continue  # no drain: a liveness note of the runner already says so
        records, end, drain = drains[d.partition]
        if d.offset not in records:
            out.append(Anomaly("group-wrong-value", d.partition,
                               f"delivered {d.value!r} at offset {d.offset}, which the drain "
                               f"(end {end}) does not hold", [d.op, drain],
                               {"offset": d.offset, "value": d.value, "stint": list(d.stint)}))
        elif records[d.offset] != d.value:
            out.append(Anomaly("group-wrong-value", d.partition,
                               f"delivered {d.value!r} at offset {d.offset}, the drain holds "
                               f"{records[d.offset]!r}", [d.op, drain],
                               {"offset": d.offset, "value": d.value,
                                "drained": records[d.offset], "stint": list(d.stint)}))
    return out


def check_streams(ds: Sequence[Delivery]) -> list[Anomaly]:
    """Inside one stint a partition's deliveries continue exactly where they ended:
    the owner reads from its position and hands out every record once. Where a
    stint *starts* is not judged here (the committed offset it resumed from is
    covered by the loss rule)."""
    out = []
    last: dict[tuple[StintKey, int], Delivery] = {}
    for d in ds:
        key = (d.stint, d.partition)
        prev = last.get(key)
        last[key] = d
        if prev is None or d.offset == prev.offset + 1:
            continue
        kind = "group-skip" if d.offset > prev.offset + 1 else "group-nonmonotonic"
        verb = "skipped" if kind == "group-skip" else "went back"
        out.append(Anomaly(kind, d.partition,
                           f"consumer {d.stint[0]} (member {d.stint[2]}, generation "
                           f"{d.stint[3]}) {verb} from offset {prev.offset} to {d.offset}",
                           [prev.op] if prev.op is d.op else [prev.op, d.op],
                           {"prev": prev.offset, "next": d.offset, "stint": list(d.stint)}))
    return out


def first_delivery_ns(ds: Sequence[Delivery]) -> dict[int, dict[int, int]]:
    first: dict[int, dict[int, int]] = defaultdict(dict)
    for d in ds:
        seen = first[d.partition]
        seen[d.offset] = min(seen.get(d.offset, d.complete_ns), d.complete_ns)
    return first


def check_lost(ds: Sequence[Delivery], done: Sequence[Completed],
               finals: dict[int, tuple[int, Completed]],
               drains: dict[int, tuple[dict[int, Any], int, Completed]]) -> list[Anomaly]:
    """A commit never passes an undelivered record (at-least-once).

    Final: every offset below a partition's final committed offset (and inside
    the drained log) was delivered at some time. Per acknowledged commit of
    offset X: every offset below X had been delivered when it completed, since
    a consumer commits only positions past records it handed out, and resumes
    from a committed offset.
    """
    out = []
    first = first_delivery_ns(ds)
    for p, (committed, op) in sorted(finals.items()):
        upto = min(committed, drains[p][1]) if p in drains else committed
        missing = [o for o in range(upto) if o not in first[p]]
        if missing:
            out.append(Anomaly("group-lost", p,
                               f"final committed offset {committed}, but {len(missing)} "
                               f"record(s) below it were never delivered (first: "
                               f"offset {missing[0]})", [op],
                               {"committed": committed, "missing": missing[:20],
                                "missing_count": len(missing)}))
    # prefix[p][x]: when offsets 0..x-1 had all been delivered (inf: some never was).
    prefix: dict[int, list[float]] = {}
    bad: dict[int, list[tuple[int, int, Completed]]] = defaultdict(list)
    for c in done:
        if c.f != "gcommit" or c.type is not OpType.OK or c.complete_ns is None:
            continue
        for p, x in (c.value or {}).get("offsets") or []:
            p, x = int(p), int(x)
            if p not in prefix:
                # Past the highest delivered offset + 1 some record was never delivered.
                prefix[p] = _prefix_times(first[p], max(first[p], default=-1) + 1)
            pre = prefix[p]
            when = pre[x] if x < len(pre) else math.inf
            if when > c.complete_ns:
                undelivered = next(o for o in range(x) if first[p].get(o, math.inf)
                                   > c.complete_ns)
                bad[p].append((x, undelivered, c))
    for p, cases in sorted(bad.items()):
        x, o, c = cases[0]
        out.append(Anomaly("group-lost", p,
                           f"commit of offset {x} completed before offset {o} was delivered "
                           f"to anyone ({len(cases)} such commit(s))", [c],
                           {"committed": x, "undelivered": o, "commits": len(cases)}))
    return out


def _prefix_times(first: dict[int, int], n: int) -> list[float]:
    out: list[float] = [0.0]
    worst = 0.0
    for o in range(n):
        worst = max(worst, first.get(o, math.inf))
        out.append(worst)
    return out


def check_commit_beyond_end(finals: dict[int, tuple[int, Completed]],
                            drains: dict[int, tuple[dict[int, Any], int, Completed]]
                            ) -> list[Anomaly]:
    out = []
    for p, (committed, op) in sorted(finals.items()):
        if p in drains and committed > drains[p][1]:
            out.append(Anomaly("group-commit-beyond-end", p,
                               f"final committed offset {committed} is past the drained end "
                               f"{drains[p][1]}", [op, drains[p][2]],
                               {"committed": committed, "end": drains[p][1]}))
    return out


# ------------------------------------------------------------------ statistics


def duplicate_stats(ds: Sequence[Delivery]) -> dict[str, int]:
    """Redeliveries of one (partition, offset). Expected (at-least-once): one by a
    different stint than the previous delivery is explained by a rebalance or a
    restart; one by the same stint is not (check_streams flags it)."""
    prev: dict[tuple[int, int], StintKey] = {}
    dup = explained = 0
    for d in ds:
        k = (d.partition, d.offset)
        if k in prev:
            dup += 1
            explained += prev[k] != d.stint
        prev[k] = d.stint
    return {"duplicates": dup, "explained_by_rebalance": explained,
            "unexplained": dup - explained, "delivered_distinct": len(prev)}


def ownership(ps: Sequence[Completed]) -> dict[int, list[tuple[int, int, StintKey]]]:
    """Per partition, each stint's [first, last] poll completion that reported it assigned
    (at poll resolution: a poll waits at most its max_wait)."""
    spans: dict[tuple[int, StintKey], list[int]] = {}
    for c in ps:
        v = c.value or {}
        if v.get("generation") is None:
            continue
        for p in v.get("assigned") or []:
            t = c.complete_ns or 0
            span = spans.setdefault((int(p), stint_of(c)), [t, t])
            span[1] = t
    out: dict[int, list[tuple[int, int, StintKey]]] = defaultdict(list)
    for (p, stint), (a, b) in spans.items():
        out[p].append((a, b, stint))
    return {p: sorted(v, key=lambda s: s[:2]) for p, v in out.items()}


def unowned(spans: list[tuple[int, int, StintKey]], end_ns: int) -> list[tuple[int, int]]:
    """Windows between the first ownership and ``end_ns`` that no stint covered."""
    gaps = []
    covered = spans[0][1]
    for a, b, _ in spans[1:]:
        if a > covered:
            gaps.append((covered, a))
        covered = max(covered, b)
    if end_ns > covered:
        gaps.append((covered, end_ns))
    return gaps


def rebalances_seen(ps: Sequence[Completed]) -> int:
    """Assignment changes consumers observed: each consumer's stints with a
    generation, minus its first."""
    stints: dict[Any, set[StintKey]] = defaultdict(set)
    for c in ps:
        if (c.value or {}).get("generation") is not None:
            stints[stint_of(c)[0]].add(stint_of(c))
    return sum(len(s) - 1 for s in stints.values())


def progress_after(ds: Sequence[Delivery], heal_ns: int,
                   drains: dict[int, tuple[dict[int, Any], int, Completed]],
                   partitions: Iterable[int]) -> list[str]:
    """Liveness: a partition with records nobody had delivered by the final heal must
    see a delivery after it (else the group is stuck)."""
    notes = []
    first = first_delivery_ns(ds)
    after = {d.partition for d in ds if d.complete_ns > heal_ns}
    for p in sorted(partitions):
        if p not in drains:
            continue
        pending = [o for o in drains[p][0] if first[p].get(o, math.inf) > heal_ns]
        if pending and p not in after:
            notes.append(f"consumer group: partition {p} delivered nothing after the final "
                         f"heal although {len(pending)} record(s) were undelivered")
    return notes


# ------------------------------------------------------------------ entry point


def check(ops: Sequence[Op]) -> GroupCheckResult:
    done = pair(ops)
    ps = polls(done)
    ds = deliveries(done)
    drains = drained(done)
    finals = final_committed(done)
    anomalies = (check_values(ds, drains) + check_streams(ds)
                 + check_lost(ds, done, finals, drains)
                 + check_commit_beyond_end(finals, drains))
    partitions = sorted(set(drains) | {d.partition for d in ds})
    end_ns = max((c.complete_ns or 0 for c in ps), default=0)
    owners = ownership(ps)
    liveness: list[str] = []
    unowned_stats: dict[str, Any] = {}
    for p in partitions:
        if p not in owners:
            liveness.append(f"consumer group: partition {p} was never assigned to anyone")
            continue
        gaps = unowned(owners[p], end_ns)
        unowned_stats[str(p)] = {
            "total_s": round(sum(b - a for a, b in gaps) / NS, 3),
            "max_s": round(max((b - a for a, b in gaps), default=0) / NS, 3),
            "windows": len(gaps),
        }
    heal = last_heal_ns(ops)
    if heal is not None:
        liveness += progress_after(ds, heal, drains, partitions)
    stats = {
        "polls": len(ps),
        "deliveries": len(ds),
        **duplicate_stats(ds),
        "stints": len({d.stint for d in ds} | {stint_of(c) for c in ps
                                               if (c.value or {}).get("generation")
                                               is not None}),
        "rebalances_seen": rebalances_seen(ps),
        "unowned": unowned_stats,
        "final_committed": {str(p): o for p, (o, _) in sorted(finals.items())},
        "drained_end": {str(p): d[1] for p, d in sorted(drains.items())},
    }
    return GroupCheckResult(anomalies, stats, liveness)


__all__ = ["BAD_TYPES", "Delivery", "GroupCheckResult", "check"]
