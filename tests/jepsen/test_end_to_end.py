"""Whole jepsen runs against real node processes on 127.0.0.1.

One run under kill + partition + pause must be valid; one run with a
deliberately unsafe node mode must be caught. (fsync = false plus killing
every node at once was tried first for the teeth test, but SIGKILL does not
drop the page cache, so no acknowledged write is lost that way on one
machine: the run is valid. ``unsafe_ack_before_commit`` does lose data.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from raftlog.jepsen.runner import RunOptions, run

pytestmark = pytest.mark.integration


def ok_count(results: dict, f: str) -> int:
    return results["counts"].get(f, {}).get("ok", 0)


def history_ops(run_dir: Path) -> list[dict]:
    """Every operation of a run's history, in order."""
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def drains(run_dir: Path) -> list[dict]:
    """The completions of the leader drains in a run's history."""
    return [
        op["value"]
        for op in history_ops(run_dir)
        if op["f"] == "drain" and op["type"] == "ok" and not op["value"].get("node")
    ]


def assert_replicas_agree(results: dict, opts: RunOptions) -> None:
    """The on-disk replica check ran over every node and partition and found nothing."""
    rep = results["replicas"]
    assert rep["checked"] and rep["valid"], rep["anomalies"]
    assert rep["anomaly_types"] == []
    # replication factor = nodes: every node holds every partition
    assert {(r["node"], r["key"]) for r in rep["replicas"]} == {
        (f"n{i + 1}", k) for i in range(opts.nodes) for k in range(opts.partitions)}
    assert rep["records_compared"] > 0
    assert rep["summary"].endswith("no divergence")


async def assert_short_faulty_run_valid(opts: RunOptions) -> None:
    """A short run of ``opts`` is valid, made progress, drained every partition,
    its replicas agree, and a fault really happened."""
    results = await run(opts)
    assert results["valid"], {k: results[k] for k in ("log", "notes", "liveness")}
    assert ok_count(results, "send") > 100 and ok_count(results, "drain") == opts.partitions
    assert_replicas_agree(results, opts)
    history = (opts.out / "history.jsonl").read_text()
    assert '"start-kill"' in history or '"start-partition"' in history


async def test_short_run_under_kill_partition_pause_is_valid(tmp_path: Path) -> None:
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="log", nemesis=["kill", "partition", "pause"],
        time_limit=24, nemesis_interval=3, concurrency=8, seed=11, recovery=4, quiet=1,
    )
    results = await run(opts)
    assert results["valid"], {k: results[k] for k in ("log", "notes")}
    assert results["linearizability"]["verdict"] == "linearizable"
    assert ok_count(results, "send") > 100 and ok_count(results, "drain") == opts.partitions
    assert_replicas_agree(results, opts)
    # The leader's copy holds every drained record (it served them), and the
    # followers' copies were compared too (they may lag, so no exact count).
    drained = sum(len(d["records"]) for d in drains(tmp_path / "run"))
    assert drained > 100 and results["replicas"]["records_compared"] > drained
    assert all(r["compared"] > 0 for r in results["replicas"]["replicas"])
    history = (tmp_path / "run" / "history.jsonl").read_text()
    assert '"start-' in history and '"heal"' in history  # faults really happened
    for name in ("results.json", "latency-raw.png", "rate.png", "logs/n1.log"):
        assert (tmp_path / "run" / name).stat().st_size > 0


async def test_unsafe_ack_before_commit_is_caught_as_lost_writes(tmp_path: Path) -> None:
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="log", nemesis=["partition"],
        partition_shapes=["isolate"], leader_bias=1.0, time_limit=15, nemesis_interval=3,
        concurrency=8, seed=2, recovery=3, quiet=1, unsafe_ack_before_commit=True,
    )
    results = await run(opts)
    assert not results["valid"]
    bad = set(results["log"]["anomaly_types"])
    # Acks from an isolated leader are discarded when it rejoins.
    assert bad & {"lost-write", "unseen-after-drain"}, bad
    assert results["linearizability"]["verdict"] == "not-linearizable"
    # The unsafe mode changes what clients are told, not what Raft applies.
    assert_replicas_agree(results, opts)


async def test_unsafe_follower_reads_are_caught_as_stale_reads(tmp_path: Path) -> None:
    # A stale read needs a client to read from the isolated old leader during an
    # isolation window; 20 s gives several windows, so a loaded machine (one
    # failure in a full-suite run with 12 s) still produces one.
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="log", nemesis=["partition"],
        partition_shapes=["isolate"], leader_bias=1.0, time_limit=20, nemesis_interval=3,
        concurrency=8, seed=7, recovery=3, quiet=1, unsafe_follower_reads=True,
    )
    results = await run(opts)
    assert not results["valid"]
    assert "stale-read" in results["log"]["anomaly_types"]
    # Follower reads make per-node drains possible: one per node and partition.
    assert ok_count(results, "drain") == opts.partitions * (1 + opts.nodes)
    assert_replicas_agree(results, opts)


async def test_a_tls_cluster_under_kill_and_partition_is_valid(tmp_path: Path) -> None:
    """--tls: nodes, peer links (through the partition proxies) and every client
    speak TLS only; a client or node on the wrong side of that would fail every
    request, so the ok sends show the whole run went over TLS."""
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="log", nemesis=["kill", "partition"],
        time_limit=12, nemesis_interval=3, concurrency=8, seed=3, recovery=3, quiet=1,
        tls=True,
    )
    await assert_short_faulty_run_valid(opts)
    config = (tmp_path / "run" / "cluster.toml").read_text()
    assert '[tls]\nca_file = "tls/ca.pem"' in config
    assert (tmp_path / "run" / "tls" / "node.key").stat().st_size > 0


async def test_a_cluster_on_peer_ports_under_kill_and_partition_is_valid(
    tmp_path: Path,
) -> None:
    """--peer-ports: peer links and snapshot transfers run over each node's
    peer_address (through the partition proxies), clients over its address."""
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="log", nemesis=["kill", "partition"],
        time_limit=12, nemesis_interval=3, concurrency=8, seed=5, recovery=3, quiet=1,
        peer_ports=True,
    )
    await assert_short_faulty_run_valid(opts)
    assert (tmp_path / "run" / "cluster.toml").read_text().count("peer_address = ") == 3


def test_tls_without_trustme_is_refused_before_anything_starts(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    from click.testing import CliRunner
    from raftlog.jepsen.cli import jepsen

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "trustme" else find_spec(name, *a))
    result = CliRunner().invoke(jepsen, ["run", "--tls", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "--tls issues the run's certificates with trustme" in result.output
    assert not (tmp_path / "run").exists()


async def test_lease_reads_through_leader_pauses_and_isolations_are_valid(
    tmp_path: Path,
) -> None:
    """lease_reads = true on every node while the nemesis pauses (SIGSTOP) and
    isolates partition leaders: a leader that resumes or is cut off must drop
    its lease before the others can elect and commit past it (Operations,
    "Lease reads"). And the leases were used, not just held."""
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="offsets", nemesis=["partition", "pause"],
        partition_shapes=["isolate"], leader_bias=1.0, time_limit=20, nemesis_interval=3,
        concurrency=8, seed=8, recovery=3, quiet=1, lease_reads=True,
    )
    results = await run(opts)
    assert results["valid"], {k: results[k] for k in ("log", "notes")}
    assert results["linearizability"]["verdict"] == "linearizable"
    logs = "".join(p.read_text() for p in (tmp_path / "run" / "logs").glob("*.log"))
    served = sum(int(n) for n in re.findall(r"\blease_reads=(\d+)", logs))
    assert served > 100, "reads were not served from leases"
    assert_replicas_agree(results, opts)


async def test_serializable_reads_from_an_isolated_leader_are_valid(tmp_path: Path) -> None:
    """The safe counterpart of the test above: the same isolations of the leader,
    every fetch serializable. Reads from the cut-off node may be stale (exempt),
    but it must never hand out a produce it appended and could not commit."""
    opts = RunOptions(
        out=tmp_path / "run", nodes=3, workload="log", nemesis=["partition"],
        partition_shapes=["isolate"], leader_bias=1.0, time_limit=20, nemesis_interval=3,
        concurrency=8, seed=7, recovery=3, quiet=1, serializable_reads=1.0,
    )
    results = await run(opts)
    assert results["valid"], {k: results[k] for k in ("log", "notes")}
    assert results["linearizability"]["verdict"] == "linearizable"
    history = [json.loads(line)
               for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    served = [op for op in history
              if op["f"] == "fetch" and op["type"] == "ok" and op["value"].get("serializable")]
    assert len(served) > 50
    assert_replicas_agree(results, opts)
