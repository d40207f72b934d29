"""``raftlog jepsen run|check``: fault-injection runs and offline history checks.

Exit codes: 0 valid, 1 an anomaly was found (or the verdict is unknown),
2 usage error, 3 the run itself failed (the cluster did not come up ...).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import traceback
from pathlib import Path

import click
import trio

from . import report
from .disks import DiskError
from .nemesis import CLOCK_TARGETS, KINDS, SLOW_DISK_MS, TARGETS
from .partitions import SHAPES
from .workload import WORKLOADS

log = logging.getLogger(__name__)


def _summary(results: dict) -> str:
    lines = [f"valid: {results['valid']}"]
    for f, counts in sorted(results.get("counts", {}).items()):
        lines.append(f"  {f}: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    log_part = results.get("log", {})
    for t, n in sorted(log_part.get("counts", {}).items()):
        first = (log_part.get("anomalies", {}).get(t) or [{}])[0]
        lines.append(f"  anomaly {t}: {n} (e.g. partition {first.get('key')}: "
                     f"{first.get('message')})")
    lin = results.get("linearizability")
    if lin:
        for k in lin["keys"]:
            lines.append(f"  linearizability partition {k['key']}: {k['verdict']} "
                         f"({k['ops']} ops, {k['seconds']}s)")
            cx = k.get("counterexample") or {}
            stuck = cx.get("stuck_op")
            if stuck:
                lines.append(f"    stuck at {stuck['f']} {stuck['invoke']} -> {stuck['value']} "
                             f"(history index {stuck['index']}) with the log "
                             f"{cx.get('log_length')} long")
    lines += [f"  {line}" for line in report.replica_lines(results)]
    lines += [f"  {line}" for line in report.group_lines(results)]
    lines += [f"  {line}" for line in report.disk_full_lines(results)]
    for kind, outcomes in sorted(results.get("membership", {}).items()):
        lines.append(f"  membership {kind}: "
                     + " ".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
    for problem in results.get("liveness", []):
        lines.append(f"  liveness: {problem}")
    for note in results.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def _targets(text: str, option: str) -> list[str]:
    targets = [t.strip() for t in text.split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS:
            raise click.BadParameter(f"unknown target {t!r}", param_hint=option)
    return targets


def _delays(text: str, option: str) -> list[float]:
    try:
        delays = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter(f"not a list of milliseconds: {text!r}",
                                 param_hint=option) from None
    if not delays or any(not 0 < ms <= 60_000 for ms in delays):
        raise click.BadParameter("each delay must be in (0, 60000] ms", param_hint=option)
    return delays


@click.group()
def jepsen() -> None:
    """Fault injection against real node processes, and history checkers."""


def _save_traceback(out: Path, exc: BaseException) -> Path | str:
    """Write ``exc``'s traceback to ``out/harness-error.txt``; where it went."""
    text = "".join(traceback.format_exception(exc))
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "harness-error.txt"
        path.write_text(text)
    except OSError:
        click.echo(text, err=True)
        return "above"
    return path


@jepsen.command("run")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--workload", type=click.Choice(list(WORKLOADS)), default="log",
              show_default=True)
@click.option("--consumers", type=click.IntRange(1, 32), default=3, show_default=True,
              help="groups workload: group-managed consumers (taken from --concurrency).")
@click.option("--session-timeout", type=click.FloatRange(0.1, 300), default=2.0,
              show_default=True, help="groups workload: consumer session timeout (s).")
@click.option("--static-members", is_flag=True,
              help="groups workload: each consumer worker keeps one group_instance_id, so "
                   "its restarts take its place back instead of rebalancing.")
@click.option("--rebalance", type=click.Choice(["eager", "cooperative", "mixed"]),
              default="eager", show_default=True,
              help="groups workload: the consumers' rebalance protocol (mixed: every "
                   "other consumer worker cooperative).")
@click.option("--serializable-reads", type=click.FloatRange(0.0, 1.0), default=0.0,
              show_default=True,
              help="Fraction of fetches and polls sent with consistency=serializable (any "
                   "replica's copy): checked for everything but recency.")
@click.option("--delete-retention-ms", type=click.IntRange(0, None), default=5000,
              show_default=True,
              help="compact workload: how long a tombstone stays readable (the topic's "
                   "delete_retention_ms); the checker tells early removals from this.")
@click.option("--nemesis", "nemesis_", default="partition,kill,pause", show_default=True,
              help=f"Comma-separated, of: {', '.join(KINDS)}; 'none' for no faults.")
@click.option("--kill-targets", default=",".join(TARGETS), show_default=True)
@click.option("--disk-full-targets", default=",".join(TARGETS), show_default=True,
              help="Whose disks the disk-full nemesis fills (it needs root: tmpfs mounts).")
@click.option("--power-targets", default=",".join(TARGETS), show_default=True,
              help="Whose power the power nemesis cuts (lazyfs disks: needs /dev/fuse).")
@click.option("--slow-disk-targets", default=",".join(TARGETS), show_default=True,
              help="Whose fsyncs the slow-disk nemesis delays (lazyfs disks: needs /dev/fuse).")
@click.option("--slow-disk-ms", default=",".join(f"{ms:g}" for ms in SLOW_DISK_MS),
              show_default=True,
              help="The fsync delays (ms) the slow-disk nemesis picks from, one per window.")
@click.option("--clock-targets", default=",".join(CLOCK_TARGETS), show_default=True,
              help="Whose wall clocks the clock nemesis moves (a majority defeats "
                   "retention's clock check by design).")
@click.option("--partition-shapes", default=",".join(SHAPES), show_default=True)
@click.option("--time-limit", type=float, default=60.0, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 200), default=10, show_default=True)
@click.option("--partitions", type=click.IntRange(1, 64), default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--interval", type=float, default=5.0, show_default=True,
              help="Seconds between nemesis start/stop.")
@click.option("--spares", type=click.IntRange(0, 6), default=1, show_default=True,
              help="Extra nodes the membership nemesis may add (started only by it).")
@click.option("--rejoin/--no-rejoin", default=True, show_default=True,
              help="May the membership nemesis add a removed node back (on a wiped disk)?")
@click.option("--rate", type=float, default=20.0, show_default=True,
              help="Ops per second per worker.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory (default store/<workload>-<time>).")
@click.option("--tls", is_flag=True,
              help="[tls] on every node, peer links and clients (a CA made for the run; "
                   "needs trustme from the test extras).")
@click.option("--peer-ports", is_flag=True,
              help="a peer_address per node: peer links and snapshot transfers (and the "
                   "partition nemesis's proxies) use it, clients the node's address.")
@click.option("--lease-reads", is_flag=True,
              help="lease_reads = true on every node: linearizable reads from the "
                   "leader's lease, no ReadIndex round (pause and partition test it).")
@click.option("--unsafe-no-fsync", is_flag=True, help="fsync = false on every node.")
@click.option("--unsafe-ack-before-commit", is_flag=True,
              help="DELIBERATELY UNSAFE node mode: ack produces before commit.")
@click.option("--unsafe-follower-reads", is_flag=True,
              help="DELIBERATELY UNSAFE node mode: serve reads from any replica.")
def run_cmd(nodes: int, workload: str, nemesis_: str, kill_targets: str,
            disk_full_targets: str, power_targets: str, slow_disk_targets: str,
            slow_disk_ms: str, clock_targets: str, partition_shapes: str,
            time_limit: float,
            concurrency: int, partitions: int, seed: int, interval: float, spares: int,
            rejoin: bool, rate: float, consumers: int, session_timeout: float,
            static_members: bool, rebalance: str, serializable_reads: float,
            delete_retention_ms: int, out: Path | None, tls: bool, peer_ports: bool,
            lease_reads: bool,
            unsafe_no_fsync: bool,
            unsafe_ack_before_commit: bool, unsafe_follower_reads: bool) -> None:
    """Start a cluster, run a workload under faults, check the history."""
    # The history holds every record's failure; the producer's warning for each
    # failed batch would flood the console (the limit nemesis fails many).
    logging.getLogger("raftlog.client.producer").setLevel(logging.ERROR)
    from .runner import RunOptions, run

    kinds = [] if nemesis_.strip() in ("", "none") else [k.strip() for k in nemesis_.split(",")]
    for k in kinds:
        if k not in KINDS:
            raise click.BadParameter(f"unknown nemesis {k!r}", param_hint="--nemesis")
    targets = _targets(kill_targets, "--kill-targets")
    full_targets = _targets(disk_full_targets, "--disk-full-targets")
    skew_targets = _targets(clock_targets, "--clock-targets")
    cut_targets = _targets(power_targets, "--power-targets")
    slow_targets = _targets(slow_disk_targets, "--slow-disk-targets")
    fsync_delays = _delays(slow_disk_ms, "--slow-disk-ms")
    shapes = [s.strip() for s in partition_shapes.split(",") if s.strip()]
    for s in shapes:
        if s not in SHAPES:
            raise click.BadParameter(f"unknown shape {s!r}", param_hint="--partition-shapes")
    if tls and importlib.util.find_spec("trustme") is None:
        raise click.UsageError(
            "--tls issues the run's certificates with trustme: pip install -e '.[test]'"
        )
    if out is None:
        import time

        out = Path("store") / f"{workload}-{time.strftime('%Y%m%dT%H%M%S')}"
    opts = RunOptions(
        out=out, nodes=nodes, workload=workload, nemesis=kinds, time_limit=time_limit,
        concurrency=concurrency, partitions=partitions, seed=seed, nemesis_interval=interval,
        spares=spares, rejoin=rejoin, consumers=consumers, session_timeout=session_timeout,
        static_members=static_members, serializable_reads=serializable_reads,
        rebalance=rebalance, delete_retention_ms=delete_retention_ms, kill_targets=targets,
        disk_full_targets=full_targets,
        partition_shapes=shapes,
        clock_targets=skew_targets, power_targets=cut_targets,
        slow_disk_targets=slow_targets, slow_disk_ms=fsync_delays,
        rate_per_worker=rate, tls=tls, peer_ports=peer_ports, lease_reads=lease_reads,
        fsync=not unsafe_no_fsync,
        unsafe_ack_before_commit=unsafe_ack_before_commit,
        unsafe_follower_reads=unsafe_follower_reads,
    )
    try:
        results = trio.run(run, opts)
    except DiskError as exc:  # disk-full: no tmpfs (not root ...): say why, plainly
        click.echo(f"jepsen run failed: {exc}", err=True)
        sys.exit(3)
    except Exception as exc:
        # The harness itself broke (not the cluster): keep the whole traceback,
        # which a nested ExceptionGroup's repr hides.
        where = _save_traceback(Path(out), exc)
        click.echo(f"jepsen run failed: {exc!r} (traceback: {where}; node logs: {out}/logs)",
                   err=True)
        sys.exit(3)
    click.echo(_summary(results))
    click.echo(f"results: {out}/results.json")
    sys.exit(0 if results["valid"] else 1)


@jepsen.command("check")
@click.argument("history", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--no-linearizability", is_flag=True, help="Only the log anomaly checker.")
@click.option("--time-limit", type=float, default=60.0, show_default=True,
              help="Per-partition limit of the linearizability search.")
@click.option("--json", "as_json", is_flag=True, help="Print the full results as JSON.")
@click.option("--no-replicas", is_flag=True,
              help="Do not compare the data dirs of the run (<run>/data/*) with each other.")
def check_cmd(history: Path, no_linearizability: bool, time_limit: float, as_json: bool,
              no_replicas: bool) -> None:
    """Check a recorded history.jsonl, and the nodes' data dirs next to it when the run
    left them; exit 1 if an anomaly was found."""
    from .runner import check_file

    results = check_file(history, time_limit, linearizability=not no_linearizability,
                         replicas=not no_replicas)
    if as_json:
        click.echo(json.dumps(results, indent=2, sort_keys=True, default=str))
    else:
        click.echo(_summary(results))
    sys.exit(0 if results["valid"] else 1)
