"""The nemesis schedule against a fake cluster (no processes), on trio's mock clock."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import trio
import trio.lowlevel
import trio.testing
from raftlog.jepsen.history import NEMESIS, Recorder
from raftlog.jepsen.nemesis import Nemesis


@dataclass
class FakeCluster:
    node_ids: list[str] = field(default_factory=lambda: ["n1", "n2", "n3"])
    mesh: None = None
    running: set[str] = field(default_factory=lambda: {"n1", "n2", "n3"})
    paused: set[str] = field(default_factory=set)
    events: list[tuple[str, str]] = field(default_factory=list)
    crashed: dict[str, int] = field(default_factory=dict)
    has_lazyfs: bool = False
    fsync_delays: dict[str, float] = field(default_factory=dict)

    def set_fsync_delay(self, nid: str, ms: float) -> None:
        self.events.append(("fsync-delay", f"{nid}={ms:g}"))
        if ms:
            self.fsync_delays[nid] = ms
        else:
            self.fsync_delays.pop(nid, None)

    @property
    def initial_ids(self) -> list[str]:
        return self.node_ids

    @property
    def spare_ids(self) -> list[str]:
        return []

    def kill(self, nid: str) -> None:
        self.running.discard(nid)
        self.events.append(("kill", nid))

    def start(self, nid: str) -> None:
        self.running.add(nid)
        self.crashed.pop(nid, None)
        self.events.append(("start", nid))

    async def wait_started(self, nid: str, deadline: float) -> None:
        await trio.lowlevel.checkpoint()

    def is_running(self, nid: str) -> bool:
        return nid in self.running

    def pause(self, nid: str) -> None:
        self.paused.add(nid)

    def resume(self, nid: str) -> None:
        self.paused.discard(nid)

    def unexpected_exits(self) -> dict[str, int]:
        return dict(self.crashed)

    def full_disk_exits(self) -> dict[str, int]:
        return {}


def run_schedule(kinds: list[str], seconds: float, seed: int = 1,
                 cluster: FakeCluster | None = None) -> tuple[FakeCluster, Recorder, Nemesis]:
    cluster = cluster or FakeCluster()
    recorder = Recorder()
    nemesis = Nemesis(cluster, recorder, random.Random(seed), kinds, interval=2.0)  # type: ignore[arg-type]

    async def main() -> None:
        await nemesis.run(seconds)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return cluster, recorder, nemesis


def nemesis_fs(recorder: Recorder) -> list[str]:
    return [op.f for op in recorder.ops if op.process == NEMESIS]


def test_schedule_alternates_start_and_stop_and_heals_at_the_end() -> None:
    cluster, recorder, _ = run_schedule(["kill", "pause"], seconds=30)
    fs = nemesis_fs(recorder)
    assert fs[-1] == "heal"
    faults = fs[:-1]
    assert len(faults) >= 6 and len(faults) % 2 == 0
    for start, stop in zip(faults[::2], faults[1::2], strict=True):
        assert start.startswith("start-") and stop == "stop-" + start[len("start-"):]
    assert cluster.running == {"n1", "n2", "n3"} and cluster.paused == set()
    kills = [n for e, n in cluster.events if e == "kill"]
    assert kills, "a 30 s kill/pause schedule never killed anything"


def test_same_seed_same_schedule() -> None:
    def schedule(seed: int) -> list:
        _, rec, _ = run_schedule(["kill", "pause"], seconds=20, seed=seed)
        return [(op.f, op.value) for op in rec.ops]

    assert schedule(4) == schedule(4)
    assert schedule(4) != schedule(5)


def test_membership_without_spares_is_skipped_with_a_message() -> None:
    _, recorder, nemesis = run_schedule(["membership"], seconds=5)
    assert nemesis.kinds == [] and nemesis.membership is None
    assert any("membership" in m for m in nemesis.skipped)
    assert "start-membership" not in nemesis_fs(recorder)


def test_a_node_that_died_on_its_own_is_recorded_and_restarted() -> None:
    cluster = FakeCluster()
    cluster.running.discard("n2")
    cluster.crashed["n2"] = -11
    _, recorder, nemesis = run_schedule(["pause"], seconds=3, cluster=cluster)
    assert nemesis.crashes == {"n2": -11}
    assert "node-crashed" in nemesis_fs(recorder)
    assert "n2" in cluster.running


def test_network_faults_need_proxies() -> None:
    for kind in ("partition", "delay"):
        try:
            Nemesis(FakeCluster(), Recorder(), random.Random(1), [kind])  # type: ignore[arg-type]
        except ValueError as exc:
            assert "proxied" in str(exc)
        else:
            raise AssertionError(f"{kind} accepted a cluster without proxies")


def test_a_slow_disk_window_slows_its_targets_and_its_stop_makes_them_fast() -> None:
    cluster = FakeCluster(has_lazyfs=True)
    _, recorder, _ = run_schedule(["slow-disk"], seconds=30, cluster=cluster)
    windows = [op for op in recorder.ops if op.process == NEMESIS and op.f == "start-slow-disk"]
    assert len(windows) >= 3
    for op in windows:
        assert op.value["nodes"] and op.value["fsync_delay_ms"] > 0
    # Every delay set was taken back: by its window's stop, or by the heal.
    slowed = [e for e in cluster.events if e[0] == "fsync-delay" and not e[1].endswith("=0")]
    assert slowed and cluster.fsync_delays == {}
    stops = [op for op in recorder.ops if op.f == "stop-slow-disk"]
    assert [op.value["nodes"] for op in stops] == [sorted(op.value["nodes"]) for op in windows]


def test_a_slow_disk_needs_the_lazyfs_disks() -> None:
    try:
        Nemesis(FakeCluster(), Recorder(), random.Random(1), ["slow-disk"])  # type: ignore[arg-type]
    except ValueError as exc:
        assert "lazyfs" in str(exc)
    else:
        raise AssertionError("slow-disk accepted a cluster without lazyfs disks")
