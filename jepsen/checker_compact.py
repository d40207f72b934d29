"""The checker of compacted-topic histories (the ``compact`` workload).

Operation values (keys are partitions as in checker_log; ``k`` is the record
key; every record is named by a unique ``id``, carried in its ``id`` header
because a tombstone has no value):

    topic_config  process "setup", ok {"cleanup_policy": "compact",
                                       "delete_retention_ms": D, ...}
    send          invoke {"key", "value": id, "k", "tombstone"}   ok {... "offset"}
    fetch         ok {"key", "offset", "records": [[offset, id, k, tombstone], ...],
                      "end" (optional), "serializable": true (optional)}
    drain         the final read from offset 0 through the leader, same records

Compaction may remove a record only once a later record of the same key exists
(Kafka's rule, log/compaction.py), and a tombstone also once it is older than
``delete_retention_ms``. A missing offset is therefore no anomaly by itself, as it
is for the log checker; what must hold instead:

``inconsistent-offsets``  one offset read or acknowledged with two ids;
``duplicate``             one id at two offsets;
``unexpected``            a record whose id no send to its partition tried, or
                          whose key or tombstone flag is not what that send sent;
``aborted-read``          a record of a send that definitely failed;
``read-order``            a read's offsets not increasing, or below where it began;
``read-skip``             a read stepped over an offset that the final drain still
                          holds: a record came back after a read found it removed,
                          or a replica served a read with a record missing;
``lost-write``            an acknowledged record missing from the final drain
                          although nothing could have replaced it: no later record
                          of its key in the drain, and no tombstone of its key that
                          may sit after it (acknowledged later, or never answered);
``vanished-read``         the same for a record some read returned;
``unseen-after-drain``    an acknowledged offset at or past the drained end;
``stale-read``            a linearizable read whose end offset is at or before the
                          offset of a send acknowledged before the read began;
``early-tombstone-removal``  a read (the drain too) that covered an
                          acknowledged tombstone's offset without it, although it
                          ended within ``delete_retention_ms`` of the tombstone's
                          send and no send that could replace it had begun
                          (skipped when the history has clock faults: the nodes'
                          clocks then differ from the harness's).

The workload's ``k*`` keys never get tombstones, so for them "nothing could
have replaced it" is strict: the key's latest record must survive. A ``d*``
key with a tombstone that was never answered (its offset unknown) can lose any
of its records without an anomaly: that tombstone may have landed after them
and expired since.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .checker_log import Anomaly, LogCheckResult
from .history import Completed, Op, OpType, nemesis_windows, pair

BAD_TYPES = frozenset({
    "inconsistent-offsets", "duplicate", "unexpected", "aborted-read", "read-order",
    "read-skip", "lost-write", "vanished-read", "unseen-after-drain", "stale-read",
    "early-tombstone-removal",
})
READ_FS = frozenset({"fetch", "poll", "drain"})
# The harness's clock against the nodes' append stamps: the tombstone check allows
# this much for a send whose stamp came late in its round trip, and clock steps.
TOMBSTONE_MARGIN_NS = 250_000_000


def is_compact_history(ops: Sequence[Op]) -> bool:
    """A history of the compact workload (its topic_config op says so)."""
    return any(op.f == "topic_config" and op.type is OpType.OK
               and (op.value or {}).get("cleanup_policy") == "compact" for op in ops)


@dataclass(slots=True, frozen=True)
class Row:
    """One record as a read (or an acknowledgement) showed it."""

    offset: int
    id: Any
    k: Any
    tombstone: bool


def _rows(c: Completed) -> list[Row]:
    return [Row(int(o), i, k, bool(t)) for o, i, k, t in (c.value or {}).get("records") or []]



def _is_leader_drain(c: Completed) -> bool:
    return c.f == "drain" and c.type is OpType.OK and not (c.value or {}).get("node")


class _Partition:
    """The checks of one partition; appends to ``anomalies``."""

    def __init__(self, key: Any, sends: list[Completed], reads: list[Completed],
                 retention_ns: int | None, anomalies: list[Anomaly]) -> None:
        self.key, self.reads = key, reads
        self.retention_ns = retention_ns
        self.anomalies = anomalies
        self.send_of = {s.invoke.value["value"]: s for s in sends}
        self.by_k: dict[Any, list[Completed]] = defaultdict(list)
        for s in sends:
            self.by_k[s.invoke.value["k"]].append(s)
        self.acked = [s for s in sends if s.type is OpType.OK and s.value.get("offset") is not None]
        # Each read's records, decoded once for all the checks.
        self.read_rows = [(r, _rows(r)) for r in reads]
        drains = [(r, rows) for r, rows in self.read_rows if _is_leader_drain(r)]
        self.drain = drains[-1][0] if drains else None
        self.drained = {row.offset: row for row in drains[-1][1]} if drains else {}
        self.drained_offsets = sorted(self.drained)
        self.drain_end = int(self.drain.value.get("end", 0)) if self.drain else None
        # Where each key's tombstones may sit: offsets acknowledged or read, and
        # whether one of them was never answered nor seen (its offset unknown).
        self.tomb_offsets: dict[Any, list[int]] = defaultdict(list)
        self.unknown_tomb: set[Any] = set()
        seen_ids = {row.id for _, rows in self.read_rows for row in rows}
        for s in sends:
            inv = s.invoke.value
            if not inv.get("tombstone"):
                continue
            if s.type is OpType.OK and s.value.get("offset") is not None:
                self.tomb_offsets[inv["k"]].append(int(s.value["offset"]))
            elif s.type is not OpType.FAIL and inv["value"] not in seen_ids:
                self.unknown_tomb.add(inv["k"])
        for _, rows in self.read_rows:
            for row in rows:
                if row.tombstone:
                    self.tomb_offsets[row.k].append(row.offset)
        self.drain_last: dict[Any, int] = {}
        for row in self.drained.values():
            self.drain_last[row.k] = max(self.drain_last.get(row.k, -1), row.offset)

    def add(self, type_: str, message: str, ops: list[Completed], **details: Any) -> None:
        self.anomalies.append(Anomaly(type_, self.key, message, ops, details))

    def replaceable(self, k: Any, offset: int) -> bool:
        """May compaction have removed key ``k``'s record at ``offset``?"""
        if self.drain_last.get(k, -1) > offset or k in self.unknown_tomb:
            return True
        return any(t > offset for t in self.tomb_offsets.get(k, ()))

    # ------------------------------------------------------------ the checks

    def offsets(self) -> None:
        at: dict[int, dict[Any, Completed]] = defaultdict(dict)
        where: dict[Any, dict[int, Completed]] = defaultdict(dict)
        for s in self.acked:
            o, ident = int(s.value["offset"]), s.invoke.value["value"]
            at[o].setdefault(ident, s)
            where[ident].setdefault(o, s)
        for r, rows in self.read_rows:
            for row in rows:
                at[row.offset].setdefault(row.id, r)
                where[row.id].setdefault(row.offset, r)
        for o, ids in sorted(at.items()):
            if len(ids) > 1:
                self.add("inconsistent-offsets", f"offset {o} holds ids {sorted(ids, key=repr)}",
                         list(ids.values()), offset=o)
        for ident, offs in where.items():
            if len(offs) > 1:
                self.add("duplicate", f"id {ident!r} at offsets {sorted(offs)}",
                         list(offs.values()), id=ident, offsets=sorted(offs))

    def read_values(self) -> None:
        for r, rows in self.read_rows:
            for row in rows:
                s = self.send_of.get(row.id)
                if s is None:
                    self.add("unexpected", f"read id {row.id!r} at {row.offset} that no send "
                             "to this partition tried", [r], offset=row.offset, id=row.id)
                    continue
                inv = s.invoke.value
                if (row.k, row.tombstone) != (inv["k"], bool(inv["tombstone"])):
                    self.add("unexpected", f"read id {row.id!r} at {row.offset} as key "
                             f"{row.k!r} tombstone={row.tombstone}; it was sent as key "
                             f"{inv['k']!r} tombstone={inv['tombstone']}", [s, r],
                             offset=row.offset, id=row.id)
                if s.type is OpType.FAIL:
                    self.add("aborted-read", f"read id {row.id!r} at {row.offset} whose send "
                             "failed", [s, r], offset=row.offset, id=row.id)

    def read_shapes(self) -> None:
        """Offsets increase within a read; a gap in a read is a removed run, so the
        final drain may not hold anything inside it."""
        for r, rows in self.read_rows:
            start = (r.invoke.value or {}).get("offset")
            prev = (int(start) - 1) if start is not None else (rows[0].offset - 1 if rows else 0)
            for row in rows:
                if row.offset <= prev:
                    self.add("read-order", f"read went from {prev} to {row.offset}", [r],
                             prev=prev, next=row.offset)
                    break
                lo = bisect.bisect_left(self.drained_offsets, prev + 1)
                hi = bisect.bisect_left(self.drained_offsets, row.offset)
                back = self.drained_offsets[lo:hi]
                if back and r is not self.drain:
                    self.add("read-skip", f"read stepped from {prev} to {row.offset}; the "
                             f"final drain holds {len(back)} records in between, first at "
                             f"{back[0]}", [r, self.drain], offsets=back[:16])
                prev = row.offset

    def lost(self) -> None:
        if self.drain is None or self.drain_end is None:
            return
        for s in self.acked:
            inv, o = s.invoke.value, int(s.value["offset"])
            if o >= self.drain_end:
                self.add("unseen-after-drain", f"acknowledged id {inv['value']!r} at offset "
                         f"{o}, past the drained end {self.drain_end}", [s, self.drain],
                         offset=o, id=inv["value"])
            elif o not in self.drained and not inv["tombstone"] \
                    and not self.replaceable(inv["k"], o):
                self.add("lost-write", f"acknowledged id {inv['value']!r} (key {inv['k']!r}) "
                         f"at offset {o} is gone, and no later record of its key could have "
                         "replaced it", [s, self.drain], offset=o, id=inv["value"])
        reported: set[int] = set()
        for r, rows in self.read_rows:
            if r is self.drain:
                continue
            for row in rows:
                if (row.offset < self.drain_end and row.offset not in self.drained
                        and not row.tombstone and row.offset not in reported
                        and not self.replaceable(row.k, row.offset)):
                    reported.add(row.offset)
                    self.add("vanished-read", f"id {row.id!r} (key {row.k!r}) read at offset "
                             f"{row.offset} is gone, and no later record of its key could "
                             "have replaced it", [r, self.drain], offset=row.offset, id=row.id)

    def replaced_before(self, k: Any, offset: int, time_ns: int) -> bool:
        """Had a send that may have replaced key ``k``'s record at ``offset`` begun by
        ``time_ns``? (Acknowledged past ``offset``, or never answered.)"""
        for s in self.by_k.get(k, ()):
            if s.invoke_ns >= time_ns or s.type is OpType.FAIL:
                continue
            o = s.value.get("offset") if s.type is OpType.OK else None
            if o is None or int(o) > offset:
                return True
        return False

    def tombstones(self) -> None:
        """A tombstone stays until replaced, or until older than its retention: every
        read that ended within the retention of an acknowledged tombstone's send and
        covered its offset must hold it, unless a send that could replace it had begun."""
        if self.retention_ns is None:
            return
        young_ns = self.retention_ns - TOMBSTONE_MARGIN_NS
        tombs = sorted((int(s.value["offset"]), s) for s in self.acked
                       if s.invoke.value["tombstone"])
        offsets = [o for o, _ in tombs]
        for r, rows in self.read_rows:
            if r.complete_ns is None or not (rows or r is self.drain):
                continue
            start = int((r.invoke.value or {}).get("offset", 0))
            # Below its last record a read holds everything not removed; the drain
            # holds everything below its end.
            covered = self.drain_end if r is self.drain else rows[-1].offset
            held = {row.offset for row in rows}
            lo = bisect.bisect_left(offsets, start)
            hi = bisect.bisect_left(offsets, covered or 0)
            for o, s in tombs[lo:hi]:
                age_ns = r.complete_ns - s.invoke_ns
                if o in held or age_ns >= young_ns:
                    continue
                k = s.invoke.value["k"]
                if self.replaced_before(k, o, r.complete_ns):
                    continue
                self.add("early-tombstone-removal",
                         f"tombstone id {s.invoke.value['value']!r} (key {k!r}) at offset {o} "
                         f"was missing from a read {age_ns // 1_000_000} ms after its send, "
                         "before its retention, with nothing to replace it", [s, r],
                         offset=o, id=s.invoke.value["value"])
                break  # one per read is enough to see it

    def stale_reads(self) -> None:
        """Linearizable reads see every record acknowledged before they began."""
        acks = sorted(((s.complete_ns, int(s.value["offset"]), s) for s in self.acked
                       if s.complete_ns is not None), key=lambda a: (a[0], a[1]))
        times = [t for t, _, _ in acks]
        highest = list(itertools.accumulate((o for _, o, _ in acks), max))
        for r in self.reads:
            v = r.value or {}
            if r.f != "fetch" or v.get("serializable") or v.get("end") is None:
                continue
            i = bisect.bisect_left(times, r.invoke_ns)
            if i and int(v["end"]) <= highest[i - 1]:
                send = next(s for _, o, s in acks[:i] if o == highest[i - 1])
                self.add("stale-read", f"read's end offset {v['end']} is not past offset "
                         f"{highest[i - 1]}, acknowledged before the read began", [send, r],
                         end=int(v["end"]), offset=highest[i - 1])

    def stats(self) -> dict[str, Any]:
        if self.drain is None or self.drain_end is None:
            return {"drained": False}
        removed = self.drain_end - len(self.drained)
        keys = defaultdict(int)
        for row in self.drained.values():
            keys[row.k] += 1
        return {"drained": True, "end": self.drain_end, "held": len(self.drained),
                "removed": removed,
                "tombstones_held": sum(row.tombstone for row in self.drained.values()),
                "records_per_key": dict(sorted(keys.items(), key=repr))}


def check(ops: Sequence[Op]) -> LogCheckResult:
    """Every check above on one compact history (see the module docstring)."""
    configs = [op.value for op in ops if op.f == "topic_config" and op.type is OpType.OK]
    retention_ms = (configs[-1] or {}).get("delete_retention_ms") if configs else None
    clock_faults = any(w["kind"] == "clock" for w in nemesis_windows(ops))
    retention_ns = (None if retention_ms is None or clock_faults
                    else int(retention_ms) * 1_000_000)
    done = pair(ops)
    sends: dict[Any, list[Completed]] = defaultdict(list)
    reads: dict[Any, list[Completed]] = defaultdict(list)
    for c in done:
        if c.f == "send":
            sends[c.key].append(c)
        elif c.f in READ_FS and c.type is OpType.OK:
            reads[c.key].append(c)
    anomalies: list[Anomaly] = []
    stats: dict[str, Any] = {"partitions": {}, "tombstone_check": retention_ns is not None}
    for key in sorted(set(sends) | set(reads), key=repr):
        part = _Partition(key, sends[key], reads[key], retention_ns, anomalies)
        part.offsets()
        part.read_values()
        part.read_shapes()
        part.lost()
        part.tombstones()
        part.stale_reads()
        stats["partitions"][str(key)] = part.stats()
    stats["removed"] = sum(p.get("removed", 0) for p in stats["partitions"].values())
    return LogCheckResult(anomalies, stats, bad_types=BAD_TYPES)
