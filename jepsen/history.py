"""Operation histories: what the clients asked, what they were told, and when.

A history is a sequence of operations written as JSON lines. Every client
operation appears twice: an ``invoke`` (written *before* the request leaves,
so a crash of the harness can never hide a request that reached the
cluster) and a completion: ``ok``, ``fail`` or ``info``.

Completion types follow Jepsen/Knossos semantics, which the checkers rely on
for soundness:

- ``ok``: the operation took effect, somewhere between invoke and completion.
- ``fail``: the operation certainly had NO effect. Only used when the server
  guarantees it (the error is returned before anything is appended), or for
  reads, which never have effects.
- ``info``: the outcome is unknown (timeout, connection lost, anything
  ambiguous). It may take effect at any time after its invoke, or never.
  A process whose op ended ``info`` is retired: it may still be in flight, so
  the worker continues under a fresh process id (a process is sequential).

Nemesis operations use process ``"nemesis"``; their ``info`` completions mark
the start and end of fault windows.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from raftlog.client.errors import ErrorCode, RaftlogError

NEMESIS = "nemesis"


class OpType(StrEnum):
    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


# Functions that only read: whatever went wrong, nothing was changed, so an
# error is always a definite ``fail``.
READ_FUNCTIONS = frozenset(
    {"fetch", "poll", "list_offsets", "fetch_committed", "drain", "metadata"}
)

# Error codes after which the server guarantees the request had no effect:
# they are returned before anything is proposed to Raft (FENCED: decided when
# the entry is applied, as a refusal that changes nothing). TIMEOUT, connection
# loss and INTERNAL are deliberately absent: the write may have committed.
DEFINITE_FAILURE_CODES = frozenset(
    {
        ErrorCode.NOT_LEADER,
        ErrorCode.INVALID_REQUEST,
        ErrorCode.UNKNOWN_TOPIC,
        ErrorCode.UNKNOWN_PARTITION,
        ErrorCode.THROTTLED,
        ErrorCode.RECORD_TOO_LARGE,
        ErrorCode.CORRUPT_BATCH,
        ErrorCode.OUT_OF_ORDER_SEQUENCE,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.CLUSTER_MISMATCH,
        ErrorCode.TOPIC_EXISTS,
        ErrorCode.OUT_OF_RANGE,
        ErrorCode.NOT_AVAILABLE,
        # A fenced commit of an old generation: the partition refused it when
        # applying it (or the consumer, before sending); either way nothing changed.
        ErrorCode.FENCED,
    }
)

def error_name(exc: BaseException) -> str:
    """A short, stable description of an error for the history."""
    if isinstance(exc, RaftlogError):
        return f"{exc.code.value}:{type(exc).__name__}"
    return type(exc).__name__


def classify_error(f: str, exc: BaseException) -> OpType:
    """Completion type of an operation that raised ``exc``.

    A write is ``fail`` only for a code that guarantees it had no effect.
    That holds even though the client library retries internally: once one
    of its attempts has an unknown outcome, it reports any later definite
    error as TIMEOUT (outcome unknown) instead (raftlog.client.aio._call).
    That rule exists because this checker caught the client reporting a
    committed produce as UNKNOWN_TOPIC; it keeps the aborted-read check
    strong.
    """
    if f in READ_FUNCTIONS:
        return OpType.FAIL
    if (
        isinstance(exc, RaftlogError)
        and type(exc).__name__ != "ConnectionLostError"
        and exc.code in DEFINITE_FAILURE_CODES
    ):
        return OpType.FAIL
    return OpType.INFO


@dataclass(slots=True)
class Op:
    """One line of a history."""

    index: int
    process: int | str
    type: OpType
    f: str
    value: Any = None
    time_ns: int = 0  # monotonic, relative to the start of the history
    wall: float = 0.0  # time.time() for humans and node-log correlation
    node: str | None = None
    error: str | None = None

    def to_json(self) -> str:
        d: dict[str, Any] = {
            "index": self.index,
            "process": self.process,
            "type": self.type.value,
            "f": self.f,
            "value": self.value,
            "time_ns": self.time_ns,
            "wall": round(self.wall, 6),
        }
        if self.node is not None:
            d["node"] = self.node
        if self.error is not None:
            d["error"] = self.error
        return json.dumps(d, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Op:
        return cls(
            index=int(d["index"]),
            process=d["process"],
            type=OpType(d["type"]),
            f=str(d["f"]),
            value=d.get("value"),
            time_ns=int(d.get("time_ns", 0)),
            wall=float(d.get("wall", 0.0)),
            node=d.get("node"),
            error=d.get("error"),
        )


def save(ops: Iterable[Op], path: Path | str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for op in ops:
            fh.write(op.to_json() + "\n")


def load(path: Path | str) -> list[Op]:
    """Read a history; a torn last line (harness crashed mid-write) is ignored."""
    ops: list[Op] = []
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            ops.append(Op.from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, ValueError):
            if n == len(lines) - 1:
                break
            raise
    return ops


class Recorder:
    """Appends operations to a history, in memory and (optionally) to a file.

    Thread-safe and cheap; every line is flushed as written so that the
    invoke is on disk before the request leaves.
    """

    def __init__(self, path: Path | str | None = None, *, clock_ns: Any = None) -> None:
        self._lock = threading.Lock()
        self._clock = clock_ns or time.monotonic_ns
        self._t0 = self._clock()
        self._fh: TextIO | None = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115
        self.ops: list[Op] = []

    def now_ns(self) -> int:
        return self._clock() - self._t0

    def _append(
        self,
        process: int | str,
        type_: OpType,
        f: str,
        value: Any,
        node: str | None,
        error: str | None,
    ) -> Op:
        with self._lock:
            op = Op(
                index=len(self.ops),
                process=process,
                type=type_,
                f=f,
                value=value,
                time_ns=self.now_ns(),
                wall=time.time(),
                node=node,
                error=error,
            )
            self.ops.append(op)
            if self._fh is not None:
                self._fh.write(op.to_json() + "\n")
                self._fh.flush()
            return op

    def invoke(self, process: int | str, f: str, value: Any = None, node: str | None = None) -> Op:
        return self._append(process, OpType.INVOKE, f, value, node, None)

    def complete(
        self,
        invoke: Op,
        type_: OpType,
        value: Any = None,
        *,
        node: str | None = None,
        error: str | None = None,
    ) -> Op:
        if type_ is OpType.INVOKE:
            raise ValueError("a completion cannot be an invoke")
        return self._append(
            invoke.process, type_, invoke.f, value, node or invoke.node, error
        )

    def nemesis(self, f: str, value: Any = None) -> Op:
        """A fault event: an info line in the nemesis process."""
        return self._append(NEMESIS, OpType.INFO, f, value, None, None)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProcessIds:
    """Logical process ids for workers: an ``info`` retires the current id.

    Worker w starts as process w; each retirement hands it
    ``w + k * concurrency`` for the next k, so ids never collide.
    """

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._current = list(range(concurrency))

    def current(self, worker: int) -> int:
        return self._current[worker]

    def retire(self, worker: int) -> int:
        self._current[worker] += self.concurrency
        return self._current[worker]


@dataclass(slots=True)
class Completed:
    """An invoke joined with its completion (``info`` if it never completed)."""

    invoke: Op
    complete: Op | None
    type: OpType
    f: str
    process: int | str
    value: Any  # the completion's value when present, else the invoke's
    invoke_ns: int
    complete_ns: int | None  # None: never completed (counts as info, open-ended)

    @property
    def key(self) -> Any:
        """The partition the operation is about (its value's "key"; the completion's
        when it has a dict value, else the invoke's)."""
        v = self.value if isinstance(self.value, dict) else self.invoke.value
        return (v or {}).get("key")

    def brief(self) -> dict[str, Any]:
        """A compact description for anomaly reports."""
        return {
            "process": self.process,
            "f": self.f,
            "type": self.type.value,
            "invoke": self.invoke.value,
            "value": self.value,
            "index": self.invoke.index,
            "complete_index": self.complete.index if self.complete else None,
            "invoke_ns": self.invoke_ns,
            "complete_ns": self.complete_ns,
            "error": self.complete.error if self.complete else "never completed",
        }


def pair(ops: Iterable[Op]) -> list[Completed]:
    """Join each client invoke with its completion; nemesis lines are skipped.

    An invoke never completed (the harness stopped) is treated as ``info``.
    """
    pending: dict[int | str, Op] = {}
    out: list[Completed] = []
    slot: dict[int, int] = {}
    for op in ops:
        if op.process == NEMESIS:
            continue
        if op.type is OpType.INVOKE:
            if op.process in pending:
                raise ValueError(
                    f"process {op.process} invoked op {op.index} while op "
                    f"{pending[op.process].index} was still pending"
                )
            pending[op.process] = op
            slot[op.index] = len(out)
            out.append(
                Completed(op, None, OpType.INFO, op.f, op.process, op.value, op.time_ns, None)
            )
            continue
        inv = pending.pop(op.process, None)
        if inv is None:
            raise ValueError(f"completion {op.index} of process {op.process} has no invoke")
        c = out[slot[inv.index]]
        c.complete = op
        c.type = op.type
        c.value = op.value if op.value is not None else inv.value
        c.complete_ns = op.time_ns
    return out


def nemesis_windows(ops: Iterable[Op]) -> list[dict[str, Any]]:
    """Fault windows from nemesis lines ``start-X`` / ``stop-X`` (for plots)."""
    open_: dict[str, int] = {}
    windows: list[dict[str, Any]] = []
    end = 0
    for op in ops:
        end = max(end, op.time_ns)
        if op.process != NEMESIS:
            continue
        if op.f.startswith("start-"):
            open_.setdefault(op.f[6:], op.time_ns)
        elif op.f.startswith("stop-"):
            kind = op.f[5:]
            if kind in open_:
                windows.append({"kind": kind, "start_ns": open_.pop(kind), "end_ns": op.time_ns})
    for kind, start in open_.items():
        windows.append({"kind": kind, "start_ns": start, "end_ns": end})
    return windows
