"""Membership changes in one process: real drivers, stores and handlers, in-memory network.

The real-process versions (join over TCP, CLI) are in test_membership_processes.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import decode_batch
from raftlog.raft import codec
from raftlog.raft.types import ConfState, Message, MessageType
from raftlog.server import membership
from raftlog.server.config import NodeConfig

from .inproc_cluster import InProcCluster, small_config


@pytest.fixture
async def cluster(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[InProcCluster]:
    async with InProcCluster(small_config(tmp_path), nursery).running() as c:
        yield c


def _add_join_node(c: InProcCluster, tmp_path: Path, node_id: str = "n4") -> None:
    """A node the running cluster does not know yet, started with join = true."""
    c.cfg.nodes.append(
        NodeConfig(id=node_id, address="127.0.0.1:1", host="127.0.0.1", port=1,
                   data_dir=tmp_path / node_id, join=True)
    )  # fmt: skip


async def _fetch_all(c: InProcCluster, node: str, topic: str, partition: int = 0) -> list[bytes]:
    values: list[bytes] = []
    offset = 0
    for _ in range(1000):
        reply = await c.call(node, "fetch", topic=topic, partition=partition, offset=offset)
        if not reply["batches"]:
            return values
        for base, ts, _count, blob in reply["batches"]:
            for record in decode_batch(base, ts, blob, offset):
                values.append(record.value)
                offset += 1
    raise AssertionError("fetch did not reach the end")


async def _loaded_topic(c: InProcCluster, n: int = 20) -> tuple[str, list[bytes]]:
    await c.create_topic("t", partitions=1, replicas=3)
    leader = await c.wait_leader(1)
    values = [f"v{i}".encode() for i in range(n)]
    for i in range(0, n, 5):
        await c.produce(leader, "t", values[i : i + 5])
    return leader, values


async def _reassign(c: InProcCluster, at: str, replicas: list[str]) -> dict[str, Any]:
    """What ``raftlog partition reassign`` does: the group at its leader, then the
    metadata at the metadata leader if the partition leader is not that too."""
    reply = await c.call(at, "partition_reassign", topic="t", partition=0, replicas=replicas)
    if not reply["metadata_updated"]:
        reply = await c.call(
            await c.wait_leader(0),
            "partition_reassign", topic="t", partition=0, replicas=replicas, phase="metadata",
        )  # fmt: skip
    assert reply["metadata_updated"] is True
    return reply


def _conf(c: InProcCluster, node: str, gid: int) -> ConfState:
    return c.driver(node).groups[gid].raft.conf_state


async def test_bootstrap_leaves_join_nodes_out_of_group_0(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, nodes=3)
    cfg.nodes[2].join = True
    assert membership.bootstrap_conf(cfg, "n1").voters == ("n1", "n2")
    assert membership.bootstrap_conf(cfg, "n3") == ConfState()


async def test_shrinking_a_partition_survives_a_restart_of_every_node(cluster, tmp_path):
    """The known bug: the conf state was applied but not persisted, so a restart
    came back with the bootstrap voters (n1, n2, n3) of the group."""
    c = cluster
    leader, values = await _loaded_topic(c)
    drop = next(n for n in c.node_ids if n != leader)
    keep = sorted(set(c.node_ids) - {drop})
    reply = await _reassign(c, leader, keep)
    assert reply["replicas"] == keep
    await c.wait_for(lambda: 1 not in c.driver(drop).groups, what="dropped copy deleted")
    assert _conf(c, keep[0], 1).voters == tuple(keep)
    # The removed replica could not disrupt the group: its vote requests are refused.
    assert not membership.admit(
        c.driver(keep[0]).groups[1], _vote(MessageType.PRE_VOTE, drop), keep[0]
    )
    # Followers learn the final commit index from the next heartbeat
    # (broadcast_commit off): wait until every kept replica applied the new
    # configuration, so the restart below tests that it was persisted.
    await c.wait_for(
        lambda: all(_conf(c, n, 1).voters == tuple(keep) for n in keep),
        what="new configuration applied everywhere",
    )
    await c.stop_all()
    for node in c.node_ids:
        await c.start(node)
    for node in keep:
        assert _conf(c, node, 1).voters == tuple(keep), node
    assert 1 not in c.driver(drop).groups
    new_leader = await c.wait_leader(1)
    assert new_leader in keep
    assert await _fetch_all(c, new_leader, "t") == values


async def test_a_stale_message_after_removal_leaves_no_orphan_group(cluster, monkeypatch):
    """A replica that has not applied a node's removal yet may still send it a
    heartbeat; the removed node re-creates the group from it (empty: it cannot
    tell a stale message from a re-add). Found by jepsen's replica check: such
    an orphan stayed forever. Now it is deleted once it is clearly not a replica."""
    c = cluster
    leader, _ = await _loaded_topic(c)
    drop = next(n for n in c.node_ids if n != leader)
    await _reassign(c, leader, sorted(set(c.node_ids) - {drop}))
    await c.wait_for(lambda: 1 not in c.driver(drop).groups, what="dropped copy deleted")
    gone = c.driver(drop)
    term = c.driver(leader).groups[1].raft.term
    stale = Message(type=MessageType.HEARTBEAT, to=drop, frm=leader, term=term)
    with monkeypatch.context() as patch:
        patch.setattr(membership, "JOINED_GROUP_GRACE_S", 3600.0)
        gone.on_peer_msgs(leader, [(1, codec.encode_message(stale))])
        await c.wait_for(lambda: 1 in gone.groups, what="the stale message re-creates the group")
        assert 1 in gone.joined_by_message and c.stores[drop].has_group(1)
        membership.sweep_joined_groups(gone, trio.current_time())  # within the grace: kept
        assert 1 in gone.groups
    monkeypatch.setattr(membership, "JOINED_GROUP_GRACE_S", 0.0)
    await c.wait_for(
        lambda: 1 not in gone.groups and not c.stores[drop].has_group(1),
        what="the orphan swept away",
    )
    assert gone.joined_by_message == {}
    # The replicas that stayed are untouched.
    assert all(1 in c.driver(n).groups for n in c.node_ids if n != drop)


async def test_add_a_node_and_move_a_partition_to_it(cluster, tmp_path):
    c = cluster
    leader, values = await _loaded_topic(c)
    _add_join_node(c, tmp_path)
    await c.start("n4")
    assert _conf(c, "n4", 0) == ConfState()  # joined: no voters of its own
    meta_leader = await c.wait_leader(0)
    reply = await c.call(meta_leader, "member_add", node="n4", address="127.0.0.1:1")
    assert reply["role"] == "voter"
    assert "n4" in _conf(c, meta_leader, 0).voters
    await c.wait_for(lambda: "n4" in _conf(c, "n4", 0).voters, what="n4 learned group 0 conf")
    await c.wait_for(lambda: "n4" in c.driver("n4").metadata.nodes, what="n4 has the metadata")

    # Replace a follower by n4 (the leader stays: no election needed).
    drop = next(n for n in ("n1", "n2", "n3") if n != leader)
    target = [n for n in ("n1", "n2", "n3") if n != drop] + ["n4"]
    reply = await _reassign(c, leader, target)
    assert reply["replicas"] == target
    assert set(_conf(c, leader, 1).voters) == set(target)
    await c.wait_for(lambda: 1 not in c.driver(drop).groups, what="old replica deleted")
    assert _conf(c, "n4", 1).voters == _conf(c, leader, 1).voters
    assert _conf(c, "n4", 0) == _conf(c, meta_leader, 0)
    # The joined node restarts with the membership it learned (not an empty one).
    await c.stop("n4")
    await c.start("n4")
    assert _conf(c, "n4", 0) == _conf(c, meta_leader, 0)
    assert _conf(c, "n4", 1).voters == _conf(c, leader, 1).voters
    members = {m["id"]: m for m in (await c.call(meta_leader, "member_list"))["nodes"]}
    assert members["n4"]["role"] in ("voter", "controller_leader")
    assert 1 in members["n4"]["groups"] and 1 not in members[drop]["groups"]

    # Read from the new replica after it became the leader. n4 was just restarted:
    # transfer only once it hears the leader again and has caught up (a transfer to
    # a replica still reconnecting can outlast the request's deadline under load).
    leader_raft = c.driver(leader).groups[1].raft
    await c.wait_for(
        lambda: (
            c.driver("n4").groups[1].leader == leader
            and c.driver("n4").groups[1].raft.commit_index == leader_raft.commit_index
        ),
        what="the restarted n4 caught up in the partition",
    )
    await c.call(leader, "leader_transfer", topic="t", partition=0, to="n4")
    await c.wait_for(lambda: c.leader(1) == "n4", what="n4 leads the partition")
    assert await _fetch_all(c, "n4", "t") == values
    more = [b"after-move"]
    await c.produce("n4", "t", more)
    assert await _fetch_all(c, "n4", "t") == values + more


async def test_reassign_away_from_the_leader_hands_leadership_over_first(cluster, tmp_path):
    c = cluster
    leader, values = await _loaded_topic(c)
    target = sorted(set(c.node_ids) - {leader})
    err = await c.call_error(leader, "partition_reassign", topic="t", partition=0, replicas=target)
    # The leader transferred leadership to a remaining voter and sends us there.
    assert err.code is ErrorCode.NOT_LEADER
    new_leader = await c.wait_leader(1)
    assert new_leader in target and err.details["leader"] in target
    reply = await _reassign(c, new_leader, target)
    assert reply["replicas"] == target
    await c.wait_for(lambda: 1 not in c.driver(leader).groups, what="old leader's copy deleted")
    assert await _fetch_all(c, new_leader, "t") == values


async def test_member_remove_refuses_a_node_that_still_holds_replicas(cluster):
    c = cluster
    await _loaded_topic(c)
    meta_leader = await c.wait_leader(0)
    err = await c.call_error(meta_leader, "member_remove", node="n3")
    assert err.code is ErrorCode.INVALID_REQUEST and err.details["groups"] == [1]


async def test_member_remove_takes_a_drained_node_out_of_group_0(cluster):
    c = cluster
    meta_leader = await c.wait_leader(0)
    await c.wait_for(lambda: len(c.driver(meta_leader).metadata.nodes) == 3, what="registered")
    victim = next(n for n in c.node_ids if n != meta_leader)
    reply = await c.call(meta_leader, "member_remove", node=victim)
    assert reply["removed"] is True
    assert victim not in _conf(c, meta_leader, 0).all_nodes()
    assert victim not in c.driver(meta_leader).metadata.nodes  # unregistered
    # New topics are placed on the remaining nodes only.
    topic = await c.call(meta_leader, "create_topic", topic="after", partitions=3, replicas=2)
    assert all(victim not in p["replicas"] for p in topic["topic"]["partitions"])
    # Group 0 still commits (now with two voters): allocate a producer id.
    assert (await c.call(meta_leader, "init_producer"))["producer_id"] >= 1
    roles = {m["id"]: m["role"] for m in (await c.call(meta_leader, "member_list"))["nodes"]}
    assert roles[victim] == "not_member"


async def test_member_add_refuses_a_node_still_in_partitions_and_bad_addresses(cluster):
    c = cluster
    await _loaded_topic(c)
    meta_leader = await c.wait_leader(0)
    err = await c.call_error(meta_leader, "member_add", node="n9", address="nowhere")
    assert err.code is ErrorCode.INVALID_REQUEST
    follower = next(n for n in c.node_ids if n != meta_leader)
    await c.wait_for(lambda: c.driver(follower).groups[0].leader == meta_leader)
    err = await c.call_error(follower, "member_add", node="n9", address="127.0.0.1:9")
    assert err.code is ErrorCode.NOT_LEADER and err.details["leader"] == meta_leader


def _group_with_conf(cs: ConfState) -> Any:
    class _Raft:
        conf_state = cs

    class _Group:
        raft = _Raft()

    return _Group()


def _vote(kind: MessageType, frm: str) -> Message:
    return Message(type=kind, to="n1", frm=frm, term=9)


@pytest.mark.parametrize("kind", [MessageType.VOTE, MessageType.PRE_VOTE])
def test_vote_requests_from_a_removed_node_are_refused_until_it_is_re_added(kind) -> None:
    old = ConfState(voters=("n1", "n2", "n3"))
    new = ConfState(voters=("n1", "n2", "n4"))
    group = _group_with_conf(new)
    membership._note_removals(group, old, new)
    assert membership.admit(group, _vote(kind, "n3"), "n1") is False
    assert membership.admit(group, _vote(kind, "n2"), "n1") is True
    # A node this replica has not seen join may be a voter of a change it has
    # not applied yet: refusing it could leave the new config leaderless.
    assert membership.admit(group, _vote(kind, "n5"), "n1") is True
    again = ConfState(voters=("n1", "n2", "n4"), learners=("n3",))
    membership._note_removals(group, new, again)
    assert membership.admit(group, _vote(kind, "n3"), "n1") is True


def test_appends_are_never_filtered() -> None:
    old = ConfState(voters=("n1", "n2", "n3"))
    new = ConfState(voters=("n1", "n2"))
    group = _group_with_conf(new)
    membership._note_removals(group, old, new)
    append = Message(type=MessageType.APPEND, to="n1", frm="n3", term=3)
    assert membership.admit(group, append, "n1") is True


def test_unregister_node_command_round_trips() -> None:
    from raftlog.log.commands import UnregisterNode, decode_entry_commands, encode_entry_commands

    data = encode_entry_commands([UnregisterNode("n3")])
    assert decode_entry_commands(data) == [UnregisterNode("n3")]


async def test_an_added_node_is_expected_with_the_incarnation_it_reports(cluster, tmp_path):
    """DESIGN §3 rule 7 after a re-add: `member add` asks the node for its
    incarnation, and every peer expects that one, including a peer that learns of
    the add late, in one batch with the registration. With trust on first use
    instead, that peer would accept the node wiped AGAIN meanwhile."""
    c = cluster
    meta_leader = await c.wait_leader(0)
    await c.wait_for(lambda: len(c.driver(meta_leader).metadata.nodes) == 3, what="registered")
    _add_join_node(c, tmp_path)
    await c.start("n4")
    reported = c.stores["n4"].identity.incarnation
    late = next(n for n in c.node_ids if n not in (meta_leader, "n4"))
    others = [n for n in c.node_ids if n not in (meta_leader, late, "n4")]
    # Every old member knew an earlier life of n4.
    for node in (meta_leader, late, *others):
        c.driver(node).store.set_peer_incarnation("n4", "first-life")
    c.net.isolate(late, [n for n in c.node_ids if n != late])
    await c.call(meta_leader, "member_add", node="n4", address="127.0.0.1:1")
    assert c.driver(meta_leader).metadata.nodes["n4"].incarnation == reported
    for node in (meta_leader, *others):
        assert c.driver(node).store.peer_incarnation("n4") == reported
    assert c.driver(late).store.peer_incarnation("n4") == "first-life"  # not applied yet
    c.net.heal()
    await c.wait_for(
        lambda: "n4" in _conf(c, late, 0).all_nodes(), what="the late peer applies the add"
    )
    assert c.driver(late).store.peer_incarnation("n4") == reported


async def test_member_add_of_a_node_that_is_not_running_says_start_it_first(cluster, tmp_path):
    c = cluster
    meta_leader = await c.wait_leader(0)
    _add_join_node(c, tmp_path)  # configured, never started
    err = await c.call_error(meta_leader, "member_add", node="n4", address="127.0.0.1:1")
    assert err.code is ErrorCode.NOT_AVAILABLE
    assert "n4" not in _conf(c, meta_leader, 0).all_nodes()
    assert "n4" not in c.driver(meta_leader).metadata.nodes
