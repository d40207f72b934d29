"""The cluster's log format: who reads what, and raising it (log/features.py).

Two pieces, both on every node:

- ``LogFormats`` is what this node knows. Every peer says in the hello of its
  link to this node which format it reads (``[cluster] max_log_format``
  capped by its build), and the listener keeps that per live link. A peer
  that reads less than the cluster's format is refused at the hello
  (server/listener.py): it could not decode what the others write.
  The hello also says the peer's own ``peer_address``, kept beside it for
  the controller to record (server/membership.py ``register_nodes``).
- ``LogFormatUpgrade`` runs on the controller (the metadata group's leader).
  Once every registered node (and every member of the metadata group) has a
  live link to it and reads a higher format than the cluster's, it commits
  ``SetLogFormat`` with the lowest of them.
  So the format rises within a round of the last node of a rolling upgrade
  coming up, and never while a node is down or on an older version. A node
  that is down is not known to read anything: etcd waits for every member in
  the same way before it raises its cluster version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import trio
from raftlog.client.protocol import NOT_SAID, NotSaid
from raftlog.log.commands import SetLogFormat
from raftlog.log.features import BASELINE_LOG_FORMAT
from raftlog.log.metadata import METADATA_GROUP_ID
from raftlog.raft.types import Role

from .periodic import run_rounds

log = logging.getLogger("raftlog.log_format")

# How often the controller looks whether the format can rise, at most: two
# election timeouts when that is shorter (a few dict lookups on one node).
CHECK_INTERVAL_S = 2.0
# How long one SetLogFormat may take to commit before the round moves on.
PROPOSE_TIMEOUT_S = 10.0


def _baseline() -> int:
    return BASELINE_LOG_FORMAT


class _PeerHello(NamedTuple):
    conn_id: int  # the connection it was said on
    log_format: int
    peer_address: str | NotSaid | None


@dataclass
class LogFormats:
    """This node's own format, the cluster's, and each connected peer's."""

    # The format this node says it reads (ClusterConfig.log_format).
    own: int
    # The cluster's format as this node's metadata state has it.
    cluster: Callable[[], int] = _baseline
    # peer -> what it said on its live link (and on which connection).
    _links: dict[str, _PeerHello] = field(default_factory=dict)

    def peer_connected(
        self,
        peer: str,
        conn_id: int,
        log_format: int,
        peer_address: str | NotSaid | None = NOT_SAID,
    ) -> None:
        self._links[peer] = _PeerHello(conn_id, log_format, peer_address)

    def peer_gone(self, peer: str, conn_id: int) -> None:
        # Only the link that set it: a reconnect may have replaced it already.
        link = self._links.get(peer)
        if link is not None and link.conn_id == conn_id:
            del self._links[peer]

    def of_peer(self, peer: str) -> int | None:
        """The format ``peer`` said it reads on its live link; None: no live link."""
        link = self._links.get(peer)
        return None if link is None else link.log_format

    def peer_address_of(self, peer: str) -> str | NotSaid | None:
        """The peer address ``peer`` gave itself on its live link (None: it has
        none); NOT_SAID without a live link, or from a node too old to say."""
        link = self._links.get(peer)
        return NOT_SAID if link is None else link.peer_address

    def readable_by_all(self, nodes: list[str], me: str) -> tuple[int, list[str]]:
        """The highest format every one of ``nodes`` reads, and the nodes that
        have no live link (whose format is unknown: the result counts them as
        reading only the baseline)."""
        lowest = self.own
        unknown = []
        for node in nodes:
            if node == me:
                continue
            fmt = self.of_peer(node)
            if fmt is None:
                unknown.append(node)
                lowest = BASELINE_LOG_FORMAT
            else:
                lowest = min(lowest, fmt)
        return lowest, unknown


@dataclass
class LogFormatUpgrade:
    driver: Any  # server.driver.MultiRaft
    formats: LogFormats
    interval_s: float = CHECK_INTERVAL_S
    # What the last round logged, so that a wait is logged once, not every round.
    _last_said: str = ""

    @classmethod
    def for_node(cls, driver: Any, formats: LogFormats) -> LogFormatUpgrade:
        cfg = driver.cfg
        election_timeout_s = cfg.election_ticks * cfg.tick_ms / 1000.0
        return cls(driver, formats, interval_s=min(CHECK_INTERVAL_S, 2 * election_timeout_s))

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await run_rounds(self.interval_s, self.check, log, "log_format", task_status)

    async def check(self) -> int | None:
        """One round: the format committed, or None when nothing rose."""
        metrics = getattr(self.driver, "metrics", None)
        if metrics is not None:
            metrics.log_format.set(self.driver.metadata.log_format, of="cluster")
            metrics.log_format.set(self.formats.own, of="node")
        meta_group = self.driver.groups.get(METADATA_GROUP_ID)
        if meta_group is None or meta_group.role is not Role.LEADER:
            return None
        meta = self.driver.metadata
        current = meta.log_format
        # Registered nodes, and members of group 0 not registered yet (a node
        # being added): each will replicate something written in the format.
        nodes = sorted(set(meta.nodes) | set(meta_group.raft.conf_state.all_nodes()))
        target, unknown = self.formats.readable_by_all(nodes, self.driver.node_id)
        if target <= current:
            reads = self._reads(nodes)
            if any(fmt > current for fmt in reads.values()):  # an upgrade under way
                listed = ",".join(f"{n}:{fmt or '?'}" for n, fmt in reads.items())
                self._say(
                    f"event=log_format_upgrade_waits cluster={current} "
                    f"no_link_from={','.join(unknown) or '-'} reads={listed}"
                )
            return None
        waiter = self.driver.submit(meta_group.gid, SetLogFormat(target))
        outcome = await waiter.wait(trio.current_time() + PROPOSE_TIMEOUT_S)
        if outcome.error is not None or outcome.value is None or not outcome.value.ok:
            self._say(f"event=log_format_upgrade_failed to={target} reason={outcome.message!r}")
            return None
        log.info("event=log_format_upgraded from=%d to=%d", current, target)
        self._last_said = ""
        return target

    def _reads(self, nodes: list[str]) -> dict[str, int]:
        """What each node reads, as far as this one knows (0: no live link)."""
        me = self.driver.node_id
        return {n: self.formats.own if n == me else self.formats.of_peer(n) or 0 for n in nodes}

    def _say(self, line: str) -> None:
        if line != self._last_said:
            log.info(line)
            self._last_said = line
