"""``raftlog user`` (server/cli_users.py) against one in-process node with
``[auth]``: the CLI runs in a worker thread (click's CliRunner) with the
caller's credential in RAFTLOG_TOKEN, and what it did is checked through
AsyncClient connections made with the tokens it printed or was given."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner, Result
from raftlog.client.errors import ForbiddenError, UnauthorizedError
from raftlog.log.features import USER_DENY_RULES
from raftlog.server.acl import User
from raftlog.server.cli import main
from raftlog.server.cli_common import EXIT_CLUSTER_ERROR, EXIT_OK, EXIT_USAGE, TOKEN_ENV
from raftlog.server.config import AuthConfig, ClusterConfig

from .cluster_harness import make_config
from .test_acl_cluster import client
from .test_log_format import wait_cluster_format
from .test_tls_cluster import DEADLINE_S, FAST, running

OPS = User("ops", "tok-ops", read=("*",), write=("*",), admin=("*",), groups=("*",), cluster=True)
# Everything on topics, but not the cluster: may not manage users.
VIEWER = User("viewer", "tok-viewer", read=("*",), write=("*",), admin=("*",))


@pytest.fixture
def cfg(tmp_path: Path) -> ClusterConfig:
    return make_config(
        tmp_path, 1, **FAST, auth=AuthConfig(peer_token="peer-secret", users=(OPS, VIEWER))
    )


async def cli(
    cfg: ClusterConfig, *args: str, token: str | None = OPS.token, stdin: str | None = None
) -> Result:
    """``raftlog user ARGS --bootstrap ...`` in a worker thread, as ``token``'s holder."""
    bootstrap = ",".join(n.address for n in cfg.nodes)
    env = {TOKEN_ENV: token} if token is not None else {}

    def invoke() -> Result:
        return CliRunner().invoke(
            main, ["user", *args, "--bootstrap", bootstrap, "--timeout", "5"], input=stdin, env=env
        )

    return await trio.to_thread.run_sync(invoke)


def printed_token(result: Result, name: str) -> str:
    """The token ``user create`` / ``alter --rotate-token`` printed on stdout."""
    assert result.exit_code == EXIT_OK, result.output
    lines = result.stdout.splitlines()
    assert lines[0] in (f"created user {name}", f"altered user {name}"), lines
    assert len(lines) == 2 and lines[1].startswith("token: "), lines
    token = lines[1].removeprefix("token: ")
    assert len(token) >= 40 and " " not in token, token
    return token


async def listed(cfg: ClusterConfig) -> dict[str, dict[str, Any]]:
    """``user list --json`` by name, metadata users only."""
    result = await cli(cfg, "list", "--json")
    assert result.exit_code == EXIT_OK, result.output
    users = json.loads(result.stdout)
    return {u["name"]: u for u in users if u["source"] == "metadata"}


async def test_create_prints_a_token_that_gets_what_the_grants_allow(cfg: ClusterConfig):
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, OPS.token) as ops:
                await ops.create_topic("billing.orders", partitions=1, replicas=1)
                await ops.create_topic("events", partitions=1, replicas=1)
                await ops.produce("events", b"from-ops", partition=0)

            created = await cli(
                cfg, "create", "billing", "--write", "billing.*", "--read", "billing.*",
                "--read", "events", "--group", "billing-*", "--requests-per-sec", "500",
                "--max-connections", "4",
            )  # fmt: skip
            token = printed_token(created, "billing")
            assert "cannot show it again" in created.stderr
            async with client(cfg, token) as billing:
                md = await billing.produce("billing.orders", b"order-1", partition=0)
                assert md.offset == 0
                fetched = await billing.fetch("events", 0, 0, max_wait=0)
                assert [r.value for r in fetched.records] == [b"from-ops"]
                with pytest.raises(ForbiddenError, match="may not produce to topic 'events'"):
                    await billing.produce("events", b"sneaky", partition=0)
                with pytest.raises(ForbiddenError, match="may not administer topic 'new'"):
                    await billing.create_topic("new", partitions=1, replicas=1)
                # Not a cluster operator: may not list users.
                with pytest.raises(ForbiddenError):
                    await billing.list_users()

            as_json = await cli(cfg, "list", "--json")
            assert as_json.exit_code == EXIT_OK, as_json.output
            assert token not in as_json.output
            users = json.loads(as_json.stdout)
            by_source = {(u["name"], u["source"]): u for u in users}
            assert set(by_source) == {("billing", "metadata"), ("ops", "file"),
                                      ("viewer", "file")}  # fmt: skip
            user = by_source["billing", "metadata"]
            assert user["token"] is True and user["cluster"] is False
            assert user["read"] == ["billing.*", "events"] and user["write"] == ["billing.*"]
            assert user["admin"] == [] and user["groups"] == ["billing-*"]
            assert user["requests_per_sec"] == 500.0 and user["max_connections"] == 4
            assert "produce_bytes_per_sec" not in user and "shadowed" not in user

            table = await cli(cfg, "list")
            assert table.exit_code == EXIT_OK, table.output
            assert token not in table.output
            lines = table.stdout.splitlines()
            assert lines[0].split() == ["NAME", "SOURCE", "TOKEN", "CLUSTER", "READ", "WRITE",
                                        "ADMIN", "GROUPS", "DENY", "EXPIRES"]  # fmt: skip
            rows = {tuple(line.split()[:2]): line.split() for line in lines[1:]}
            assert rows["billing", "metadata"] == [
                "billing", "metadata", "yes", "no", "billing.*,events", "billing.*", "-",
                "billing-*", "-", "never",
            ]  # fmt: skip
            assert rows["ops", "file"][2:4] == ["yes", "yes"]


async def test_token_stdin_uses_the_given_token_and_no_token_needs_a_tls_name(
    cfg: ClusterConfig,
):
    mine = "carols-own-token-0123456789"
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, OPS.token) as ops:
                await ops.create_topic("carol.t", partitions=1, replicas=1)
            created = await cli(cfg, "create", "carol", "--write", "carol.*", "--token-stdin",
                                stdin=f"  {mine}  \nignored second line\n")  # fmt: skip
            assert created.exit_code == EXIT_OK, created.output
            assert created.stdout.splitlines() == ["created user carol"]
            assert mine not in created.output
            async with client(cfg, mine) as carol:
                assert (await carol.produce("carol.t", b"c", partition=0)).offset == 0

            empty = await cli(cfg, "create", "dave", "--token-stdin", stdin="\n")
            assert empty.exit_code == EXIT_USAGE, empty.output
            assert "first line of stdin is empty" in empty.output
            no_name = await cli(cfg, "create", "dave", "--no-token", "--read", "x")
            assert no_name.exit_code == EXIT_USAGE, no_name.output
            assert "--no-token" in no_name.output and "--tls-name" in no_name.output
            both = await cli(cfg, "create", "dave", "--no-token", "--token-stdin",
                             "--tls-name", "dave.example", stdin="t\n")  # fmt: skip
            assert both.exit_code == EXIT_USAGE, both.output
            # A token of cluster.toml's [auth] may not become a metadata user's too.
            taken = await cli(cfg, "create", "dave", "--token-stdin", stdin=f"{OPS.token}\n")
            assert taken.exit_code == EXIT_CLUSTER_ERROR, taken.output
            assert "INVALID_REQUEST" in taken.stderr and "already in use" in taken.stderr
            assert "dave" not in await listed(cfg)  # none of the refusals created it

            by_cert = await cli(cfg, "create", "dave", "--no-token", "--tls-name", "dave.example")
            assert by_cert.exit_code == EXIT_OK, by_cert.output
            assert by_cert.stdout.splitlines() == ["created user dave"]
            users = await listed(cfg)
            assert users["dave"]["token"] is False
            assert users["dave"]["tls_names"] == ["dave.example"]
            assert users["carol"]["token"] is True


async def test_rotate_token_cuts_off_the_old_one_and_alter_changes_only_what_is_given(
    cfg: ClusterConfig,
):
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, OPS.token) as ops:
                await ops.create_topic("erin.t", partitions=1, replicas=1)
            created = await cli(cfg, "create", "erin", "--read", "erin.*", "--write", "erin.*",
                                "--produce-bytes-per-sec", "1e6")  # fmt: skip
            old = printed_token(created, "erin")

            nothing = await cli(cfg, "alter", "erin")
            assert nothing.exit_code == EXIT_USAGE, nothing.output
            assert "nothing to alter" in nothing.output
            clash = await cli(cfg, "alter", "erin", "--rotate-token", "--token-stdin", stdin="x\n")
            assert clash.exit_code == EXIT_USAGE, clash.output

            async with client(cfg, old) as before:
                await before.produce("erin.t", b"before", partition=0)
                rotated = await cli(cfg, "alter", "erin", "--rotate-token")
                new = printed_token(rotated, "erin")
                assert new != old
                # The connection made with the old token is refused from now on.
                with pytest.raises(UnauthorizedError, match="revoked or rotated"):
                    await before.produce("erin.t", b"stale", partition=0)
            async with client(cfg, old) as again:
                with pytest.raises(UnauthorizedError, match="invalid client credential"):
                    await again.list_topics()
            async with client(cfg, new) as erin:
                assert (await erin.produce("erin.t", b"after", partition=0)).offset == 1

            # Grants: a given list replaces the old one; the others stay.
            altered = await cli(cfg, "alter", "erin", "--write", "other.*", "--cluster",
                                "--remove-quota", "produce_bytes_per_sec")  # fmt: skip
            assert altered.exit_code == EXIT_OK, altered.output
            assert altered.stdout.splitlines() == ["altered user erin"]
            user = (await listed(cfg))["erin"]
            assert user["write"] == ["other.*"] and user["read"] == ["erin.*"]
            assert user["cluster"] is True and "produce_bytes_per_sec" not in user
            cleared = await cli(cfg, "alter", "erin", "--clear", "read", "--no-cluster")
            assert cleared.exit_code == EXIT_OK, cleared.output
            user = (await listed(cfg))["erin"]
            assert user["read"] == [] and user["write"] == ["other.*"]
            assert user["cluster"] is False and user["token"] is True
            async with client(cfg, new) as erin:  # the token survived the grant changes
                with pytest.raises(ForbiddenError, match=r"may not produce to topic 'erin\.t'"):
                    await erin.produce("erin.t", b"no longer", partition=0)


async def test_delete_and_create_report_unknown_and_existing_users(cfg: ClusterConfig):
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            token = printed_token(await cli(cfg, "create", "frank", "--read", "*"), "frank")
            twice = await cli(cfg, "create", "frank", "--read", "other")
            assert twice.exit_code == EXIT_CLUSTER_ERROR, twice.output
            assert "USER_EXISTS" in twice.stderr and twice.stdout == ""
            assert (await listed(cfg))["frank"]["read"] == ["*"]  # unchanged
            # A name of cluster.toml's users is changed in the file, not here.
            for args in (("create", "ops", "--read", "*"), ("delete", "viewer")):
                file_user = await cli(cfg, *args)
                assert file_user.exit_code == EXIT_CLUSTER_ERROR, (args, file_user.output)
                assert "[[auth.user]] of cluster.toml" in file_user.stderr, file_user.stderr

            deleted = await cli(cfg, "delete", "frank")
            assert deleted.exit_code == EXIT_OK, deleted.output
            assert deleted.stdout.splitlines() == ["deleted user frank"]
            assert "frank" not in await listed(cfg)
            async with client(cfg, token) as gone:
                with pytest.raises(UnauthorizedError):
                    await gone.list_topics()
            again = await cli(cfg, "delete", "frank")
            assert again.exit_code == EXIT_CLUSTER_ERROR, again.output
            assert "UNKNOWN_USER" in again.stderr and "frank" in again.stderr
            altered = await cli(cfg, "alter", "frank", "--read", "x")
            assert altered.exit_code == EXIT_CLUSTER_ERROR, altered.output
            assert "UNKNOWN_USER" in altered.stderr


async def test_a_caller_without_the_cluster_grant_is_refused(cfg: ClusterConfig):
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            for args in (("create", "mallory", "--read", "*", "--cluster"), ("list",),
                         ("delete", "viewer"), ("alter", "viewer", "--cluster")):  # fmt: skip
                refused = await cli(cfg, *args, token=VIEWER.token)
                assert refused.exit_code == EXIT_CLUSTER_ERROR, (args, refused.output)
                assert "FORBIDDEN" in refused.stderr, (args, refused.stderr)
                assert "token:" not in refused.stdout
            nobody = await cli(cfg, "list", token="not-a-token")
            assert nobody.exit_code == EXIT_CLUSTER_ERROR and "UNAUTHORIZED" in nobody.stderr
            assert await listed(cfg) == {}  # mallory was not created


async def test_list_marks_a_metadata_user_the_file_shadows(cfg: ClusterConfig):
    async with running(cfg) as nodes:
        with trio.fail_after(DEADLINE_S):
            token = printed_token(await cli(cfg, "create", "zed", "--read", "a", "--read", "b*"),
                                  "zed")  # fmt: skip
            # The node restarts with a cluster.toml that has a user of that name.
            await nodes.stop("n1")
            file_zed = User("zed", "tok-zed", read=("x",))
            auth = replace(cfg.auth, users=(OPS, VIEWER, file_zed))
            await nodes.start("n1", replace(cfg, auth=auth))
            users = json.loads((await cli(cfg, "list", "--json")).stdout)
            zeds = {u["source"]: u for u in users if u["name"] == "zed"}
            assert zeds["metadata"]["shadowed"] is True and "shadowed" not in zeds["file"]
            assert zeds["metadata"]["read"] == ["a", "b*"] and zeds["file"]["read"] == ["x"]
            table = await cli(cfg, "list")
            assert table.exit_code == EXIT_OK, table.output
            rows = [line.split() for line in table.stdout.splitlines() if line.startswith("zed")]
            assert rows == [
                ["zed", "file", "yes", "no", "x", "-", "-", "-", "-", "never"],
                ["zed", "metadata", "yes", "no", "a,b*", "-", "-", "-", "-", "never", "(shadowed)"],
            ]
            async with client(cfg, token) as shadowed:  # the file's zed is who the name is
                with pytest.raises(UnauthorizedError):
                    await shadowed.list_topics()


async def test_expiry_options_set_extend_suspend_and_remove_it(cfg: ClusterConfig):
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            created = await cli(cfg, "create", "temp", "--read", "t", "--expires-in", "1h")
            assert created.exit_code == EXIT_OK, created.output
            lines = created.stdout.splitlines()
            assert lines[0] == "created user temp" and lines[2].startswith("token: ")
            shown = (await listed(cfg))["temp"]
            assert lines[1] == f"expires at {shown['expires_at']}"
            in_an_hour = shown["expires_at_ms"] - time.time() * 1000
            assert 3_500_000 < in_an_hour <= 3_600_000 and shown["expired"] is False
            token = lines[2].removeprefix("token: ")

            suspended = await cli(cfg, "alter", "temp", "--expires-at", "2000-01-01T00:00:00Z")
            assert suspended.stdout.splitlines() == [
                "altered user temp", "expires at 2000-01-01T00:00:00Z",
            ]  # fmt: skip
            table = await cli(cfg, "list")
            (row,) = [line.split() for line in table.stdout.splitlines() if line.startswith("temp")]
            assert row[-2:] == ["2000-01-01T00:00:00Z", "(expired)"]
            async with client(cfg, token) as temp:
                with pytest.raises(UnauthorizedError, match="expired at 2000-01-01T00:00:00Z"):
                    await temp.list_topics()

            never = await cli(cfg, "alter", "temp", "--no-expiry")
            assert never.stdout.splitlines() == ["altered user temp", "expires at never"]
            assert "expires_at_ms" not in (await listed(cfg))["temp"]

            past = await cli(cfg, "create", "late", "--expires-at", "2000-01-01T00:00:00Z")
            assert past.exit_code == EXIT_CLUSTER_ERROR and "not in the future" in past.output
            for usage in (
                ["create", "x", "--expires-in", "1h", "--expires-at", "2030-01-01T00:00:00Z"],
                ["create", "x", "--expires-in", "0s"],
                ["create", "x", "--expires-in", "soon"],
                ["alter", "temp", "--no-expiry", "--expires-in", "1h"],
            ):
                refused = await cli(cfg, *usage)
                assert refused.exit_code == EXIT_USAGE, (usage, refused.output)
            assert sorted(await listed(cfg)) == ["temp"]


async def test_deny_options_fence_off_a_star_grant_and_alter_replaces_or_clears_them(
    cfg: ClusterConfig,
):
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, OPS.token) as ops:
                for topic in ("events", "payroll.q1"):
                    await ops.create_topic(topic, partitions=1, replicas=1)
                    await ops.produce(topic, topic.encode(), partition=0)
            created = await cli(
                cfg, "create", "auditor", "--read", "*", "--deny-read", "payroll.*",
                "--group", "*", "--deny-group", "ops-*", "--deny-group", "hr",
                "--deny-write", "x", "--deny-admin", "y*",
            )  # fmt: skip
            token = printed_token(created, "auditor")
            user = (await listed(cfg))["auditor"]
            assert (user["read"], user["deny_read"]) == (["*"], ["payroll.*"])
            assert (user["groups"], user["deny_groups"]) == (["*"], ["ops-*", "hr"])
            assert (user["deny_write"], user["deny_admin"]) == (["x"], ["y*"])
            table = await cli(cfg, "list")
            assert table.exit_code == EXIT_OK, table.output
            (row,) = [line.split() for line in table.stdout.splitlines() if "auditor" in line]
            assert row[8:] == ["read:payroll.*;write:x;admin:y*;groups:ops-*,hr", "never"]

            async with client(cfg, token) as auditor:
                fetched = await auditor.fetch("events", 0, 0, max_wait=0)
                assert [r.value for r in fetched.records] == [b"events"]
                with pytest.raises(ForbiddenError, match=r"deny_read pattern 'payroll\.\*'"):
                    await auditor.fetch("payroll.q1", 0, 0, max_wait=0)
                assert await auditor.list_topics() == ["events"]
                with pytest.raises(ForbiddenError, match="deny_groups pattern 'hr'"):
                    await auditor.commit_offset("hr", "events", 0, 1)

                # A deny list given replaces the old one; the open connection takes it.
                swapped = await cli(cfg, "alter", "auditor", "--deny-read", "events")
                assert swapped.exit_code == EXIT_OK, swapped.output
                user = (await listed(cfg))["auditor"]
                assert user["deny_read"] == ["events"] and user["deny_groups"] == ["ops-*", "hr"]
                with pytest.raises(ForbiddenError, match="deny_read pattern 'events'"):
                    await auditor.fetch("events", 0, 0, max_wait=0)
                fetched = await auditor.fetch("payroll.q1", 0, 0, max_wait=0)
                assert [r.value for r in fetched.records] == [b"payroll.q1"]

                both = await cli(cfg, "alter", "auditor", "--clear", "deny-read",
                                 "--deny-read", "z")  # fmt: skip
                assert both.exit_code == EXIT_USAGE, both.output
                assert "--clear deny-read and --deny-read" in both.output
                cleared = await cli(cfg, "alter", "auditor", "--clear", "deny-read",
                                    "--clear", "deny-group")  # fmt: skip
                assert cleared.exit_code == EXIT_OK, cleared.output
                user = (await listed(cfg))["auditor"]
                assert user["deny_read"] == [] and user["deny_groups"] == []
                assert user["deny_write"] == ["x"] and user["read"] == ["*"]
                await auditor.fetch("events", 0, 0, max_wait=0)
                await auditor.commit_offset("hr", "events", 0, 1)


async def test_deny_options_wait_for_log_format_7(cfg: ClusterConfig):
    """A cluster held at format 6 (a node not upgraded yet) refuses deny rules
    with a message that says why, and still takes users without any."""
    held = replace(cfg, max_log_format=USER_DENY_RULES - 1)
    async with running(held):
        with trio.fail_after(DEADLINE_S):
            await wait_cluster_format(held, USER_DENY_RULES - 1, OPS.token)
            refused = await cli(held, "create", "early", "--read", "*", "--deny-read", "s*")
            assert refused.exit_code == EXIT_CLUSTER_ERROR, refused.output
            assert "UNSUPPORTED_VERSION" in refused.stderr
            assert "deny_read needs log format 7, and this cluster is at 6" in refused.stderr
            # Without deny options nothing of them is sent: format 6 takes it, and a
            # --clear sends a removal, which it takes too.
            printed_token(await cli(held, "create", "early", "--read", "*"), "early")
            cleared = await cli(held, "alter", "early", "--clear", "deny-read")
            assert cleared.exit_code == EXIT_OK, cleared.output
            later = await cli(held, "alter", "early", "--deny-group", "g")
            assert later.exit_code == EXIT_CLUSTER_ERROR, later.output
            assert "deny_groups needs log format 7" in later.stderr
            assert (await listed(held))["early"]["deny_groups"] == []
