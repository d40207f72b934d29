"""Day-2 operator commands: ``member``, ``partition``, ``leader`` and ``cluster rebalance``.

    raftlog member list   [--json]
    raftlog member add    ID --address HOST:PORT      # start the node first (join = true)
    raftlog member remove ID [--dry-run]              # drains its replicas, then removes it
    raftlog partition reassign TOPIC PARTITION --replicas n1,n2,n4
    raftlog leader transfer    TOPIC PARTITION --to NODE
    raftlog leader transfer-metadata --to NODE        # the controller (group 0)
    raftlog leader drain       NODE [--dry-run]       # before restarting NODE
    raftlog cluster rebalance  [--dry-run]            # spread partition leaders evenly

Every command takes ``--config PATH`` (default ./cluster.toml) or
``--bootstrap HOST:PORT[,...]`` and ``--timeout SECONDS`` (whole operation).
Exit codes as for the data-path commands (cli_common): 0 ok, 1 the cluster
answered an error or the operation did not complete, 2 usage, 3 unreachable.
Each step is idempotent, so re-running an interrupted command continues it.

Adding a node: give it a [[node]] entry with ``join = true`` (the running
nodes need not be restarted: they learn its address from the metadata),
start it (``raftlog node start --config F --node n4``; it waits, hosting
nothing), then ``raftlog member add n4 --address HOST:PORT``, then move work
to it (``partition reassign``, ``cluster rebalance``).

Replacing a node whose disk is lost: its peers refuse it under its old id (a
new incarnation, DESIGN §3 rule 7). Add a new node as above, then
``raftlog member remove OLD`` (its replicas move to the remaining members).
The old id may come back only after that removal: wipe its data dir, set
``join = true`` on it, start it and ``raftlog member add OLD --address ...``
(re-adding makes the peers trust its new incarnation; stop the old process
first).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
from raftlog.client.errors import TLSError

from .cli_common import (
    EXIT_CLUSTER_ERROR,
    EXIT_UNREACHABLE,
    bootstrap_addresses,
    client_credential,
    client_tls,
    cluster_options,
)
from .cli_node import cluster as _cluster_group
from .cli_node import gather_status, merge_groups
from .ops_client import AdminSession, OpsError, UnreachableError
from .rebalance import (
    LeaderMove,
    PartitionView,
    plan_drain,
    plan_leader_drain,
    plan_leader_moves,
    plan_metadata_leader_drain,
)

T = TypeVar("T")

_TIMEOUT = click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.1),
    default=120.0,
    show_default=True,
    help="Deadline of the whole operation in seconds (retries included).",
)
_MEMBER_ROLES = ("voter", "controller_leader")


def _run(fn: Callable[[], T]) -> T:
    """Map the session's errors to the documented exit codes."""
    try:
        return fn()
    except OpsError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_CLUSTER_ERROR) from None
    except UnreachableError as exc:
        click.echo(f"cannot reach the cluster: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_UNREACHABLE) from None


def _session(config: Path | None, bootstrap: str | None, timeout_s: float) -> AdminSession:
    tls = client_tls()
    try:
        context = tls.context() if tls is not None else None
    except TLSError as exc:
        raise click.UsageError(str(exc)) from None
    return AdminSession(
        bootstrap_addresses(config, bootstrap),
        timeout_s=timeout_s,
        ssl_context=context,
        credential=client_credential(),
    )


@dataclass(slots=True)
class ClusterView:
    addresses: dict[str, str]  # node id -> address
    partitions: list[PartitionView]
    metadata_leader: str | None
    # Nodes whose cluster_status answered just now (empty: not known).
    live: set[str] = field(default_factory=set)


def cluster_view(session: AdminSession) -> ClusterView:
    """Nodes, partitions, replicas and (highest-term) leaders, from every node."""
    meta = session.any("metadata")
    addresses = {n["id"]: n["address"] for n in meta.get("nodes", [])}
    session.learn(list(addresses.values()))
    leaders: dict[int, str | None] = {}
    metadata_leader = None
    statuses = gather_status(
        list(addresses.values()),
        timeout_s=2.0,
        tls=session.ssl_context,
        credential=session.credential,
    )
    live = {s["node"] for s in statuses.values() if "error" not in s and s.get("node")}
    for row in merge_groups(statuses):
        leaders[row.get("group")] = row.get("leader")
        if row.get("group") == 0:
            metadata_leader = row.get("leader")
    partitions = [
        PartitionView(
            topic["name"],
            p["partition"],
            p["group"],
            tuple(p["replicas"]),
            leaders.get(p["group"]) or p.get("leader"),
        )
        for topic in meta.get("topics", [])
        for p in topic["partitions"]
    ]
    return ClusterView(addresses, partitions, metadata_leader, live)


def metadata_voters(session: AdminSession) -> list[str]:
    """The voters of the metadata group (group 0), as its members see them."""
    return [
        m["id"] for m in session.follow("member_list", {})["nodes"] if m["role"] in _MEMBER_ROLES
    ]


def plan_node_leader_drain(
    view: ClusterView, node: str, voters: list[str]
) -> tuple[list[LeaderMove], str | None]:
    """``leader drain NODE``: the partition transfers, then the metadata group's
    new leader when NODE leads it (None otherwise)."""
    moves = plan_leader_drain(view.partitions, node)
    target = plan_metadata_leader_drain(
        view.partitions, moves, node, view.metadata_leader, voters, view.live or None
    )
    return moves, target


def reassign(
    session: AdminSession,
    view: ClusterView,
    topic: str,
    partition: int,
    replicas: list[str],
    deadline: float,
) -> dict[str, Any]:
    """The group's membership at its leader, then the metadata at the metadata leader."""
    fields = {"topic": topic, "partition": partition, "replicas": replicas}
    current = next(
        (p for p in view.partitions if p.topic == topic and p.partition == partition), None
    )
    start = view.addresses.get(current.leader) if current and current.leader else None
    reply = session.follow("partition_reassign", fields, start, deadline)
    if not reply.get("metadata_updated"):
        reply = session.follow(
            "partition_reassign",
            {**fields, "phase": "metadata"},
            reply.get("metadata_leader_address"),
            deadline,
        )
    return reply


# ---------------------------------------------------------------- member


@click.group()
def member() -> None:
    """List, add and remove cluster members (nodes)."""


@member.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@cluster_options
@_TIMEOUT
def member_list(
    as_json: bool, config: Path | None, bootstrap: str | None, timeout_s: float
) -> None:
    """Every node with its role in the metadata group and the groups it replicates."""
    session = _session(config, bootstrap, timeout_s)
    # follow: retries NOT_AVAILABLE (a node that cannot confirm its metadata
    # right after a controller change) on the other nodes until the deadline.
    nodes = _run(lambda: session.follow("member_list", {}))["nodes"]
    if as_json:
        click.echo(json.dumps(nodes, indent=2, sort_keys=True))
        return
    click.echo(f"{'ID':<10} {'ADDRESS':<22} {'ROLE':<18} GROUPS")
    for n in nodes:
        groups = ",".join(str(g) for g in n.get("groups", [])) or "-"
        click.echo(f"{n['id']:<10} {n['address']:<22} {n['role']:<18} {groups}")


@member.command("add")
@click.argument("node_id", metavar="ID")
@click.option("--address", required=True, metavar="HOST:PORT", help="The new node's address.")
@cluster_options
@_TIMEOUT
def member_add(
    node_id: str, address: str, config: Path | None, bootstrap: str | None, timeout_s: float
) -> None:
    """Add node ID: register it, make it a learner of the metadata group, then a voter.

    Start the node first with `join = true` in its [[node]] entry; the command
    waits until it has caught up. Move partitions to it with `partition
    reassign` or `cluster rebalance`.
    """
    session = _session(config, bootstrap, timeout_s)
    deadline = time.monotonic() + timeout_s
    reply = _run(
        lambda: session.follow("member_add", {"node": node_id, "address": address}, None, deadline)
    )
    click.echo(f"{reply['node']} added at {reply['address']} as {reply['role']}")


@member.command("remove")
@click.argument("node_id", metavar="ID")
@click.option("--dry-run", is_flag=True, help="Print the replica moves, change nothing.")
@cluster_options
@_TIMEOUT
def member_remove(
    node_id: str, dry_run: bool, config: Path | None, bootstrap: str | None, timeout_s: float
) -> None:
    """Remove node ID: move each of its replicas to another node, then drop it from
    every group and from the metadata group. Safe to re-run after an interruption."""
    session = _session(config, bootstrap, timeout_s)
    deadline = time.monotonic() + timeout_s

    def main() -> None:
        view = cluster_view(session)
        members = session.follow("member_list", {})["nodes"]
        candidates = [
            m["id"]
            for m in members
            if m["role"] in _MEMBER_ROLES and m.get("registered", True) and m["id"] != node_id
        ]
        plan = plan_drain(view.partitions, node_id, candidates)
        for p, new in plan:
            click.echo(f"move {p.topic}/{p.partition}: {','.join(p.replicas)} -> {','.join(new)}")
            if not new:
                raise OpsError("INVALID_REQUEST", f"{p.topic}/{p.partition} has no other replica")
        if dry_run:
            return
        for p, new in plan:
            reassign(session, view, p.topic, p.partition, list(new), deadline)
        session.follow("member_remove", {"node": node_id}, None, deadline)
        click.echo(f"{node_id} removed; it can be stopped now")

    _run(main)


# ---------------------------------------------------------------- partition, leader


@click.group()
def partition() -> None:
    """Partition operations."""


@partition.command("reassign")
@click.argument("topic")
@click.argument("partition_id", metavar="PARTITION", type=click.IntRange(min=0))
@click.option(
    "--replicas", required=True, help="New replica list, e.g. n1,n2,n4 (first = preferred leader)."
)
@cluster_options
@_TIMEOUT
def partition_reassign(
    topic: str,
    partition_id: int,
    replicas: str,
    config: Path | None,
    bootstrap: str | None,
    timeout_s: float,
) -> None:
    """Move a partition online: new replicas join as learners and catch up, the voters
    switch in one joint-consensus step, the old replicas leave, metadata follows."""
    wanted = [r.strip() for r in replicas.split(",") if r.strip()]
    if not wanted or len(set(wanted)) != len(wanted):
        raise click.BadParameter("give distinct node ids, e.g. n1,n2,n4", param_hint="--replicas")
    session = _session(config, bootstrap, timeout_s)
    deadline = time.monotonic() + timeout_s

    def main() -> dict[str, Any]:
        return reassign(session, cluster_view(session), topic, partition_id, wanted, deadline)

    reply = _run(main)
    click.echo(
        f"{topic}/{partition_id} (group {reply['group']}): replicas {','.join(reply['replicas'])}"
    )


@click.group()
def leader() -> None:
    """Leadership operations."""


@leader.command("transfer")
@click.argument("topic")
@click.argument("partition_id", metavar="PARTITION", type=click.IntRange(min=0))
@click.option("--to", "to", required=True, metavar="NODE", help="The replica to lead.")
@cluster_options
@_TIMEOUT
def leader_transfer(
    topic: str,
    partition_id: int,
    to: str,
    config: Path | None,
    bootstrap: str | None,
    timeout_s: float,
) -> None:
    """Hand the partition's leadership to replica NODE (Raft thesis §3.10)."""
    session = _session(config, bootstrap, timeout_s)
    deadline = time.monotonic() + timeout_s

    def main() -> dict[str, Any]:
        view = cluster_view(session)
        current = next(
            (p for p in view.partitions if p.topic == topic and p.partition == partition_id), None
        )
        start = view.addresses.get(current.leader) if current and current.leader else None
        fields = {"topic": topic, "partition": partition_id, "to": to}
        return session.follow("leader_transfer", fields, start, deadline)

    reply = _run(main)
    click.echo(f"{topic}/{partition_id}: leader {reply['leader']} ({reply.get('leader_address')})")


@leader.command("transfer-metadata")
@click.option("--to", "to", required=True, metavar="NODE", help="The voter of group 0 to lead.")
@cluster_options
@_TIMEOUT
def leader_transfer_metadata(
    to: str, config: Path | None, bootstrap: str | None, timeout_s: float
) -> None:
    """Hand the metadata group's leadership (the controller, group 0) to voter NODE.

    Like `leader transfer` (Raft thesis §3.10): no election gap, and topic
    operations continue at the new leader. NODE must be a running voter of
    the metadata group; naming the current leader changes nothing.
    """
    session = _session(config, bootstrap, timeout_s)
    deadline = time.monotonic() + timeout_s
    # Any node will do: a follower answers NOT_LEADER with the leader's address.
    reply = _run(lambda: session.follow("metadata_leader_transfer", {"to": to}, None, deadline))
    click.echo(f"metadata: leader {reply['leader']} ({reply.get('leader_address')})")


@leader.command("drain")
@click.argument("node_id", metavar="NODE")
@click.option("--dry-run", is_flag=True, help="Print the transfers, change nothing.")
@cluster_options
@_TIMEOUT
def leader_drain(
    node_id: str, dry_run: bool, config: Path | None, bootstrap: str | None, timeout_s: float
) -> None:
    """Move every leadership off NODE (e.g. before restarting it): its partitions',
    then the metadata group's (the controller) if NODE holds it."""
    session = _session(config, bootstrap, timeout_s)
    deadline = time.monotonic() + timeout_s

    def main() -> int:
        view = cluster_view(session)
        # member_list only when needed: it is one more linearizable metadata read.
        voters = metadata_voters(session) if view.metadata_leader == node_id else []
        moves, meta_to = plan_node_leader_drain(view, node_id, voters)
        failed = _transfer_all(session, view, moves, dry_run, deadline)
        if meta_to is not None:
            failed += _transfer_metadata(session, view, node_id, meta_to, dry_run, deadline)
        return failed

    if _run(main):
        raise click.exceptions.Exit(EXIT_CLUSTER_ERROR)


def _transfer_all(
    session: AdminSession, view: ClusterView, moves: list[Any], dry_run: bool, deadline: float
) -> int:
    """Run leader transfers one by one; the number that failed."""
    failed = 0
    for m in moves:
        click.echo(f"transfer {m.topic}/{m.partition}: {m.frm} -> {m.to}")
        if dry_run:
            continue
        fields = {"topic": m.topic, "partition": m.partition, "to": m.to}
        try:
            session.follow("leader_transfer", fields, view.addresses.get(m.frm), deadline)
        except OpsError as exc:  # one stuck partition must not stop the others
            failed += 1
            click.echo(f"  failed: {exc}", err=True)
    return failed


def _transfer_metadata(
    session: AdminSession, view: ClusterView, frm: str, to: str, dry_run: bool, deadline: float
) -> int:
    """The metadata group's leadership from ``frm`` to ``to``; 1 if it failed."""
    click.echo(f"transfer metadata (group 0): {frm} -> {to}")
    if dry_run:
        return 0
    try:
        session.follow("metadata_leader_transfer", {"to": to}, view.addresses.get(frm), deadline)
    except OpsError as exc:
        click.echo(f"  failed: {exc}", err=True)
        return 1
    return 0


@click.command("rebalance")
@click.option("--dry-run", is_flag=True, help="Print the transfers, change nothing.")
@cluster_options
@_TIMEOUT
def rebalance(dry_run: bool, config: Path | None, bootstrap: str | None, timeout_s: float) -> None:
    """Spread partition leaders evenly over the nodes with leadership transfers."""
    session = _session(config, bootstrap, timeout_s)
    deadline = time.monotonic() + timeout_s

    def main() -> int:
        view = cluster_view(session)
        nodes = sorted({r for p in view.partitions for r in p.replicas})
        moves = plan_leader_moves(view.partitions, nodes)
        if not moves:
            click.echo("leaders are balanced")
        return _transfer_all(session, view, moves, dry_run, deadline)

    if _run(main):
        raise click.exceptions.Exit(EXIT_CLUSTER_ERROR)


# `raftlog cluster rebalance`: the cluster group lives in cli_node; cli.py
# imports cli_node before this module, and this attaches the command to it.
_cluster_group.add_command(rebalance)
