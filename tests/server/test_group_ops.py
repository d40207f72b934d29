"""group_* requests against three in-process nodes (RequestHandlers, real Raft
cores, in-memory transport): routed to the metadata leader, long-polled joins,
heartbeat errors on the wire, describe, metrics, and a coordinator change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from raftlog.client.errors import ErrorCode
from raftlog.server.errors import HandlerError
from raftlog.server.handlers import RequestHandlers
from raftlog.server.metrics import Metrics

from .inproc_cluster import InProcCluster, running_with_topic

SESSION_MS = 400
DEADLINE_S = 20.0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcCluster]:
    async with running_with_topic(tmp_path, partitions=4) as c:
        yield c


async def join_stable(c: InProcCluster, at: str, member: str | None, **extra: Any) -> dict:
    """Join, then poll with the member id until the group is stable (bounded)."""
    with trio.fail_after(DEADLINE_S):
        while True:
            reply = await c.call(
                at, "group_join", group="g", topic="t", member_id=member,
                session_timeout_ms=SESSION_MS, max_wait_ms=500, **extra,
            )  # fmt: skip
            member = reply["member_id"]
            if reply["partitions"] is not None:
                return reply


async def heartbeat(c: InProcCluster, at: str, member: str, generation: int) -> ErrorCode | None:
    """The heartbeat's error code, None when it is accepted."""
    try:
        await c.call(at, "group_heartbeat", group="g", member_id=member, generation=generation)
    except HandlerError as exc:
        return exc.code
    return None


async def test_join_is_answered_by_the_metadata_leader_only(cluster: InProcCluster):
    leader = await cluster.wait_leader(0)
    follower = next(n for n in cluster.node_ids if n != leader)
    await cluster.wait_for(lambda: cluster.driver(follower).groups[0].leader == leader)
    err = await cluster.call_error(follower, "group_join", group="g", topic="t")
    assert err.code is ErrorCode.NOT_LEADER
    assert err.details["leader_address"] == cluster.cfg.node(leader).address
    reply = await join_stable(cluster, leader, None)
    assert reply["state"] == "stable" and reply["generation"] == 1
    assert reply["partitions"] == [0, 1, 2, 3]


async def test_unknown_topic_is_refused(cluster: InProcCluster):
    leader = await cluster.wait_leader(0)
    err = await cluster.call_error(leader, "group_join", group="g", topic="nope")
    assert err.code is ErrorCode.UNKNOWN_TOPIC


async def test_two_members_split_and_heartbeats_carry_the_rebalance(cluster: InProcCluster):
    leader = await cluster.wait_leader(0)
    metrics = Metrics()
    cluster.handlers[leader] = RequestHandlers(cluster.cfg, leader, cluster.driver(leader), metrics)
    a = await join_stable(cluster, leader, "a")
    await cluster.call(leader, "group_heartbeat", group="g", member_id="a", generation=1)
    # b's join is held while a still owns generation 1; a's heartbeat says rebalance
    got: dict[str, dict] = {}
    async with trio.open_nursery() as nursery:
        registered = trio.Event()

        async def join_b() -> None:
            first = await cluster.call(leader, "group_join", group="g", topic="t",
                                       member_id="b", session_timeout_ms=SESSION_MS,
                                       max_wait_ms=0)  # fmt: skip
            assert first["state"] == "rebalancing" and first["partitions"] is None
            registered.set()
            got["b"] = await join_stable(cluster, leader, "b")

        nursery.start_soon(join_b)
        await registered.wait()
        assert await heartbeat(cluster, leader, "a", 1) is ErrorCode.REBALANCE_IN_PROGRESS
        got["a"] = await join_stable(cluster, leader, "a")
    assert got["a"]["generation"] == got["b"]["generation"] == a["generation"] + 1
    assert sorted(got["a"]["partitions"] + got["b"]["partitions"]) == [0, 1, 2, 3]
    assert len(got["a"]["partitions"]) == len(got["b"]["partitions"]) == 2
    described = await cluster.call(leader, "group_describe", group="g")
    assert described["state"] == "stable" and described["topic"] == "t"
    assert {m["member_id"]: m["partitions"] for m in described["members"]} == {
        "a": got["a"]["partitions"],
        "b": got["b"]["partitions"],
    }
    assert metrics.consumer_groups.value() == 1
    assert metrics.group_rebalances.value() == 2
    # a leaves: b is told to rejoin and gets everything
    assert (await cluster.call(leader, "group_leave", group="g", member_id="a"))["left"]
    err = await cluster.call_error(
        leader, "group_heartbeat", group="g", member_id="b", generation=got["b"]["generation"]
    )
    assert err.code is ErrorCode.REBALANCE_IN_PROGRESS
    assert (await join_stable(cluster, leader, "b"))["partitions"] == [0, 1, 2, 3]


async def test_a_new_controller_restores_the_members_with_their_generation(
    cluster: InProcCluster,
):
    leader = await cluster.wait_leader(0)
    got: dict[str, dict] = {}

    async def join_as(member: str) -> None:
        got[member] = await join_stable(cluster, leader, member)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(join_as, "a")
        nursery.start_soon(join_as, "b")
    a, b = got["a"], got["b"]
    assert a["generation"] == b["generation"]
    generation = a["generation"]
    # the formed generation is in every replica's metadata state machine
    await cluster.wait_for(
        lambda: all(
            (rec := cluster.driver(n).metadata.consumer_groups.get("g")) is not None
            and rec.generation == generation
            for n in cluster.node_ids
        ),
        what="the generation's record on every node",
    )
    target = next(n for n in cluster.node_ids if n != leader)
    await cluster.call(leader, "metadata_leader_transfer", to=target)
    await cluster.wait_for(lambda: cluster.leader(0) == target, what="new controller")
    err = await cluster.call_error(leader, "group_heartbeat", group="g", member_id="a",
                                   generation=generation)  # fmt: skip
    assert err.code is ErrorCode.NOT_LEADER
    # the new controller knows both members: heartbeats of their generation succeed
    assert await heartbeat(cluster, target, "a", generation) is None
    assert await heartbeat(cluster, target, "b", generation) is None
    described = await cluster.call(target, "group_describe", group="g")
    assert described["state"] == "stable" and described["generation"] == generation
    assert {m["member_id"]: m["partitions"] for m in described["members"]} == {
        "a": a["partitions"],
        "b": b["partitions"],
    }
    again = await join_stable(cluster, target, "a")  # a rejoin changes nothing either
    assert again["generation"] == generation and again["partitions"] == a["partitions"]
    # a member that leaves: the next generation counts on from the restored one
    await cluster.call(target, "group_leave", group="g", member_id="b")
    assert (await join_stable(cluster, target, "a"))["generation"] == generation + 1


async def test_a_controller_cut_off_from_its_quorum_accepts_no_heartbeat(
    cluster: InProcCluster,
):
    # Until CheckQuorum deposes it (or for ever, if its group is quiet) the old
    # controller believes it leads; a heartbeat it accepted would let a member
    # keep partitions the new controller may give away. It must confirm first.
    leader = await cluster.wait_leader(0)
    reply = await join_stable(cluster, leader, "a")
    others = [n for n in cluster.node_ids if n != leader]
    cluster.net.isolate(leader, others)
    err = await cluster.call_error(
        leader, "group_heartbeat", group="g", member_id="a", generation=reply["generation"]
    )
    assert err.code in (ErrorCode.NOT_AVAILABLE, ErrorCode.NOT_LEADER)
    err = await cluster.call_error(leader, "group_join", group="g", topic="t", member_id="a",
                                   session_timeout_ms=SESSION_MS)  # fmt: skip
    assert err.code in (ErrorCode.NOT_AVAILABLE, ErrorCode.NOT_LEADER)
    cluster.net.heal()


async def test_describe_of_an_unknown_group_is_empty(cluster: InProcCluster):
    leader = await cluster.wait_leader(0)
    described = await cluster.call(leader, "group_describe", group="none")
    assert described == {
        "group": "none",
        "topic": None,
        "state": "empty",
        "generation": 0,
        "coordinator": leader,
        "members": [],
        "withheld": [],
    }


async def test_deleting_the_topic_ends_its_group_and_a_new_topic_starts_afresh(
    cluster: InProcCluster,
):
    leader = await cluster.wait_leader(0)
    a = await join_stable(cluster, leader, "a")
    assert a["generation"] == 1
    await cluster.call(leader, "delete_topic", topic="t")
    await cluster.wait_for(lambda: "g" not in cluster.driver(leader).metadata.consumer_groups)
    # The member's next heartbeat learns the topic is gone, and so is the group.
    assert await heartbeat(cluster, leader, a["member_id"], 1) is ErrorCode.UNKNOWN_TOPIC
    described = await cluster.call(leader, "group_describe", group="g")
    assert described["members"] == [] and described["topic"] is None
    # A topic created again under the name has none of the old members.
    await cluster.call(leader, "create_topic", topic="t", partitions=2, replicas=3)
    b = await join_stable(cluster, leader, "b")
    assert b["partitions"] == [0, 1]
    assert [
        m["member_id"] for m in (await cluster.call(leader, "group_describe", group="g"))["members"]
    ] == [b["member_id"]]


async def test_a_cooperative_join_is_checked_and_described(cluster: InProcCluster):
    leader = await cluster.wait_leader(0)
    for bad in ({"owned": [4]}, {"owned": [-1]}, {"owned": ["0"]}, {"rebalance": "lazy"}):
        err = await cluster.call_error(leader, "group_join", group="g", topic="t", **bad)
        assert err.code is ErrorCode.INVALID_REQUEST, bad
    a = await join_stable(cluster, leader, None, rebalance="cooperative")
    assert a["partitions"] == [0, 1, 2, 3]
    # b joins while a keeps its four: the next generation withholds what moves.
    b = await cluster.call(leader, "group_join", group="g", topic="t", session_timeout_ms=5000,
                           max_wait_ms=0)  # fmt: skip
    a = await join_stable(
        cluster, leader, a["member_id"], owned=[0, 1, 2, 3], rebalance="cooperative"
    )
    assert a["partitions"] == [0, 1] and a["confirmed"] is True
    described = await cluster.call(leader, "group_describe", group="g")
    assert described["withheld"] == [2, 3]
    protocols = {m["member_id"]: m["rebalance"] for m in described["members"]}
    assert protocols == {a["member_id"]: "cooperative", b["member_id"]: "eager"}
