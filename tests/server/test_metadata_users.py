"""Users kept in the metadata log (server/user_ops.py, server/metadata_users.py),
on whole nodes (server.node.run_node) over real sockets on 127.0.0.1: a user
created through one node authenticates on every node, including one that was
down when it was created; altering or deleting it reaches the connections it
already has open; and what only a node's cluster.toml may decide is refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import (
    ForbiddenError,
    InvalidRequestError,
    UnauthorizedError,
    UnknownUserError,
    UserExistsError,
)
from raftlog.client.users import generate_token
from raftlog.server.acl import User
from raftlog.server.config import AuthConfig, ClusterConfig

from .cluster_harness import make_config
from .rawclient import RawConn
from .test_acl_cluster import client
from .test_tls_cluster import DEADLINE_S, FAST, Nodes, running

OPS = User("ops", "tok-ops", read=("*",), write=("*",), admin=("*",), groups=("*",), cluster=True)
VIEWER = User("viewer", "tok-viewer", read=("*",))
AUTH = AuthConfig(peer_token="peer-secret", users=(OPS, VIEWER))


@pytest.fixture
def cfg(tmp_path: Path) -> ClusterConfig:
    return make_config(tmp_path, 3, **FAST, auth=AUTH)


async def hello_reply(port: int, token: str) -> dict:
    """The reply to one hello with ``token`` to the node on ``port``."""
    raw = await RawConn.open(port)
    try:
        return await raw.hello("client", "probe", credential=token)
    finally:
        await raw.aclose()


async def hello_on(port: int, token: str) -> bool:
    """One hello with ``token`` to the node on ``port``: accepted?"""
    reply = await hello_reply(port, token)
    if reply.get("type") == "hello_ok":
        return True
    assert reply["error"] == "UNAUTHORIZED", reply
    return False


async def wait_hello(port: int, token: str, accepted: bool) -> None:
    """Until that node accepts (or refuses) ``token``: it applies the metadata
    log's users a moment after the leader answered (bounded by the caller)."""
    while True:
        if await hello_on(port, token) == accepted:
            return
        await trio.sleep(0.02)


async def wait_metadata_applied(ops: AsyncClient) -> None:
    """Until every node applied the metadata group as far as its leader had
    committed when called: a change is answered once the controller applied it,
    and the other nodes apply it from the log a heartbeat or so later."""

    def meta_group(view: dict) -> dict:
        return next(g for g in view["groups"] if g["group"] == 0)

    target = max(meta_group(v)["commit"] for v in (await ops.cluster_status()).values())
    while True:
        views = (await ops.cluster_status()).values()
        if all(meta_group(v)["applied"] >= target for v in views):
            return
        await trio.sleep(0.02)


async def test_a_created_user_authenticates_on_every_node_with_its_grants(
    cfg: ClusterConfig,
) -> None:
    token = generate_token()
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, OPS.token) as ops:
                await ops.create_topic("billing.orders", partitions=1, replicas=3)
                await ops.create_topic("payments", partitions=1, replicas=3)
                created = await ops.create_user(
                    "billing", token=token, read=["billing.*"], write=["billing.*"],
                    requests_per_sec=1000.0,
                )  # fmt: skip
                # Where the controller applied it (for wait_applied), beside the user.
                assert type(created.pop("metadata_index")) is int
                assert created == {
                    "name": "billing", "source": "metadata", "token": True, "cluster": False,
                    "read": ["billing.*"], "write": ["billing.*"], "admin": [], "groups": [],
                    "deny_read": [], "deny_write": [], "deny_admin": [], "deny_groups": [],
                    "tls_names": [], "requests_per_sec": 1000.0,
                }  # fmt: skip
                for node in cfg.nodes:
                    await wait_hello(node.port, token, accepted=True)
                listed = {(u["name"], u["source"]) for u in await ops.list_users()}
                assert listed == {("billing", "metadata"), ("ops", "file"), ("viewer", "file")}
                assert token not in repr(await ops.list_users())
            async with client(cfg, token) as billing:
                assert (await billing.produce("billing.orders", b"o1", partition=0)).offset == 0
                with pytest.raises(ForbiddenError, match="user 'billing' may not produce"):
                    await billing.produce("payments", b"p", partition=0)
                assert await billing.list_topics() == ["billing.orders"]
                with pytest.raises(ForbiddenError, match="cluster = false"):
                    await billing.list_users()


async def test_alter_and_delete_reach_open_connections(cfg: ClusterConfig) -> None:
    token, rotated = generate_token(), generate_token()
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, OPS.token) as ops:
                await ops.create_topic("billing.orders", partitions=1, replicas=3)
                await ops.create_user("billing", token=token, read=["billing.*"], write=["*"])
                for node in cfg.nodes:
                    await wait_hello(node.port, token, accepted=True)
                async with client(cfg, token) as billing:
                    await billing.produce("billing.orders", b"before", partition=0)
                    # Grants: the open connection loses write at its next request.
                    await ops.alter_user("billing", write=[])
                    await wait_metadata_applied(ops)
                    with pytest.raises(ForbiddenError, match="may not produce"):
                        await billing.produce("billing.orders", b"no", partition=0)
                    fetched = await billing.fetch("billing.orders", 0, 0, max_wait=0)
                    assert [r.value for r in fetched.records] == [b"before"]
                    # A rotated token: the old one stops, on the open connection too.
                    await ops.alter_user("billing", token=rotated)
                    await wait_metadata_applied(ops)
                    with pytest.raises(UnauthorizedError, match="revoked or rotated"):
                        await billing.fetch("billing.orders", 0, 0, max_wait=0)
                for node in cfg.nodes:
                    await wait_hello(node.port, token, accepted=False)
                    await wait_hello(node.port, rotated, accepted=True)
                async with client(cfg, rotated) as renewed:
                    await renewed.fetch("billing.orders", 0, 0, max_wait=0)
                    await ops.delete_user("billing")
                    await wait_metadata_applied(ops)
                    with pytest.raises(UnauthorizedError, match="revoked or rotated"):
                        await renewed.fetch("billing.orders", 0, 0, max_wait=0)
                for node in cfg.nodes:
                    await wait_hello(node.port, rotated, accepted=False)
                with pytest.raises(UnknownUserError):
                    await ops.delete_user("billing")
                with pytest.raises(UnknownUserError):
                    await ops.alter_user("billing", read=["x"])


async def test_a_node_down_during_the_create_learns_the_user_from_the_log(
    cfg: ClusterConfig,
) -> None:
    token = generate_token()
    async with trio.open_nursery() as nursery:
        nodes = Nodes(cfg, nursery)
        for node in cfg.nodes:
            await nodes.start(node.id)
        with trio.fail_after(DEADLINE_S):
            # The first create waits for the cluster's log format to rise (all
            # three nodes up); with n3 down it could not.
            async with client(cfg, OPS.token) as ops:
                await ops.create_user("early", token=generate_token())
            await nodes.stop("n3")
            async with client(replace(cfg, nodes=cfg.nodes[:2]), OPS.token) as ops:
                await ops.create_user("late", token=token, read=["*"])
            await nodes.start("n3")
            await wait_hello(cfg.nodes[2].port, token, accepted=True)
            # ... and keeps it across its own restart.
            await nodes.stop("n3")
            await nodes.start("n3")
            assert await hello_on(cfg.nodes[2].port, token)
        nursery.cancel_scope.cancel()


async def test_what_only_the_file_decides_is_refused(cfg: ClusterConfig) -> None:
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, OPS.token) as ops:
                with pytest.raises(InvalidRequestError, match=r"is an \[\[auth\.user\]\]"):
                    await ops.create_user("viewer", token=generate_token(), read=["*"])
                with pytest.raises(InvalidRequestError, match=r"already in use in cluster\.toml"):
                    await ops.create_user("copycat", token=VIEWER.token, read=["*"])
                with pytest.raises(InvalidRequestError, match="needs a token or tls_names"):
                    await ops.create_user("nobody", read=["*"])
                with pytest.raises(InvalidRequestError, match=r"'\*' may only end"):
                    await ops.create_user("bad", token=generate_token(), read=["a*b"])
                await ops.create_user("twice", token=generate_token())
                with pytest.raises(UserExistsError):
                    await ops.create_user("twice", token=generate_token())
                with pytest.raises(InvalidRequestError, match=r"is an \[\[auth\.user\]\]"):
                    await ops.delete_user("ops")
            async with client(cfg, VIEWER.token) as viewer:
                with pytest.raises(ForbiddenError, match="may not operate the cluster"):
                    await viewer.create_user("sneaky", token=generate_token(), cluster=True)
            async with client(cfg, OPS.token) as ops:
                assert [u["name"] for u in await ops.list_users()] == ["ops", "twice", "viewer"]


async def test_a_cluster_without_client_authentication_refuses_users(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 1, **FAST)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, None) as anyone:
                with pytest.raises(InvalidRequestError, match="does not authenticate clients"):
                    await anyone.create_user("billing", token=generate_token())
