"""``raftlog user ... --wait`` (the default) and ``wait=True`` / ``wait_applied``:
a user change returns only once every node applied it, on three whole nodes in
this process over real sockets on 127.0.0.1. Every peer link goes through a
proxy (jepsen/proxy.py), so holding n3's links leaves n3 up and answering
clients while its metadata log stays behind."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner, Result
from raftlog.client.errors import NotAppliedError
from raftlog.client.sync import Client
from raftlog.client.users import generate_token
from raftlog.jepsen.proxy import ProxyMesh
from raftlog.server.acl import User
from raftlog.server.cli import main
from raftlog.server.cli_common import EXIT_NOT_APPLIED, EXIT_OK, TOKEN_ENV
from raftlog.server.config import AuthConfig, ClusterConfig, render_config

from .cluster_harness import make_config
from .rawclient import RawConn
from .test_acl_cluster import client
from .test_metadata_users import hello_on, wait_hello
from .test_tls_cluster import DEADLINE_S, FAST, running

OPS = User("ops", "tok-ops", read=("*",), write=("*",), admin=("*",), groups=("*",), cluster=True)
LAGGING = "n3"


@dataclass
class Proxied:
    """A running cluster whose peer links pass through ``mesh``; ``path`` is its
    cluster.toml (for ``--config``)."""

    cfg: ClusterConfig
    mesh: ProxyMesh
    path: Path

    def hold(self, node: str) -> None:
        """Deliver nothing to or from ``node`` on its peer links (it stays up)."""
        for (src, dst), link in self.mesh.links.items():
            if node in (src, dst):
                link.hold()

    def heal(self) -> None:
        for link in self.mesh.links.values():
            link.heal()

    def port(self, node: str) -> int:
        return self.cfg.node(node).port


@contextlib.asynccontextmanager
async def proxied_cluster(tmp_path: Path) -> AsyncIterator[Proxied]:
    """Three nodes with [auth] (OPS), their links through proxies, n1 leading
    the metadata group, and the cluster's log format high enough for users."""
    cfg = make_config(tmp_path, 3, **FAST, auth=AuthConfig(peer_token="peer-secret", users=(OPS,)))
    mesh = ProxyMesh({n.id: n.address for n in cfg.nodes})
    await mesh.listen()
    nodes = [replace(n, dial=mesh.dial_table(n.id)) for n in cfg.nodes]
    cfg = replace(cfg, nodes=nodes)
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(cfg))
    async with trio.open_nursery() as nursery:
        await nursery.start(mesh.serve)
        async with running(cfg):
            with trio.fail_after(DEADLINE_S):
                async with client(cfg, OPS.token) as ops:
                    # Waits for the users' log format (all three nodes up), and
                    # for every node to apply it.
                    await ops.create_user("early", token=generate_token(), wait=True)
                    # n1 leads: holding n3 cannot strand the controller.
                    await ops.metadata_leader_transfer("n1")
            yield Proxied(cfg, mesh, path)
        nursery.cancel_scope.cancel()


async def user_cli(*args: str, stdin: str | None = None) -> Result:
    """``raftlog user ARGS`` in a worker thread, as OPS."""

    def invoke() -> Result:
        return CliRunner().invoke(main, ["user", *args], input=stdin, env={TOKEN_ENV: OPS.token})

    return await trio.to_thread.run_sync(invoke)


def bootstrap(cluster: Proxied) -> list[str]:
    return ["--bootstrap", ",".join(n.address for n in cluster.cfg.nodes)]


async def test_a_node_that_lags_is_named_and_the_change_is_made(tmp_path: Path) -> None:
    async with proxied_cluster(tmp_path) as cluster:
        cluster.hold(LAGGING)
        with trio.fail_after(DEADLINE_S):
            # --config: the file's nodes are the ones polled.
            result = await user_cli(
                "create", "lagged", "--read", "*", "--config", str(cluster.path),
                "--timeout", "1.5",
            )  # fmt: skip
            assert result.exit_code == EXIT_NOT_APPLIED, result.output
            # The generated token is printed all the same: the user exists.
            created, printed = result.stdout.splitlines()
            assert created == "created user lagged" and printed.startswith("token: ")
            token = printed.removeprefix("token: ")
            assert "not applied within 1.5s by n3: n3 (127.0.0.1:" in result.stderr
            assert "applied the metadata log to" in result.stderr  # n3 answered, behind
            assert "do not run the command again" in result.stderr
            # Made all the same: n1 and n2 applied it (the wait named only n3),
            # and n3 had indeed not.
            assert await hello_on(cluster.port("n1"), token)
            assert await hello_on(cluster.port("n2"), token)
            assert not await hello_on(cluster.port(LAGGING), token)

            # --no-wait answers once the controller applied it, n3 held or not.
            deleted = await user_cli(
                "delete", "lagged", "--no-wait", *bootstrap(cluster), "--timeout", "1.5"
            )
            assert deleted.exit_code == EXIT_OK, deleted.output
            assert deleted.stdout.splitlines() == ["deleted user lagged"]
            assert deleted.stderr == ""

            # The library: NotAppliedError names n3, and says how far it got.
            async with client(cluster.cfg, OPS.token) as ops:
                ops.request_timeout = 1.0
                with pytest.raises(NotAppliedError) as raised:
                    await ops.create_user("again", token=generate_token(), wait=True)
                assert list(raised.value.behind) == [LAGGING]
                assert f"not yet to {raised.value.index}" in raised.value.behind[LAGGING]
                assert "again" in {u["name"] for u in await ops.list_users()}


async def test_wait_returns_once_every_node_applied_and_each_takes_the_token_at_once(
    tmp_path: Path,
) -> None:
    token = generate_token()
    async with proxied_cluster(tmp_path) as cluster:
        cluster.hold(LAGGING)
        with trio.fail_after(DEADLINE_S):
            done = trio.Event()
            results: list[Result] = []

            async def create() -> None:
                # --bootstrap: the nodes the cluster reports are the ones polled.
                results.append(await user_cli(
                    "create", "late", "--read", "*", "--token-stdin", *bootstrap(cluster),
                    "--timeout", "20", stdin=f"{token}\n",
                ))  # fmt: skip
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(create)
                # Made, and applied by n1 and n2 ...
                await wait_hello(cluster.port("n1"), token, accepted=True)
                await wait_hello(cluster.port("n2"), token, accepted=True)
                # ... but not by n3: the command is still waiting.
                assert not await hello_on(cluster.port(LAGGING), token)
                assert not done.is_set()
                cluster.heal()
            (result,) = results
            assert result.exit_code == EXIT_OK, result.output
            assert result.stdout.splitlines() == ["created user late"]
            assert "applied by every node (n1, n2, n3) at metadata index" in result.stderr
            # At once, with no retry, on every node: a hello and a request.
            for node in cluster.cfg.nodes:
                conn = await RawConn.open(node.port)
                hello = await conn.hello("client", "late", credential=token)
                assert hello["type"] == "hello_ok", (node.id, hello)
                assert (await conn.request(1, "metadata"))["ok"] is True, node.id
                await conn.aclose()

            # The blocking client, n3 held again: delete_user(wait=True) names it ...
            addresses = [n.address for n in cluster.cfg.nodes]
            cluster.hold(LAGGING)

            def delete() -> NotAppliedError:
                with Client(addresses, credential=OPS.token, request_timeout=1.0) as sync:
                    with pytest.raises(NotAppliedError) as raised:
                        sync.delete_user("late", wait=True)
                    return raised.value

            behind = await trio.to_thread.run_sync(delete)
            assert list(behind.behind) == [LAGGING]
            cluster.heal()

            # ... and wait_applied returns once n3 caught up: deleted everywhere.
            def wait() -> dict[str, int]:
                with Client(addresses, credential=OPS.token) as sync:
                    return sync.wait_applied(behind.index)

            reached = await trio.to_thread.run_sync(wait)
            assert set(reached) == {"n1", "n2", "n3"}
            assert all(at >= behind.index for at in reached.values())
            for node in cluster.cfg.nodes:
                assert not await hello_on(node.port, token), node.id


async def test_cluster_status_lists_only_the_groups_asked_for(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 1, **FAST)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, None) as anyone:
                await anyone.create_topic("t", partitions=2, replicas=1)
                everything = await anyone.request("cluster_status", idempotent=True)
                assert len(everything["groups"]) == 3
                only = await anyone.request("cluster_status", idempotent=True, groups=[0])
                assert [g["group"] for g in only["groups"]] == [0]
                assert only["groups"][0]["applied"] >= 1
