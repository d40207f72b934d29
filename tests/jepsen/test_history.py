"""History recording, loading, pairing and the error -> outcome mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from raftlog.client.errors import (
    ConnectionLostError,
    FencedError,
    InvalidRequestError,
    NotLeaderError,
    RecordTooLargeError,
    RequestTimeoutError,
)
from raftlog.jepsen.history import (
    NEMESIS,
    OpType,
    ProcessIds,
    Recorder,
    classify_error,
    load,
    nemesis_windows,
    pair,
    save,
)


def test_invoke_is_on_disk_before_the_completion(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    rec = Recorder(path)
    inv = rec.invoke(0, "send", {"key": 0, "value": 1})
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["type"] == "invoke"
    rec.complete(inv, OpType.OK, {"key": 0, "value": 1, "offset": 0})
    rec.close()
    ops = load(path)
    assert [o.type for o in ops] == [OpType.INVOKE, OpType.OK]
    assert ops[1].time_ns >= ops[0].time_ns and ops[1].index == 1


def test_save_load_round_trip_and_torn_last_line(tmp_path: Path) -> None:
    rec = Recorder()
    inv = rec.invoke(3, "fetch", {"key": 1, "offset": 0}, node="n1")
    rec.complete(inv, OpType.FAIL, error="NOT_LEADER:NotLeaderError")
    rec.nemesis("start-kill", {"nodes": ["n1"]})
    path = tmp_path / "h.jsonl"
    save(rec.ops, path)
    with path.open("a") as fh:
        fh.write('{"index": 3, "proc')  # the harness died mid-line
    ops = load(path)
    assert [(o.process, o.type, o.f) for o in ops] == [
        (3, OpType.INVOKE, "fetch"), (3, OpType.FAIL, "fetch"), (NEMESIS, OpType.INFO, "start-kill")
    ]
    assert ops[1].node == "n1" and ops[1].error == "NOT_LEADER:NotLeaderError"


def test_only_no_effect_errors_are_failures() -> None:
    # NOT_LEADER is answered before anything is proposed; the client raises it
    # only if no earlier attempt of the call had an unknown outcome.
    assert classify_error("send", NotLeaderError("x")) is OpType.FAIL
    assert classify_error("send", InvalidRequestError("x")) is OpType.FAIL
    assert classify_error("send", RecordTooLargeError("x")) is OpType.FAIL
    # A fenced group commit changed nothing (the worker goes on, not retired).
    assert classify_error("gcommit", FencedError("x")) is OpType.FAIL
    assert classify_error("send", RequestTimeoutError("x")) is OpType.INFO
    assert classify_error("send", ConnectionLostError("x")) is OpType.INFO
    assert classify_error("send", OSError("reset")) is OpType.INFO
    # Reads have no effect, whatever went wrong.
    assert classify_error("fetch", RequestTimeoutError("x")) is OpType.FAIL


def test_info_retires_the_process_and_ids_never_collide() -> None:
    ids = ProcessIds(3)
    assert [ids.current(w) for w in range(3)] == [0, 1, 2]
    assert ids.retire(1) == 4
    assert ids.retire(1) == 7
    assert ids.current(0) == 0 and ids.current(1) == 7


def test_pair_joins_invokes_and_treats_open_ones_as_info() -> None:
    rec = Recorder()
    a = rec.invoke(0, "send", {"key": 0, "value": 1})
    rec.invoke(1, "send", {"key": 0, "value": 2})
    rec.complete(a, OpType.OK, {"key": 0, "value": 1, "offset": 0})
    done = pair(rec.ops)
    assert [(c.process, c.type) for c in done] == [(0, OpType.OK), (1, OpType.INFO)]
    assert done[1].complete_ns is None


def test_pair_rejects_a_process_with_two_pending_ops() -> None:
    rec = Recorder()
    rec.invoke(0, "send", {"key": 0, "value": 1})
    rec.invoke(0, "send", {"key": 0, "value": 2})
    with pytest.raises(ValueError, match="still pending"):
        pair(rec.ops)


def test_nemesis_windows_pair_start_and_stop() -> None:
    rec = Recorder()
    rec.nemesis("start-kill", {})
    rec.nemesis("stop-kill", {})
    rec.nemesis("start-partition", {})
    windows = nemesis_windows(rec.ops)
    assert [w["kind"] for w in windows] == ["kill", "partition"]
    assert windows[0]["start_ns"] <= windows[0]["end_ns"]
