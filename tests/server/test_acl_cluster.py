"""[[auth.user]] on a whole node (server.node.run_node), over real sockets on
127.0.0.1: each tenant does what it is granted through AsyncClient, is refused
the rest with FORBIDDEN on a connection that keeps serving it, and a refused
request changes nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer
from raftlog.client.errors import ErrorCode, ForbiddenError, UnauthorizedError
from raftlog.server.acl import User
from raftlog.server.auth_reload import reload_auth
from raftlog.server.config import AuthConfig, ClusterConfig, ConfigError, load_config, render_config

from .cluster_harness import make_config
from .rawclient import RawConn
from .test_metrics import http_get
from .test_tls_cluster import DEADLINE_S, FAST, running

OPS = User("ops", "tok-ops", read=("*",), write=("*",), admin=("*",), groups=("*",), cluster=True)
BILLING = User(
    "billing",
    "tok-billing",
    read=("billing.*", "events"),
    write=("billing.*",),
    admin=("billing.*",),
    groups=("billing-*",),
)

# One request per second, whichever connection or client id sends it.
SLOW = User("slow", "tok-slow", read=("*",), requests_per_sec=1.0)
CAPPED = User("capped", "tok-capped", read=("*",), max_connections=1)


@pytest.fixture
def cfg(tmp_path: Path) -> ClusterConfig:
    return make_config(
        tmp_path,
        1,
        metrics=True,
        **FAST,
        auth=AuthConfig(peer_token="peer-secret", users=(OPS, BILLING, SLOW, CAPPED)),
    )


async def metric_value(cfg: ClusterConfig, name: str, label: str) -> dict[str, float]:
    """The samples of ``name`` whose labels include ``label``, by their other labels."""
    address = cfg.nodes[0].metrics_address
    assert address is not None
    text = (await http_get(int(address.rpartition(":")[2]), "/metrics")).decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            rest = ",".join(part for part in labels.split(",") if part != label)
            out[rest] = float(value)
    return out


def client(cfg: ClusterConfig, token: str | None, client_id: str = "app") -> AsyncClient:
    return AsyncClient([n.address for n in cfg.nodes], credential=token, client_id=client_id)


async def test_a_tenant_uses_its_topics_and_is_refused_the_rest(cfg: ClusterConfig) -> None:
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, OPS.token) as ops:
                await ops.create_topic("events", partitions=1, replicas=1)
                await ops.create_topic("payments", partitions=1, replicas=1)
                await ops.produce("events", b"from-ops", partition=0)
            async with client(cfg, BILLING.token) as billing:
                await billing.create_topic("billing.orders", partitions=1, replicas=1)
                md = await billing.produce("billing.orders", b"order-1", partition=0)
                assert md.offset == 0
                with pytest.raises(ForbiddenError) as refused:
                    await billing.produce("events", b"sneaky", partition=0)
                assert refused.value.code is ErrorCode.FORBIDDEN
                assert "user 'billing' may not produce to topic 'events'" in str(refused.value)
                with pytest.raises(ForbiddenError, match="may not administer topic 'payments'"):
                    await billing.create_topic("payments", partitions=1, replicas=1)
                with pytest.raises(ForbiddenError, match="may not administer topic 'events'"):
                    await billing.delete_topic("events")
                with pytest.raises(ForbiddenError, match="may not read topic 'payments'"):
                    await billing.fetch("payments", 0, 0, max_wait=0)
                with pytest.raises(ForbiddenError, match="no permission on topic 'payments'"):
                    await billing.describe_topic("payments")
                # Granted read: the record ops produced; only the topics it may see.
                fetched = await billing.fetch("events", 0, 0, max_wait=0)
                assert [r.value for r in fetched.records] == [b"from-ops"]
                assert await billing.list_topics() == ["billing.orders", "events"]
                # The connection still serves it after every refusal.
                again = await billing.produce("billing.orders", b"order-2", partition=0)
                assert again.offset == 1
            async with client(cfg, OPS.token) as ops:
                # Nothing the refusals asked for happened.
                fetched = await ops.fetch("events", 0, 0, max_wait=0)
                assert [r.value for r in fetched.records] == [b"from-ops"]
                assert sorted(await ops.list_topics()) == ["billing.orders", "events", "payments"]


async def test_consumer_groups_and_cluster_operations_need_their_grants(cfg: ClusterConfig):
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, BILLING.token) as billing:
                await billing.create_topic("billing.orders", partitions=1, replicas=1)
                await billing.produce("billing.orders", b"x", partition=0)
                await billing.commit_offset("billing-etl", "billing.orders", 0, 1)
                assert await billing.committed("billing-etl", "billing.orders", 0) == 1
                with pytest.raises(ForbiddenError, match="may not use consumer group 'etl'"):
                    await billing.commit_offset("etl", "billing.orders", 0, 1)
                # A group-managed consumer of a group it may not use fails at once
                # (it does not retry its join forever); one of its own groups reads.
                with pytest.raises(ForbiddenError, match="may not use consumer group 'etl'"):
                    async with Consumer(billing, "etl", "billing.orders") as denied:
                        await denied.poll(max_wait=0)
                await billing.produce("billing.orders", b"y", partition=0)
                async with Consumer(billing, "billing-etl", "billing.orders") as allowed:
                    got: list[bytes] = []
                    while not got:  # bounded by the fail_after above
                        got = [r.value for _, r in await allowed.poll(max_wait=1)]
                    assert got == [b"y"]  # from the group's commit at 1
            node = cfg.nodes[0]
            raw = await RawConn.open(node.port)
            hello = await raw.hello("client", "raw", credential=BILLING.token)
            assert hello["type"] == "hello_ok"
            reply = await raw.request(1, "cluster_status")
            assert reply["error"] == "FORBIDDEN" and "cluster = false" in reply["message"]
            reply = await raw.request(2, "metadata", topics=["billing.orders", "payments"])
            assert reply["error"] == "FORBIDDEN"
            reply = await raw.request(3, "metadata")
            assert [t["name"] for t in reply["topics"]] == ["billing.orders"]
            forbidden = await metric_value(cfg, "raftlog_forbidden_total", 'user="billing"')
            assert forbidden == {'op="commit_offset"': 1.0, 'op="group_join"': 1.0,
                                 'op="cluster_status"': 1.0, 'op="metadata"': 1.0}  # fmt: skip
            await raw.aclose()
            ops = await RawConn.open(node.port)
            assert (await ops.hello("client", "raw", credential=OPS.token))["type"] == "hello_ok"
            status = await ops.request(1, "cluster_status")
            assert status["ok"] is True and status["node"] == node.id
            await ops.aclose()


async def test_a_token_that_names_nobody_is_refused_at_the_hello(cfg: ClusterConfig) -> None:
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            for token in (None, "guess", "peer-secret"):
                async with client(cfg, token) as nobody:
                    with pytest.raises(UnauthorizedError, match="invalid client credential") as no:
                        await nobody.list_topics()
                assert not isinstance(no.value, ForbiddenError)


async def test_a_users_quota_spans_its_connections_and_client_ids(cfg: ClusterConfig) -> None:
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            conns = []
            for client_id in ("one", "two"):
                conn = await RawConn.open(cfg.nodes[0].port)
                hello = await conn.hello("client", client_id, credential=SLOW.token)
                assert hello["type"] == "hello_ok"
                conns.append(conn)
            # A full bucket holds one token and admits while positive: two requests
            # from "one" spend it; the next, from "two", is refused (a bucket per
            # client id would admit it). Any answer but THROTTLED means admitted.
            for req_id in (1, 2):
                reply = await conns[0].request(req_id, "list_topics")
                assert reply.get("error") != "THROTTLED", reply
            refused = await conns[1].request(1, "list_topics")
            assert refused["error"] == "THROTTLED" and refused["retry_after_ms"] > 0
            throttled = await metric_value(cfg, "raftlog_user_throttled_total", 'user="slow"')
            assert throttled == {'quota="requests_per_sec"': 1.0}
            for conn in conns:
                await conn.aclose()


async def test_a_user_holds_at_most_max_connections_on_a_node(cfg: ClusterConfig) -> None:
    port = cfg.nodes[0].port
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            first = await RawConn.open(port)
            assert (await first.hello("client", "a", credential=CAPPED.token))["type"] == "hello_ok"
            second = await RawConn.open(port)
            refused = await second.hello("client", "b", credential=CAPPED.token)
            assert refused["error"] == "NOT_AVAILABLE"
            assert "user 'capped' has 1 connections to node n1" in refused["message"]
            assert await second.closed()
            other = await RawConn.open(port)  # another user is not affected
            assert (await other.hello("client", "c", credential=OPS.token))["type"] == "hello_ok"
            await first.aclose()
            while True:  # the slot comes back once the node has seen the close
                again = await RawConn.open(port)
                reply = await again.hello("client", "d", credential=CAPPED.token)
                if reply["type"] == "hello_ok":
                    break
                assert reply["error"] == "NOT_AVAILABLE"
                await trio.sleep(0.05)  # retry pacing; the fail_after above bounds it
            await again.aclose()
            await other.aclose()


async def test_client_tokens_keep_full_access_beside_users(cfg: ClusterConfig) -> None:
    both = replace(cfg, auth=replace(cfg.auth, client_tokens=("legacy",)))
    async with running(both):
        with trio.fail_after(DEADLINE_S):
            async with client(both, "legacy") as legacy:
                await legacy.create_topic("payments", partitions=1, replicas=1)
                assert (await legacy.produce("payments", b"p", partition=0)).offset == 0
            async with client(both, BILLING.token) as billing:
                assert await billing.list_topics() == []


async def test_a_reload_takes_new_users_grants_and_revocations(cfg: ClusterConfig, tmp_path: Path):
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(cfg))
    live = load_config(path)  # read from a file, as a node started by the CLI is
    late = User("late", "tok-late", read=("*",))

    def rewrite(*users: User, peer_token: str = "peer-secret") -> None:
        auth = AuthConfig(peer_token=peer_token, users=users)
        path.write_text(render_config(replace(live, auth=auth)))

    async with running(live):
        with trio.fail_after(DEADLINE_S):
            async with client(live, OPS.token) as ops, client(live, BILLING.token) as billing:
                await ops.create_topic("billing.orders", partitions=1, replicas=1)
                await billing.produce("billing.orders", b"before", partition=0)
                async with client(live, late.token) as nobody_yet:
                    with pytest.raises(UnauthorizedError, match="invalid client credential"):
                        await nobody_yet.list_topics()
                # Billing loses write; a user is added. The open connection takes the
                # new grants at its next request.
                rewrite(OPS, replace(BILLING, write=()), late)
                assert reload_auth(live) == (2 + 1, 0)
                with pytest.raises(ForbiddenError, match="no write permission"):
                    await billing.produce("billing.orders", b"after", partition=0)
                async with client(live, late.token) as now_known:
                    assert await now_known.list_topics() == ["billing.orders"]
                # Refused reloads change nothing.
                for bad, problem in (
                    (lambda: rewrite(OPS, peer_token="other"), "peer_token changed"),
                    (lambda: path.write_text("[cluster\n"), "cluster.toml"),
                    (lambda: rewrite(), "would no longer authenticate clients"),
                ):  # fmt: skip
                    bad()
                    with pytest.raises(ConfigError, match=problem):
                        reload_auth(live)
                    assert [u.name for u in live.auth.users] == ["ops", "billing", "late"]
                # Billing removed: its open connection is refused from now on.
                rewrite(OPS)
                reload_auth(live)
                revoked = r"user 'billing'.* names no user any more"
                with pytest.raises(UnauthorizedError, match=revoked):
                    await billing.fetch("billing.orders", 0, 0, max_wait=0)
                fetched = await ops.fetch("billing.orders", 0, 0, max_wait=0)
                assert [r.value for r in fetched.records] == [b"before"]


async def test_a_rotated_token_stops_working_on_open_connections(
    cfg: ClusterConfig, tmp_path: Path
) -> None:
    """A leaked token is rotated (same user, new token) and a client_tokens token
    is dropped: the connections already made with them are refused from their
    next request, new connections need the new token, and the other tenants'
    connections serve on."""
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(replace(cfg, auth=replace(cfg.auth, client_tokens=("legacy",)))))
    live = load_config(path)
    rotated = replace(BILLING, token="tok-billing-2")
    async with running(live):
        with trio.fail_after(DEADLINE_S):
            async with (
                client(live, OPS.token) as ops,
                client(live, BILLING.token) as leaked,
                client(live, "legacy") as legacy,
            ):
                await ops.create_topic("billing.orders", partitions=1, replicas=1)
                await leaked.produce("billing.orders", b"before", partition=0)
                assert await legacy.list_topics() == ["billing.orders"]
                before = (await ops.cluster_status("n1"))["auth"]
                assert before == {
                    "fingerprint": live.auth.fingerprint,
                    "users": 4,
                    "client_tokens": 1,
                    "metadata_users": 0,
                }
                auth = AuthConfig(peer_token="peer-secret", users=(OPS, rotated, SLOW, CAPPED))
                path.write_text(render_config(replace(live, auth=auth)))
                reload_auth(live)
                # `cluster status` shows what the node holds now: a new fingerprint.
                after = (await ops.cluster_status("n1"))["auth"]
                assert after["fingerprint"] == auth.fingerprint != before["fingerprint"]
                for refused in (
                    lambda: leaked.produce("billing.orders", b"leaked", partition=0),
                    lambda: leaked.list_topics(),  # and on every request after
                    lambda: legacy.list_topics(),
                ):
                    with pytest.raises(UnauthorizedError, match="revoked or rotated"):
                        await refused()
                async with client(live, rotated.token) as renewed:
                    await renewed.produce("billing.orders", b"after", partition=0)
                # Ops' token did not change: its connection serves on.
                fetched = await ops.fetch("billing.orders", 0, 0, max_wait=0)
                assert [r.value for r in fetched.records] == [b"before", b"after"]


async def test_a_client_certificate_names_its_user(tmp_path: Path) -> None:
    """[tls] client_auth with a user known by certificate (tls_names, no token): its
    certificate alone authenticates it and it gets that user's grants; a certificate
    that names no user is refused; a token, when sent, decides."""
    from .test_tls import TLSFiles, with_tls

    files = TLSFiles.create(tmp_path / "tls")
    by_cert = User(
        "billing",
        None,
        read=("billing.*",),
        write=("billing.*",),
        tls_names=("billing.clients.test",),
    )
    auth = AuthConfig(peer_token="peer-secret", users=(OPS, by_cert))
    cfg = with_tls(make_config(tmp_path, 1, **FAST, auth=auth), files, client_auth=True)
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(cfg))
    live = load_config(path)
    assert replace(live, path=None) == cfg  # tls_names round-trip
    addresses = [n.address for n in cfg.nodes]

    def tls_client(cert_name: str, token: str | None = None) -> AsyncClient:
        return AsyncClient(addresses, tls=files.client(cert_name), credential=token)

    async with running(live):
        with trio.fail_after(DEADLINE_S):
            async with tls_client("ops", OPS.token) as ops:
                await ops.create_topic("billing.orders", partitions=1, replicas=1)
                await ops.create_topic("payments", partitions=1, replicas=1)
            async with tls_client("billing") as billing:
                assert (await billing.produce("billing.orders", b"b", partition=0)).offset == 0
                with pytest.raises(ForbiddenError, match="user 'billing' may not produce"):
                    await billing.produce("payments", b"p", partition=0)
            async with tls_client("stranger") as stranger:
                with pytest.raises(UnauthorizedError, match=r"names no user"):
                    await stranger.list_topics()
            # The billing certificate with ops' token: the token decides.
            async with tls_client("billing", OPS.token) as both:
                assert (await both.produce("payments", b"p", partition=0)).offset == 0
            # The certificate's name removed from [auth]: its open connection is refused.
            async with tls_client("billing") as billing:
                await billing.fetch("billing.orders", 0, 0, max_wait=0)
                path.write_text(render_config(replace(live, auth=replace(auth, users=(OPS,)))))
                reload_auth(live)
                with pytest.raises(UnauthorizedError, match="revoked or rotated"):
                    await billing.fetch("billing.orders", 0, 0, max_wait=0)


# Reads every topic but the secret ones (Kafka's DENY ACL over an ALLOW on *).
PRYING = User(
    "prying", "tok-prying", read=("*",), groups=("*",), deny_read=("secret*",),
    deny_groups=("ops-*",),
)  # fmt: skip


async def test_a_deny_rule_fences_topics_and_groups_off_a_star_grant(tmp_path: Path) -> None:
    """Over real sockets: a user granted read on ``*`` but denied ``secret*``
    reads other topics, is refused FORBIDDEN (naming the deny pattern) on a
    secret one, and does not see it listed; a reload that adds a deny reaches
    its open connection."""
    auth = AuthConfig(peer_token="peer-secret", users=(OPS, PRYING))
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(make_config(tmp_path, 1, metrics=True, **FAST, auth=auth)))
    live = load_config(path)  # a file, so that a reload can change the deny rules
    async with running(live):
        with trio.fail_after(DEADLINE_S):
            async with client(live, OPS.token) as ops:
                for topic in ("events", "secret.keys", "secretary"):
                    await ops.create_topic(topic, partitions=1, replicas=1)
                    await ops.produce(topic, topic.encode(), partition=0)
            async with client(live, PRYING.token) as prying:
                fetched = await prying.fetch("events", 0, 0, max_wait=0)
                assert [r.value for r in fetched.records] == [b"events"]
                for topic in ("secret.keys", "secretary"):
                    with pytest.raises(ForbiddenError) as refused:
                        await prying.fetch(topic, 0, 0, max_wait=0)
                    assert refused.value.code is ErrorCode.FORBIDDEN
                    assert str(refused.value).endswith(
                        f"user 'prying' may not read topic {topic!r} "
                        "(denied by a deny rule: deny_read pattern 'secret*')"
                    ), str(refused.value)
                # Invisible: left out of the listing, refused by name.
                assert await prying.list_topics() == ["events"]
                with pytest.raises(ForbiddenError, match=r"may not see topic 'secret\.keys'"):
                    await prying.describe_topic("secret.keys")
                # Groups: the deny beats the "*" grant.
                await prying.commit_offset("etl", "events", 0, 1)
                with pytest.raises(ForbiddenError, match="deny_groups pattern 'ops-\\*'"):
                    await prying.commit_offset("ops-etl", "events", 0, 1)
                assert await prying.committed("etl", "events", 0) == 1
                forbidden = await metric_value(live, "raftlog_forbidden_total", 'user="prying"')
                assert forbidden == {'op="fetch"': 2.0, 'op="describe_topic"': 1.0,
                                     'op="commit_offset"': 1.0}  # fmt: skip

                # A deny added by a reload: the open connection is refused at once.
                fenced = replace(PRYING, deny_read=("secret*", "events"))
                path.write_text(
                    render_config(replace(live, auth=replace(auth, users=(OPS, fenced))))
                )
                reload_auth(live)
                with pytest.raises(ForbiddenError, match="deny_read pattern 'events'"):
                    await prying.fetch("events", 0, 0, max_wait=0)
                assert await prying.list_topics() == []
            async with client(live, OPS.token) as ops:  # ops' view is whole
                assert sorted(await ops.list_topics()) == ["events", "secret.keys", "secretary"]
                fetched = await ops.fetch("secret.keys", 0, 0, max_wait=0)
                assert [r.value for r in fetched.records] == [b"secret.keys"]
