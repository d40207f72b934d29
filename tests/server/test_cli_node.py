"""node start / cluster up / cluster status: exit codes, messages, and end to end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner
from raftlog.server.cli import main
from raftlog.server.cli_node import READY_LINE, leaders_ready, merge_groups
from raftlog.server.config import load_config, render_config

from .cluster_harness import LocalCluster, make_config
from .conftest import start_fake_node

RAFTLOG = [sys.executable, "-m", "raftlog.server"]


def write_config(tmp_path: Path, nodes: int = 3, **kw: Any) -> Path:
    cfg = make_config(tmp_path, nodes, **kw)
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(cfg))
    return path


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(RAFTLOG + args, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], stderr


@pytest.mark.integration
def test_node_start_with_unknown_id_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    result = run(["node", "start", "--config", str(path), "--node", "n9"])
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "node 'n9' is not in the file", str(path))


@pytest.mark.integration
def test_node_start_with_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text('[cluster]\nname = "x"\n[[node]]\nid = "n1"\naddress = "127.0.0.1"\n')
    result = run(["node", "start", "--config", str(path), "--node", "n1"])
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "node[0].address '127.0.0.1' is missing a port")


@pytest.mark.integration
def test_node_start_on_another_nodes_data_dir_exits_2(tmp_path: Path) -> None:
    from raftlog.log.store import NodeStore

    path = write_config(tmp_path)
    cfg = make_config(tmp_path, 1)  # only for the data dir path below
    data_dir = tmp_path / "n1"
    assert cfg.node("n1").data_dir == data_dir
    NodeStore.open(data_dir, cluster="test", node_id="n2").close()  # n2's, at n1's path
    result = run(["node", "start", "--config", str(path), "--node", "n1"])
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "node n1:", "belongs to node 'n2'")


@pytest.mark.integration
def test_node_start_on_a_taken_port_exits_1(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    n1 = load_config(path).node("n1")
    with socket.socket() as squatter:
        squatter.bind((n1.host, n1.port))
        squatter.listen()
        result = run(["node", "start", "--config", str(path), "--node", "n1"])
    assert result.returncode == 1
    assert_one_line_error(result.stderr, f"address {n1.address}", "already in use")


def test_cluster_up_refuses_a_taken_port(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    loaded = load_config(path)
    n2 = loaded.node("n2")
    with socket.socket() as squatter:
        squatter.bind((n2.host, n2.port))
        squatter.listen()
        result = CliRunner().invoke(main, ["cluster", "up", "--config", str(path)])
    assert result.exit_code == 1
    assert f"node n2 address {n2.address} is already in use" in result.output
    assert not (tmp_path / "n1.log").exists()  # refused before starting anything


def test_cluster_status_with_nothing_running_exits_3(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    result = CliRunner().invoke(main, ["cluster", "status", "--config", str(path), "--json"])
    assert result.exit_code == 3
    out = json.loads(result.output)
    assert len(out["nodes"]) == 3 and all("error" in s for s in out["nodes"].values())


def group(gid: int, role: str, leader: str | None, term: int, **kw: Any) -> dict[str, Any]:
    return {"group": gid, "topic": kw.get("topic"), "partition": kw.get("partition"),
            "role": role, "leader": leader, "term": term, "commit": kw.get("commit", 5),
            "applied": 5, "last_index": 5, "replicas": kw.get("replicas", [])}  # fmt: skip


def test_leaders_ready_needs_a_node_that_leads_each_group() -> None:
    follower_view = {"node": "n2", "groups": [group(0, "follower", "n1", 2)]}
    assert not leaders_ready({"b": follower_view}, 1)  # n1 may be dead
    led = {"node": "n1", "groups": [group(0, "leader", "n1", 2)]}
    assert leaders_ready({"a": led, "b": follower_view}, 2)
    assert not leaders_ready({"a": led, "b": follower_view, "c": {"error": "down"}}, 3)
    assert not leaders_ready({"a": {"node": "n1", "groups": []}}, 1)  # nothing hosted yet


def test_merge_prefers_the_highest_term_leader() -> None:
    statuses = {
        "a": {"node": "n1", "groups": [group(0, "leader", "n1", 2), group(1, "follower", "n2", 3)]},
        "b": {"node": "n2", "groups": [group(0, "leader", "n2", 3), group(1, "leader", "n2", 3)]},
        "c": {"error": "down"},
    }
    rows = merge_groups(statuses)
    assert [(r["group"], r["leader"], r["term"], r["reported_by"]) for r in rows] == [
        (0, "n2", 3, "n2"),  # the stale term-2 leader n1 loses
        (1, "n2", 3, "n2"),
    ]


async def test_cluster_status_reads_every_node(tmp_path: Path, nursery: trio.Nursery) -> None:
    cfg = make_config(tmp_path, 2)
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(cfg))
    n1 = await start_fake_node(nursery, cfg, "n1")
    n2 = await start_fake_node(nursery, cfg, "n2")
    replicas = [{"node": "n1", "match": 9, "next": 10, "state": "replicate", "lag": 0},
                {"node": "n2", "match": 7, "next": 8, "state": "replicate", "lag": 2}]  # fmt: skip
    n1.status_groups = [group(0, "leader", "n1", 4, commit=9, replicas=replicas),
                        group(1, "follower", "n2", 2, topic="t", partition=0)]  # fmt: skip
    n2.status_groups = [group(0, "follower", "n1", 4), group(1, "leader", "n2", 2, topic="t",
                        partition=0)]  # fmt: skip

    def invoke(*extra: str) -> Any:
        return CliRunner().invoke(main, ["cluster", "status", "--config", str(path), *extra])

    result = await trio.to_thread.run_sync(invoke, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [(g["group"], g["leader"], g["reported_by"]) for g in out["groups"]] == [
        (0, "n1", "n1"),
        (1, "n2", "n2"),
    ]
    table = await trio.to_thread.run_sync(invoke)
    assert table.exit_code == 0
    assert "n1:9(lag 0) n2:7(lag 2)" in table.output
    assert "t/0" in table.output and "(metadata)" in table.output


async def test_cluster_status_from_one_bootstrap_address_reads_every_node(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    # Only a group's leader knows its replicas' lag: one address must be enough
    # to reach every leader, through the nodes the first one reports.
    cfg = make_config(tmp_path, 2)
    n1 = await start_fake_node(nursery, cfg, "n1")
    n2 = await start_fake_node(nursery, cfg, "n2")
    replicas = [{"node": "n1", "match": 3, "next": 4, "state": "replicate", "lag": 1},
                {"node": "n2", "match": 4, "next": 5, "state": "replicate", "lag": 0}]  # fmt: skip
    n1.status_groups = [group(1, "follower", "n2", 2, topic="t", partition=0)]
    n2.status_groups = [group(1, "leader", "n2", 2, topic="t", partition=0, replicas=replicas)]
    addresses = [f"127.0.0.1:{n1.port}", f"127.0.0.1:{n2.port}"]
    n1.status_nodes = [{"id": "n1", "address": addresses[0]}, {"id": "n2", "address": addresses[1]}]

    def invoke() -> Any:
        return CliRunner().invoke(main, ["cluster", "status", "--bootstrap", addresses[0]])

    table = await trio.to_thread.run_sync(invoke)
    assert table.exit_code == 0, table.output
    assert f"node n2 ({addresses[1]})" in table.output
    assert "n1:3(lag 1) n2:4(lag 0)" in table.output


# ---------------------------------------------------------------- real processes


@pytest.mark.integration
def test_cluster_up_runs_reports_and_stops_on_sigterm(tmp_path: Path) -> None:
    path = write_config(tmp_path, metrics=True)
    proc = subprocess.Popen(
        [*RAFTLOG, "cluster", "up", "--config", str(path), "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    children: list[int] = []
    try:
        lines: list[str] = []
        end = time.monotonic() + 90
        assert proc.stdout is not None
        while not any(" ready: " in line for line in lines):
            line = proc.stdout.readline()
            if not line:
                code = proc.wait(10)
                raise AssertionError(f"cluster up ended early ({code}): {proc.stderr.read()}")
            lines.append(line)
            assert time.monotonic() < end, "cluster up never became ready"
        assert sum(line.startswith("node n") for line in lines) == 3
        status = run(["cluster", "status", "--config", str(path), "--json"])
        assert status.returncode == 0, status.stderr
        out = json.loads(status.stdout)
        assert out["groups"] and all(g["leader"] for g in out["groups"])
        assert all("error" not in s for s in out["nodes"].values())
        children = child_pids(proc.pid)
        assert len(children) == 3, children
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        for pid in children:
            assert not pid_alive(pid), f"child {pid} survived cluster up"
        for n in ("n1", "n2", "n3"):
            assert READY_LINE in (tmp_path / f"{n}.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in children:  # only after a failure: they should all be gone
            pid_kill(pid)


def child_pids(parent: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True,
                         text=True)  # fmt: skip
    return [int(p) for p in out.stdout.split()]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def pid_kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.integration
def test_harness_kill_pause_terminate(local_cluster: Any) -> None:
    cluster: LocalCluster = local_cluster(nodes=3)
    cluster.start_all()
    statuses = cluster.wait_for_leaders(deadline=60)
    assert len(statuses) == 3
    leader = cluster.leader_of(0)
    cluster.pause(leader)
    others = [n for n in cluster.node_ids() if n != leader]
    # The two others elect a new leader of the metadata group while the old one is stopped.
    end = time.monotonic() + 60
    while cluster.leader_of(0, deadline=60) not in others:
        assert time.monotonic() < end, "no new leader while the old one was paused"
        time.sleep(0.1)
    cluster.resume(leader)
    cluster.kill(others[0])
    assert not cluster.is_running(others[0])
    cluster.start(others[0])
    cluster.wait_for_leaders(deadline=60)
    assert cluster.terminate(leader) == 0


@pytest.mark.integration
def test_cluster_up_exits_1_with_log_tail_when_a_node_dies_at_startup(tmp_path: Path) -> None:
    from raftlog.log.store import NodeStore

    path = write_config(tmp_path)
    NodeStore.open(tmp_path / "n2", cluster="another-cluster", node_id="n2").close()
    result = subprocess.run(
        [*RAFTLOG, "cluster", "up", "--config", str(path), "--timeout", "60"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "node n2 exited with code 2" in result.stderr
    assert "belongs to cluster 'another-cluster'" in result.stderr  # the tail of n2's log
    assert "error: a node died during startup" in result.stderr
    for n in ("n1", "n3"):  # the healthy ones were stopped, not orphaned
        log_text = (tmp_path / f"{n}.log").read_text()
        assert "event=node_stopped" in log_text or READY_LINE not in log_text


@pytest.mark.integration
def test_wiped_node_is_refused_by_its_peers(local_cluster: Any) -> None:
    """DESIGN §3 rule 7: a node restarted on an empty data dir is not its old self."""
    import shutil

    cluster: LocalCluster = local_cluster(nodes=3)
    cluster.start_all()
    cluster.wait_for_leaders(deadline=60)
    victim = "n3"
    # Precondition: both peers have met the victim (trust on first use), or
    # there is nothing for them to remember. Leaders can exist before every
    # pair of nodes has talked, so wait for it rather than assume it.
    end = time.monotonic() + 30
    while not all(
        "event=peer_incarnation_recorded peer=n3" in cluster.log_text(n) for n in ("n1", "n2")
    ):
        assert time.monotonic() < end, "the peers never recorded n3's incarnation"
        time.sleep(0.1)
    assert cluster.terminate(victim) == 0
    shutil.rmtree(cluster.cfg.node(victim).data_dir)
    cluster.start(victim)

    def refused_both_ways() -> bool:
        # Each peer logs before it answers, so the victim's own line comes later.
        peers_refuse = all(
            "reason=incarnation_changed" in cluster.log_text(n) for n in ("n1", "n2")
        )
        return peers_refuse and "event=peer_refused_us" in cluster.log_text(victim)

    end = time.monotonic() + 30
    while not refused_both_ways():
        assert time.monotonic() < end, "peers did not refuse the wiped node"
        time.sleep(0.1)
    # The two intact nodes still form a cluster with a leader.
    cluster.wait_for_leaders(deadline=30, nodes=["n1", "n2"])


@pytest.mark.integration
def test_nodes_do_not_outlive_a_killed_cluster_up(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    proc = subprocess.Popen(
        [*RAFTLOG, "cluster", "up", "--config", str(path), "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    children: list[int] = []
    try:
        assert proc.stdout is not None
        end = time.monotonic() + 90
        while " ready: " not in (line := proc.stdout.readline()):
            assert line and time.monotonic() < end, "cluster up never became ready"
        children = child_pids(proc.pid)
        assert len(children) == 3
        proc.kill()  # no chance to forward anything
        proc.wait(10)
        end = time.monotonic() + 30
        while any(pid_alive(pid) for pid in children):
            assert time.monotonic() < end, "nodes survived their cluster up"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in children:
            pid_kill(pid)


def test_status_warns_when_nodes_hold_different_auth() -> None:
    """A node not sent SIGHUP after cluster.toml's users changed shows up in the
    table (and in --json's warnings) by its [auth] fingerprint."""
    from raftlog.server.cli_node import auth_mismatch, render_status_table

    def view(node: str, fingerprint: str) -> dict:
        auth = {"fingerprint": fingerprint, "users": 2, "client_tokens": 0}
        return {"node": node, "groups": [], "nodes": [], "auth": auth}

    agreed = {"a1": view("n1", "aaaa"), "a2": view("n2", "aaaa"), "a3": {"error": "down"}}
    assert auth_mismatch(agreed) is None
    assert "WARNING" not in render_status_table(agreed)
    stale = {**agreed, "a2": view("n2", "bbbb")}
    warning = auth_mismatch(stale)
    assert warning is not None and "n1 aaaa, n2 bbbb" in warning
    table = render_status_table(stale)
    assert "node n2 (a2): 0 groups, auth bbbb" in table and warning in table


def test_status_warns_of_tls_files_that_stop_working_within_two_weeks() -> None:
    """Each node reports when the TLS files it loaded stop working; the table and
    --json's warnings name what and when, from 14 days ahead (the README's alert)."""
    from raftlog.server.cli_node import render_status_table, tls_expiry_warnings

    day, now = 86400.0, 1_800_000_000.0  # 2027-01-15 08:00 UTC

    def view(node_id: str, **expires: float) -> dict:
        return {"node": node_id, "groups": [], "nodes": [], "tls": {"expires": expires}}

    statuses = {
        "a1": view("n1", node=now + 90 * day, ca=now + 900 * day, crl=now + 3 * day),
        "a2": view("n2", node=now - day, ca=now + 900 * day),
        "a3": {"error": "down"},
        "a4": {"node": "n4", "groups": [], "nodes": []},  # no [tls]
    }
    warnings = tls_expiry_warnings(statuses, now)
    assert warnings == [
        "WARNING: n1: a CRL in its crl_file reaches its nextUpdate 2027-01-18 08:00 UTC "
        "(in 3.0 days): past it, every certificate of that CA is refused: publish a new CRL "
        "and reload",
        "WARNING: n2: its certificate (cert_file) expires 2027-01-14 08:00 UTC (ALREADY PAST): "
        "rotate it",
    ]
    assert tls_expiry_warnings(statuses, now - 20 * day) == []
    assert tls_expiry_warnings(statuses, now + 100 * day)[0].startswith("WARNING: n1: a CRL")
    assert len(tls_expiry_warnings(statuses, now + 100 * day)) == 3  # n1 crl, node; n2 node
    soon = {"a1": view("n1", crl=time.time() + 3 * day)}  # the table uses the real clock
    assert "WARNING: n1: a CRL" in render_status_table(soon)
