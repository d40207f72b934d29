"""Deleting a consumer group (``raftlog group delete``).

On three in-process nodes (handlers, real Raft groups): the controller refuses
a group with members, commits a tombstone that takes the next generation, and
the offsets deleted at that generation stay deleted: a member of the old
group cannot commit them back, a new group under the name counts on from the
deletion. Then the same through real sockets with the client library and the
CLI: ``AsyncClient.delete_group`` end to end, a manual-assignment group, and
the command's exit codes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer
from raftlog.client.errors import (
    ErrorCode,
    FencedError,
    GroupNotEmptyError,
    UnknownGroupError,
)
from raftlog.server.cli import main as cli_main
from raftlog.server.errors import HandlerError

from .cluster_harness import make_config
from .inproc_cluster import InProcCluster, running_with_topic
from .test_group_ops import join_stable
from .test_tls_cluster import DEADLINE_S, FAST, running

PARTITIONS = 3


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcCluster]:
    async with running_with_topic(tmp_path, partitions=PARTITIONS) as c:
        yield c


async def partition_leader(c: InProcCluster, partition: int) -> str:
    gid = c.driver(c.node_ids[0]).metadata.topics["t"].partitions[partition].group_id
    return await c.wait_leader(gid)


async def offset_call(
    c: InProcCluster, op: str, partition: int, generation: int | None, **fields: Any
) -> ErrorCode | None:
    """commit_offset / delete_offset of group "g" at the partition's leader; its error."""
    if generation is not None:
        fields["generation"] = generation
    try:
        await c.call(await partition_leader(c, partition), op, group="g", topic="t",
                     partition=partition, **fields)  # fmt: skip
    except HandlerError as exc:
        return exc.code
    return None


async def committed(c: InProcCluster, partition: int) -> int | None:
    node = await partition_leader(c, partition)
    reply = await c.call(node, "fetch_committed", group="g", topic="t", partition=partition)
    return reply["offset"]


async def test_delete_refuses_members_then_fences_the_old_generation_out(cluster: InProcCluster):
    controller = await cluster.wait_leader(0)
    joined = await join_stable(cluster, controller, "a")
    generation = joined["generation"]
    for p in range(PARTITIONS):
        assert await offset_call(cluster, "commit_offset", p, generation, offset=10 + p) is None
    busy = await cluster.call_error(controller, "group_delete", group="g")
    assert busy.code is ErrorCode.GROUP_NOT_EMPTY
    unknown = await cluster.call_error(controller, "group_delete", group="nobody")
    assert unknown.code is ErrorCode.UNKNOWN_GROUP
    await cluster.call(controller, "group_leave", group="g", member_id="a")

    reply = await cluster.call(controller, "group_delete", group="g", topic="t")
    assert reply == {"group": "g", "topic": "t", "generation": generation + 1,
                     "partitions": PARTITIONS}  # fmt: skip
    deleted_at = reply["generation"]
    # The tombstone is committed: every replica of the metadata group holds it.
    await cluster.wait_for(
        lambda: all(
            (rec := cluster.driver(n).metadata.consumer_groups.get("g")) is not None
            and rec.deleted
            and rec.generation == deleted_at
            for n in cluster.node_ids
        ),
        what="the tombstone on every node",
    )
    listed = await cluster.call(controller, "group_list")
    assert [g["group"] for g in listed["groups"]] == []
    assert (await cluster.call(controller, "group_describe", group="g"))["topic"] is None

    for p in range(PARTITIONS):
        assert await offset_call(cluster, "delete_offset", p, deleted_at) is None
        assert await committed(cluster, p) is None
        # the old member, a zombie, cannot put its offset back
        assert await offset_call(cluster, "commit_offset", p, generation, offset=99) is (
            ErrorCode.FENCED
        )
        assert await committed(cluster, p) is None
    # Asked again, the controller answers the same deletion (no new number).
    again = await cluster.call(controller, "group_delete", group="g")
    assert again["generation"] == deleted_at
    # The name joined again is a new group above the deletion; its commits pass.
    fresh = await join_stable(cluster, controller, "b")
    assert fresh["generation"] == deleted_at + 1
    assert await offset_call(cluster, "commit_offset", 0, fresh["generation"], offset=1) is None
    assert await committed(cluster, 0) == 1


async def test_a_new_controller_knows_the_group_was_deleted(cluster: InProcCluster):
    controller = await cluster.wait_leader(0)
    await join_stable(cluster, controller, "a")
    await cluster.call(controller, "group_leave", group="g", member_id="a")
    deleted_at = (await cluster.call(controller, "group_delete", group="g"))["generation"]
    target = next(n for n in cluster.node_ids if n != controller)
    await cluster.wait_for(
        lambda: (
            (rec := cluster.driver(target).metadata.consumer_groups.get("g")) is not None
            and rec.deleted
        ),
        what="the tombstone on the next controller",
    )
    await cluster.call(controller, "metadata_leader_transfer", to=target)
    await cluster.wait_for(lambda: cluster.leader(0) == target, what="new controller")
    assert (await cluster.call(target, "group_list"))["groups"] == []
    assert (await cluster.call(target, "group_delete", group="g"))["generation"] == deleted_at
    assert (await join_stable(cluster, target, "b"))["generation"] == deleted_at + 1


# ---------------------------------------------------------------- real sockets


@contextlib.asynccontextmanager
async def events_cluster(tmp_path: Path) -> AsyncIterator[tuple[AsyncClient, str]]:
    """Three real nodes with topic "events" (2 partitions): a client, and the
    nodes' addresses as a --bootstrap value. Bounded by DEADLINE_S."""
    cfg = make_config(tmp_path, 3, **FAST)
    addresses = [n.address for n in cfg.nodes]
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient(addresses) as client:
                await client.create_topic("events", partitions=2, replicas=3)
                yield client, ",".join(addresses)


async def test_the_client_deletes_a_group_and_a_new_one_starts_from_the_reset_policy(
    tmp_path: Path,
):
    async with events_cluster(tmp_path) as (client, _):
        for i in range(6):
            await client.produce("events", f"v{i}".encode(), partition=i % 2)
        old = Consumer(client, "billing", "events", session_timeout=2.0)
        await old.start()
        old_generation = old.generation
        assert old_generation is not None
        await old.commit({0: 3, 1: 2})
        with pytest.raises(GroupNotEmptyError):
            await client.delete_group("billing")
        await old.close()

        result = await client.delete_group("billing")
        assert (result.topic, result.deleted, result.kept) == ("events", (0, 1), ())
        assert result.generation is not None and result.generation > old_generation
        for p in (0, 1):
            assert await client.committed("billing", "events", p) is None
            with pytest.raises(FencedError):  # the old generation stays out
                await client.commit_offset("billing", "events", p, 5,
                                           generation=old_generation)  # fmt: skip
        listed = await client.request("group_list", idempotent=True)
        assert listed["groups"] == []

        # A new consumer of the name starts where auto_offset_reset says.
        fresh = Consumer(client, "billing", "events", auto_offset_reset="latest",
                         session_timeout=2.0)  # fmt: skip
        await fresh.start()
        assert fresh.generation is not None and fresh.generation > result.generation
        assert {p: fresh.position(p) for p in (0, 1)} == {0: 3, 1: 3}
        await fresh.close()

        with pytest.raises(UnknownGroupError):
            await client.delete_group("never-joined")


async def test_a_manual_groups_offsets_are_deleted_by_naming_its_topic(tmp_path: Path):
    async with events_cluster(tmp_path) as (client, _):
        await client.commit_offset("manual", "events", 1, 7)  # no generation
        result = await client.delete_group("manual", topic="events")
        assert (result.generation, result.deleted, result.kept) == (None, (0, 1), ())
        assert await client.committed("manual", "events", 1) is None


async def test_the_cli_deletes_a_group_and_exits_1_for_one_with_members(tmp_path: Path):
    async with events_cluster(tmp_path) as (client, bootstrap):

        def cli(*args: str) -> Any:
            return CliRunner().invoke(cli_main, ["group", *args, "--bootstrap", bootstrap])

        member = Consumer(client, "ops", "events", session_timeout=2.0)
        await member.start()
        busy = await trio.to_thread.run_sync(cli, "delete", "ops")
        assert busy.exit_code == 1
        assert "GROUP_NOT_EMPTY" in busy.output and "stop its consumers" in busy.output
        await member.close()
        done = await trio.to_thread.run_sync(cli, "delete", "ops", "--json")
        assert done.exit_code == 0, done.output
        assert '"deleted": [\n    0,\n    1\n  ]' in done.output
        gone = await trio.to_thread.run_sync(cli, "delete", "nope")
        assert gone.exit_code == 1 and "UNKNOWN_GROUP" in gone.output
