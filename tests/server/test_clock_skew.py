"""Peers' wall clocks (server/clock_skew.py) and the retention guard they feed:
a leader whose clock is ahead of a majority deletes nothing by time."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from raftlog.log.commands import TruncatePrefix
from raftlog.raft.types import Role
from raftlog.server.clock_skew import CLOCK_FRAME, NodeClock, PeerClocks, clock_frame
from raftlog.server.config import ConfigError, RetentionConfig, load_config
from raftlog.server.groups import GroupKind
from raftlog.server.metrics import Metrics
from raftlog.server.retention import RetentionManager

from .test_retention import GID, Part, part  # noqa: F401  (the fixture)
from .test_retention_config import write

HOUR = 3600.0


OWN_WALL = 1_000.0  # our wall clock when the frames of clocks_seeing came, at monotonic 100


def clocks_seeing(offsets: dict[str, float]) -> PeerClocks:
    """Clocks that received one frame from each peer at monotonic 100, when our wall
    clock read OWN_WALL: peer wall = ours + offset."""
    clocks = PeerClocks()
    for peer, offset in offsets.items():
        clocks.observe(peer, clock_frame(OWN_WALL + offset), now=100.0)
    return clocks


def test_a_frame_gives_the_peer_offset_until_it_goes_stale():
    clocks = clocks_seeing({"n2": -2.5})
    assert clocks.offset("n2", 100.0, OWN_WALL) == pytest.approx(-2.5)
    # Both clocks ran on for 3 s: the same offset.
    assert clocks.offset("n2", 103.0, OWN_WALL + 3) == pytest.approx(-2.5)
    late = 100.0 + clocks.stale_after_s + 0.1
    assert clocks.offset("n2", late, OWN_WALL + late - 100.0) is None
    assert clocks.offset("n3", 100.0, OWN_WALL) is None


def test_a_jump_of_our_own_clock_shows_at_once_without_a_new_frame():
    clocks = clocks_seeing({"n2": 0.0, "n3": 0.0})
    # 0.2 s later our wall clock jumped an hour ahead; no frame came since.
    assert clocks.offset("n2", 100.2, OWN_WALL + 0.2 + 3600) == pytest.approx(-3600)
    assert not clocks.not_ahead_of_majority(["n2", "n3"], 60.0, 100.2, OWN_WALL + 0.2 + 3600)
    assert clocks.median_offset(["n2", "n3"], 100.2, OWN_WALL + 0.2 - 3600) == pytest.approx(3600)


@pytest.mark.parametrize("payload", [b"", b"\x00" * 7, b"\x00" * 9, CLOCK_FRAME.pack(math.nan)])
def test_anything_but_one_finite_double_is_no_sample(payload: bytes):
    clocks = PeerClocks()
    clocks.observe("n2", payload, now=1.0)
    assert clocks.offset("n2", 1.0, OWN_WALL) is None


@pytest.mark.parametrize(
    ("offsets", "expected"),
    [
        ({"n2": 0.1, "n3": -0.2}, True),  # all agree
        ({"n2": -HOUR, "n3": -HOUR}, False),  # we are an hour ahead of both
        ({"n2": -HOUR, "n3": 0.0}, True),  # ahead of one: n3 and we are a majority
        ({"n2": HOUR, "n3": HOUR}, True),  # behind both: we only delete later (safe)
        ({"n2": -61.0}, False),  # ahead of n2 past 60 s, and n3 is silent
        ({}, False),  # no evidence from anyone
    ],
)
def test_not_ahead_of_majority(offsets: dict[str, float], expected: bool):
    clocks = clocks_seeing(offsets)
    assert clocks.not_ahead_of_majority(["n2", "n3"], 60.0, 100.0, OWN_WALL) is expected


def test_a_single_node_trusts_its_own_clock():
    assert PeerClocks().not_ahead_of_majority([], 60.0, 0.0, OWN_WALL)


def test_max_clock_skew_from_the_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("RAFTLOG_RETENTION_MAX_CLOCK_SKEW_MS", raising=False)
    assert RetentionConfig().max_clock_skew_ms == 60_000
    cfg = load_config(write(tmp_path, "[retention]\nmax_clock_skew_ms = 5000\n"))
    assert RetentionManager(SimpleNamespace(cfg=cfg)).max_clock_skew_s == 5.0
    monkeypatch.setenv("RAFTLOG_RETENTION_MAX_CLOCK_SKEW_MS", "2000")
    assert RetentionManager(SimpleNamespace(cfg=cfg)).max_clock_skew_s == 2.0
    with pytest.raises(ConfigError, match="max_clock_skew_ms must be > 0"):
        load_config(write(tmp_path, "[retention]\nmax_clock_skew_ms = 0\n"))


# ---------------------------------------------------------------- the retention guard


class LeaderDriver:
    """What RetentionManager reads of a driver: one led partition of topic "t"."""

    def __init__(self, partition: Part, config: dict[str, Any], clock_ok: bool) -> None:
        self.metrics = Metrics()
        self.peers = ["n2", "n3"]
        self.clock = NodeClock()
        self.clock_ok = clock_ok
        self.metadata = SimpleNamespace(topics={"t": SimpleNamespace(config=config)})
        group = SimpleNamespace(
            gid=GID, kind=GroupKind.PARTITION, role=Role.LEADER, topic="t", partition=0,
            sm=partition.sm,
        )  # fmt: skip
        self.groups = {GID: group}
        self.submitted: list[Any] = []

    def clock_not_ahead(self, max_skew_s: float) -> bool:
        return self.clock_ok

    def submit(self, gid: int, command: Any) -> Any:
        self.submitted.append(command)
        return SimpleNamespace(done=False)


def refusals(driver: LeaderDriver) -> float:
    return driver.metrics.retention_clock_refusals.value()


def test_a_leader_ahead_of_the_majority_deletes_nothing_by_time(part: Part):  # noqa: F811
    for ts in (1_000, 2_000, 3_000):
        part.produce(2, ts)
    skewed = LeaderDriver(part, {"retention_ms": 500}, clock_ok=False)
    manager = RetentionManager(skewed, interval_s=1.0, clock_ms=lambda: 10_000)
    assert manager.check_all() == 0 and skewed.submitted == []
    assert refusals(skewed) == 1
    agreed = LeaderDriver(part, {"retention_ms": 500}, clock_ok=True)
    assert RetentionManager(agreed, interval_s=1.0, clock_ms=lambda: 10_000).check_all() == 1
    assert agreed.submitted == [TruncatePrefix(6)] and refusals(agreed) == 0


def test_size_retention_goes_on_while_the_clock_is_refused(part: Part):  # noqa: F811
    for ts in (1_000, 2_000, 3_000):
        part.produce(2, ts, size=100)
    one_batch = part.sm.measure_sizes().total // 3
    driver = LeaderDriver(part, {"retention_ms": 500, "retention_bytes": one_batch}, False)
    assert RetentionManager(driver, interval_s=1.0, clock_ms=lambda: 10_000).check_all() == 1
    assert driver.submitted == [TruncatePrefix(4)]  # the newest batch kept, by size only
    assert refusals(driver) == 1


def test_median_offset_counts_us_as_zero_and_skips_silent_peers():
    def median(offsets: dict[str, float]) -> float:
        return clocks_seeing(offsets).median_offset(["n2", "n3"], 100.0, OWN_WALL)

    assert median({"n2": 3600.0, "n3": 3600.0}) == 3600
    assert median({"n2": 3600.0, "n3": -5.0}) == 0
    assert median({"n2": 10.0}) == 5.0
    assert median({}) == 0.0


def test_a_stamp_uses_the_median_only_when_we_run_behind(monkeypatch: pytest.MonkeyPatch):
    clock = NodeClock()
    now = [100.0]
    wall = [OWN_WALL]
    monkeypatch.setattr("raftlog.server.clock_skew.time.monotonic", lambda: now[0])
    monkeypatch.setattr("raftlog.server.clock_skew.wall_time", lambda: wall[0])
    for peer in ("n2", "n3"):  # both peers an hour ahead of us
        clock.observe(peer, clock_frame(OWN_WALL + HOUR), ["n2", "n3"])
    assert clock.stamp_ms(["n2", "n3"]) == int((OWN_WALL + HOUR) * 1000)
    # Our clock jumps an hour forward 0.2 s later: the very next stamp is ours.
    now[0], wall[0] = 100.2, OWN_WALL + 0.2 + HOUR
    assert clock.stamp_ms(["n2", "n3"]) == int((OWN_WALL + 0.2 + HOUR) * 1000)
    assert clock.not_ahead(["n2", "n3"], 60.0)
