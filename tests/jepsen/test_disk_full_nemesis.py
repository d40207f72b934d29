"""The disk-full nemesis against a fake cluster (no processes, trio's mock clock),
and the cluster side of it: which exits count as a stop on a full disk, the
tmpfs helpers, mounting all-or-nothing, and a run that cannot mount failing
at once.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing
from click.testing import CliRunner
from raftlog.jepsen import disks, report, runner
from raftlog.jepsen.cli import _summary, jepsen
from raftlog.jepsen.cluster import ClusterSettings, JepsenCluster
from raftlog.jepsen.history import NEMESIS, Recorder
from raftlog.jepsen.nemesis import DISK_FULL_MARGINS, Nemesis

# ---------------------------------------------------------------- fake cluster


@dataclass
class FakeDiskCluster:
    """Nodes with tmpfs data dirs. How a node reacts to its disk filling up:
    ``stops`` (default) exits at once on ENOSPC; ``late`` logged its failed
    write before the disk was freed but exits a (mock) second after; ``unseen``
    also exits a second after the free, but its log said nothing when the disk
    was freed; ``hangs`` logs the failed write and never exits (a node bug);
    ``crashes`` dies with another exit code; anyone else never writes and keeps
    running."""

    node_ids: list[str] = field(default_factory=lambda: ["n1", "n2", "n3"])
    mesh: None = None
    has_tmpfs: bool = True
    running: set[str] = field(default_factory=lambda: {"n1", "n2", "n3"})
    stops: set[str] | None = None  # None: every node
    late: set[str] = field(default_factory=set)
    unseen: set[str] = field(default_factory=set)
    hangs: set[str] = field(default_factory=set)
    crashes: dict[str, int] = field(default_factory=dict)
    full: set[str] = field(default_factory=set)
    starts: dict[str, int] = field(default_factory=lambda: {"n1": 1, "n2": 1, "n3": 1})
    exited_full: set[str] = field(default_factory=set)
    crashed: dict[str, int] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)  # logged a fatal ENOSPC write
    exit_at: dict[str, float] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)

    @property
    def initial_ids(self) -> list[str]:
        return self.node_ids

    @property
    def spare_ids(self) -> list[str]:
        return []

    def fill_disk(self, nid: str, margin: int) -> int:
        assert nid not in self.full, f"{nid} filled twice without a free"
        self.full.add(nid)
        self.events.append(("fill", nid))
        if nid in self.crashes:
            self._exit(nid)
            self.crashed[nid] = self.crashes[nid]
        elif nid in self.late | self.hangs:
            self.failed.add(nid)
        elif nid in self.unseen:
            pass
        elif self.stops is None or nid in self.stops:
            self._exit(nid)
            self.exited_full.add(nid)
        return 4096 * 10 + margin

    def free_disk(self, nid: str) -> None:
        if nid in self.full and nid in self.late | self.unseen and self.is_running(nid):
            self.exit_at[nid] = trio.current_time() + 1.0
        self.full.discard(nid)
        self.events.append(("free", nid))

    def _exit(self, nid: str) -> None:
        self.running.discard(nid)

    def _late_exits(self) -> None:
        # A node whose last write failed just before its disk was freed: it
        # exits once it has shut down.
        for nid, at in sorted(self.exit_at.items()):
            if trio.current_time() >= at:
                del self.exit_at[nid]
                self._exit(nid)
                self.exited_full.add(nid)

    def failed_on_full_disk(self, nid: str) -> bool:
        return nid in self.failed

    def full_disk_exits(self) -> dict[str, int]:
        self._late_exits()
        return {nid: self.starts[nid] for nid in sorted(self.exited_full)}

    def unexpected_exits(self) -> dict[str, int]:
        return dict(self.crashed)

    def start(self, nid: str) -> None:
        assert nid not in self.full, f"{nid} restarted on a full disk"
        self.running.add(nid)
        self.starts[nid] += 1
        self.exited_full.discard(nid)
        self.failed.discard(nid)
        self.crashed.pop(nid, None)
        self.events.append(("start", nid))

    async def wait_started(self, nid: str, deadline: float) -> None:
        await trio.lowlevel.checkpoint()

    def is_running(self, nid: str) -> bool:
        self._late_exits()
        return nid in self.running

    def kill(self, nid: str) -> None:
        self.running.discard(nid)

    def pause(self, nid: str) -> None: ...

    def resume(self, nid: str) -> None: ...


def make_nemesis(cluster: FakeDiskCluster, seed: int = 3, **kw: object) -> Nemesis:
    return Nemesis(cluster, Recorder(), random.Random(seed), ["disk-full"],  # type: ignore[arg-type]
                   interval=2.0, **kw)  # type: ignore[arg-type]


def run_schedule(cluster: FakeDiskCluster, seconds: float, **kw: object) -> Nemesis:
    nemesis = make_nemesis(cluster, **kw)
    trio.run(nemesis.run, seconds, clock=trio.testing.MockClock(autojump_threshold=0))
    return nemesis


def nemesis_ops(nemesis: Nemesis) -> list[tuple[str, dict]]:
    return [(op.f, op.value) for op in nemesis.recorder.ops if op.process == NEMESIS]


# ---------------------------------------------------------------- schedule


def test_each_window_fills_its_targets_and_its_stop_frees_them_and_restarts_the_stopped() -> None:
    cluster = FakeDiskCluster()
    nemesis = run_schedule(cluster, 30)
    ops = nemesis_ops(nemesis)
    starts = [v for f, v in ops if f == "start-disk-full"]
    stops = [v for f, v in ops if f == "stop-disk-full"]
    assert len(starts) >= 4 and len(starts) == len(stops)
    for start, stop in zip(starts, stops, strict=True):
        assert start["nodes"] and set(start["nodes"]) <= set(cluster.node_ids)
        assert start["margin"] in DISK_FULL_MARGINS
        assert set(start["sizes"]) == set(start["nodes"])
        # every target wrote and stopped, and the stop brought it back
        assert stop["nodes"] == sorted(start["nodes"]) == stop["stopped"]
    stopped = [v["node"] for f, v in ops if f == "disk-full-stopped"]
    assert len(stopped) == sum(len(s["nodes"]) for s in starts)
    assert len(nemesis.disk_full_stops) == len(stopped)
    assert "node-crashed" not in [f for f, _ in ops] and nemesis.crashes == {}
    assert cluster.full == set() and cluster.running == set(cluster.node_ids)
    # A disk is freed before its node starts again (the fake asserts it too).
    for nid in cluster.node_ids:
        mine = [e for e, n in cluster.events if n == nid]
        for i, e in enumerate(mine):
            if e == "start":
                assert "free" in mine[:i]
    assert report.disk_full(nemesis.recorder.ops)["nodes_stopped"] == len(stopped)


def test_targets_follow_disk_full_targets() -> None:
    async def leader() -> str:
        return "n2"

    cluster = FakeDiskCluster()
    nemesis = run_schedule(cluster, 20, disk_full_targets=["leader"], find_leader=leader)
    starts = [v for f, v in nemesis_ops(nemesis) if f == "start-disk-full"]
    assert starts and all(s["nodes"] == ["n2"] and s["targets"] == "leader" for s in starts)

    five = FakeDiskCluster(node_ids=["n1", "n2", "n3", "n4", "n5"],
                           running={"n1", "n2", "n3", "n4", "n5"},
                           starts={f"n{i}": 1 for i in range(1, 6)})
    nemesis = run_schedule(five, 20, disk_full_targets=["minority"])
    starts = [v for f, v in nemesis_ops(nemesis) if f == "start-disk-full"]
    assert starts and all(len(s["nodes"]) == 2 for s in starts)
    assert len({tuple(s["nodes"]) for s in starts}) > 1  # not always the same two


def test_a_node_still_shutting_down_when_its_disk_is_freed_is_waited_for_and_restarted() -> None:
    cluster = FakeDiskCluster(late={"n1", "n2", "n3"})
    nemesis = run_schedule(cluster, 12, disk_full_targets=["all"])
    ops = nemesis_ops(nemesis)
    fs = [f for f, _ in ops]
    assert fs.count("start-disk-full") >= 2
    # Every window's stop waited for its nodes to exit and restarted them.
    for f, v in ops:
        if f == "stop-disk-full":
            assert v["stopped"] == v["nodes"] == cluster.node_ids
    assert fs.count("disk-full-stopped") == 3 * fs.count("start-disk-full")
    assert "node-crashed" not in fs and nemesis.crashes == {}
    assert nemesis.stops_after_heal == [] and nemesis.restart_failures == []
    assert cluster.running == set(cluster.node_ids) and cluster.full == set()


def test_a_stop_seen_only_after_the_heal_is_no_crash_and_is_reported() -> None:
    cluster = FakeDiskCluster(unseen={"n1", "n2", "n3"})
    nemesis = make_nemesis(cluster, disk_full_targets=["one"])

    async def main() -> None:
        await nemesis.run(6)
        await trio.sleep(2)  # the runner's recovery window
        nemesis.record_crashes()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    ops = nemesis_ops(nemesis)
    last = [v for f, v in ops if f == "start-disk-full"][-1]["nodes"]
    assert nemesis.stops_after_heal == last
    assert nemesis.crashes == {} and "node-crashed" not in [f for f, _ in ops]


def test_a_stop_an_earlier_window_did_not_see_is_restarted_by_the_next_window() -> None:
    cluster = FakeDiskCluster(unseen={"n1", "n2", "n3"})
    nemesis = run_schedule(cluster, 20, disk_full_targets=["one"])
    ops = nemesis_ops(nemesis)
    fs = [f for f, _ in ops]
    assert fs.count("start-disk-full") >= 3
    # A window's own stop never sees its node go down (a second later) ...
    first_stop = next(v for f, v in ops if f == "stop-disk-full")
    assert first_stop["stopped"] == []
    # ... and yet every stop seen is restarted by the next stop, not left to the heal.
    seen = [i for i, f in enumerate(fs) if f == "disk-full-stopped"]
    assert len(seen) >= 2
    for i in seen:
        j = next(j for j in range(i + 1, len(fs)) if fs[j] in ("stop-disk-full", "heal"))
        assert fs[j] == "heal" or ops[i][1]["node"] in ops[j][1]["stopped"], ops[i:j + 1]
    for nid in cluster.node_ids:
        stops = sum(1 for f, v in ops if f == "disk-full-stopped" and v["node"] == nid)
        assert cluster.starts[nid] == 1 + stops
    assert cluster.running == set(cluster.node_ids)


def test_a_node_that_failed_a_write_but_does_not_stop_is_a_liveness_failure() -> None:
    cluster = FakeDiskCluster(hangs={"n2"})
    nemesis = run_schedule(cluster, 8, disk_full_targets=["all"])
    fs = [f for f, _ in nemesis_ops(nemesis)]
    assert "stop-failed" in fs
    assert nemesis.restart_failures and all(
        r.startswith("n2: failed a write on its full disk") for r in nemesis.restart_failures)


def test_a_node_that_nothing_made_write_keeps_running_and_is_not_restarted() -> None:
    cluster = FakeDiskCluster(stops=set())
    nemesis = run_schedule(cluster, 12)
    fs = [f for f, _ in nemesis_ops(nemesis)]
    assert "start-disk-full" in fs and "disk-full-stopped" not in fs
    assert not [e for e, _ in cluster.events if e == "start"]
    assert cluster.full == set()


def test_any_other_exit_during_a_disk_full_window_stays_a_crash() -> None:
    cluster = FakeDiskCluster(crashes={"n1": -11, "n2": -11, "n3": -11})
    nemesis = run_schedule(cluster, 6)
    fs = [f for f, _ in nemesis_ops(nemesis)]
    assert "node-crashed" in fs and "disk-full-stopped" not in fs
    assert set(nemesis.crashes.values()) == {-11}


def test_heal_frees_the_disks_of_an_unfinished_window() -> None:
    cluster = FakeDiskCluster()

    async def main() -> Nemesis:
        nemesis = make_nemesis(cluster, disk_full_targets=["majority"])
        await nemesis.start_fault("disk-full")
        assert len(cluster.full) == 2 and len(cluster.running) == 1
        await nemesis.heal()
        return nemesis

    nemesis = trio.run(main)
    assert cluster.full == set() and cluster.running == set(cluster.node_ids)
    assert [f for f, _ in nemesis_ops(nemesis)][-1] == "heal"
    assert len(nemesis.disk_full_stops) == 2


def test_disk_full_needs_tmpfs_data_dirs() -> None:
    with pytest.raises(ValueError, match="tmpfs"):
        make_nemesis(FakeDiskCluster(has_tmpfs=False))


# ---------------------------------------------------------------- report


def test_summary_counts_windows_filled_disks_and_stops_per_node() -> None:
    rec = Recorder()
    rec.nemesis("start-disk-full", {"nodes": ["n1", "n2"]})
    rec.nemesis("disk-full-stopped", {"node": "n2", "start": 1})
    rec.nemesis("stop-disk-full", {"nodes": ["n1", "n2"], "stopped": ["n2"]})
    rec.nemesis("start-disk-full", {"nodes": ["n2"]})
    rec.nemesis("disk-full-stopped", {"node": "n2", "start": 2})
    rec.nemesis("stop-disk-full", {"nodes": ["n2"], "stopped": []})
    rec.nemesis("disk-full-stopped", {"node": "n1", "start": 1})
    d = report.disk_full(rec.ops)
    assert d == {"windows": 2, "disks_filled": 3, "nodes_stopped": 3,
                 "stops_by_node": {"n1": 1, "n2": 2}}
    text = _summary({"valid": True, "disk_full": d})
    assert "2 windows filled 3 disks; 3 node stops on a full disk (n1 x1, n2 x2)" in text


# ---------------------------------------------------------------- cluster side


@dataclass
class ExitedProc:
    returncode: int
    pid: int = 999_999

    def poll(self) -> int:
        return self.returncode


STOP_LINE = ("error: node n1 stopped: it cannot write its data dir /d/n1: saving Readies "
             "failed: Exception('IO error: No space left on device: While appending')\n")


@pytest.fixture
def cluster(tmp_path: Path) -> JepsenCluster:
    return JepsenCluster(tmp_path / "run", ClusterSettings(nodes=1, proxied=False))


def exited(cluster: JepsenCluster, code: int, text: str, *, filled: bool,
           before: str = "") -> None:
    node = cluster.nodes["n1"]
    node.log_path.write_text(before)
    node.log_offset = len(before.encode())
    with node.log_path.open("a") as fh:
        fh.write(text)
    node.proc = ExitedProc(code)  # type: ignore[assignment]
    node.full_since_start = filled


@pytest.mark.parametrize(("code", "text", "filled", "expected"), [
    (1, STOP_LINE, True, True),
    (1, STOP_LINE, False, False),  # its disk was never filled by us: a real full disk
    (1, "error: node n1 stopped: something else\n", True, False),
    (1, STOP_LINE.replace("No space left on device", "Input/output error"), True, False),
    (-9, STOP_LINE, True, False),
    (0, STOP_LINE, True, False),
])
def test_which_exits_are_a_stop_on_a_full_disk(
    cluster: JepsenCluster, code: int, text: str, filled: bool, expected: bool
) -> None:
    exited(cluster, code, text, filled=filled)
    assert cluster.stopped_on_full_disk("n1") is expected
    assert ("n1" in cluster.full_disk_exits()) is expected
    assert ("n1" in cluster.unexpected_exits()) is not expected


def test_the_stop_line_of_an_earlier_start_does_not_count(cluster: JepsenCluster) -> None:
    exited(cluster, 1, "Traceback ...\n", filled=True, before=STOP_LINE)
    assert not cluster.stopped_on_full_disk("n1")
    assert cluster.unexpected_exits() == {"n1": 1}


def test_full_disk_size_is_usage_plus_margin_in_whole_pages() -> None:
    assert disks.full_size(0, 0) == disks.PAGE
    assert disks.full_size(8192, 4096) == 12288
    assert disks.full_size(8193, 4096) == 16384
    assert disks.full_size(10_000, 65_536) % disks.PAGE == 0
    assert disks.full_size(10_000, 65_536) >= 75_536
    with pytest.raises(ValueError):
        disks.full_size(-1)


def test_mounting_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mounted: list[Path] = []

    def fake_mount(path: Path, size: int) -> None:
        if mounted:
            raise disks.DiskError(f"cannot mount a tmpfs on {path}: no")
        mounted.append(path)

    def fake_unmount(path: Path) -> None:
        mounted.remove(path)

    monkeypatch.setattr(disks, "mount", fake_mount)
    monkeypatch.setattr(disks, "unmount", fake_unmount)
    c = JepsenCluster(tmp_path / "run", ClusterSettings(nodes=3, proxied=False,
                                                        tmpfs_bytes=1 << 20))
    with pytest.raises(disks.DiskError, match="n2"):
        c.mount_disks()
    assert mounted == [] and not c.has_tmpfs


def test_a_run_that_cannot_mount_fails_at_once_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    out = tmp_path / "run"
    opts = runner.RunOptions(out=out, nemesis=["disk-full"], time_limit=60)
    with pytest.raises(disks.DiskError, match="needs root"):
        trio.run(runner.run, opts)
    assert not (out / "history.jsonl").exists()  # nothing ran
    assert not list((out / "logs").iterdir())

    result = CliRunner().invoke(jepsen, ["run", "--nemesis", "disk-full,kill",
                                         "--out", str(tmp_path / "cli")])
    assert result.exit_code == 3
    assert "needs root (CAP_SYS_ADMIN)" in result.output


def _can_mount(path: Path) -> bool:
    if os.geteuid() != 0:
        return False
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
                        capture_output=True, check=False).returncode == 0
    if ok:
        subprocess.run(["umount", str(path)], capture_output=True, check=False)
    return ok


def test_real_tmpfs_fill_free_wipe_and_release(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    if not _can_mount(probe):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    c = JepsenCluster(tmp_path / "run", ClusterSettings(nodes=2, proxied=False,
                                                        tmpfs_bytes=64 << 20))
    c.mount_disks()
    try:
        d1, d2 = c.nodes["n1"].data_dir, c.nodes["n2"].data_dir
        assert os.path.ismount(d1) and os.path.ismount(d2) and c.has_tmpfs
        (d1 / "a").write_bytes(os.urandom(100_000))
        size = c.fill_disk("n1", 4096)
        assert size >= disks.used_bytes(d1)
        with pytest.raises(OSError) as info, (d1 / "b").open("wb") as fh:
            fh.write(os.urandom(64 * 1024))
            fh.flush()
        assert info.value.errno == errno.ENOSPC
        c.free_disk("n1")
        (d1 / "b").write_bytes(os.urandom(64 * 1024))
        c.fill_disk("n2", 4096)
        c.wipe("n2")  # a new, empty disk: not full any more
        assert list(d2.iterdir()) == [] and not c.nodes["n2"].disk_full
        (d2 / "c").write_bytes(os.urandom(64 * 1024))
        (d2 / "c").unlink()
        assert c.existing_data_dirs() == [d1]
        assert c.release_disks(keep=True) == []
        assert not os.path.ismount(d1) and not os.path.ismount(d2)
        # n1's files were kept on the real disk; n2's empty dir is gone.
        assert sorted(p.name for p in d1.iterdir()) == ["a", "b"]
        assert not d2.exists() and not list(d1.parent.glob(".*"))
    finally:
        c.release_disks(keep=False)
    assert str(tmp_path) not in Path("/proc/mounts").read_text()


def test_a_node_that_logged_a_fatal_enospc_write_is_known_to_be_stopping(
    cluster: JepsenCluster,
) -> None:
    node = cluster.nodes["n1"]
    fatal = ("2026-01-01 00:00:00,000 CRITICAL raftlog.driver event=save_failed node=n1 "
             "error=Exception('IO error: No space left on device: While appending')\n")
    node.log_path.write_text(fatal)
    node.log_offset = len(fatal)  # an earlier start's failure
    assert not cluster.failed_on_full_disk("n1")
    with node.log_path.open("a") as fh:
        fh.write("2026-01-01 00:00:01,000 INFO x event=free_bytes error=No space left on device\n")
    assert not cluster.failed_on_full_disk("n1")  # not fatal
    with node.log_path.open("a") as fh:
        fh.write(fatal)
    assert cluster.failed_on_full_disk("n1")


def test_cli_rejects_an_unknown_disk_full_target(tmp_path: Path) -> None:
    result = CliRunner().invoke(jepsen, ["run", "--nemesis", "disk-full",
                                         "--disk-full-targets", "one,most",
                                         "--out", str(tmp_path / "cli")])
    assert result.exit_code == 2
    assert "unknown target 'most'" in result.output
