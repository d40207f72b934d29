"""Read the stopped nodes' data directories for the replica check (jepsen/replicas.py).

Jepsen stays on the outside of the service (DESIGN.md §2: it reaches nodes
through the client and the CLI, never by importing ``raft`` or ``log``), so
the directories are read by a separate process, ``python -m
raftlog.log.inspect``, which opens them read-only and prints JSON. That also
keeps RocksDB out of the harness process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from . import checker_compact, replicas
from .history import Op
from .replicas import ReplicaAnomaly, ReplicaCopy
from .workload import decode_value

INSPECT_TIMEOUT_S = 120.0


async def read_report(dirs: Sequence[Path], topic: str) -> dict[str, Any]:
    """``python -m raftlog.log.inspect`` over ``dirs``; its JSON report (at most
    INSPECT_TIMEOUT_S: the run must end even if a directory cannot be read)."""
    cmd = [sys.executable, "-m", "raftlog.log.inspect", "--topic", topic,
           *(str(d) for d in dirs)]
    with trio.fail_after(INSPECT_TIMEOUT_S):
        proc = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True,
                                      check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"inspect exited with {proc.returncode}: {' '.join(tail)}")
    return json.loads(proc.stdout)


def _value(text: Any) -> Any:
    # inspect writes values as UTF-8 with surrogateescape; give them the same
    # shape as the workload's reads (ints for our values) so they compare equal.
    if not isinstance(text, str):
        return text
    return decode_value(text.encode("utf-8", "surrogateescape"))


def copies_from_report(
    report: Mapping[str, Any],
) -> tuple[list[ReplicaCopy], list[str], list[ReplicaAnomaly]]:
    """The inspect report as plain copies, plus notes (unreadable dirs) and anomalies
    (nodes whose metadata maps a partition to different groups)."""
    copies: list[ReplicaCopy] = []
    notes: list[str] = []
    anomalies: list[ReplicaAnomaly] = []
    nodes = report.get("nodes") or {}
    for path, node in sorted(nodes.items()):
        label = node.get("node_id") or Path(path).name
        if node.get("error"):
            notes.append(f"{label}: data dir not (fully) read: {node['error']}")
        for key, part in sorted((node.get("partitions") or {}).items()):
            applied = part.get("applied_index")
            copies.append(ReplicaCopy(
                label, int(key), int(part["start"]), int(part["end"]),
                [(int(o), _value(v)) for o, v in part["records"]],
                int(applied) if applied is not None else None,
            ))
    for c in report.get("mapping_conflicts") or []:
        # Group ids are assigned when the metadata group applies CREATE_TOPIC:
        # two nodes disagreeing is the metadata state machine diverging (§5.4.3).
        label = nodes.get(c["path"], {}).get("node_id") or c["path"]
        anomalies.append(ReplicaAnomaly(
            "replica-divergence", c["partition"],
            f"{label}'s metadata maps partition {c['partition']} to group {c['group']}, "
            f"another node's to group {c['other_group']}",
            {"node": label, "group": c["group"], "other_group": c["other_group"]},
        ))
    return copies, notes, anomalies


async def check_replicas(dirs: Sequence[Path], topic: str, ops: Sequence[Op]) -> dict[str, Any]:
    """Read ``dirs`` and compare every replica with the others and with the drain;
    the ``replicas`` entry of results.json."""
    if not dirs:
        return replicas.not_checked("no data dir to read")
    try:
        report = await read_report(dirs, topic)
    except (OSError, RuntimeError, ValueError, trio.TooSlowError) as exc:
        return replicas.not_checked(f"reading the data dirs failed: {exc!r}")
    copies, notes, extra = copies_from_report(report)
    drains, sent = replicas.from_history(ops)
    check = replicas.compare(copies, drains, sent,
                             compacted=checker_compact.is_compact_history(ops))
    check.anomalies += extra
    check.notes[:0] = notes
    return check.to_dict()
