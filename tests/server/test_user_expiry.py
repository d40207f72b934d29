"""Users that expire (``expires_at_ms``; ``raftlog user create --expires-in``):
from that instant of the node's wall clock the user's hellos are refused, its
open connections are refused at their next request, and an idle one is closed
by the sweep. Over real sockets on 127.0.0.1: a listener with cluster.toml
users, and a whole node for users kept in the metadata log."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
from raftlog.client.connection import Connection
from raftlog.client.errors import InvalidRequestError, UnauthorizedError
from raftlog.client.users import generate_token
from raftlog.server.acl import User
from raftlog.server.clock_skew import wall_time
from raftlog.server.config import AuthConfig, ConfigError, load_config
from raftlog.server.metadata_users import MetadataUsers, register_user_expiry
from raftlog.server.metrics import Registry

from .cluster_harness import make_config
from .rawclient import RawConn, wait_until
from .test_acl_cluster import client
from .test_metadata_users import hello_on, hello_reply, wait_hello
from .test_tls import serve_fake
from .test_tls_cluster import DEADLINE_S, FAST, running

OPS = User("ops", "tok-ops", read=("*",), write=("*",), admin=("*",), groups=("*",), cluster=True)


def now_ms() -> int:
    return round(wall_time() * 1000)


async def until_wall_ms(instant_ms: int) -> None:
    """Until this process's wall clock (the node's, in-process) reaches ``instant_ms``:
    the condition is time itself."""
    while wall_time() * 1000 < instant_ms:  # noqa: ASYNC110 -- waits for the clock itself
        await trio.sleep(max(0.001, instant_ms / 1000 - wall_time()))


async def connect(nursery: trio.Nursery, address: str, token: str) -> Connection:
    return await Connection.open(
        nursery, address, client_id="c", credential=token, connect_timeout=DEADLINE_S
    )


async def hello_error(port: int, token: str) -> str:
    reply = await hello_reply(port, token)
    assert reply.get("error") == "UNAUTHORIZED", reply
    return str(reply.get("message"))


async def test_a_file_user_expires_at_hellos_requests_and_the_sweep(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    expires = now_ms() + 1500
    temp = User("temp", "tok-temp", read=("*",), expires_at_ms=expires)
    idle = User("idle", "tok-idle", read=("*",), expires_at_ms=expires)
    later = User("later", "tok-later", read=("*",), expires_at_ms=now_ms() + 3_600_000)
    lapsed = User("lapsed", "tok-lapsed", read=("*",), expires_at_ms=now_ms() - 1)
    auth = AuthConfig(
        peer_token="peer-secret", users=(OPS, temp, idle, later, lapsed), revoked_grace_s=0.2
    )
    served = await serve_fake(nursery, make_config(tmp_path, 1, auth=auth))
    sweeper = served.listener.sweeper
    assert sweeper is not None and sweeper.revoked_grace_s == 0.2
    nursery.start_soon(sweeper.run)
    port = served.node.port

    assert "user 'lapsed' expired at" in await hello_error(port, "tok-lapsed")
    temp_conn = await connect(nursery, served.address, "tok-temp")
    later_conn = await connect(nursery, served.address, "tok-later")
    assert (await temp_conn.request("metadata", {}))["ok"] is True
    raw_idle = await RawConn.open(port)
    assert (await raw_idle.hello("client", "idle", credential="tok-idle"))["type"] == "hello_ok"

    await until_wall_ms(expires)
    # The open connection that asks is told why, at its next request.
    with pytest.raises(UnauthorizedError, match=r"user 'temp' expired at \d{4}-.*--expires-in"):
        await temp_conn.request("metadata", {})
    # The idle one is closed by the node (it would hold its slot until it sent).
    assert await raw_idle.closed()
    await wait_until(
        lambda: served.metrics.client_connections_closed.value(reason="revoked") >= 1,
        "the sweep to count the closed connection",
    )
    assert "user 'temp' expired at" in await hello_error(port, "tok-temp")
    # A user that expires later serves on.
    assert (await later_conn.request("metadata", {}))["ok"] is True
    for conn in (temp_conn, later_conn):
        conn.close()
    await raw_idle.aclose()


def test_a_file_user_expiry_is_a_toml_date_time_with_an_offset(tmp_path: Path) -> None:
    base = """
[cluster]
name = "t"
[[node]]
id = "n1"
address = "127.0.0.1:7101"
[auth]
peer_token = "p"
[[auth.user]]
name = "a"
token = "t1"
"""
    path = tmp_path / "cluster.toml"
    path.write_text(base + "expires_at = 2027-01-01T00:00:00Z\n")
    (user,) = load_config(path).auth.users
    assert user.expires_at_ms == 1_798_761_600_000
    assert user.expiry_text() == "2027-01-01T00:00:00Z"
    path.write_text(base + "expires_at = 2027-01-01T01:00:00.250+01:00\n")
    assert load_config(path).auth.users[0].expiry_text() == "2027-01-01T00:00:00.250Z"
    path.write_text(base + "expires_at = 2027-01-01T00:00:00\n")  # local: whose zone?
    with pytest.raises(ConfigError, match="expires_at needs a UTC offset"):
        load_config(path)
    path.write_text(base + 'expires_at = "2027-01-01T00:00:00Z"\n')
    with pytest.raises(ConfigError, match="expires_at must be datetime"):
        load_config(path)


def test_the_expiry_metric_shows_both_sources_and_the_files_user_first() -> None:
    registry = Registry()
    log_users = MetadataUsers()
    log_users.follow({
        "billing": {"token_sha256": "a" * 64, "expires_at_ms": 1_900_000_000_000},
        "shadowed": {"token_sha256": "b" * 64, "expires_at_ms": 1_900_000_000_000},
        "forever": {"token_sha256": "c" * 64},
    })  # fmt: skip
    file_users = [User("shadowed", "t", expires_at_ms=1_800_000_000_500), User("plain", "u")]
    register_user_expiry(registry, lambda: file_users, log_users)
    lines = [
        line for line in registry.render().splitlines()
        if line.startswith("raftlog_user_expiry_timestamp_seconds{")
    ]  # fmt: skip
    assert sorted(lines) == [
        'raftlog_user_expiry_timestamp_seconds{user="billing",source="metadata"} 1900000000',
        'raftlog_user_expiry_timestamp_seconds{user="shadowed",source="file"} 1800000000.5',
    ]


async def test_a_log_users_expiry_is_set_extended_suspended_and_removed(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 1, **FAST, auth=AuthConfig(peer_token="peer", users=(OPS,)))
    token = generate_token()
    port = cfg.nodes[0].port
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, OPS.token) as ops:
                await ops.create_topic("t", partitions=1, replicas=1)
                with pytest.raises(InvalidRequestError, match="is not in the future"):
                    await ops.create_user(
                        "late", token=generate_token(), expires_at_ms=now_ms() - 1
                    )
                expires = now_ms() + 1500
                created = await ops.create_user(
                    "temp", token=token, read=["t"], expires_at_ms=expires
                )
                assert created["expires_at_ms"] == expires and created["expired"] is False
                async with client(cfg, token) as temp:
                    await temp.fetch("t", 0, 0, max_wait=0)
                    await until_wall_ms(expires)
                    with pytest.raises(UnauthorizedError, match="user 'temp' expired at"):
                        await temp.fetch("t", 0, 0, max_wait=0)
                (listed,) = [u for u in await ops.list_users() if u["name"] == "temp"]
                assert listed["expired"] is True
                assert not await hello_on(port, token)

                # Extended: new connections get in again.
                await ops.alter_user("temp", expires_at_ms=now_ms() + 3_600_000)
                await wait_hello(port, token, accepted=True)
                async with client(cfg, token) as temp:
                    await temp.fetch("t", 0, 0, max_wait=0)
                    # An expiry already past suspends the user, open connections too.
                    await ops.alter_user("temp", expires_at_ms=now_ms() - 1)
                    with pytest.raises(UnauthorizedError, match="user 'temp' expired at"):
                        await temp.fetch("t", 0, 0, max_wait=0)
                # Removed: never expires.
                altered = await ops.alter_user("temp", remove=["expires_at_ms"])
                assert "expires_at_ms" not in altered and "expired" not in altered
                await wait_hello(port, token, accepted=True)


def test_user_expired_compares_with_the_instant() -> None:
    user = User("u", "t", expires_at_ms=1000)
    assert not user.expired(999.9) and user.expired(1000) and user.expired(time.time() * 1000)
    assert not User("v", "t").expired(time.time() * 1000)
