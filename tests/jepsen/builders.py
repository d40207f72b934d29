"""Hand-written histories for checker tests: each op with explicit times."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raftlog.jepsen.history import NEMESIS, Op, OpType


@dataclass
class HistoryBuilder:
    """Ops are given as (invoke time, completion time); lines are emitted in time order."""

    _events: list[tuple[int, int, Op]] = field(default_factory=list)
    _seq: int = 0

    def _emit(self, t: int, process: Any, type_: OpType, f: str, value: Any,
              error: str | None = None) -> None:
        self._seq += 1
        op = Op(index=0, process=process, type=type_, f=f, value=value, time_ns=t, error=error)
        self._events.append((t, self._seq, op))

    def op(self, process: Any, f: str, invoke: Any, t0: int, t1: int | None,
           type_: OpType = OpType.OK, result: Any = None, error: str | None = None
           ) -> HistoryBuilder:
        self._emit(t0, process, OpType.INVOKE, f, invoke)
        if t1 is not None:
            self._emit(t1, process, type_, f, result if result is not None else invoke, error)
        return self

    def send(self, p: Any, key: Any, value: Any, offset: int | None, t0: int, t1: int | None,
             type_: OpType = OpType.OK) -> HistoryBuilder:
        result = {"key": key, "value": value}
        if type_ is OpType.OK:
            result["offset"] = offset
        return self.op(p, "send", {"key": key, "value": value}, t0, t1, type_, result)

    def fetch(self, p: Any, key: Any, offset: int, records: list[tuple[int, Any]], t0: int,
              t1: int, end: int | None = None, f: str = "fetch", **extra: Any) -> HistoryBuilder:
        inv = {"key": key, "offset": offset, **extra}
        res = {**inv, "records": [list(r) for r in records]}
        if end is not None:
            res["end"] = end
        return self.op(p, f, inv, t0, t1, OpType.OK, res)

    def drain(self, key: Any, records: list[tuple[int, Any]], t0: int, t1: int,
              node: str | None = None) -> HistoryBuilder:
        inv: dict[str, Any] = {"key": key, "offset": 0}
        if node:
            inv["node"] = node
        end = records[-1][0] + 1 if records else 0
        res = {**inv, "records": [list(r) for r in records], "end": end}
        return self.op(f"drain-{node or 'leader'}-{key}", "drain", inv, t0, t1, OpType.OK, res)

    def list_offsets(self, p: Any, key: Any, end: int, t0: int, t1: int) -> HistoryBuilder:
        return self.op(p, "list_offsets", {"key": key}, t0, t1, OpType.OK,
                       {"key": key, "start": 0, "end": end})

    def nemesis(self, f: str, t: int) -> HistoryBuilder:
        self._emit(t, NEMESIS, OpType.INFO, f, None)
        return self

    def build(self) -> list[Op]:
        ops = [op for _, _, op in sorted(self._events, key=lambda e: (e[0], e[1]))]
        for i, op in enumerate(ops):
            op.index = i
        return ops
