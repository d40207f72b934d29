"""The log anomaly checker (jepsen-notes §2.1 and §3.4 stages A and B).

Operation values in the histories this checks (keys are partitions; values
are unique integers, so a value names the one send that wrote it):

    send            invoke {"key", "value"}         ok {"key", "value", "offset"}
                    (a batching producer's sends also carry "producer" and "seq":
                    the order that producer sent its records in; "idempotent": false
                    when its client is not idempotent; "record_key" when the record
                    had a key and the client chose the partition. Their oks carry
                    "partition": where the record was acknowledged)
    fetch / poll    invoke {"key", "offset", ...}   ok {... "records": [[offset, value], ...],
                                                         "end": end_offset (optional)}
                    ("serializable": true: served by any replica, may be stale)
                    (poll also carries "consumer": the id of one consumer session)
    drain           final read from offset 0:       ok {"key", "records", "end",
                                                         "node": id (optional, per-node read)}
    list_offsets    invoke {"key"}                  ok {"key", "start", "end"}
    commit          invoke {"group", "key", "offset"}
    fetch_committed invoke {"group", "key"}         ok {... "offset": int | None}

Stage A looks at what was read and written: inconsistent offsets, duplicates,
unexpected and aborted reads, lost writes, unseen-after-drain, gaps and
reordering inside one read, skips in a consumer's stream, node divergence,
one idempotent producer's records out of its sending order, a record
acknowledged in a partition other than the one its send was for.
Stage B uses real time: an operation that completed before another began must
be visible to it (send order, stale end offsets, stale committed offsets).
Each anomaly names the operations involved.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .history import Completed, Op, OpType, pair

READ_FS = frozenset({"fetch", "poll", "drain"})

# Anomaly types that make a history invalid. Everything the checker reports
# is in here except the purely informational "unseen" (acknowledged but not
# read yet in a history without a final drain: cannot tell lost from late).
BAD_TYPES = frozenset(
    {
        "inconsistent-offsets",
        "duplicate",
        "unexpected",
        "aborted-read",
        "lost-write",
        "unseen-after-drain",
        "int-poll-skip",
        "int-nonmonotonic-poll",
        "fetch-offset-mismatch",
        "poll-skip",
        "nonmonotonic-poll",
        "realtime-send-order",
        "stale-read",
        "committed-offset-regression",
        "node-divergence",
        "producer-reorder",
        "wrong-partition",
    }
)

MAX_EXAMPLES = 16


@dataclass(slots=True)
class Anomaly:
    type: str
    key: Any
    message: str
    ops: list[Completed] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "key": self.key,
            "message": self.message,
            "details": self.details,
            "ops": [op.brief() for op in self.ops],
        }


@dataclass(slots=True)
class LogCheckResult:
    anomalies: list[Anomaly]
    stats: dict[str, Any]
    # The types that make a history invalid (checker_compact has its own).
    bad_types: frozenset[str] = BAD_TYPES

    @property
    def valid(self) -> bool:
        return not any(a.type in self.bad_types for a in self.anomalies)

    def by_type(self) -> dict[str, list[Anomaly]]:
        out: dict[str, list[Anomaly]] = defaultdict(list)
        for a in self.anomalies:
            out[a.type].append(a)
        return dict(out)

    def to_dict(self) -> dict[str, Any]:
        grouped = self.by_type()
        return {
            "valid": self.valid,
            "anomaly_types": sorted(t for t in grouped if t in self.bad_types),
            "counts": {t: len(v) for t, v in sorted(grouped.items())},
            "anomalies": {
                t: [a.to_dict() for a in v[:MAX_EXAMPLES]] for t, v in sorted(grouped.items())
            },
            "stats": self.stats,
        }


def _records(c: Completed) -> list[tuple[int, Any]]:
    recs = (c.value or {}).get("records") or []
    return [(int(o), v) for o, v in recs]



class _Checker:
    def __init__(self, ops: Sequence[Op]) -> None:
        self.all = pair(ops)
        self.anomalies: list[Anomaly] = []
        self.sends = [c for c in self.all if c.f == "send"]
        self.reads = [c for c in self.all if c.f in READ_FS and c.type is OpType.OK]
        # per key: value -> the send that attempted it
        self.send_of: dict[Any, dict[Any, Completed]] = defaultdict(dict)
        for s in self.sends:
            self.send_of[s.key].setdefault(s.invoke.value["value"], s)

    def add(self, type_: str, key: Any, message: str, ops: Iterable[Completed], **details: Any):
        self.anomalies.append(Anomaly(type_, key, message, list(ops), details))

    # ------------------------------------------------------------- stage A

    def check_offsets(self) -> None:
        """One offset, one value; one value, one offset (sends' acks included)."""
        at: dict[Any, dict[int, dict[Any, list[Completed]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        where: dict[Any, dict[Any, dict[int, list[Completed]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        for s in self.sends:
            if s.type is OpType.OK and s.value.get("offset") is not None:
                k, v, o = s.key, s.value["value"], int(s.value["offset"])
                at[k][o][v].append(s)
                where[k][v][o].append(s)
        for r in self.reads:
            k = r.key
            for o, v in _records(r):
                if not at[k][o][v] or at[k][o][v][-1] is not r:
                    at[k][o][v].append(r)
                if not where[k][v][o] or where[k][v][o][-1] is not r:
                    where[k][v][o].append(r)
        for k, offsets in at.items():
            for o, values in sorted(offsets.items()):
                if len(values) > 1:
                    self.add(
                        "inconsistent-offsets", k, f"offset {o} holds {len(values)} values",
                        [ops[0] for ops in values.values()],
                        offset=o, values=sorted(values, key=repr),
                    )
        for k, values in where.items():
            for v, offs in values.items():
                if len(offs) > 1:
                    self.add(
                        "duplicate", k, f"value {v!r} at offsets {sorted(offs)}",
                        [ops[0] for ops in offs.values()], value=v, offsets=sorted(offs),
                    )

    def check_read_values(self) -> None:
        """Every value read was sent, and its send did not definitely fail."""
        for r in self.reads:
            k = r.key
            for o, v in _records(r):
                s = self.send_of[k].get(v)
                if s is None:
                    self.add("unexpected", k, f"read value {v!r} at {o} that nobody sent",
                             [r], offset=o, value=v)
                elif s.type is OpType.FAIL:
                    self.add("aborted-read", k, f"read value {v!r} at {o} whose send failed",
                             [s, r], offset=o, value=v)

    def check_lost(self) -> None:
        """Acknowledged sends must be read once anyone read past their offset.

        With a final drain of the key (not a per-node one) every acknowledged
        send must have been read: a miss beyond the drain's end is
        unseen-after-drain, also a failure.
        """
        read_values: dict[Any, set[Any]] = defaultdict(set)
        max_read: dict[Any, int] = {}
        drained: set[Any] = set()
        for r in self.reads:
            k = r.key
            for o, v in _records(r):
                read_values[k].add(v)
                max_read[k] = max(max_read.get(k, -1), o)
            if r.f == "drain" and not (r.value or {}).get("node"):
                drained.add(k)
        for s in self.sends:
            if s.type is not OpType.OK:
                continue
            k, v = s.key, s.value["value"]
            if v in read_values[k]:
                continue
            o = s.value.get("offset")
            if o is not None and o <= max_read.get(k, -1):
                self.add("lost-write", k,
                         f"acknowledged value {v!r} at offset {o} never read, though "
                         f"offset {max_read[k]} was", [s], offset=o, value=v)
            elif k in drained:
                self.add("unseen-after-drain", k,
                         f"acknowledged value {v!r} (offset {o}) not in the final drain",
                         [s], offset=o, value=v)
            else:
                self.add("unseen", k, f"acknowledged value {v!r} not read (yet)", [s],
                         offset=o, value=v)

    def check_read_shapes(self) -> None:
        """A read returns consecutive offsets starting at the one asked for."""
        for r in self.reads:
            k = r.key
            recs = _records(r)
            if not recs:
                continue
            start = (r.invoke.value or {}).get("offset")
            if start is not None and recs[0][0] != start:
                self.add("fetch-offset-mismatch", k,
                         f"read from {start} returned first offset {recs[0][0]}", [r],
                         asked=start, got=recs[0][0])
            for (o1, _), (o2, _) in itertools.pairwise(recs):
                if o2 > o1 + 1:
                    self.add("int-poll-skip", k, f"read jumped from {o1} to {o2}", [r],
                             prev=o1, next=o2)
                elif o2 <= o1:
                    self.add("int-nonmonotonic-poll", k, f"read went from {o1} to {o2}", [r],
                             prev=o1, next=o2)

    def check_consumer_streams(self) -> None:
        """Consecutive polls of one consumer session continue where the last ended."""
        last: dict[tuple[Any, Any], tuple[int, Completed]] = {}
        for c in self.all:
            v = c.value if isinstance(c.value, dict) else {}
            consumer = v.get("consumer", (c.invoke.value or {}).get("consumer"))
            if consumer is None or c.type is not OpType.OK:
                continue
            k = c.key
            if c.f == "assign":
                last.pop((consumer, k), None)
                continue
            if c.f != "poll":
                continue
            recs = _records(c)
            if not recs:
                continue
            prev = last.get((consumer, k))
            if prev is not None:
                expect = prev[0] + 1
                if recs[0][0] > expect:
                    self.add("poll-skip", k,
                             f"consumer {consumer} skipped from {prev[0]} to {recs[0][0]}",
                             [prev[1], c], prev=prev[0], next=recs[0][0])
                elif recs[0][0] < expect:
                    self.add("nonmonotonic-poll", k,
                             f"consumer {consumer} went back from {prev[0]} to {recs[0][0]}",
                             [prev[1], c], prev=prev[0], next=recs[0][0])
            last[(consumer, k)] = (recs[-1][0], c)

    def check_producer_order(self) -> None:
        """One idempotent producer's records lie in a partition in its sending order.

        Kafka's guarantee for an idempotent producer, which raftlog's Producer
        gives too: batches of a partition are numbered in order, retried under
        their numbers, split in place when refused as too large, and renumbered
        in order after an epoch bump (client/aio.py). A record's place is where
        a read found it (the log as it is), else its acknowledged offset.
        Records with no known place (failed, or unknown and never read) say
        nothing; among the others, a later ``seq`` must have a larger offset.
        A producer whose client is not idempotent promises no order (its
        batches in flight are retried apart, as in Kafka) and is skipped.
        """
        read_at: dict[Any, dict[Any, int]] = defaultdict(dict)
        for r in self.reads:
            for o, v in _records(r):
                read_at[r.key].setdefault(v, o)
        placed: dict[tuple[Any, Any], list[tuple[int, int, Completed]]] = defaultdict(list)
        for s in self.sends:
            inv = s.invoke.value or {}
            producer = inv.get("producer")
            if producer is None or inv.get("idempotent") is False:
                continue
            k = s.key
            o = read_at[k].get(inv["value"])
            if o is None and s.type is OpType.OK:
                o = s.value.get("offset")
            if o is not None:
                placed[(producer, k)].append((int(inv["seq"]), int(o), s))
        reported: set[tuple[Any, Any, int, int]] = set()
        for (producer, k), sends in placed.items():
            sends.sort(key=lambda t: t[0])
            for (seq1, o1, s1), (seq2, o2, s2) in itertools.pairwise(sends):
                if o2 <= o1:
                    reported.add((producer, k, seq1, seq2))
                    self.add("producer-reorder", k,
                             f"producer {producer} sent seq {seq1} before {seq2}, but they "
                             f"lie at offsets {o1} and {o2}", [s1, s2],
                             producer=producer, seqs=[seq1, seq2], offsets=[o1, o2])
        self._check_producer_order_per_read(reported)

    def _check_producer_order_per_read(self, reported: set[tuple[Any, Any, int, int]]) -> None:
        """The same order within each read's view of the log. The pass above
        places a record where a read FIRST found it, so a log that changed
        under earlier reads (itself a duplicate or inconsistent-offsets
        anomaly) can hide a reorder there; a later read still shows it."""
        order_of: dict[Any, dict[Any, tuple[Any, int, Completed]]] = defaultdict(dict)
        for s in self.sends:
            inv = s.invoke.value or {}
            if inv.get("producer") is not None and inv.get("idempotent") is not False:
                order_of[s.key][inv["value"]] = (inv["producer"], int(inv["seq"]), s)
        for r in self.reads:
            k = r.key
            latest: dict[Any, tuple[int, int, Completed]] = {}  # producer -> (seq, offset, send)
            for o, v in sorted(_records(r), key=lambda rec: rec[0]):
                known = order_of[k].get(v)
                if known is None:
                    continue
                producer, seq, s = known
                prev = latest.get(producer)
                pair_key = (producer, k, seq, prev[0] if prev is not None else -1)
                if prev is not None and seq < prev[0] and pair_key not in reported:
                    reported.add(pair_key)
                    self.add("producer-reorder", k,
                             f"producer {producer} sent seq {seq} before {prev[0]}, but a read "
                             f"found them at offsets {o} and {prev[1]}", [s, prev[2], r],
                             producer=producer, seqs=[seq, prev[0]], offsets=[o, prev[1]])
                if prev is None or seq > prev[0]:
                    latest[producer] = (seq, o, s)

    def check_partitions(self) -> None:
        """A send acknowledged in a partition must be acknowledged in the one it
        was for: the one it named, or the one its record key maps to."""
        for s in self.sends:
            if s.type is not OpType.OK:
                continue
            got = s.value.get("partition")
            if got is not None and got != s.key:
                self.add("wrong-partition", s.key,
                         f"value {s.value['value']!r} for partition {s.key} (record key "
                         f"{s.value.get('record_key')!r}) acknowledged in partition {got}",
                         [s], value=s.value["value"], partition=got)

    def check_nodes(self) -> None:
        """Per-node final reads over the wire (unsafe_follower_reads only) must agree.

        Every mode also compares each node's data dir after the run
        (jepsen/replicas.py); this is the same question asked of live nodes.
        """
        per: dict[Any, dict[str, tuple[list[tuple[int, Any]], Completed]]] = defaultdict(dict)
        for r in self.reads:
            node = (r.value or {}).get("node")
            if r.f == "drain" and node:
                per[r.key][node] = (_records(r), r)
        for k, nodes in per.items():
            logs = {n: [v for _, v in recs] for n, (recs, _) in nodes.items()}
            longest = max(logs.values(), key=len)
            for n, log in sorted(logs.items()):
                if log != longest:
                    self.add("node-divergence", k,
                             f"node {n} holds {len(log)} records, another {len(longest)}, "
                             "or different values", [nodes[n][1]],
                             node=n, length=len(log), longest=len(longest))

    # ------------------------------------------------------------- stage B

    def _realtime(
        self,
        bounds: list[tuple[int, int, Completed]],  # (complete_ns, lower bound, op)
        readers: list[tuple[int, int, Completed]],  # (invoke_ns, observed, op)
        type_: str,
        key: Any,
        what: str,
        strict: bool = False,
    ) -> None:
        """Each reader must observe at least the largest bound completed before it began."""
        bounds.sort(key=lambda t: t[0])
        readers.sort(key=lambda t: t[0])
        best: tuple[int, Completed] | None = None
        i = 0
        for t_inv, observed, r in readers:
            while i < len(bounds) and bounds[i][0] < t_inv:
                if best is None or bounds[i][1] > best[0]:
                    best = (bounds[i][1], bounds[i][2])
                i += 1
            if best is None:
                continue
            if observed < best[0] or (strict and observed == best[0]):
                self.add(type_, key,
                         f"{what} {observed} after an op that completed with {best[0]}",
                         [best[1], r], observed=observed, bound=best[0])

    def check_send_order(self) -> None:
        """Send A acknowledged before send B was invoked => off(A) < off(B)."""
        by_key: dict[Any, list[Completed]] = defaultdict(list)
        for s in self.sends:
            if s.type is OpType.OK and s.value.get("offset") is not None:
                by_key[s.key].append(s)
        for k, sends in by_key.items():
            self._realtime(
                [(s.complete_ns or 0, int(s.value["offset"]), s) for s in sends],
                [(s.invoke_ns, int(s.value["offset"]), s) for s in sends],
                "realtime-send-order", k, "send landed at offset", strict=True,
            )

    def check_stale_reads(self) -> None:
        """A linearizable end offset covers everything acknowledged or read before.

        Reads marked ``serializable`` (any replica's copy) are exempt from being
        stale; every other stage checks them like any read."""
        bounds: dict[Any, list[tuple[int, int, Completed]]] = defaultdict(list)
        readers: dict[Any, list[tuple[int, int, Completed]]] = defaultdict(list)
        for c in self.all:
            if c.type is not OpType.OK or c.complete_ns is None:
                continue
            k = c.key
            v = c.value or {}
            if c.f == "send" and v.get("offset") is not None:
                bounds[k].append((c.complete_ns, int(v["offset"]) + 1, c))
                continue
            if c.f not in READ_FS and c.f != "list_offsets":
                continue
            if v.get("node"):
                continue  # a per-node read is not linearizable by design
            recs = _records(c) if c.f in READ_FS else []
            if recs:
                bounds[k].append((c.complete_ns, recs[-1][0] + 1, c))
            if v.get("end") is not None:
                bounds[k].append((c.complete_ns, int(v["end"]), c))
            if v.get("serializable"):
                # Any replica's committed copy: what it saw was committed, so it
                # bounds later reads, but it may itself be behind (not a reader).
                continue
            if v.get("end") is not None:
                readers[k].append((c.invoke_ns, int(v["end"]), c))
            elif c.f in READ_FS and not recs:
                # An empty read from offset f says the log ended at or before f.
                start = (c.invoke.value or {}).get("offset")
                if start is not None:
                    readers[k].append((c.invoke_ns, int(start), c))
        for k in readers:
            self._realtime(bounds[k], readers[k], "stale-read", k, "observed end offset")

    def check_committed_offsets(self) -> None:
        """Committed consumer offsets never go backwards in real time.

        Assumes the workload's commits per (group, key) are monotone (one
        consumer per group and partition at a time), as ours are.
        """
        bounds: dict[Any, list[tuple[int, int, Completed]]] = defaultdict(list)
        readers: dict[Any, list[tuple[int, int, Completed]]] = defaultdict(list)
        for c in self.all:
            if c.type is not OpType.OK or c.complete_ns is None:
                continue
            v = c.value or {}
            gk = (v.get("group"), v.get("key"))
            if c.f == "commit":
                bounds[gk].append((c.complete_ns, int(v["offset"]), c))
            elif c.f == "fetch_committed":
                off = v.get("offset")
                observed = -1 if off is None else int(off)
                readers[gk].append((c.invoke_ns, observed, c))
                bounds[gk].append((c.complete_ns, observed, c))
        for gk in readers:
            self._realtime(bounds[gk], readers[gk], "committed-offset-regression", list(gk),
                           "committed offset")

    # ------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for c in self.all:
            counts[c.f][c.type.value] += 1
        read_values: dict[Any, set[Any]] = defaultdict(set)
        for r in self.reads:
            for _, v in _records(r):
                read_values[r.key].add(v)
        info_sends = [s for s in self.sends if s.type is OpType.INFO]
        recovered = sum(1 for s in info_sends if s.invoke.value["value"] in read_values[s.key])
        errors: dict[str, int] = defaultdict(int)
        for c in self.all:
            if c.type is OpType.INFO and c.f == "send":
                errors[c.complete.error if c.complete and c.complete.error else "none"] += 1
        return {
            "ops": {f: dict(v) for f, v in sorted(counts.items())},
            "info_sends": len(info_sends),
            "info_sends_recovered": recovered,
            "info_causes": dict(errors),
            "keys": sorted({s.key for s in self.sends}, key=repr),
        }


def check(ops: Sequence[Op]) -> LogCheckResult:
    """Run every stage on a history; see the module docstring for the op shapes."""
    ck = _Checker(ops)
    ck.check_offsets()
    ck.check_read_values()
    ck.check_lost()
    ck.check_read_shapes()
    ck.check_consumer_streams()
    ck.check_producer_order()
    ck.check_partitions()
    ck.check_nodes()
    ck.check_send_order()
    ck.check_stale_reads()
    ck.check_committed_offsets()
    return LogCheckResult(ck.anomalies, ck.stats())


__all__ = ["BAD_TYPES", "Anomaly", "LogCheckResult", "check"]
