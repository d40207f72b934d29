"""Linearizability of each partition's log: a Wing-Gong-Lowe search.

The model is an append-only log per key (jepsen-notes §3.4 stage C):

- ``send v -> ok o``  legal iff ``o == len(log)``; appends v.
- ``send v -> info``  may take effect at any point after its invoke, or never
  (Knossos semantics). If some read saw v at offset o, the send is pinned to
  o. If the history contains a final drain covering the whole log and v is
  not in it, v never landed and the send is dropped; otherwise it stays in as
  "may append anywhere after invoke" (its return is the end of the history,
  and appending last is indistinguishable from never).
- ``fetch/poll/drain from f -> records``  legal iff the records are
  ``log[f : f + m]``; an empty read is legal iff ``f >= len(log)``; when the
  reply carries the end offset, also ``len(log) == end``.
- ``list_offsets -> end``  legal iff ``len(log) == end``.
- ``fail`` ops had no effect and are removed; reads that did not complete ok
  tell nothing and are removed.

The search is porcupine's ``checkSingle`` (Wing & Gong 1993 with Lowe's
memoisation): a doubly linked list of call/return entries, a bitset of the
linearized ops, a cache of visited (bitset, log) configurations, and
backtracking. Keys are independent (P-compositionality, Horn & Kroening), so
each partition is searched on its own, which is what keeps it fast.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from .history import Completed, Op, OpType, pair

log = logging.getLogger(__name__)

_MOD1 = (1 << 61) - 1
_MOD2 = (1 << 31) - 1
_BASE1 = 1_000_003
_BASE2 = 916_361


class Kind(Enum):
    SEND = "send"
    READ = "read"
    END = "end"


class Verdict(StrEnum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not-linearizable"
    UNKNOWN = "unknown"  # time limit hit: NOT a pass


@dataclass(slots=True)
class ModelOp:
    id: int
    kind: Kind
    call_ns: int
    return_ns: float  # inf for ops whose outcome is unknown
    source: Completed
    value: Any = None  # SEND: the value
    offset: int | None = None  # SEND: pinned offset; READ: from
    values: tuple[Any, ...] = ()  # READ: what it returned
    end: int | None = None  # READ / END: the log length it observed
    # SEND with unknown offset: offsets it cannot occupy, because a read saw
    # another value there or another send is pinned there. Sound pruning that
    # keeps unobserved info sends from being tried at every position.
    forbidden: frozenset[int] | set[int] = frozenset()


@dataclass(slots=True)
class _Entry:
    op: ModelOp
    is_call: bool
    match: _Entry | None = None  # call <-> return
    prev: _Entry | None = None
    next: _Entry | None = None


@dataclass(slots=True)
class KeyResult:
    key: Any
    verdict: Verdict
    ops: int
    seconds: float
    counterexample: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "verdict": self.verdict.value,
            "ops": self.ops,
            "seconds": round(self.seconds, 3),
            "counterexample": self.counterexample,
        }


@dataclass(slots=True)
class LinResult:
    keys: list[KeyResult] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return all(k.verdict is Verdict.LINEARIZABLE for k in self.keys)

    @property
    def verdict(self) -> Verdict:
        if any(k.verdict is Verdict.NOT_LINEARIZABLE for k in self.keys):
            return Verdict.NOT_LINEARIZABLE
        if any(k.verdict is Verdict.UNKNOWN for k in self.keys):
            return Verdict.UNKNOWN
        return Verdict.LINEARIZABLE

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "verdict": self.verdict.value,
            "keys": [k.to_dict() for k in self.keys],
        }


# ---------------------------------------------------------------- building ops



def model_ops(completed: Sequence[Completed]) -> dict[Any, list[ModelOp]]:
    """Turn one history's operations into model operations, grouped by key."""
    by_key: dict[Any, list[Completed]] = defaultdict(list)
    for c in completed:
        if c.f in ("send", "fetch", "poll", "drain", "list_offsets"):
            by_key[c.key].append(c)
    out: dict[Any, list[ModelOp]] = {}
    for k, cs in by_key.items():
        observed: dict[Any, int] = {}
        read_offsets: set[int] = set()
        drain_end: int | None = None
        for c in cs:
            if c.f in ("fetch", "poll", "drain") and c.type is OpType.OK:
                v = c.value or {}
                if v.get("node"):
                    continue
                for o, val in v.get("records") or []:
                    observed.setdefault(val, int(o))
                    read_offsets.add(int(o))
                if c.f == "drain" and v.get("offset", 0) == 0 and v.get("end") is not None:
                    drain_end = max(drain_end or 0, int(v["end"]))
        # A drain that read every offset below its end saw every landed value.
        full_drain = drain_end is not None and all(o in read_offsets for o in range(drain_end))
        ops: list[ModelOp] = []
        for c in cs:
            if c.type is OpType.FAIL:
                continue
            inv = c.invoke.value or {}
            ret_ns: float = c.complete_ns if c.type is OpType.OK else float("inf")
            if c.complete_ns is None:
                ret_ns = float("inf")
            if c.f == "send":
                val = inv["value"]
                if c.type is OpType.OK:
                    off = (c.value or {}).get("offset")
                    offset = int(off) if off is not None else observed.get(val)
                else:
                    offset = observed.get(val)
                    if offset is None and full_drain:
                        continue  # never landed: the drain would have seen it
                ops.append(ModelOp(len(ops), Kind.SEND, c.invoke_ns, ret_ns, c, val, offset))
                continue
            if c.type is not OpType.OK:
                continue  # a read with unknown outcome tells nothing
            v = c.value or {}
            if v.get("node") or v.get("serializable"):
                # Per-node and serializable reads are not linearizable by design
                # (their records still pinned the sends' offsets above).
                continue
            if c.f == "list_offsets":
                ops.append(ModelOp(len(ops), Kind.END, c.invoke_ns, ret_ns, c,
                                   end=int(v["end"])))
                continue
            recs = v.get("records") or []
            start = int(inv.get("offset", recs[0][0] if recs else 0))
            end = v.get("end")
            ops.append(ModelOp(len(ops), Kind.READ, c.invoke_ns, ret_ns, c, offset=start,
                               values=tuple(val for _, val in recs),
                               end=None if end is None else int(end)))
        out[k] = ops
        taken = read_offsets | {op.offset for op in ops if op.kind is Kind.SEND
                                and op.offset is not None}
        for op in ops:
            if op.kind is Kind.SEND and op.offset is None:
                op.forbidden = taken
    return out


# ---------------------------------------------------------------- the search


def _build_list(ops: Sequence[ModelOp]) -> _Entry:
    events: list[tuple[float, int, _Entry]] = []
    for op in ops:
        call = _Entry(op, True)
        ret = _Entry(op, False)
        call.match = ret
        ret.match = call
        # At equal times a call sorts before a return: concurrent, the weaker claim.
        events.append((op.call_ns, 0, call))
        events.append((op.return_ns, 1, ret))
    events.sort(key=lambda e: (e[0], e[1], e[2].op.id))
    head = _Entry(ModelOp(-1, Kind.END, 0, 0, None), True)  # type: ignore[arg-type]
    prev = head
    for _, _, e in events:
        prev.next = e
        e.prev = prev
        prev = e
    return head


def _lift(call: _Entry) -> None:
    call.prev.next = call.next  # type: ignore[union-attr]
    if call.next is not None:
        call.next.prev = call.prev
    ret = call.match
    assert ret is not None
    ret.prev.next = ret.next  # type: ignore[union-attr]
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Entry) -> None:
    ret = call.match
    assert ret is not None
    ret.prev.next = ret  # type: ignore[union-attr]
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call  # type: ignore[union-attr]
    if call.next is not None:
        call.next.prev = call


def _describe(op: ModelOp) -> dict[str, Any]:
    d = op.source.brief()
    d["model"] = {
        "kind": op.kind.value,
        "value": op.value,
        "offset": op.offset,
        "values": list(op.values),
        "end": op.end,
    }
    return d


_FREE_TOKEN = hash(("raftlog.jepsen", "unobserved value"))


def _is_free(op: ModelOp) -> bool:
    """An info send nobody saw: interchangeable with every other such send."""
    return op.kind is Kind.SEND and op.offset is None and op.return_ns == float("inf")


def check_key(key: Any, ops: Sequence[ModelOp], time_limit: float = 30.0) -> KeyResult:
    """Search for a linearization of one key's operations.

    Symmetry reduction: unobserved info sends ("free" sends) differ only in
    their invoke time (their value is never read, their return is the end of
    history, their forbidden offsets are the same). Once invoked they are
    interchangeable, so at each scan only the first available one is tried and
    they all hash alike; without this, every subset of them would be a
    distinct cached state and the search explodes.
    """
    started = time.monotonic()
    if not ops:
        return KeyResult(key, Verdict.LINEARIZABLE, 0, 0.0)
    head = _build_list(ops)
    logv: list[Any] = []
    h1 = [0]
    h2 = [0]
    linearized = 0
    cache: set[tuple[int, int, int, int]] = set()
    # (entry, tried_free at the time it was chosen)
    stack: list[tuple[_Entry, bool]] = []
    best_depth = -1
    best: dict[str, Any] | None = None
    steps = 0
    entry = head.next
    tried_free = False

    def legal(op: ModelOp) -> bool:
        n = len(logv)
        if op.kind is Kind.SEND:
            return op.offset == n if op.offset is not None else n not in op.forbidden
        if op.kind is Kind.END:
            return op.end == n
        if op.end is not None and op.end != n:
            return False
        m = len(op.values)
        f = op.offset or 0
        if m == 0:
            return f >= n
        return f + m <= n and tuple(logv[f : f + m]) == op.values

    while head.next is not None:
        steps += 1
        if steps & 0xFFF == 0 and time.monotonic() - started > time_limit:
            return KeyResult(key, Verdict.UNKNOWN, len(ops), time.monotonic() - started,
                             {"reason": f"time limit {time_limit}s", "depth": len(stack)})
        assert entry is not None
        if entry.is_call:
            op = entry.op
            free = _is_free(op)
            if free and tried_free:
                entry = entry.next
                continue
            if legal(op):
                bits = linearized | (1 << op.id)
                if op.kind is Kind.SEND:
                    hv = _FREE_TOKEN if free else hash(op.value)
                    k1 = (h1[-1] * _BASE1 + hv) % _MOD1
                    k2 = (h2[-1] * _BASE2 + hv) % _MOD2
                    state = (bits, len(logv) + 1, k1, k2)
                else:
                    state = (bits, len(logv), h1[-1], h2[-1])
                if state not in cache:
                    cache.add(state)
                    if op.kind is Kind.SEND:
                        logv.append(_FREE_TOKEN if free else op.value)
                        h1.append(state[2])
                        h2.append(state[3])
                    linearized = bits
                    stack.append((entry, tried_free))
                    _lift(entry)
                    entry = head.next
                    tried_free = False
                    continue
            if free:
                tried_free = True
            entry = entry.next
            continue
        # A return whose call is not linearized yet: this branch is stuck.
        if len(stack) >= best_depth:
            best_depth = len(stack)
            pending = []
            e = head.next
            while e is not None and e is not entry and len(pending) < 16:
                if e.is_call:
                    pending.append(_describe(e.op))
                e = e.next
            best = {
                "stuck_op": _describe(entry.op),
                "log_length": len(logv),
                "log_tail": [v if v != _FREE_TOKEN else "<unobserved>" for v in logv[-8:]],
                "linearized_tail": [_describe(s.op) for s, _ in stack[-8:]],
                "concurrent": pending,
            }
        if not stack:
            break
        top, was_tried = stack.pop()
        linearized &= ~(1 << top.op.id)
        if top.op.kind is Kind.SEND:
            logv.pop()
            h1.pop()
            h2.pop()
        _unlift(top)
        entry = top.next
        tried_free = was_tried or _is_free(top.op)
    elapsed = time.monotonic() - started
    if head.next is None:
        return KeyResult(key, Verdict.LINEARIZABLE, len(ops), elapsed)
    return KeyResult(key, Verdict.NOT_LINEARIZABLE, len(ops), elapsed, best)


def check(ops: Sequence[Op], time_limit_per_key: float = 30.0) -> LinResult:
    """Check every key of a history independently."""
    result = LinResult()
    for key, mops in sorted(model_ops(pair(ops)).items(), key=lambda kv: repr(kv[0])):
        r = check_key(key, mops, time_limit_per_key)
        log.info("linearizability key=%s verdict=%s ops=%d seconds=%.3f",
                 key, r.verdict.value, r.ops, r.seconds)
        result.keys.append(r)
    return result
