"""The CLI against real node processes with [[auth.user]]: ``--token`` and
RAFTLOG_TOKEN pick the user, a command reading the cluster.toml finds the
operator's token in it, and refusals are exit code 1 with the code on stderr."""

from __future__ import annotations

import json
import signal
from dataclasses import replace

import pytest
from click.testing import CliRunner
from raftlog.server.acl import User
from raftlog.server.cli import main
from raftlog.server.cli_common import EXIT_CLUSTER_ERROR, TOKEN_ENV
from raftlog.server.config import AuthConfig

from .cluster_harness import LocalCluster
from .test_node_processes import WAIT_S, wait_until

OPS = User("ops", "tok-ops", read=("*",), write=("*",), admin=("*",), groups=("*",), cluster=True)
BILLING = User("billing", "tok-billing", read=("billing.*",), write=("billing.*",),
               admin=("billing.*",))  # fmt: skip
ONE_REPLICA = ("--partitions", "1", "--replicas", "1")


def run(cluster: LocalCluster, *args: str, token: str | None = None, stdin: str | None = None):
    env = {TOKEN_ENV: token} if token is not None else {}
    result = CliRunner().invoke(
        main, [*args, "--config", str(cluster.config_path)], input=stdin, env=env
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.integration
def test_cli_users_tokens_and_refusals(local_cluster) -> None:
    cluster = local_cluster(1, auth=AuthConfig(peer_token="peer", users=(OPS, BILLING)))
    cluster.start_all()  # the harness finds the operator's token in cluster.toml too
    cluster.wait_for_leaders(deadline=WAIT_S)
    # No --token: the file's first user with cluster = true (ops).
    code, out, err = run(cluster, "topic", "create", "events", *ONE_REPLICA)
    assert code == 0, err
    code, out, err = run(cluster, "cluster", "status", "--json")
    assert code == 0, err
    assert all("error" not in s for s in json.loads(out).values()), out
    # RAFTLOG_TOKEN: billing creates its own topic and sees only that one.
    code, out, err = run(cluster, "topic", "create", "billing.orders", *ONE_REPLICA,
                         token=BILLING.token)  # fmt: skip
    assert code == 0, err
    code, out, err = run(cluster, "topic", "list", token=BILLING.token)
    assert code == 0 and out.split() == ["billing.orders"], (out, err)
    code, out, err = run(cluster, "produce", "events", token=BILLING.token, stdin="nope\n")
    assert code == EXIT_CLUSTER_ERROR
    assert "FORBIDDEN" in err and "no permission on topic 'events'" in err, err
    # --token wins over the environment.
    code, out, err = run(cluster, "topic", "list", "--token", OPS.token, token=BILLING.token)
    assert code == 0 and sorted(out.split()) == ["billing.orders", "events"], (out, err)
    code, out, err = run(cluster, "topic", "list", token="wrong")
    assert code == EXIT_CLUSTER_ERROR and "UNAUTHORIZED" in err, (out, err)
    # The refused produce appended nothing.
    code, out, err = run(cluster, "consume", "events", "--from-beginning", "--max", "10")
    assert code == 0 and out == "", (out, err)


def add_billing_to_the_file(cluster: LocalCluster) -> None:
    """Start the nodes with only OPS, check BILLING is refused, then write a
    cluster.toml that has BILLING too (the nodes have not read it yet)."""
    cluster.start_all()
    cluster.wait_for_leaders(deadline=WAIT_S)
    code, out, err = run(cluster, "topic", "list", token=BILLING.token)
    assert code == EXIT_CLUSTER_ERROR and "UNAUTHORIZED" in err, (out, err)
    cluster.cfg = replace(cluster.cfg, auth=AuthConfig(peer_token="peer", users=(OPS, BILLING)))
    cluster.write_config()


@pytest.mark.integration
def test_sighup_reloads_users_of_a_running_node(local_cluster) -> None:
    cluster = local_cluster(1, auth=AuthConfig(peer_token="peer", users=(OPS,)))
    add_billing_to_the_file(cluster)
    cluster.procs["n1"].send_signal(signal.SIGHUP)
    wait_until(lambda: "event=auth_reloaded" in cluster.log_text("n1"), "the node to reload")
    code, out, err = run(cluster, "topic", "list", token=BILLING.token)
    assert code == 0 and out == "", (out, err)
    assert cluster.is_running("n1")  # SIGHUP reloads; it does not stop the node


@pytest.mark.integration
def test_cluster_reload_reloads_every_node_from_one_place(local_cluster) -> None:
    cluster = local_cluster(3, auth=AuthConfig(peer_token="peer", users=(OPS,)))
    add_billing_to_the_file(cluster)

    code, out, err = run(cluster, "cluster", "reload", "--json")
    assert code == 0, (out, err)
    report = json.loads(out)
    assert report["problems"] == []
    replies = list(report["nodes"].values())
    assert sorted(r["node"] for r in replies) == ["n1", "n2", "n3"]
    assert all(r["reloaded"] == {"auth": None} for r in replies), replies
    assert len({r["auth"]["fingerprint"] for r in replies}) == 1
    assert all(r["auth"]["users"] == 2 for r in replies)
    for node in ("n1", "n2", "n3"):  # every node took it, not only the one asked first
        assert "event=auth_reloaded" in cluster.log_text(node)
    code, out, err = run(cluster, "topic", "list", token=BILLING.token)
    assert code == 0, (out, err)

    # Only a user with cluster = true may ask.
    code, out, err = run(cluster, "cluster", "reload", token=BILLING.token)
    assert code == EXIT_CLUSTER_ERROR and "FORBIDDEN" in err, (out, err)

    # A file that does not load: every node says so and keeps what it had.
    cluster.config_path.write_text(
        cluster.config_path.read_text() + '\n[[auth.user]]\nname = "broken"\n'
    )
    code, out, err = run(cluster, "cluster", "reload")
    assert code == EXIT_CLUSTER_ERROR, (out, err)
    assert out.count("FAILED") == 3 and "kept the old config" in err, (out, err)
    code, out, err = run(cluster, "topic", "list", token=BILLING.token)
    assert code == 0, (out, err)
    assert all(cluster.is_running(n) for n in ("n1", "n2", "n3"))


def test_reload_problems_name_failures_unreached_nodes_and_differing_auth() -> None:
    from raftlog.server.cli_node import reload_problems

    def reply(node: str, fingerprint: str, auth_error: str | None = None) -> dict:
        auth = {"fingerprint": fingerprint, "users": 1, "client_tokens": 0}
        return {"node": node, "reloaded": {"auth": auth_error}, "auth": auth}

    same = {"a1": reply("n1", "aaaa"), "a2": reply("n2", "aaaa")}
    assert reload_problems(same) == []
    problems = reload_problems(
        {**same, "a2": reply("n2", "bbbb", "bad file"), "a3": {"error": "a3: refused"}}
    )
    assert problems[0] == "node n2: auth kept the old config: bad file"
    assert problems[1] == "a3: not reloaded: a3: refused"
    assert "n1 aaaa, n2 bbbb" in problems[2]
