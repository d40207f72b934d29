"""WGL search on hand-written and generated log histories."""

from __future__ import annotations

import random
import time
from typing import Any

from raftlog.jepsen.history import Op, OpType
from raftlog.jepsen.linearizable import Verdict, check

from .builders import HistoryBuilder


def verdict(h: HistoryBuilder) -> Verdict:
    return check(h.build()).verdict


def test_sequential_history_is_linearizable() -> None:
    h = HistoryBuilder()
    h.send(0, 0, "a", 0, 0, 10)
    h.list_offsets(0, 0, 1, 11, 12)
    h.send(0, 0, "b", 1, 13, 20)
    h.fetch(0, 0, 0, [(0, "a"), (1, "b")], 21, 22, end=2)
    assert verdict(h) is Verdict.LINEARIZABLE


def test_concurrent_read_may_see_either_state() -> None:
    h = HistoryBuilder()
    h.send(0, 0, "a", 0, 0, 10)
    h.list_offsets(1, 0, 1, 5, 15)  # overlaps the send: 0 or 1 both fine
    h.list_offsets(2, 0, 0, 1, 4)
    assert verdict(h) is Verdict.LINEARIZABLE


def test_stale_read_is_not_linearizable_and_names_the_stuck_op() -> None:
    h = HistoryBuilder()
    h.send(0, 0, "a", 0, 0, 10)
    h.send(0, 0, "b", 1, 11, 20)
    h.list_offsets(1, 0, 1, 30, 40)  # the log had 2 records since t=20
    result = check(h.build())
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    cx = result.keys[0].counterexample
    assert cx is not None
    assert cx["stuck_op"]["f"] == "list_offsets"
    assert cx["log_length"] == 2


def test_a_stale_serializable_read_is_left_out_of_the_search() -> None:
    """Any replica's copy may be behind; the log checker still holds what such a
    read saw as a bound for later reads (test_checker_log.py)."""

    def history(**flags: Any) -> HistoryBuilder:
        h = HistoryBuilder()
        h.send(0, 0, "a", 0, 0, 10)
        h.send(0, 0, "b", 1, 11, 20)
        h.fetch(1, 0, 0, [(0, "a")], 30, 40, end=1, **flags)
        return h

    assert verdict(history()) is Verdict.NOT_LINEARIZABLE
    assert verdict(history(serializable=True)) is Verdict.LINEARIZABLE


def test_lost_write_is_not_linearizable() -> None:
    h = HistoryBuilder()
    h.send(0, 0, "a", 0, 0, 10)
    h.send(1, 0, "b", 1, 0, 12)
    h.drain(0, [(0, "a")], 50, 60)
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_reordered_sends_are_not_linearizable() -> None:
    h = HistoryBuilder()
    h.send(0, 0, "a", 1, 0, 10)
    h.send(1, 0, "b", 0, 20, 30)  # invoked after a was acked at 1
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_read_of_wrong_value_is_not_linearizable() -> None:
    h = HistoryBuilder()
    h.send(0, 0, "a", 0, 0, 10)
    h.fetch(1, 0, 0, [(0, "z")], 20, 30)
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_info_send_may_land_late_or_never() -> None:
    h = HistoryBuilder()
    h.send(0, 0, "a", None, 0, 5, OpType.INFO)  # unknown outcome
    h.send(1, 0, "b", 0, 10, 20)
    h.fetch(2, 0, 0, [(0, "b"), (1, "a")], 30, 40)  # a landed after b
    assert verdict(h) is Verdict.LINEARIZABLE
    h2 = HistoryBuilder()
    h2.send(0, 0, "a", None, 0, 5, OpType.INFO)
    h2.send(1, 0, "b", 0, 10, 20)
    h2.drain(0, [(0, "b")], 30, 40)  # never landed
    assert verdict(h2) is Verdict.LINEARIZABLE


def test_info_send_cannot_land_before_its_invoke() -> None:
    h = HistoryBuilder()
    h.send(1, 0, "b", 0, 0, 10)
    h.list_offsets(2, 0, 1, 11, 12)
    h.send(0, 0, "a", None, 20, None, OpType.INFO)
    h.fetch(2, 0, 0, [(0, "a")], 30, 40)  # a at offset 0, but b was there first
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_failed_send_has_no_effect() -> None:
    h = HistoryBuilder()
    h.send(0, 0, "a", None, 0, 5, OpType.FAIL)
    h.list_offsets(1, 0, 1, 10, 20)
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_keys_are_checked_independently() -> None:
    h = HistoryBuilder()
    h.send(0, 0, "a", 0, 0, 10)
    h.send(1, 1, "x", 0, 0, 10)
    h.list_offsets(2, 1, 0, 20, 30)  # stale on key 1 only
    result = check(h.build())
    by_key = {k.key: k.verdict for k in result.keys}
    assert by_key == {0: Verdict.LINEARIZABLE, 1: Verdict.NOT_LINEARIZABLE}


def generate_valid_history(seed: int, clients: int, seconds: float, keys: int,
                           rate_per_client: float, drain: bool = True) -> list[Op]:
    """Clients against a real (in-memory) linearizable log: every op takes
    effect at a random point inside its interval; ~3% of sends end unknown."""
    rng = random.Random(seed)
    planned: list[dict[str, Any]] = []
    value = 0
    for c in range(clients):
        t = rng.uniform(0, 0.01)
        process = c
        while t < seconds:
            dur = rng.uniform(0.0005, 2.0 / rate_per_client)
            r = rng.random()
            key = rng.randrange(keys)
            op: dict[str, Any] = {"p": process, "t0": t, "t1": t + dur, "key": key,
                                  "lp": rng.uniform(t, t + dur)}
            if r < 0.6:
                value += 1
                op.update(f="send", value=value, info=rng.random() < 0.03,
                          lands=rng.random() < 0.5)
                if op["info"]:
                    process += clients  # the process retires
            elif r < 0.85:
                op.update(f="fetch")
            else:
                op.update(f="list_offsets")
            planned.append(op)
            t += dur + rng.uniform(0, 1.0 / rate_per_client)
    logs: dict[int, list[int]] = {k: [] for k in range(keys)}
    for op in sorted(planned, key=lambda o: o["lp"]):
        lg = logs[op["key"]]
        if op["f"] == "send":
            if not op["info"] or op["lands"]:
                op["offset"] = len(lg)
                lg.append(op["value"])
        elif op["f"] == "fetch":
            start = rng.randrange(len(lg) + 1)
            op["offset"] = start
            op["records"] = [[o, lg[o]] for o in range(start, min(len(lg), start + 5))]
            op["end"] = len(lg)
        else:
            op["end"] = len(lg)
    h = HistoryBuilder()
    ns = 1_000_000_000
    for op in planned:
        t0, t1 = int(op["t0"] * ns), int(op["t1"] * ns)
        if op["f"] == "send":
            if op["info"]:
                h.send(op["p"], op["key"], op["value"], None, t0, t1, OpType.INFO)
            else:
                h.send(op["p"], op["key"], op["value"], op["offset"], t0, t1)
        elif op["f"] == "fetch":
            h.fetch(op["p"], op["key"], op["offset"], op["records"], t0, t1, end=op["end"])
        else:
            h.list_offsets(op["p"], op["key"], op["end"], t0, t1)
    end_t = int((seconds + 1) * ns)
    for k, lg in logs.items() if drain else ():
        h.drain(k, [(o, v) for o, v in enumerate(lg)], end_t, end_t + 1)
    return h.build()


def test_generated_60s_10_client_history_is_linearizable_and_checked_quickly() -> None:
    ops = generate_valid_history(seed=7, clients=10, seconds=60, keys=4, rate_per_client=40)
    started = time.monotonic()
    result = check(ops)
    elapsed = time.monotonic() - started
    n = sum(k.ops for k in result.keys)
    print(f"\nWGL: {len(ops)} history lines, {n} model ops, {len(result.keys)} keys, "
          f"{elapsed:.2f}s")
    assert result.verdict is Verdict.LINEARIZABLE, result.to_dict()


def test_generated_history_with_one_corrupted_read_is_caught() -> None:
    ops = generate_valid_history(seed=3, clients=5, seconds=5, keys=2, rate_per_client=40)
    victim = next(op for op in ops if op.f == "list_offsets" and op.type is OpType.OK
                  and op.value["end"] > 40)
    # 15 records fewer than the log held: far more than could land during one op.
    victim.value = {**victim.value, "end": victim.value["end"] - 15}
    result = check(ops)
    assert result.verdict is Verdict.NOT_LINEARIZABLE


def test_generated_history_without_drain_keeps_unobserved_info_sends_cheap() -> None:
    # No final drain: unobserved info sends may have landed anywhere unread;
    # the search must still settle it (symmetry reduction), not time out.
    ops = generate_valid_history(seed=11, clients=10, seconds=20, keys=2, rate_per_client=40,
                                 drain=False)
    started = time.monotonic()
    result = check(ops, time_limit_per_key=60)
    print(f"\nWGL without drain: {len(ops)} lines, {time.monotonic() - started:.2f}s")
    assert result.verdict is Verdict.LINEARIZABLE, result.to_dict()
