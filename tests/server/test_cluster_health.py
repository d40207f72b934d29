"""``raftlog cluster health``: the assessment of every node's cluster_status, and
the command against real nodes on 127.0.0.1 while one of them stops and
comes back (what a rolling restart waits for)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from click.testing import CliRunner, Result
from raftlog.client import AsyncClient
from raftlog.server import cli_health
from raftlog.server.cli import main
from raftlog.server.cli_health import EXIT_UNHEALTHY, assess
from raftlog.server.cli_node import gather_status
from raftlog.server.metrics import Metrics

from .cluster_harness import make_config
from .inproc_cluster import InProcCluster, small_config
from .test_metrics import http_get
from .test_tls_cluster import DEADLINE_S, FAST, running


def replica(node: str, state: str = "replicate", lag: int = 0) -> dict[str, Any]:
    return {"node": node, "match": 10 - lag, "next": 11 - lag, "state": state, "lag": lag}


def leading(gid: int, leader: str, replicas: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {"group": gid, "role": "leader", "leader": leader, "term": 2, "commit": 10,
            "replicas": replicas, "topic": None, "partition": None, **kw}  # fmt: skip


def following(gid: int, leader: str | None, **kw: Any) -> dict[str, Any]:
    return {"group": gid, "role": "follower", "leader": leader, "term": 2, "commit": 10,
            "replicas": [], "topic": None, "partition": None, **kw}  # fmt: skip


NODES = [{"id": n, "address": f"a{n[-1]}"} for n in ("n1", "n2", "n3")]


def node(name: str, groups: list[dict[str, Any]], links: dict[str, bool] | None = None) -> dict:
    others = {n["id"]: True for n in NODES if n["id"] != name}
    return {"node": name, "nodes": NODES, "groups": groups, "links": links or others}


def three_up(**leader_groups: Any) -> dict[str, Any]:
    """n1 leads group 0 and topic t/0; n2 and n3 follow."""
    everyone = [replica("n1"), replica("n2"), replica("n3")]
    t0 = {"topic": "t", "partition": 0}
    return {
        "a1": node("n1", [leading(0, "n1", leader_groups.get("g0", everyone)),
                          leading(1, "n1", leader_groups.get("g1", everyone), **t0)]),
        "a2": node("n2", [following(0, "n1"), following(1, "n1", **t0)]),
        "a3": node("n3", [following(0, "n1"), following(1, "n1", **t0)]),
    }  # fmt: skip


def test_every_node_up_led_and_in_sync_is_healthy() -> None:
    health = assess(three_up())
    assert health.healthy, health
    assert health.nodes == ["n1", "n2", "n3"]


def test_a_node_that_does_not_answer_is_down_and_its_replicas_under_replicated() -> None:
    statuses = three_up()
    statuses["a3"] = {"error": "a3: connection refused"}
    health = assess(statuses)
    assert not health.healthy
    assert health.down == ["n3"]  # named through the others' node lists
    # A quiet group's leader still shows n3 in steady replication, lag 0.
    assert [(u["label"], u["replica"], u["problem"]) for u in health.under_replicated] == [
        ("(metadata)", "n3", "its node is down"),
        ("t/0", "n3", "its node is down"),
    ]


def test_a_leader_that_does_not_answer_is_down_and_its_groups_leaderless() -> None:
    statuses = three_up()
    statuses["a1"] = {"error": "a1: timed out"}
    health = assess(statuses)
    # Nobody left reports n1 as a replica: it is named from the others' node lists.
    assert health.down == ["n1"]
    assert health.leaderless == ["(metadata)", "t/0"]


def test_a_replica_probing_or_lagging_is_under_replicated() -> None:
    health = assess(
        three_up(g1=[replica("n1"), replica("n2", state="probe"), replica("n3", lag=101)])
    )
    assert [(u["label"], u["replica"], u["problem"]) for u in health.under_replicated] == [
        ("t/0", "n2", "not in steady replication (probe)"),
        ("t/0", "n3", "101 entries behind (more than 100)"),
    ]
    assert assess(three_up(g1=[replica("n1"), replica("n3", lag=100)])).healthy
    assert not assess(three_up(g1=[replica("n1"), replica("n3", lag=5)]), max_lag=4).healthy


def test_a_group_nobody_leads_is_leaderless() -> None:
    statuses = three_up()
    for status in statuses.values():
        status["groups"] = [g for g in status["groups"] if g["group"] != 1]
    statuses["a2"]["groups"].append(following(1, None, topic="t", partition=0))
    health = assess(statuses)
    assert health.leaderless == ["t/0"]
    assert not health.healthy


def test_a_cut_link_between_live_nodes_is_reported_but_not_one_to_a_down_node() -> None:
    statuses = three_up()
    statuses["a2"]["links"] = {"n1": False, "n3": True}
    assert assess(statuses).links_down == ["n2->n1"]
    statuses = three_up()
    statuses["a3"] = {"error": "down"}
    statuses["a1"]["links"] = {"n2": True, "n3": False}
    assert assess(statuses).links_down == []  # n3 is reported as down instead
    statuses = three_up()
    del statuses["a2"]["links"]  # a node too old to report them
    assert assess(statuses).healthy


async def health(*args: str) -> Result:
    def invoke() -> Result:
        return CliRunner().invoke(main, ["cluster", "health", *args])

    # The CLI blocks on its sockets: off the trio thread the nodes run on.
    return await trio.to_thread.run_sync(invoke)


@pytest.mark.integration
async def test_cluster_health_follows_a_node_that_stops_and_comes_back(tmp_path: Any) -> None:
    cfg = make_config(tmp_path, 3, metrics=True, **FAST)
    addresses = [n.address for n in cfg.nodes]
    bootstrap = ["--bootstrap", ",".join(addresses)]

    async def under_replicated(nodes: list[str]) -> float | None:
        """The nodes' raftlog_under_replicated_groups, summed (each counts what it
        leads); None until each has set it once."""
        total = 0.0
        for node in nodes:
            address = cfg.node(node).metrics_address
            assert address is not None
            page = await http_get(int(address.rpartition(":")[2]), "/metrics")
            lines = [x for x in page.split(b"\n") if x.startswith(b"raftlog_under_rep")]
            if not lines:
                return None
            total += float(lines[0].split()[1])
        return total

    async def gauge_reaches(nodes: list[str], check: Any) -> None:
        # The nodes refresh their gauges every few seconds (driver STATS_EVERY_S).
        with trio.fail_after(DEADLINE_S):
            while not check(await under_replicated(nodes)):  # noqa: ASYNC110 -- a page
                await trio.sleep(0.1)
    async with running(cfg) as nodes:
        with trio.fail_after(DEADLINE_S * 2):
            async with AsyncClient(addresses) as client:
                await client.create_topic("t", partitions=2, replicas=3)
                await client.produce("t", b"v", partition=0)
            ready = await health(*bootstrap, "--wait", str(DEADLINE_S))
            assert ready.exit_code == 0, ready.output
            assert "healthy: yes" in ready.output
            statuses = await trio.to_thread.run_sync(gather_status, addresses)
            for status in statuses.values():  # every link of the mesh reported up
                others = {n.id for n in cfg.nodes} - {status["node"]}
                assert status["links"] == dict.fromkeys(others, True)

            await nodes.stop("n3")
            down = await health(*bootstrap, "--json")
            assert down.exit_code == EXIT_UNHEALTHY, down.output
            report = json.loads(down.output)
            assert report["healthy"] is False and report["down"] == ["n3"]
            # (A group n3 led may show its new leader still probing the other.)
            of_n3 = [u for u in report["under_replicated"] if u["replica"] == "n3"]
            assert {u["problem"] for u in of_n3} == {"its node is down"}
            assert "(metadata)" in {u["label"] for u in of_n3}

            statuses = await trio.to_thread.run_sync(gather_status, addresses[:2])
            assert statuses[addresses[0]]["links"] == {"n2": True, "n3": False}
            # The metadata group's leader (n1 or n2) counts it as under-replicated.
            await gauge_reaches(["n1", "n2"], lambda total: total is not None and total >= 1)

            await nodes.start("n3")
            back = await health(*bootstrap, "--wait", str(DEADLINE_S))
            assert back.exit_code == 0, back.output
            await gauge_reaches(["n1", "n2", "n3"], lambda total: total == 0)


def test_wait_looks_again_until_healthy_and_gives_up_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looks: list[dict[str, Any]] = []
    unhealthy = three_up(g1=[replica("n1"), replica("n2", state="probe")])
    answers = iter([unhealthy, unhealthy, three_up()])

    def gather(*_args: Any, **_kw: Any) -> dict[str, Any]:
        looks.append(answer := next(answers))
        return answer

    monkeypatch.setattr(cli_health, "gather_status", gather)
    monkeypatch.setattr(cli_health, "POLL_S", 0.01)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, ["cluster", "health", "--bootstrap", "127.0.0.1:1", *args])

    waited = invoke("--wait", "30")
    assert waited.exit_code == 0, waited.output
    assert len(looks) == 3
    answers = iter([unhealthy] * 1000)
    looks.clear()
    once = invoke()
    assert once.exit_code == EXIT_UNHEALTHY
    assert "t/0 (n2: not in steady replication (probe))" in once.output
    assert len(looks) == 1
    looks.clear()
    given_up = invoke("--wait", "0.1")
    assert given_up.exit_code == EXIT_UNHEALTHY
    assert 1 < len(looks) < 1000


async def test_a_node_counts_the_groups_it_hosts_that_know_no_leader(
    tmp_path: Any, nursery: trio.Nursery
) -> None:
    async with InProcCluster(small_config(tmp_path), nursery).running() as c:
        leader = await c.wait_leader(0)
        follower = next(n for n in c.node_ids if n != leader)
        driver = c.driver(follower)
        await c.wait_for(lambda: driver.groups[0].leader == leader, what="the leader known")
        driver.metrics = Metrics()
        driver._update_gauges()
        assert driver.metrics.leaderless_groups.value() == 0
        for node in c.node_ids:
            if node != follower:
                await c.stop(node)
        # Alone, it campaigns once its election timeout passes: no leader known.
        await c.wait_for(lambda: driver.groups[0].leader is None, what="leader lost")
        driver._update_gauges()
        assert driver.metrics.leaderless_groups.value() == 1
        assert driver.metrics.under_replicated_groups.value() == 0  # it leads nothing
