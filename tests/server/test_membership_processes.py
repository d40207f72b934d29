"""Membership changes on real `raftlog node start` processes, driven by the operator CLI.

Each test loads a cluster with an idempotent producer, changes its membership
with `raftlog member|partition|leader ...` subprocesses (checking their exit
codes), and then checks every acknowledged record is in the log exactly once
at its acknowledged offset (check_log).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from raftlog.client.sync import Client
from raftlog.server.config import NodeConfig

from .cluster_harness import LocalCluster, free_ports
from .test_node_processes import WAIT_S, Producing, check_log, read_all, wait_until

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 120


def cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `raftlog ARGS --config <cluster.toml>`; bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "raftlog.server", *args, "--config", str(cluster.config_path),
         "--timeout", "60"],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=cluster.env,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def incarnation(cluster: LocalCluster, node_id: str) -> str:
    """The incarnation ``node_id`` opened its store with last (from its log)."""
    found = re.findall(r"store opened .* incarnation=(\S+)", cluster.log_text(node_id))
    assert found, f"{node_id} logged no store opening"
    return found[-1]


def add_join_node(cluster: LocalCluster, node_id: str) -> str:
    """Append a `join = true` node to cluster.toml and start it; its address."""
    (port,) = free_ports(1)
    cluster.cfg.nodes.append(
        NodeConfig(id=node_id, address=f"127.0.0.1:{port}", host="127.0.0.1", port=port,
                   data_dir=cluster.root / node_id, join=True)
    )  # fmt: skip
    cluster.write_config()
    cluster.start(node_id)
    return cluster.address(node_id)


def replicas(client: Client, topic: str, partition: int = 0) -> list[str]:
    return client.describe_topic(topic)["partitions"][partition]["replicas"]


def leader_of_partition(cluster: LocalCluster, client: Client, topic: str, p: int = 0) -> str:
    return cluster.leader_of(client.describe_topic(topic)["partitions"][p]["group"])


def members(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    import json

    return {m["id"]: m for m in json.loads(ok(cli(cluster, "member", "list", "--json")))}


@pytest.fixture
def cluster(local_cluster: Callable[..., LocalCluster]) -> Iterator[LocalCluster]:
    c = local_cluster(3, env={"RAFTLOG_DEBUG": "1"})
    c.start_all()
    c.wait_for_leaders(deadline=WAIT_S)
    yield c  # the local_cluster fixture stops every process, also on failure


def test_add_a_fourth_node_and_move_a_loaded_partition_to_it(cluster: LocalCluster) -> None:
    with Client(cluster.addresses(), request_timeout=30.0) as client:
        client.create_topic("t", partitions=1, replicas=3)
        with Producing(client, "t") as producing:
            producing.wait_for_more(30)
            address = add_join_node(cluster, "n4")
            out = ok(cli(cluster, "member", "add", "n4", "--address", address))
            assert "n4 added" in out
            producing.wait_for_more(10)
            leader = leader_of_partition(cluster, client, "t")
            drop = next(n for n in ("n1", "n2", "n3") if n != leader)
            target = [n for n in ("n1", "n2", "n3") if n != drop] + ["n4"]
            ok(cli(cluster, "partition", "reassign", "t", "0", "--replicas", ",".join(target)))
            producing.wait_for_more(10)
            ok(cli(cluster, "leader", "transfer", "t", "0", "--to", "n4"))
            producing.wait_for_more(10)
        assert replicas(client, "t") == target
        bad = cli(cluster, "partition", "reassign", "t", "0", "--replicas", "n1,n9")
        assert bad.returncode == 1 and "n9" in bad.stderr  # the cluster refused: unknown node
        roles = members(cluster)
        assert roles["n4"]["role"] in ("voter", "controller_leader")
        assert roles[drop]["groups"] == [] and roles["n4"]["groups"] == [1]
    # Read from the new replica alone, as the partition's leader.
    assert leader_of_partition_by(cluster, "n4") == "n4"
    with Client([cluster.address("n4")], request_timeout=30.0) as n4_client:
        log = read_all(n4_client, "t")
    check_log(log, producing.acked)
    assert len(log) >= len(producing.acked) >= 60
    # And out again: its replica moves back, the nodes that learned its address
    # from the metadata (their cluster.toml predates it) forget it.
    ok(cli(cluster, "member", "remove", "n4"))
    # Unregistered and unknown to n1's cluster.toml: no longer listed (or not a member).
    assert members(cluster).get("n4", {"role": "not_member"})["role"] == "not_member"
    wait_until(lambda: "peer_forgotten peer=n4" in cluster.log_text("n1"), "n1 forgets n4")
    with Client(cluster.addresses()[:3], request_timeout=30.0) as client:
        assert "n4" not in replicas(client, "t")
        check_log(read_all(client, "t"), producing.acked)


def leader_of_partition_by(cluster: LocalCluster, node: str, group: int = 1) -> str | None:
    for g in cluster.status(node)["groups"]:
        if g["group"] == group:
            return g["leader"]
    return None


def test_remove_the_node_that_leads_everything(local_cluster: Callable[..., LocalCluster]) -> None:
    cluster = local_cluster(4, env={"RAFTLOG_DEBUG": "1"})
    cluster.start_all()
    cluster.wait_for_leaders(deadline=WAIT_S)
    with Client(cluster.addresses(), request_timeout=30.0) as client:
        client.create_topic("t", partitions=1, replicas=3)
        # The victim leads the metadata group AND the partition (the hard case).
        victim = cluster.leader_of(0)
        # Through the client library's admin API this time: the victim becomes a
        # replica (if it was not) and then the partition's leader.
        current = replicas(client, "t")
        new = [victim, *[r for r in current if r != victim][:2]]
        reply = client.partition_reassign("t", 0, new)
        assert reply["replicas"] == new and reply["metadata_updated"] is True
        assert client.leader_transfer("t", 0, victim)["leader"] == victim
        assert leader_of_partition(cluster, client, "t") == victim == cluster.leader_of(0)
        with Producing(client, "t") as producing:
            producing.wait_for_more(30)
            out = ok(cli(cluster, "member", "remove", victim))
            assert f"{victim} removed" in out
            producing.wait_for_more(20)
        assert victim not in replicas(client, "t")
        roles = members(cluster)
        assert roles[victim]["role"] == "not_member" and roles[victim]["groups"] == []
        cluster.terminate(victim)
        others = [n for n in cluster.node_ids() if n != victim]
        cluster.wait_for_leaders(deadline=WAIT_S, nodes=others)
        log = read_all(client, "t")
    check_log(log, producing.acked)
    assert len(log) >= len(producing.acked) >= 50


def test_replace_a_node_whose_disk_was_wiped(cluster: LocalCluster) -> None:
    with Client(cluster.addresses(), request_timeout=30.0) as client:
        client.create_topic("t", partitions=1, replicas=3)
        with Producing(client, "t") as producing:
            producing.wait_for_more(30)
            cluster.kill("n3")
            shutil.rmtree(cluster.cfg.node("n3").data_dir)
            cluster.start("n3")  # a new incarnation: its peers refuse it (DESIGN §3 rule 7)
            wait_until(lambda: "peer_refused" in cluster.log_text("n3"), "n3 refused")
            address = add_join_node(cluster, "n4")
            ok(cli(cluster, "member", "add", "n4", "--address", address))
            ok(cli(cluster, "member", "remove", "n3"))
            producing.wait_for_more(20)
        # Ask n1 only: the wiped n3 still runs and knows no topic at all.
        with Client([cluster.address("n1")], request_timeout=30.0) as n1_client:
            assert sorted(replicas(n1_client, "t")) == ["n1", "n2", "n4"]
        assert members(cluster)["n3"]["role"] == "not_member"
        # The same id may come back once removed: on a fresh data dir, started
        # with join = true; `member add` makes its peers trust its new incarnation.
        cluster.kill("n3")
        shutil.rmtree(cluster.cfg.node("n3").data_dir)
        cluster.cfg.node("n3").join = True
        cluster.write_config()
        cluster.start("n3")
        # An address that is another node's is refused (the controller asks it).
        wrong = cli(cluster, "member", "add", "n3", "--address", cluster.address("n1"))
        assert wrong.returncode == 1 and "is node 'n1', not 'n3'" in wrong.stderr
        ok(cli(cluster, "member", "add", "n3", "--address", cluster.address("n3")))
        # Registered with the incarnation n3 reported itself, which every peer
        # adopts (not trust on first use: a second wipe stays refused).
        new_n3 = incarnation(cluster, "n3")
        for peer_node in ("n1", "n2"):
            adopted = f"event=peer_incarnation_adopted peer=n3 incarnation={new_n3}"
            wait_until(
                lambda p=peer_node, line=adopted: line in cluster.log_text(p),
                f"{peer_node} adopts n3's reported incarnation",
            )
        ok(cli(cluster, "partition", "reassign", "t", "0", "--replicas", "n1,n2,n3"))
        ok(cli(cluster, "leader", "transfer", "t", "0", "--to", "n3"))
        assert members(cluster)["n3"]["groups"] == [1]
        log = read_all(client, "t")
    assert leader_of_partition_by(cluster, "n3") == "n3"
    check_log(log, producing.acked)


def test_rebalance_spreads_leaders_piled_on_one_node(cluster: LocalCluster) -> None:
    with Client(cluster.addresses(), request_timeout=30.0) as client:
        client.create_topic("r", partitions=6, replicas=3)
        cluster.wait_for_leaders(deadline=WAIT_S)
        for p in range(6):
            assert client.leader_transfer("r", p, "n1")["leader"] == "n1"
        assert leader_counts(cluster) == {"n1": 6}
        out = ok(cli(cluster, "cluster", "rebalance"))
        assert out.count("transfer r/") == 4
        # The transfers completed before the command returned (each waits for it).
        assert leader_counts(cluster) == {"n1": 2, "n2": 2, "n3": 2}
        assert "leaders are balanced" in ok(cli(cluster, "cluster", "rebalance", "--dry-run"))
        # Before a restart of n2: every leadership off it.
        assert ok(cli(cluster, "leader", "drain", "n2")).count("transfer r/") == 2
        assert "n2" not in leader_counts(cluster)
        # The controller (metadata group) moves through the client library too.
        target = next(n for n in ("n3", "n1") if n != cluster.leader_of(0))
        reply = client.metadata_leader_transfer(target)
        assert reply["leader"] == target == cluster.leader_of(0)
        assert reply["leader_address"] == cluster.address(target)


def leader_counts(cluster: LocalCluster) -> dict[str, int]:
    """Partition groups (not group 0) led by each node, as the leaders report."""
    counts: dict[str, int] = {}
    for node in cluster.running():
        for g in cluster.status(node)["groups"]:
            if g["group"] != 0 and g["role"] == "leader":
                counts[node] = counts.get(node, 0) + 1
    return counts


def test_a_new_replica_catches_up_from_a_snapshot_of_a_compacted_log(
    local_cluster: Callable[..., LocalCluster],
) -> None:
    env = {"RAFTLOG_DEBUG": "1", "RAFTLOG_SNAPSHOT_ENTRIES": "10", "RAFTLOG_SNAPSHOT_TRAILING": "0"}
    cluster = local_cluster(3, env=env)
    cluster.start_all()
    cluster.wait_for_leaders(deadline=WAIT_S)
    with Client(cluster.addresses(), request_timeout=30.0) as client:
        client.create_topic("t", partitions=1, replicas=3)
        acked = [(client.produce("t", f"s{i}".encode(), partition=0).offset, f"s{i}".encode())
                 for i in range(60)]  # fmt: skip
        leader = leader_of_partition(cluster, client, "t")
        wait_until(lambda: "log compacted group=1" in cluster.log_text(leader), "compaction")
        address = add_join_node(cluster, "n4")
        ok(cli(cluster, "member", "add", "n4", "--address", address))
        target = [*replicas(client, "t")[:2], "n4"]
        ok(cli(cluster, "partition", "reassign", "t", "0", "--replicas", ",".join(target)))
        ok(cli(cluster, "leader", "transfer", "t", "0", "--to", "n4"))
    assert "event=snapshot_restored" in cluster.log_text("n4")  # not replayed from index 1
    with Client([cluster.address("n4")], request_timeout=30.0) as n4_client:
        log = read_all(n4_client, "t")
    check_log(log, acked)
    assert len(log) == 60
