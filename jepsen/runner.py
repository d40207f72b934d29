"""One jepsen run, start to finish, and the offline check of a history.

Phases: (``disk-full``: mount a tmpfs per data dir) -> start the proxies and
the nodes (a generated cluster.toml) -> create
the topic -> workload with faults for ``time_limit`` s -> heal everything ->
recovery window with the workload still running (shows the service comes
back) -> stop the workload (``groups``: every consumer closes) -> quiet
period -> drain every partition (``groups``: then read the committed offsets) -> check
-> stop the nodes -> read every node's data dir and compare the replicas
(jepsen/replicas.py) -> (``disk-full``: copy the data dirs to the run dir and
unmount the tmpfs) -> results.json, plots, node logs. Every node process is
stopped, and every tmpfs unmounted, in a ``finally``, whatever happened.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio
from raftlog.client.aio import AsyncClient

from . import (
    checker_compact,
    checker_groups,
    checker_log,
    compact_workload,
    datadirs,
    linearizable,
    membership,
    report,
)
from .cluster import ClusterSettings, JepsenCluster
from .history import Op, OpType, Recorder, load
from .membership import ClientAdmin
from .nemesis import CLOCK_OFFSETS_S, CLOCK_TARGETS, DISK_FULL_MARGINS, SLOW_DISK_MS, Nemesis
from .partitions import SHAPES
from .topic_limit import TopicLimit
from .workload import TOPIC, Workload, WorkloadConfig

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    out: Path
    nodes: int = 3
    workload: str = "log"
    nemesis: list[str] = field(default_factory=lambda: ["partition", "kill", "pause"])
    time_limit: float = 60.0
    concurrency: int = 10
    partitions: int = 3
    seed: int = 0
    nemesis_interval: float = 5.0
    spares: int = 1  # extra nodes for the membership nemesis (only started by it)
    rejoin: bool = True  # the membership nemesis may add removed nodes back (wiped)
    kill_targets: list[str] = field(
        default_factory=lambda: ["one", "minority", "majority", "all", "leader"]
    )
    disk_full_targets: list[str] = field(
        default_factory=lambda: ["one", "minority", "majority", "all", "leader"]
    )
    power_targets: list[str] = field(
        default_factory=lambda: ["one", "minority", "majority", "all", "leader"]
    )
    slow_disk_targets: list[str] = field(
        default_factory=lambda: ["one", "minority", "majority", "all", "leader"]
    )
    slow_disk_ms: list[float] = field(default_factory=lambda: list(SLOW_DISK_MS))
    tmpfs_bytes: int = 1 << 30  # disk-full: each data dir's tmpfs (only what is written counts)
    disk_full_margins: list[int] = field(default_factory=lambda: list(DISK_FULL_MARGINS))
    clock_targets: list[str] = field(default_factory=lambda: list(CLOCK_TARGETS))
    clock_offsets: list[float] = field(default_factory=lambda: list(CLOCK_OFFSETS_S))
    partition_shapes: list[str] = field(default_factory=lambda: list(SHAPES))
    leader_bias: float = 0.5  # chance an isolating partition isolates a partition leader
    recovery: float = 5.0  # workload keeps running after the heal
    quiet: float = 2.0  # nothing runs before the drain
    rate_per_worker: float = 20.0
    request_timeout: float = 3.0
    fsync: bool = True
    unsafe_ack_before_commit: bool = False
    unsafe_follower_reads: bool = False
    lease_reads: bool = False  # linearizable reads from the leaders' leases
    tick_ms: int = 10
    election_ticks: int = 20
    lin_time_limit: float = 60.0  # per partition; beyond it the verdict is unknown
    consumers: int = 3  # groups workload: group-managed consumers
    session_timeout: float = 2.0  # groups workload: short, so faults expire members
    static_members: bool = False  # groups workload: consumers with group_instance_ids
    rebalance: str = "eager"  # groups workload: eager, cooperative or mixed consumers
    serializable_reads: float = 0.0  # fraction of fetches/polls from any replica's copy
    tls: bool = False  # [tls] on every node and client (a CA made for the run)
    peer_ports: bool = False  # a peer_address per node (peer links, snapshot transfers)
    # compact workload: how long tombstones stay readable, and how often the leaders
    # look for a sweep to run (every round that finds anything new sweeps).
    delete_retention_ms: int = 5000
    compaction_interval_ms: int = 200


def check_history(ops: list[Op], lin_time_limit: float = 60.0,
                  linearizability: bool = True) -> dict[str, Any]:
    """Every checker on one history; ``valid`` only if all of them pass.

    A history with group polls (the ``groups`` workload) is also given to the
    consumer-group checker; its liveness notes (a stuck group) are in
    ``liveness`` and make the history invalid too.
    """
    compact = checker_compact.is_compact_history(ops)
    # A compacted topic's offsets have holes: its own checker instead of the log
    # checker, and no linearizability search (its model is a dense log).
    log_result = checker_compact.check(ops) if compact else checker_log.check(ops)
    out: dict[str, Any] = {"log": log_result.to_dict(), "liveness": []}
    valid = log_result.valid
    if any(op.f == "gpoll" for op in ops):
        groups = checker_groups.check(ops)
        out["groups"] = groups.to_dict()
        out["liveness"] = list(groups.liveness)
        valid = valid and groups.valid and not groups.liveness
    if linearizability and not compact:
        lin = linearizable.check(ops, time_limit_per_key=lin_time_limit)
        out["linearizability"] = lin.to_dict()
        valid = valid and lin.valid
    out["valid"] = valid
    out["counts"] = report.op_counts(ops)
    return out


async def _find_leader(client: AsyncClient) -> str | None:
    meta = await client.metadata()
    for t in meta.get("topics") or []:
        if t.get("name") == TOPIC:
            leaders = [p.get("leader") for p in t.get("partitions") or [] if p.get("leader")]
            if leaders:
                return random.choice(leaders)
    return None


def _clock_settings(opts: RunOptions) -> dict[str, Any]:
    """The clock nemesis: per-node clock files, and a retention_ms no record of
    the run may legitimately reach (so a deletion by time is a lost record),
    checked often."""
    if "clock" not in opts.nemesis:
        return {}
    run_ms = (opts.time_limit + opts.recovery + opts.quiet + 600.0) * 1000
    return {"clock_files": True, "retention_ms": int(max(900_000, 2 * run_ms)),
            "retention_interval_ms": 200}


def _merged(clock: dict[str, Any], compaction: dict[str, Any]) -> dict[str, Any]:
    """Both workloads' settings; the clock nemesis's more frequent retention rounds
    serve compaction too."""
    out = {**compaction, **clock}
    if "retention_interval_ms" in clock and "retention_interval_ms" in compaction:
        out["retention_interval_ms"] = min(clock["retention_interval_ms"],
                                           compaction["retention_interval_ms"])
    return out


def _compaction_settings(opts: RunOptions) -> dict[str, Any]:
    """The compact workload: a compacted topic, swept whenever anything is new."""
    if opts.workload != "compact":
        return {}
    return {"topic_config": compact_workload.topic_config(opts.delete_retention_ms),
            "retention_interval_ms": opts.compaction_interval_ms,
            "node_env": {"RAFTLOG_COMPACTION_DIRTY_RATIO": "0"}}


def _run_dir(path: Path) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


async def run(opts: RunOptions) -> dict[str, Any]:
    out = _run_dir(opts.out)
    rng = random.Random(opts.seed)
    settings = ClusterSettings(
        nodes=opts.nodes, fsync=opts.fsync, tick_ms=opts.tick_ms,
        election_ticks=opts.election_ticks,
        unsafe_ack_before_commit=opts.unsafe_ack_before_commit,
        unsafe_follower_reads=opts.unsafe_follower_reads,
        lease_reads=opts.lease_reads,
        proxied=bool({"partition", "delay"} & set(opts.nemesis)),
        spares=opts.spares if "membership" in opts.nemesis else 0,
        tmpfs_bytes=opts.tmpfs_bytes if "disk-full" in opts.nemesis else 0,
        lazyfs=bool({"power", "slow-disk"} & set(opts.nemesis)),
        tls=opts.tls,
        peer_ports=opts.peer_ports,
        **_merged(_clock_settings(opts), _compaction_settings(opts)),
    )
    cluster = JepsenCluster(out, settings)
    # First, outside any nursery: if mounting is impossible the run fails at
    # once with the reason, before a node or the history exists.
    cluster.mount_disks()
    try:
        return await _run(opts, out, rng, cluster)
    finally:
        cluster.stop_all()  # a no-op unless _run failed before its own stop
        cluster.release_disks(keep=True)


async def _run(opts: RunOptions, out: Path, rng: random.Random,
               cluster: JepsenCluster) -> dict[str, Any]:
    recorder = Recorder(out / "history.jsonl")
    notes: list[str] = []
    liveness: list[str] = []  # crashes, failed restarts, partitions never drained
    producer_summary: dict[str, Any] | None = None  # the producer workload's batching
    started = time.monotonic()
    try:
        async with trio.open_nursery() as nursery:
            await cluster.prepare()
            if cluster.mesh is not None:
                await nursery.start(cluster.mesh.serve)
            await cluster.start_all()
            await cluster.wait_for_topic(TOPIC, opts.partitions, opts.nodes)
            if cluster.settings.topic_config:
                # The checker learns the topic's config from the history itself.
                recorder.complete(recorder.invoke("setup", "topic_config", {}), OpType.OK,
                                  dict(cluster.settings.topic_config))
            wl = Workload(
                WorkloadConfig(opts.workload, opts.partitions, opts.concurrency,
                               opts.rate_per_worker, opts.request_timeout,
                               consumers=opts.consumers,
                               session_timeout=opts.session_timeout,
                               static_members=opts.static_members,
                               rebalance=opts.rebalance,
                               serializable_reads=opts.serializable_reads),
                cluster.addresses, recorder, random.Random(rng.random()),
                tls=cluster.client_tls,
            )
            tls = cluster.client_tls
            async with AsyncClient(cluster.addresses, request_timeout=2.0, tls=tls) as probe, \
                    AsyncClient(cluster.addresses, client_id="jepsen-admin",
                                request_timeout=5.0, tls=tls) as admin:
                nemesis = Nemesis(
                    cluster, recorder, random.Random(rng.random()), opts.nemesis,
                    interval=opts.nemesis_interval, kill_targets=opts.kill_targets,
                    shapes=opts.partition_shapes, leader_bias=opts.leader_bias,
                    find_leader=lambda: _find_leader(probe),
                    admin=ClientAdmin(admin, TOPIC), rejoin=opts.rejoin,
                    disk_full_targets=opts.disk_full_targets,
                    disk_full_margins=opts.disk_full_margins,
                    power_targets=opts.power_targets,
                    slow_disk_targets=opts.slow_disk_targets,
                    slow_disk_ms=opts.slow_disk_ms,
                    clock_targets=opts.clock_targets, clock_offsets=opts.clock_offsets,
                    topic_limit=TopicLimit(
                        lambda config: admin.alter_topic(TOPIC, config=config))
                    if "limit" in opts.nemesis else None,
                )
                notes += nemesis.skipped
                stop = trio.Event()
                async with trio.open_nursery() as phase:
                    phase.start_soon(wl.run, stop)
                    await nemesis.run(opts.time_limit)  # heals at the end
                    await trio.sleep(opts.recovery)
                    stop.set()
            await trio.sleep(opts.quiet)
            drain_notes = await wl.drain()
            if wl.groups is not None:
                drain_notes += await wl.groups.final_committed()
            if wl.producers is not None:
                producer_summary = wl.producers.summary()  # every producer closed
            notes += drain_notes
            liveness += drain_notes
            if opts.unsafe_follower_reads:
                # Per-node drains over the wire too (followers answer reads only
                # in this mode); the data dirs are compared in every mode below.
                notes += await wl.drain_nodes({nid: cluster.address(nid)
                                               for nid in sorted(nemesis.live)})
            nemesis.record_crashes()
            liveness += [f"{nid} exited on its own (code {code}); see logs/{nid}.log"
                         for nid, code in sorted(nemesis.crashes.items())]
            liveness += [f"restart failed: {r}" for r in nemesis.restart_failures]
            liveness += nemesis.membership_failures
            if nemesis.topic_limit is not None:
                liveness += nemesis.topic_limit.failures
            # Its failing write raced with freeing the disk, and the log line
            # came after we looked: the replica check shows how far it lags.
            notes += [f"{nid} stopped on its full disk only after the heal, and stayed down"
                      for nid in nemesis.stops_after_heal]
            nursery.cancel_scope.cancel()
    finally:
        cluster.stop_all()
        recorder.close()
    ops = recorder.ops
    results = check_history(ops, opts.lin_time_limit)
    # State Machine Safety on disk (Raft §5.4.3): every node's applied copy,
    # read once the nodes stopped, against the others and the final drain.
    results["replicas"] = await datadirs.check_replicas(cluster.existing_data_dirs(), TOPIC,
                                                        ops)
    results["valid"] = results["valid"] and results["replicas"]["valid"]
    # The replica check has read the data dirs: the tmpfs mounts may go now.
    notes += cluster.release_disks(keep=True)
    results["notes"] = notes
    # Not a safety anomaly, but a run where a node crashed or the cluster never
    # came back is not a pass either.
    results["liveness"] = liveness + results["liveness"]
    if "membership" in opts.nemesis:
        results["membership"] = membership.summary(ops)
    if "disk-full" in opts.nemesis:
        results["disk_full"] = report.disk_full(ops)
    if producer_summary is not None:
        results["producer"] = producer_summary
    results["valid"] = results["valid"] and not liveness
    results["options"] = {k: (str(v) if isinstance(v, Path) else v)
                          for k, v in asdict(opts).items()}
    results["availability"] = report.availability(ops)
    results["seconds"] = round(time.monotonic() - started, 1)
    try:
        report.write_plots(ops, out)
    except ImportError as exc:
        results["notes"].append(f"plots skipped: {exc}")
    report.write_results(out, results)
    return results


def check_file(path: Path, lin_time_limit: float = 60.0,
               linearizability: bool = True, replicas: bool = True) -> dict[str, Any]:
    """Check a recorded history; with ``replicas``, also compare the data dirs a run
    left next to it (``<run>/data/<node>``), when there are any."""
    ops = load(path)
    results = check_history(ops, lin_time_limit, linearizability)
    data = Path(path).parent / "data"
    dirs = sorted(d for d in data.iterdir() if d.is_dir()) if data.is_dir() else []
    if replicas and dirs:
        results["replicas"] = trio.run(datadirs.check_replicas, dirs, TOPIC, ops)
        results["valid"] = results["valid"] and results["replicas"]["valid"]
    return results
