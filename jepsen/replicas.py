"""Every replica's applied log, compared after the run: State Machine Safety on disk.

Raft §5.4.3 (State Machine Safety): if a server has applied a log entry at a
given index, no other server ever applies a different entry for that index.
A partition's records are its state machine's output, densely numbered by
offset, so the property seen on disk is: no two replicas hold different
records at one offset. The linearizable reads of the run only ever see the
leader's copy; this looks at every node's copy, read from its data directory
after the nodes stopped (jepsen/datadirs.py), so a follower that applied
something else (a bad truncation, a replayed entry, a snapshot installed at
the wrong offsets) is caught even though no client read it.

Everything here is a pure function over plain data (no RocksDB, no I/O):

- ``ReplicaCopy``: one node's copy of one partition: [start, end) and its
  (offset, value) records;
- ``DrainedLog``: the final drain through the leader (already in the history);
- ``compare``: the check. Anomalies, each of which makes the run invalid:

  ``replica-divergence``  two replicas, or a replica and the final drain,
                          hold different values at one offset;
  ``replica-phantom``     a replica holds, beyond the drained end, a value
                          that no worker ever sent to that partition;
  ``replica-gap``         a replica's records are not exactly the offsets
                          [start, end) it claims (offsets are dense, DESIGN §5;
                          not checked for a compacted topic, whose sweeps leave
                          holes: there a tombstone's value is None).

  Not anomalies, only notes: a replica that lags (it holds fewer records than
  the drain: a follower may be behind when the nodes stop), one that starts
  later (retention or a snapshot moved its start offset), records beyond the
  drained end whose values were sent (committed after the drain read).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .history import Op, OpType, pair

BAD_TYPES = frozenset({"replica-divergence", "replica-phantom", "replica-gap"})
MAX_EXAMPLES = 16  # anomalies kept per type, offsets listed per anomaly


@dataclass(slots=True, frozen=True)
class ReplicaCopy:
    """One node's applied copy of one partition."""

    node: str
    key: int  # the partition
    start: int  # first offset it still stores
    end: int  # the offset after its last applied record
    records: Sequence[tuple[int, Any]]  # (offset, value), ascending
    applied_index: int | None = None  # the last Raft entry its state machine applied


@dataclass(slots=True, frozen=True)
class DrainedLog:
    """The final read of a partition through its leader (the drain op)."""

    records: Sequence[tuple[int, Any]]
    end: int


@dataclass(slots=True)
class ReplicaAnomaly:
    type: str
    key: Any
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "key": self.key, "message": self.message,
                "details": self.details}


@dataclass(slots=True)
class ReplicaRow:
    """What was read and compared for one node and partition (the report's table)."""

    node: str
    key: int
    start: int
    end: int
    records: int  # held
    compared: int  # of those, compared with the drain or another replica
    behind_drain: int  # records the drain has beyond this replica's end

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "key": self.key, "start": self.start, "end": self.end,
                "records": self.records, "compared": self.compared,
                "behind_drain": self.behind_drain}


@dataclass(slots=True)
class ReplicaCheck:
    anomalies: list[ReplicaAnomaly]
    rows: list[ReplicaRow]
    notes: list[str]

    @property
    def valid(self) -> bool:
        return not any(a.type in BAD_TYPES for a in self.anomalies)

    @property
    def compared(self) -> int:
        return sum(r.compared for r in self.rows)

    def summary(self) -> str:
        nodes = len({r.node for r in self.rows})
        keys = len({r.key for r in self.rows})
        head = f"replicas compared: {nodes} nodes x {keys} partitions, {self.compared} records"
        if not self.anomalies:
            return f"{head}, no divergence"
        counts = _counts(self.anomalies)
        return f"{head}, " + ", ".join(f"{n} {t}" for t, n in counts.items())

    def to_dict(self) -> dict[str, Any]:
        grouped: dict[str, list[ReplicaAnomaly]] = defaultdict(list)
        for a in self.anomalies:
            grouped[a.type].append(a)
        return {
            "checked": True,
            "valid": self.valid,
            "summary": self.summary(),
            "records_compared": self.compared,
            "anomaly_types": sorted(t for t in grouped if t in BAD_TYPES),
            "counts": _counts(self.anomalies),
            "anomalies": {t: [a.to_dict() for a in v[:MAX_EXAMPLES]]
                          for t, v in sorted(grouped.items())},
            "replicas": [r.to_dict() for r in self.rows],
            "notes": self.notes,
        }


def _counts(anomalies: Iterable[ReplicaAnomaly]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for a in anomalies:
        out[a.type] += 1
    return dict(sorted(out.items()))


def not_checked(reason: str) -> dict[str, Any]:
    """The results entry when the data dirs could not be read at all."""
    return {"checked": False, "valid": True, "summary": f"replicas not compared: {reason}",
            "records_compared": 0, "anomaly_types": [], "counts": {}, "anomalies": {},
            "replicas": [], "notes": [reason]}


# ---------------------------------------------------------------- the check


def _differences(a: Mapping[int, Any], b: Mapping[int, Any]) -> tuple[set[int], list[int]]:
    """(the offsets both hold, the sorted ones of those where they differ)."""
    common = a.keys() & b.keys()
    return common, sorted(o for o in common if a[o] != b[o])


def _shape(copy: ReplicaCopy) -> ReplicaAnomaly | None:
    """A copy must hold exactly the offsets [start, end), in order, once each."""
    offsets = [o for o, _ in copy.records]
    if offsets == list(range(copy.start, copy.end)):
        return None
    # The first offset that is not where it should be (missing, or held twice).
    first_bad = next((e for o, e in zip(offsets, itertools.count(copy.start)) if o != e),
                     min(copy.start + len(offsets), copy.end))
    return ReplicaAnomaly(
        "replica-gap", copy.key,
        f"{copy.node} holds {len(offsets)} records for offsets [{copy.start}, {copy.end}), "
        f"first missing or misplaced offset {first_bad}",
        {"node": copy.node, "start": copy.start, "end": copy.end, "held": len(offsets),
         "offset": first_bad},
    )


def _divergence(key: Any, a: str, b: str, diffs: list[int], va: Any, vb: Any,
                what: str) -> ReplicaAnomaly:
    return ReplicaAnomaly(
        "replica-divergence", key,
        f"{what} at {len(diffs)} offsets; first at {diffs[0]}: {va!r} vs {vb!r}",
        {"nodes": [a, b], "offsets": diffs[:MAX_EXAMPLES], "count": len(diffs)},
    )


class _Partition:
    """The check of one partition's copies; fills ``out`` (anomalies, rows, notes)."""

    def __init__(self, key: Any, copies: list[ReplicaCopy], drain: DrainedLog | None,
                 sent: set[Any], out: ReplicaCheck, compacted: bool = False) -> None:
        self.key, self.copies, self.drain, self.sent, self.out = key, copies, drain, sent, out
        self.compacted = compacted
        self.held = {c.node: dict(c.records) for c in copies}
        self.compared: dict[str, set[int]] = {c.node: set() for c in copies}

    def run(self) -> None:
        for c in self.copies:
            gap = None if self.compacted else _shape(c)
            if gap is not None:
                self.out.anomalies.append(gap)
        self.pairs()
        for c in self.copies:
            behind = self.against_drain(c) if self.drain is not None else 0
            self.beyond_drain(c)
            self.out.rows.append(ReplicaRow(c.node, self.key, c.start, c.end,
                                            len(self.held[c.node]),
                                            len(self.compared[c.node]), behind))

    def pairs(self) -> None:
        """Every pair of replicas agrees on the offsets both hold (§5.4.3); two that
        applied the same entries hold the same offsets too (a compaction or retention
        cut that one applied differently shows only this way)."""
        held = self.held
        index = {c.node: c.applied_index for c in self.copies}
        for a, b in itertools.combinations(sorted(held), 2):
            common, diffs = _differences(held[a], held[b])
            self.compared[a] |= common
            self.compared[b] |= common
            if diffs:
                o = diffs[0]
                self.out.anomalies.append(_divergence(
                    self.key, a, b, diffs, held[a][o], held[b][o],
                    f"{a} and {b} applied different records"))
            same_index = index[a] is not None and index[a] == index[b]
            if not diffs and same_index and held[a].keys() != held[b].keys():
                only = sorted(held[a].keys() ^ held[b].keys())
                self.out.anomalies.append(ReplicaAnomaly(
                    "replica-divergence", self.key,
                    f"{a} and {b} both applied entry {index[a]} but hold different offsets "
                    f"({len(only)} held by one only; first {only[0]})",
                    {"nodes": [a, b], "offsets": only[:MAX_EXAMPLES], "count": len(only),
                     "applied_index": index[a]},
                ))

    def against_drain(self, c: ReplicaCopy) -> int:
        """The copy agrees with the leader's final drain where both cover; returns how
        many records it is behind the drain (a lagging follower: a note)."""
        assert self.drain is not None
        mine, drained = self.held[c.node], dict(self.drain.records)
        common, diffs = _differences(mine, drained)
        self.compared[c.node] |= common
        if diffs:
            o = diffs[0]
            self.out.anomalies.append(_divergence(
                self.key, c.node, "drain", diffs, mine[o], drained[o],
                f"{c.node} differs from the final drain"))
        behind = max(0, self.drain.end - c.end)
        if behind:
            self.out.notes.append(f"{c.node} partition {self.key}: {behind} records behind "
                                  f"the drain (end {c.end} < {self.drain.end})")
        if c.start > min(drained, default=self.drain.end):
            self.out.notes.append(f"{c.node} partition {self.key}: starts at offset "
                                  f"{c.start} (retention or a snapshot)")
        return behind

    def beyond_drain(self, c: ReplicaCopy) -> None:
        """Records past the drained end (all of them without a drain) are compared with
        no leader read: their values must at least have been sent to this partition."""
        end = self.drain.end if self.drain is not None else 0
        mine = self.held[c.node]
        beyond = sorted(o for o in mine if o >= end)
        phantoms = [o for o in beyond if mine[o] not in self.sent]
        if phantoms:
            o = phantoms[0]
            self.out.anomalies.append(ReplicaAnomaly(
                "replica-phantom", self.key,
                f"{c.node} holds {len(phantoms)} records that no worker sent; "
                f"first at {o}: {mine[o]!r}",
                {"node": c.node, "offsets": phantoms[:MAX_EXAMPLES], "count": len(phantoms)},
            ))
        if self.drain is not None and len(beyond) > len(phantoms):
            self.out.notes.append(
                f"{c.node} partition {self.key}: {len(beyond) - len(phantoms)} records "
                f"beyond the drained end {end}, all with values a worker sent (committed "
                "after the drain read)")


def compare(copies: Iterable[ReplicaCopy], drains: Mapping[Any, DrainedLog],
            sent: Mapping[Any, set[Any]], compacted: bool = False) -> ReplicaCheck:
    """Check every partition's replicas against each other and against the drain.

    ``drains``: the final leader drain per partition (missing: compared with
    each other only). ``sent``: every value a worker tried to send, per
    partition, whatever the outcome (an info send may well have landed).
    """
    out = ReplicaCheck([], [], [])
    by_key: dict[Any, list[ReplicaCopy]] = defaultdict(list)
    for c in copies:
        by_key[c.key].append(c)
    for key in sorted(set(by_key) | set(drains), key=repr):
        copies_k = sorted(by_key.get(key, []), key=lambda c: c.node)
        drain = drains.get(key)
        if not copies_k:
            out.notes.append(f"partition {key}: no replica's data dir holds it")
            continue
        if drain is None:
            out.notes.append(f"partition {key}: no final drain; replicas compared with each "
                             "other only")
        _Partition(key, copies_k, drain, sent.get(key, set()), out, compacted).run()
    return out


# ---------------------------------------------------------------- from a history



def _drained(row: Sequence[Any]) -> tuple[int, Any]:
    """(offset, value) of a drained record: the log workloads' [offset, value], or the
    compact workload's [offset, id, key, tombstone] (a tombstone's value is None)."""
    if len(row) == 2:
        return int(row[0]), row[1]
    return int(row[0]), None if row[3] else row[1]


def from_history(ops: Sequence[Op]) -> tuple[dict[Any, DrainedLog], dict[Any, set[Any]]]:
    """The last successful leader drain per partition, and every value sent per partition
    (None among them when a tombstone was sent)."""
    drains: dict[Any, DrainedLog] = {}
    sent: dict[Any, set[Any]] = defaultdict(set)
    for c in pair(ops):
        if c.f == "send":
            inv = c.invoke.value
            sent[c.key].add(None if inv.get("tombstone") else inv["value"])
        elif c.f == "drain" and c.type is OpType.OK and not (c.value or {}).get("node"):
            recs = [_drained(r) for r in c.value.get("records") or []]
            end = c.value.get("end")
            drains[c.key] = DrainedLog(recs, int(end) if end is not None
                                         else (recs[-1][0] + 1 if recs else 0))
    return drains, dict(sent)


__all__ = ["BAD_TYPES", "DrainedLog", "ReplicaCheck", "ReplicaCopy", "compare", "from_history",
           "not_checked"]
