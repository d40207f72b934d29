"""``raftlog cluster health``: is every node up, every group led and every replica
in sync? The question a rolling restart asks before it stops the next node.

Like Redpanda's ``rpk cluster health --watch --exit-when-healthy`` and Kafka's
``kafka-topics --describe --under-replicated-partitions``. It reads the same
``cluster_status`` of every node as ``raftlog cluster status`` and reports:

- nodes down: a member of some group (so of the cluster) that does not answer;
- leaderless groups: no reachable node leads them;
- under-replicated groups: a replica the leader does not replicate to steadily
  (its progress is probing or waiting for a snapshot: thesis §3.5 and §5), or
  that lags the leader's log by more than ``--max-lag`` entries, or whose node
  is down. A stopped node of a quiet group still looks caught up in its
  leader's progress, hence the last rule;
- links down: a node whose peer link to another live node is not connected
  (a partition or a firewall that leaves every node reachable from here).

A restarted node counts toward a majority only once it is back in steady
replication, so waiting for ``healthy`` before the next stop keeps every group
writable (README, "Restart a node").
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from .cli_common import (
    EXIT_UNREACHABLE,
    bootstrap_addresses,
    client_credential,
    client_tls,
    cluster_options,
)
from .cli_node import cluster, gather_status, merge_groups
from .groups import IN_SYNC_MAX_LAG

# `cluster health` found the cluster unhealthy (after --wait, if given).
EXIT_UNHEALTHY = 5
# As the nodes' raftlog_under_replicated_groups gauge counts.
DEFAULT_MAX_LAG = IN_SYNC_MAX_LAG
# Between two looks while waiting.
POLL_S = 0.5


@dataclass
class Health:
    """What one look at every node found."""

    nodes: list[str] = field(default_factory=list)  # every member found, by id
    down: list[str] = field(default_factory=list)  # members or addresses not answering
    leaderless: list[str] = field(default_factory=list)  # group labels
    under_replicated: list[dict[str, Any]] = field(default_factory=list)
    links_down: list[str] = field(default_factory=list)  # "n1->n2"

    @property
    def healthy(self) -> bool:
        return not (self.down or self.leaderless or self.under_replicated or self.links_down)

    def as_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "nodes": self.nodes,
            "down": self.down,
            "leaderless": self.leaderless,
            "under_replicated": self.under_replicated,
            "links_down": self.links_down,
        }


def group_label(group: dict[str, Any]) -> str:
    topic = group.get("topic")
    return "(metadata)" if topic is None else f"{topic}/{group.get('partition')}"


def assess(statuses: dict[str, Any], max_lag: int = DEFAULT_MAX_LAG) -> Health:
    """The cluster's health from ``statuses`` (``gather_status``: address -> the
    node's cluster_status, or {"error": ...})."""
    health = Health()
    up = {str(s["node"]): a for a, s in statuses.items() if "error" not in s and "node" in s}
    names: dict[str, str] = {}  # address -> node id, as the answering nodes list them
    for status in statuses.values():
        for node in status.get("nodes") or ():
            if isinstance(node, dict):
                names[str(node.get("address"))] = str(node.get("id"))
    groups = merge_groups(statuses)
    members = set(up)
    for group in groups:
        members.update(str(r.get("node")) for r in group.get("replicas") or ())
    unanswered = [a for a, s in statuses.items() if "error" in s]
    down = {names.get(a, a) for a in unanswered} | (members - set(up))
    health.nodes = sorted(members | down)
    health.down = sorted(down)
    for group in groups:
        label = group_label(group)
        if group.get("role") != "leader":
            health.leaderless.append(label)
            continue
        for replica in group.get("replicas") or ():
            node = str(replica.get("node"))
            if node == group.get("reported_by"):
                continue  # the leader itself
            problem = _replica_problem(replica, node in down, max_lag)
            if problem is not None:
                health.under_replicated.append(
                    {"group": group.get("group"), "label": label, "replica": node,
                     "state": replica.get("state"), "lag": replica.get("lag"),
                     "problem": problem}
                )  # fmt: skip
    for node, address in sorted(up.items()):
        links = statuses[address].get("links")
        if not isinstance(links, dict):
            continue  # a node too old to report its links
        for peer, connected in sorted(links.items()):
            if not connected and peer in members and peer not in down:
                health.links_down.append(f"{node}->{peer}")
    return health


def _replica_problem(replica: dict[str, Any], node_down: bool, max_lag: int) -> str | None:
    if node_down:
        return "its node is down"
    state = replica.get("state")
    if state != "replicate":
        return f"not in steady replication ({state})"
    lag = replica.get("lag")
    if isinstance(lag, int) and lag > max_lag:
        return f"{lag} entries behind (more than {max_lag})"
    return None


def render(health: Health) -> str:
    lines = [f"healthy: {'yes' if health.healthy else 'NO'}"]
    lines.append(f"nodes: {', '.join(health.nodes) or '-'}")
    lines.append(f"nodes down: {', '.join(health.down) or '-'}")
    lines.append(f"leaderless groups: {', '.join(health.leaderless) or '-'}")
    under = [f"{u['label']} ({u['replica']}: {u['problem']})" for u in health.under_replicated]
    lines.append(f"under-replicated groups: {', '.join(under) or '-'}")
    lines.append(f"links down: {', '.join(health.links_down) or '-'}")
    return "\n".join(lines)


# Registered through cli.py's entry for this module, which adds `cluster` (the
# group cli_node defines) once more: the same object, so a no-op.
@cluster.command("health")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--wait",
    "wait_s",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to keep looking until the cluster is healthy (0: look once).",
)
@click.option(
    "--max-lag",
    default=DEFAULT_MAX_LAG,
    show_default=True,
    type=click.IntRange(min=0),
    help="Entries a replica may trail its leader and still count as in sync.",
)
@click.option("--timeout", "timeout_s", default=2.0, show_default=True, help="Per node.")
def cluster_health(
    config: Path | None,
    bootstrap: str | None,
    as_json: bool,
    wait_s: float,
    max_lag: int,
    timeout_s: float,
) -> None:
    """Every node up, every group led, every replica in sync? Exit 0 if so, 5 if not
    (within --wait), 3 if no node answers."""
    addresses = bootstrap_addresses(config, bootstrap)
    deadline = time.monotonic() + wait_s
    tls, credential = client_tls(), client_credential()
    while True:
        statuses = gather_status(addresses, timeout_s=timeout_s, tls=tls, credential=credential)
        health = assess(statuses, max_lag)
        if health.healthy or time.monotonic() + POLL_S > deadline:
            break
        time.sleep(POLL_S)
    click.echo(json.dumps(health.as_json(), indent=2) if as_json else render(health))
    if all("error" in s for s in statuses.values()):
        raise click.exceptions.Exit(EXIT_UNREACHABLE)
    if not health.healthy:
        raise click.exceptions.Exit(EXIT_UNHEALTHY)
