"""Faults: kill, pause, partition, link delay, a full disk, power cuts, slow disks,
wall clocks and membership.

A seeded schedule alternates start and stop: wait about ``interval`` seconds,
start a fault of a random kind on random targets, wait, stop it. Each start
and stop is an ``info`` line of process ``"nemesis"`` in the history
(``start-<kind>`` / ``stop-<kind>``), so the reports can shade fault windows.
``heal`` undoes everything (resume, free disks, restart, reconnect) and always
runs at the end of a run.

``disk-full`` needs the data dirs on tmpfs mounts of the cluster
(``ClusterSettings.tmpfs_bytes``): start shrinks the targets' mounts to just
above their usage, stop gives them their size back and restarts those that
stopped. A node that stopped on the full disk (exit 1, its storage-failure
line) is recorded as ``disk-full-stopped``, not as ``node-crashed``: refusing
to go on without its writes is what it must do.

``power`` cuts the targets' power: each node is killed together with its
disk's page cache (jepsen/lazyfs.py: every write it had not fsynced is lost),
and stop restarts them. It needs the data dirs on lazyfs mounts
(``ClusterSettings.lazyfs``). With ``fsync = true`` nothing acknowledged may
be lost; with ``fsync = false`` a majority's power cut loses acknowledged
records, which shows that the fault bites.

``slow-disk`` makes every fsync of the targets' disks wait one of
``SLOW_DISK_MS`` (jepsen/lazyfs.py reads the delay at each fsync), and stop
makes them fast again. Nothing is lost or reordered by it, so the checkers
hold it to the same rules as any other window; what it tests is that a node
whose disk stalls, the leader's above all, costs the cluster a fail-over and
not its availability or its data (etcd #7617, #7970: fsync stalls taken for
dead nodes). It needs the lazyfs disks, like ``power``.

``clock`` moves the targets' wall clocks (``JepsenCluster.set_clock``) by
one of ``CLOCK_OFFSETS_S``, forward or back, and stop puts them right. Raft
runs on the monotonic clock, so only timestamps and time-based retention can
notice; the run gives the test topic a ``retention_ms`` far longer than the
run, so any record deleted by time is a lost acknowledged record. Its default
targets are a minority (one, minority, leader): a majority of wrong clocks
is outside what raftlog claims to survive (README, "Wall clocks").

``limit`` lowers the run's topic's ``max_message_bytes`` under the running
producers, and stop removes it (jepsen/topic_limit.py): batches in flight are
refused as too large and split, single records too large fail for good.

``membership`` is not one of those windows: it runs as its own task beside
them (``membership.MembershipNemesis``), one change about every ``interval``
seconds, so changes race with crashes, pauses and partitions. Faults pick
their targets among the nodes the harness wants running (``live``: the
initial nodes, plus added ones, minus removed ones). After the heal, the
membership is re-grown to the initial voter count before the run drains.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from .cluster import JepsenCluster
from .history import Recorder
from .membership import Admin, MembershipNemesis
from .partitions import SHAPES, shape
from .proxy import LinkMode
from .topic_limit import TopicLimit

log = logging.getLogger(__name__)

KINDS = ("partition", "kill", "pause", "delay", "disk-full", "power", "slow-disk", "clock",
         "limit", "membership")
DELAYS_MS = (20.0, 50.0, 100.0, 200.0, 400.0)
TARGETS = ("one", "minority", "majority", "all", "leader")
# Per fsync: a busy device (20 ms, etcd's alert line is 10 ms) up to a stall
# several election timeouts long (2 s; etcd #7970 saw 4 s).
SLOW_DISK_MS = (20.0, 100.0, 500.0, 2000.0)
CLOCK_TARGETS = ("one", "minority", "leader")
# Wall-clock jumps: past the 60 s tolerance of retention's guard, both ways.
CLOCK_OFFSETS_S = (-3600.0, -600.0, -90.0, 90.0, 600.0, 3600.0)
# Room left on a disk the disk-full nemesis fills. A page fails the next write
# that needs a new page (maybe in the middle of a WAL record); 64 KiB lasts a
# few seconds under the default workload (~20 KB/s per node), so some nodes
# hit it late in a window, or only after the disk was freed again.
DISK_FULL_MARGINS = (4096, 16 * 1024, 64 * 1024)

LeaderFinder = Callable[[], Awaitable[str | None]]


def choose_targets(nodes: Sequence[str], how: str, rng: random.Random,
                   leader: str | None = None) -> list[str]:
    """Nodes for a kill, pause or full disk: one, a minority, a majority, all, or
    the leader."""
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    n = len(shuffled)
    if how == "one":
        return shuffled[:1]
    if how == "minority":
        return shuffled[: max(1, (n - 1) // 2)]
    if how == "majority":
        return shuffled[: n // 2 + 1]
    if how == "all":
        return sorted(shuffled)
    if how == "leader":
        return [leader] if leader in nodes else shuffled[:1]
    raise ValueError(f"unknown target {how!r} (one of {', '.join(TARGETS)})")


def _undo_each(nodes: set[str], undo: Callable[[str], None]) -> list[str]:
    """Undo a fault on each of ``nodes`` (in order), forget them, return them."""
    done = sorted(nodes)
    for nid in done:
        undo(nid)
    nodes.clear()
    return done


@dataclass
class Nemesis:
    cluster: JepsenCluster
    recorder: Recorder
    rng: random.Random
    kinds: Sequence[str] = ("partition", "kill", "pause")
    interval: float = 5.0  # seconds between a fault's start and stop, and between faults
    kill_targets: Sequence[str] = ("one", "minority", "majority", "all", "leader")
    pause_targets: Sequence[str] = ("one", "minority", "leader")
    disk_full_targets: Sequence[str] = ("one", "minority", "majority", "all", "leader")
    disk_full_margins: Sequence[int] = DISK_FULL_MARGINS
    power_targets: Sequence[str] = ("one", "minority", "majority", "all", "leader")
    slow_disk_targets: Sequence[str] = ("one", "minority", "majority", "all", "leader")
    slow_disk_ms: Sequence[float] = SLOW_DISK_MS
    clock_targets: Sequence[str] = CLOCK_TARGETS
    clock_offsets: Sequence[float] = CLOCK_OFFSETS_S
    shapes: Sequence[str] = SHAPES
    find_leader: LeaderFinder | None = None
    admin: Admin | None = None  # needed by the membership nemesis
    topic_limit: TopicLimit | None = None  # needed by the limit nemesis
    regrow_deadline: float = 90.0
    rejoin: bool = True  # removed nodes may be added back (wiped)
    leader_bias: float = 0.5  # chance that an "isolate" partition isolates a leader
    hold_fraction: float = 0.3  # partitions that hold (then flood) instead of cutting
    restart_deadline: float = 30.0
    skipped: list[str] = field(default_factory=list)
    crashes: dict[str, int | None] = field(default_factory=dict)
    restart_failures: list[str] = field(default_factory=list)
    # (node, its start number) of every stop on a full disk, in order seen
    disk_full_stops: list[tuple[str, int]] = field(default_factory=list)
    _killed: set[str] = field(default_factory=set)
    _paused: set[str] = field(default_factory=set)
    _filled: set[str] = field(default_factory=set)
    _skewed: set[str] = field(default_factory=set)
    _slowed: set[str] = field(default_factory=set)
    healed: bool = False
    # Full-disk stops seen only after the heal: nobody restarted those nodes.
    stops_after_heal: list[str] = field(default_factory=list)
    live: set[str] = field(default_factory=set)
    membership: MembershipNemesis | None = None

    def __post_init__(self) -> None:
        kinds = []
        for k in self.kinds:
            if k not in KINDS:
                raise ValueError(f"unknown nemesis {k!r} (one of {', '.join(KINDS)})")
            kinds.append(k)
        self.live = set(self.cluster.initial_ids)
        if "membership" in kinds:
            kinds.remove("membership")
            why = self._membership_unavailable()
            if why:
                log.warning("event=nemesis_skipped kind=membership reason=%s", why)
                self.skipped.append(f"membership nemesis skipped: {why}")
            else:
                assert self.admin is not None
                self.membership = MembershipNemesis(
                    self.cluster, self.admin, self.recorder, random.Random(self.rng.random()),
                    self.cluster.initial_ids, self.cluster.spare_ids, self.live,
                    start_deadline=self.restart_deadline, rejoin=self.rejoin,
                )
        self.kinds = kinds
        if {"partition", "delay"} & set(self.kinds) and self.cluster.mesh is None:
            raise ValueError("partition and delay nemeses need a proxied cluster")
        if "clock" in self.kinds and not self.cluster.settings.clock_files:
            raise ValueError("the clock nemesis needs ClusterSettings.clock_files")
        for kind in {"power", "slow-disk"} & set(self.kinds):
            if not self.cluster.has_lazyfs:
                raise ValueError(f"the {kind} nemesis needs every data dir on a lazyfs of the "
                                 "cluster (ClusterSettings.lazyfs, mount_disks)")
        if "limit" in self.kinds and self.topic_limit is None:
            raise ValueError("the limit nemesis needs a TopicLimit (how to alter the topic)")
        if "disk-full" in self.kinds and not self.cluster.has_tmpfs:
            raise ValueError("the disk-full nemesis needs every data dir on a tmpfs of the "
                             "cluster (ClusterSettings.tmpfs_bytes, mount_disks)")

    def _membership_unavailable(self) -> str | None:
        if self.admin is None:
            return "no admin client was given"
        if len(self.cluster.initial_ids) < 3:
            return "it needs at least 3 nodes (never fewer than 3 voters)"
        if not self.cluster.spare_ids:
            # Without a spare it could only move and transfer, and removing a
            # node would leave fewer than 3 voters.
            return "no spare node to add"
        return None

    @property
    def targets(self) -> list[str]:
        """Nodes faults may hit: those meant to be running."""
        return sorted(self.live)

    @property
    def membership_failures(self) -> list[str]:
        return self.membership.failures if self.membership else []

    async def _leader(self) -> str | None:
        if self.find_leader is None:
            return None
        try:
            with trio.move_on_after(2.0):
                return await self.find_leader()
        except Exception as exc:
            log.info("event=leader_lookup_failed error=%s", exc)
        return None

    # ------------------------------------------------------------ one fault

    async def start_fault(self, kind: str) -> dict[str, Any]:
        nodes = self.targets
        if kind == "partition":
            assert self.cluster.mesh is not None
            # A majorities ring needs 5 nodes; with fewer it cuts nothing.
            shapes = [s for s in self.shapes if s != "ring" or len(nodes) >= 5]
            name = self.rng.choice(shapes or ["isolate"])
            to_leader = name == "isolate" and self.rng.random() < self.leader_bias
            victim = await self._leader() if to_leader else None
            grudge = shape(name, nodes, self.rng, victim)
            mode = LinkMode.HOLD if self.rng.random() < self.hold_fraction else LinkMode.CUT
            cut = self.cluster.mesh.apply(grudge, mode)
            value = {"shape": name, "mode": mode.value,
                     "grudge": {k: sorted(v) for k, v in grudge.items()}, "links_cut": len(cut)}
        elif kind == "delay":
            # Latency on every peer link (not bandwidth): slow heartbeats and
            # appends, elections that race with them.
            assert self.cluster.mesh is not None
            ms = self.rng.choice(DELAYS_MS)
            self.cluster.mesh.delay_all(ms)
            value = {"delay_ms": ms}
        elif kind == "kill":
            how = self.rng.choice(list(self.kill_targets))
            targets = choose_targets(nodes, how, self.rng,
                                     await self._leader() if how == "leader" else None)
            for nid in targets:
                self.cluster.kill(nid)
                self._killed.add(nid)
            value = {"targets": how, "nodes": targets}
        elif kind == "power":
            how = self.rng.choice(list(self.power_targets))
            targets = choose_targets(nodes, how, self.rng,
                                     await self._leader() if how == "leader" else None)
            for nid in targets:
                self._killed.add(nid)  # before: a failed remount is still restarted
                self.cluster.power_fail(nid)
            value = {"targets": how, "nodes": targets}
        elif kind == "pause":
            how = self.rng.choice(list(self.pause_targets))
            targets = choose_targets(nodes, how, self.rng,
                                     await self._leader() if how == "leader" else None)
            for nid in targets:
                self.cluster.pause(nid)
                self._paused.add(nid)
            value = {"targets": how, "nodes": targets}
        elif kind == "disk-full":
            how = self.rng.choice(list(self.disk_full_targets))
            targets = choose_targets(nodes, how, self.rng,
                                     await self._leader() if how == "leader" else None)
            margin = self.rng.choice(list(self.disk_full_margins))
            sizes = {}
            for nid in targets:
                self._filled.add(nid)  # before: a failed shrink is still undone
                sizes[nid] = self.cluster.fill_disk(nid, margin)
            value = {"targets": how, "nodes": targets, "margin": margin, "sizes": sizes}
        elif kind == "slow-disk":
            how = self.rng.choice(list(self.slow_disk_targets))
            targets = choose_targets(nodes, how, self.rng,
                                     await self._leader() if how == "leader" else None)
            ms = self.rng.choice(list(self.slow_disk_ms))
            for nid in targets:
                self._slowed.add(nid)  # before: a failed write is still undone
                self.cluster.set_fsync_delay(nid, ms)
            value = {"targets": how, "nodes": targets, "fsync_delay_ms": ms}
        elif kind == "clock":
            how = self.rng.choice(list(self.clock_targets))
            targets = choose_targets(nodes, how, self.rng,
                                     await self._leader() if how == "leader" else None)
            offsets = {nid: self.rng.choice(list(self.clock_offsets)) for nid in targets}
            for nid, offset in offsets.items():
                self._skewed.add(nid)
                self.cluster.set_clock(nid, offset)
            value = {"targets": how, "offsets_s": offsets}
        elif kind == "limit":
            assert self.topic_limit is not None
            value = await self.topic_limit.lower(self.rng)
        else:
            raise ValueError(kind)
        self.recorder.nemesis(f"start-{kind}", value)
        log.info("event=nemesis_start kind=%s value=%s", kind, value)
        return value

    async def stop_fault(self, kind: str) -> None:
        self.record_crashes()
        value: dict[str, Any] = {}
        if kind in ("partition", "delay"):
            assert self.cluster.mesh is not None
            self.cluster.mesh.heal()
        elif kind in ("kill", "power"):
            value["nodes"] = sorted(self._killed)
            await self._restart_killed()
        elif kind == "pause":
            value["nodes"] = sorted(self._paused)
            for nid in sorted(self._paused):
                self.cluster.resume(nid)
            self._paused.clear()
        elif kind == "disk-full":
            value["nodes"] = sorted(self._filled)
            value["stopped"] = await self._free_disks()
        elif kind == "slow-disk":
            value["nodes"] = self._speed_up_disks()
        elif kind == "clock":
            value["nodes"] = self._reset_clocks()
        elif kind == "limit":
            assert self.topic_limit is not None
            value = await self.topic_limit.restore()
        self.recorder.nemesis(f"stop-{kind}", value)
        log.info("event=nemesis_stop kind=%s", kind)

    async def _free_disks(self) -> list[str]:
        """Give every filled disk its size back; restart the nodes that stopped on
        it, including those whose write failed before the disk was freed but that
        are still shutting down (else they would stay down until the heal, or,
        in the last window, for the rest of the run)."""
        filled = sorted(self._filled)
        for nid in filled:
            self.cluster.free_disk(nid)
        self._filled.clear()
        stopping = [nid for nid in filled
                    if self.cluster.is_running(nid) and self.cluster.failed_on_full_disk(nid)]
        with trio.move_on_after(self.restart_deadline):
            # Polling: a child process's exit has no trio event to wait on.
            while any(self.cluster.is_running(nid) for nid in stopping):  # noqa: ASYNC110
                await trio.sleep(0.05)
        for nid in stopping:
            if self.cluster.is_running(nid):
                # A node that cannot write must stop, not linger (a liveness bug).
                why = f"failed a write on its full disk but still runs after " \
                      f"{self.restart_deadline}s"
                self.recorder.nemesis("stop-failed", {"node": nid, "error": why})
                self.restart_failures.append(f"{nid}: {why}")
                log.error("event=stop_failed node=%s", nid)
        # Also one an earlier window's stop did not see go down (its failed write
        # was not in its log yet when that disk was freed).
        down = set(self.record_disk_full_stops()) & self.live
        stopped = sorted(down | {nid for nid in filled if not self.cluster.is_running(nid)})
        self._killed.update(stopped)
        await self._restart_killed()
        return stopped

    def _speed_up_disks(self) -> list[str]:
        return _undo_each(self._slowed, lambda nid: self.cluster.set_fsync_delay(nid, 0.0))

    def _reset_clocks(self) -> list[str]:
        return _undo_each(self._skewed, lambda nid: self.cluster.set_clock(nid, 0.0))

    async def _restart_killed(self) -> None:
        # A node the membership nemesis removed meanwhile stays down (wiped).
        killed = sorted(self._killed & self.live)
        self._killed.clear()
        for nid in killed:
            self.cluster.start(nid)
        for nid in killed:
            try:
                await self.cluster.wait_started(nid, self.restart_deadline)
            except (RuntimeError, trio.TooSlowError) as exc:
                why = str(exc) or f"not ready within {self.restart_deadline}s"
                self.recorder.nemesis("restart-failed", {"node": nid, "error": why})
                self.restart_failures.append(f"{nid}: {why}")
                log.error("event=restart_failed node=%s error=%s", nid, exc)

    # ------------------------------------------------------------ schedule

    async def run(self, duration: float) -> None:
        """Alternate faults for ``duration`` seconds, then heal everything.

        With the membership nemesis: its changes run beside the faults; after
        the heal, membership is re-grown to the initial voter count.
        """
        try:
            async with trio.open_nursery() as nursery:
                if self.membership is not None:
                    nursery.start_soon(self.membership.run, duration, self.interval)
                if self.kinds:
                    await self._faults(duration)
                elif self.membership is None:
                    await trio.sleep(duration)
        finally:
            with trio.CancelScope(shield=True):
                await self.heal()
        if self.membership is not None:
            await self.membership.regrow(len(self.cluster.initial_ids), self.regrow_deadline)

    async def _faults(self, duration: float) -> None:
        end = trio.current_time() + duration
        while trio.current_time() < end:
            await trio.sleep(min(self._jitter(), max(0.0, end - trio.current_time())))
            if trio.current_time() >= end:
                break
            kind = self.rng.choice(list(self.kinds))
            await self.start_fault(kind)
            try:
                await trio.sleep(min(self._jitter(), max(0.0, end - trio.current_time())))
            finally:
                with trio.CancelScope(shield=True):
                    await self.stop_fault(kind)

    def _jitter(self) -> float:
        return self.interval * self.rng.uniform(0.5, 1.5)

    async def heal(self) -> None:
        """Resume paused nodes, free full disks, speed slow disks up, set clocks
        right, restart stopped ones, reconnect every link."""
        self._reset_clocks()
        self._speed_up_disks()
        for nid in sorted(self._paused):
            self.cluster.resume(nid)
        self._paused.clear()
        if self.cluster.mesh is not None:
            self.cluster.mesh.heal()
        self.record_crashes()
        await self._free_disks()
        for nid in self.targets:
            if not self.cluster.is_running(nid):
                self._killed.add(nid)
        await self._restart_killed()
        if self.topic_limit is not None:
            # Last: with every node back, the metadata group can take the change.
            restored = await self.topic_limit.restore(final=True)
            if restored:
                self.recorder.nemesis("restore-limit", restored)
        self.recorder.nemesis("heal", {})
        self.healed = True

    def record_crashes(self) -> dict[str, int]:
        """Nodes that died on their own (not by our hand): a bug worth a report.

        A stop on a disk we filled is not one of them; it is recorded apart."""
        self.record_disk_full_stops()
        crashed = self.cluster.unexpected_exits()
        for nid, code in sorted(crashed.items()):
            if nid not in self.crashes:
                self.crashes[nid] = code
                self.recorder.nemesis("node-crashed", {"node": nid, "exit_code": code})
                log.error("event=node_crashed node=%s exit_code=%s", nid, code)
        return crashed

    def record_disk_full_stops(self) -> list[str]:
        """Nodes down now because a disk we filled was full (each stop once)."""
        seen = []
        for nid, start in sorted(self.cluster.full_disk_exits().items()):
            if (nid, start) not in self.disk_full_stops:
                self.disk_full_stops.append((nid, start))
                self.recorder.nemesis("disk-full-stopped", {"node": nid, "start": start})
                log.info("event=node_stopped_on_full_disk node=%s", nid)
                if self.healed:
                    self.stops_after_heal.append(nid)
            seen.append(nid)
        return seen
