"""The limit nemesis's schedule on trio's mock clock, against a fake topic config."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing
from raftlog.client.errors import NotAvailableError
from raftlog.jepsen.history import NEMESIS, Recorder
from raftlog.jepsen.nemesis import Nemesis
from raftlog.jepsen.topic_limit import CONFIG_KEY, LIMITS_BYTES, TopicLimit

from .test_nemesis import FakeCluster


class FakeTopic:
    """A topic config that refuses the first ``refusals`` removals (no quorum)."""

    def __init__(self, refusals: int = 0) -> None:
        self.config: dict[str, Any] = {}
        self.calls: list[int | None] = []
        self.refusals = refusals

    async def set_config(self, change: dict[str, Any]) -> None:
        await trio.sleep(0.01)  # a round trip
        value = change[CONFIG_KEY]
        self.calls.append(value)
        if value is None and self.refusals > 0:
            self.refusals -= 1
            raise NotAvailableError("no quorum for the metadata group")
        if value is None:
            self.config.pop(CONFIG_KEY, None)
        else:
            self.config[CONFIG_KEY] = value


def run_limit_schedule(
    topic: FakeTopic,
    seconds: float,
    restore_deadline: float = 30.0,
) -> tuple[Recorder, TopicLimit]:
    recorder = Recorder()
    limit = TopicLimit(topic.set_config, restore_deadline=restore_deadline)
    nemesis = Nemesis(
        FakeCluster(),
        recorder,
        random.Random(7),
        ["limit"],  # type: ignore[arg-type]
        interval=2.0,
        topic_limit=limit,
    )
    trio.run(nemesis.run, seconds, clock=trio.testing.MockClock(autojump_threshold=0))
    return recorder, limit


def nemesis_ops(recorder: Recorder) -> list[tuple[str, Any]]:
    return [(op.f, op.value) for op in recorder.ops if op.process == NEMESIS]


def test_each_window_lowers_the_limit_and_its_stop_removes_it() -> None:
    topic = FakeTopic()
    recorder, limit = run_limit_schedule(topic, seconds=30)
    ops = nemesis_ops(recorder)
    starts = [v for f, v in ops if f == "start-limit"]
    assert len(starts) >= 4
    assert {v["bytes"] for v in starts} <= set(LIMITS_BYTES)
    assert len({v["bytes"] for v in starts}) > 1  # the seed picks among the limits
    # Lower, remove, lower, remove...: each window is one lowering, undone at its stop.
    assert topic.calls[::2] == [v["bytes"] for v in starts]
    assert topic.calls[1::2] == [None] * len(starts)
    assert topic.config == {} and limit.failures == []
    assert ops[-1] == ("heal", {})


def test_a_removal_refused_under_faults_is_retried() -> None:
    topic = FakeTopic(refusals=3)
    recorder, limit = run_limit_schedule(topic, seconds=6)
    stops = [v for f, v in nemesis_ops(recorder) if f == "stop-limit"]
    assert stops[0] == {"attempts": 4}
    assert topic.config == {} and limit.failures == []


def test_a_limit_never_removed_fails_the_run_at_the_heal() -> None:
    topic = FakeTopic(refusals=10**6)
    recorder, limit = run_limit_schedule(topic, seconds=4, restore_deadline=3.0)
    assert topic.config.get(CONFIG_KEY) in LIMITS_BYTES
    ops = nemesis_ops(recorder)
    assert "error" in next(v for f, v in ops if f == "stop-limit")
    # Only the heal's failure counts (the stop's is retried there): one liveness line.
    assert len(limit.failures) == 1 and CONFIG_KEY in limit.failures[0]
    assert ops[-1][0] == "heal"


def test_the_limit_nemesis_needs_a_way_to_alter_the_topic() -> None:
    with pytest.raises(ValueError, match="TopicLimit"):
        Nemesis(FakeCluster(), Recorder(), random.Random(1), ["limit"])  # type: ignore[arg-type]
