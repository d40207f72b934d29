"""Day-2 operations on a running cluster: the member_* and partition_reassign handlers.

Every membership change goes through the group's log as conf changes of the
Raft core (DESIGN §3 rule 6), in the order that keeps the group available:

1. new members join as LEARNERS (they get the log but never count towards a
   quorum, thesis §4.2.1), so a slow catch-up cannot stall commits;
2. once every learner holds everything committed and its match is within
   ``LEARNER_MAX_LAG`` of the leader's last index, ONE conf change switches
   the voters. Several voter changes
   enter joint consensus, which the core leaves by itself (``auto_leave``,
   Raft §6); a single one is a one-server change (thesis §4.1). The core
   refuses a second change while one is unapplied, and a new leader's
   pending index starts at its last index (its first-entry rule);
3. if the leader itself is leaving while a remaining voter exists, it hands
   leadership to that voter first (thesis §3.10) and tells the caller to
   retry at the new leader, so no election gap is needed.

``converge`` is idempotent: it looks at the current ConfState and does the
next missing step, so a retry after a timeout or a leader change simply
continues. The metadata group is updated last (SET_PARTITION_REPLICAS): the
driver creates and deletes partition groups from metadata, so metadata must
never name a replica before the group's own configuration does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import trio
from raftlog.client.errors import ErrorCode
from raftlog.log.commands import RegisterNode, SetPartitionReplicas, UnregisterNode
from raftlog.log.features import NODE_PEER_ADDRESS
from raftlog.log.metadata import NodeInfo
from raftlog.raft.errors import NotLeaderError, ProposalDroppedError
from raftlog.raft.types import ConfChange, ConfChangeItem, ConfChangeType, Role

from . import membership
from .config import parse_address
from .errors import HandlerError, request_deadline
from .groups import METADATA_GROUP, Group
from .snapshot_transfer import PeerConnection, TransferError

# How long `member add` waits for the new node to say which incarnation it is.
ASK_INCARNATION_TIMEOUT_S = 5.0

log = logging.getLogger("raftlog.membership")

DEFAULT_TIMEOUT_S = 30.0
# A learner this close to the leader's last index is promoted: the rest
# arrives with the next appends; waiting for an exact match under load might
# never end.
LEARNER_MAX_LAG = 64
# Bounded polling of the conf state between driver turns.
POLL_S = 0.05

Handler = Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]]


class NodeIdentity(NamedTuple):
    """What a node says about itself when `member add` asks (its cluster_status)."""

    incarnation: str
    # Its listener for the other nodes, if it has one (cluster.toml peer_address).
    peer_address: str | None = None


class MembershipOps:
    """Handlers for member_list/add/remove and partition_reassign (one per node)."""

    def __init__(self, handlers: Any) -> None:
        self.h = handlers
        self.driver = handlers.driver
        self.node_id: str = handlers.node_id
        # (node, address, timeout_s) -> who the node at ``address`` says it is;
        # in-process test clusters put their own lookup here.
        self.ask_identity: Callable[[str, str, float], Awaitable[NodeIdentity]] = (
            self._dial_identity
        )

    def handlers(self) -> dict[str, Handler]:
        return {
            "member_list": self.member_list,
            "member_add": self.member_add,
            "member_remove": self.member_remove,
            "partition_reassign": self.partition_reassign,
        }

    # ------------------------------------------------------------ helpers

    @property
    def meta(self) -> Any:
        return self.driver.metadata

    def _not_leader(self, gid: int, leader: str | None, why: str = "") -> HandlerError:
        return HandlerError(
            ErrorCode.NOT_LEADER,
            why or f"node {self.node_id} is not the leader of group {gid}",
            leader=leader,
            leader_address=self.driver.leader_address(leader),
        )

    def _meta_leader(self) -> Group:
        group = self.driver.groups[METADATA_GROUP]
        if group.role is not Role.LEADER:
            raise self._not_leader(METADATA_GROUP, group.raft.leader_id)
        return group

    async def _pause(self, deadline: float) -> None:
        """Until the next driver turn, at most POLL_S (a bounded poll)."""
        await self.driver.wait_changed(min(deadline, trio.current_time() + POLL_S))

    def _propose_conf(self, group: Group, cc: ConfChange) -> bool:
        """Propose ``cc`` now; False when the core defers it (a change is pending)."""
        try:
            index = group.raft.propose_conf_change(cc)
        except NotLeaderError as exc:
            raise self._not_leader(group.gid, exc.leader) from None
        except ProposalDroppedError as exc:
            log.debug("event=conf_change_deferred group=%d reason=%s", group.gid, exc)
            return False
        membership.wake(self.driver, group)
        log.info(
            "event=conf_change_proposed group=%d index=%d changes=%s",
            group.gid,
            index,
            ",".join(f"{i.type.name}:{i.node_id}" for i in cc.changes) or "leave_joint",
        )
        return True

    async def _metadata_command(self, cmd: Any, deadline: float) -> None:
        self._meta_leader()
        outcome = await self.driver.propose(METADATA_GROUP, cmd, deadline)
        if outcome.error is not None:
            raise HandlerError(outcome.error, outcome.message, **outcome.details)
        error = getattr(outcome.value, "error", None)
        if error:
            raise HandlerError(ErrorCode(error), getattr(outcome.value, "message", "") or error)

    # ------------------------------------------------------------ the state machine of a change

    async def converge(
        self, group: Group, voters: set[str], keep_learners: set[str], deadline: float
    ) -> None:
        """Drive ``group``'s ConfState to ``voters`` (+ ``keep_learners``), step by step."""
        while True:
            cs = group.raft.conf_state
            if not cs.is_joint() and set(cs.voters) == voters and set(cs.learners) <= keep_learners:
                return
            if trio.current_time() >= deadline:
                raise HandlerError(
                    ErrorCode.TIMEOUT,
                    f"group {group.gid}: membership change incomplete at voters="
                    f"{','.join(cs.voters)} learners={','.join(cs.learners)}; "
                    f"{self._lag_hint(group, voters)} (retry continues it)",
                )
            if group.role is not Role.LEADER:
                await self._await_known_leader(group, deadline)
                raise self._not_leader(group.gid, group.raft.leader_id)
            if not self._next_step(group, voters, keep_learners):
                await self._pause(deadline)
                continue
            await self._pause(deadline)

    async def _await_known_leader(self, group: Group, deadline: float) -> None:
        """Right after a hand-over the new leader is not known yet; a redirect that
        names it saves the caller a round of guessing (bounded: one election timeout)."""
        cfg = self.driver.cfg
        until = min(deadline, trio.current_time() + cfg.election_ticks * cfg.tick_ms / 1000.0)
        while group.raft.leader_id is None and trio.current_time() < until:
            await self.driver.wait_changed(min(until, trio.current_time() + POLL_S))

    def _next_step(self, group: Group, voters: set[str], keep: set[str]) -> bool:
        """Propose the next conf change if one can go now; False = wait."""
        status = group.raft.status()
        cs = status.conf_state
        if cs.is_joint():
            if cs.auto_leave:
                return False  # the core leaves it as soon as it is applied
            return self._propose_conf(group, ConfChange(leave_joint=True))
        current_voters, learners = set(cs.voters), set(cs.learners)
        missing = sorted(voters - current_voters - learners)
        if missing:
            items = tuple(ConfChangeItem(ConfChangeType.ADD_LEARNER, n) for n in missing)
            context = membership.base_context(cs)
            return self._propose_conf(group, ConfChange(changes=items, context=context))
        if self._lagging(group, voters & learners):
            return False
        if self.node_id in current_voters and self.node_id not in voters:
            remaining = sorted(voters & current_voters)
            if remaining:
                self._hand_over(group, remaining)
                return False
        adds = sorted(voters - current_voters)
        removes = sorted((current_voters | learners) - voters - keep)
        items = tuple(ConfChangeItem(ConfChangeType.ADD_VOTER, n) for n in adds) + tuple(
            ConfChangeItem(ConfChangeType.REMOVE_NODE, n) for n in removes
        )
        if not items:
            return False
        return self._propose_conf(group, ConfChange(changes=items))

    def _lagging(self, group: Group, nodes: set[str]) -> list[str]:
        status = group.raft.status()
        out = []
        for node in sorted(nodes):
            progress = status.progress.get(node)
            # Caught up means: it durably holds everything committed so far, and is
            # within LEARNER_MAX_LAG of the leader's last entry. "Within N entries"
            # alone is not enough: on a short log (the metadata group's) a learner
            # that has received nothing yet (match 0) looked caught up, was promoted
            # at once, and with one other voter down the group lost its working
            # majority (found by jepsen's membership nemesis).
            if (
                progress is None
                or progress.match < status.commit
                or status.last_index - progress.match > LEARNER_MAX_LAG
            ):
                out.append(node)
        return out

    def _lag_hint(self, group: Group, voters: set[str]) -> str:
        if group.role is not Role.LEADER:
            return "this node is no longer the leader"
        lagging = self._lagging(group, voters & set(group.raft.conf_state.learners))
        if lagging:
            return (
                f"learner(s) {','.join(lagging)} not caught up: are they running "
                "(a new node with join = true)?"
            )
        return "waiting for the pending conf change to commit"

    def _hand_over(self, group: Group, candidates: list[str]) -> None:
        """The leader is leaving the group: transfer leadership first (thesis §3.10)."""
        status = group.raft.status()
        best = max(candidates, key=lambda n: getattr(status.progress.get(n), "match", 0))
        if status.lead_transferee is None:
            log.info("event=leader_leaving group=%d transfer_to=%s", group.gid, best)
            self.driver.transfer_leader(group.gid, best)

    # ------------------------------------------------------------ partition_reassign

    async def partition_reassign(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """Move a partition's replicas online; phase "all" (default), "group" or "metadata"."""
        deadline = request_deadline(fields, DEFAULT_TIMEOUT_S)
        topic, partition = fields["topic"], fields["partition"]
        replicas = fields["replicas"]
        phase = fields.get("phase") or "all"
        if phase not in ("all", "group", "metadata"):
            raise HandlerError(
                ErrorCode.INVALID_REQUEST, f"phase must be all|group|metadata: {phase!r}"
            )
        if (
            not replicas
            or not all(isinstance(r, str) and r for r in replicas)
            or len(set(replicas)) != len(replicas)
        ):
            raise HandlerError(ErrorCode.INVALID_REQUEST, "replicas must be distinct node ids")
        unknown = [r for r in replicas if r not in self.meta.nodes]
        if unknown:
            # Our metadata may lag the leader's (registrations just applied there).
            with trio.move_on_after(1.0):
                await self.h._meta_sync()
            unknown = [r for r in replicas if r not in self.meta.nodes]
        if unknown:
            raise HandlerError(
                ErrorCode.INVALID_REQUEST,
                f"unknown node(s) {','.join(unknown)}: add them first (raftlog member add)",
            )
        pinfo = await self.h._partition(topic, partition)
        started = time.monotonic()
        if phase in ("all", "group"):
            group = self.driver.groups.get(pinfo.group_id)
            if group is None:
                raise HandlerError(
                    ErrorCode.NOT_LEADER,
                    f"node {self.node_id} does not host group {pinfo.group_id}",
                    leader=None,
                    leader_address=None,
                )
            await self.converge(group, set(replicas), set(), deadline)
        updated = False
        if phase in ("all", "metadata") and tuple(pinfo.replicas) != tuple(replicas):
            meta_group = self.driver.groups[METADATA_GROUP]
            if meta_group.role is Role.LEADER:
                await self._metadata_command(
                    SetPartitionReplicas(topic, partition, tuple(replicas)), deadline
                )
                updated = True
            elif phase == "metadata":
                raise self._not_leader(METADATA_GROUP, meta_group.raft.leader_id)
        pinfo = self.meta.topics[topic].partitions[partition]
        log.info(
            "event=partition_reassigned topic=%s partition=%d group=%d replicas=%s "
            "metadata=%s elapsed_s=%.3f",
            topic, partition, pinfo.group_id, ",".join(replicas),
            list(pinfo.replicas) == list(replicas), time.monotonic() - started,
        )  # fmt: skip
        meta_leader = self.driver.groups[METADATA_GROUP].raft.leader_id
        return {
            "topic": topic,
            "partition": partition,
            "group": pinfo.group_id,
            "replicas": list(replicas),
            "metadata_updated": updated or list(pinfo.replicas) == list(replicas),
            "metadata_leader": meta_leader,
            "metadata_leader_address": self.driver.leader_address(meta_leader),
        }

    # ------------------------------------------------------------ members

    def _replica_groups(self, node: str) -> list[int]:
        return sorted(
            p.group_id
            for t in self.meta.topics.values()
            for p in t.partitions
            if node in p.replicas
        )

    async def member_add(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """Register ``node`` and make it a voter of the metadata group (learner first)."""
        deadline = request_deadline(fields, DEFAULT_TIMEOUT_S)
        node, address = fields["node"], fields["address"]
        try:
            parse_address(address)
        except Exception as exc:
            raise HandlerError(
                ErrorCode.INVALID_REQUEST, f"bad address {address!r}: {exc}"
            ) from None
        group = self._meta_leader()
        cs = group.raft.conf_state
        if node not in cs.all_nodes() and self._replica_groups(node):
            # DESIGN §3 rule 7: a node that left must be gone from every group
            # before it may come back (perhaps with a wiped disk).
            raise HandlerError(
                ErrorCode.INVALID_REQUEST,
                f"{node} is still a replica of groups {self._replica_groups(node)}; "
                "finish `raftlog member remove` first",
            )
        # DESIGN §3 rule 7: the node is registered with the incarnation it reports
        # itself, now; every peer expects that one from the add on
        # (membership.adopt_incarnation), so a node wiped again later is refused
        # everywhere, even by a peer that learns of the add late.
        timeout_s = max(0.5, min(ASK_INCARNATION_TIMEOUT_S, deadline - trio.current_time()))
        incarnation, peer_address = await self.ask_identity(node, address, timeout_s)
        if self.meta.log_format < NODE_PEER_ADDRESS:
            peer_address = None  # some node could not decode it: dialled at its address
        info = self.meta.nodes.get(node)
        if info != NodeInfo(address, incarnation, peer_address):
            cmd = RegisterNode(node, address, incarnation, peer_address)
            await self._metadata_command(cmd, deadline)
        voters = set(cs.voters) | {node}
        await self.converge(group, voters, set(cs.learners) - {node}, deadline)
        log.info("event=member_added node=%s address=%s", node, address)
        return {"node": node, "address": address, "role": "voter"}

    async def _dial_identity(self, node: str, address: str, timeout_s: float) -> NodeIdentity:
        """Ask the node at ``address`` who it is (its cluster_status reply)."""
        try:
            conn = await PeerConnection.open(
                address, node_id=self.node_id, cfg=self.driver.cfg, timeout_s=timeout_s
            )
            try:
                reply = await conn.request("cluster_status", timeout_s)
            finally:
                await conn.aclose()
        except (TransferError, OSError, trio.TooSlowError) as exc:
            raise HandlerError(
                ErrorCode.NOT_AVAILABLE,
                f"cannot ask {node} at {address} for its incarnation ({exc or 'timed out'}): "
                "start it (with join = true) before adding it",
            ) from None
        if reply.get("node") != node:
            raise HandlerError(
                ErrorCode.INVALID_REQUEST,
                f"{address} is node {reply.get('node')!r}, not {node!r}",
            )
        incarnation = reply.get("incarnation")
        return NodeIdentity(
            # A node too old to say: trust on first use, as before.
            incarnation if isinstance(incarnation, str) else "",
            _reported_peer_address(reply, address),
        )

    async def member_remove(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """Remove ``node`` from the metadata group; its partitions must be drained first."""
        deadline = request_deadline(fields, DEFAULT_TIMEOUT_S)
        node = fields["node"]
        # Checked first, on any node: a refusal needs no leader. Local metadata
        # may lag (followers learn a commit a heartbeat late), but only towards
        # refusing, so a refusal is re-checked at a linearizable read point:
        # `member remove` right after its own drain must not be refused.
        held = self._replica_groups(node)
        if held:
            await self.h._meta_sync()
            held = self._replica_groups(node)
        if not held:
            self._meta_leader()
            held = self._replica_groups(node)
        if held:
            raise HandlerError(
                ErrorCode.INVALID_REQUEST,
                f"{node} still holds replicas of groups {held}: move them first "
                "(`raftlog member remove` does, with partition reassign)",
                groups=held,
            )
        group = self._meta_leader()
        cs = group.raft.conf_state
        if node in cs.all_nodes():
            voters = set(cs.voters) - {node}
            if not voters:
                raise HandlerError(ErrorCode.INVALID_REQUEST, "cannot remove the last voter")
            await self.converge(group, voters, set(cs.learners) - {node}, deadline)
        if node in self.meta.nodes:
            # Last: new topics are no longer placed on it.
            await self._metadata_command(UnregisterNode(node), deadline)
        log.info("event=member_removed node=%s", node)
        return {"node": node, "removed": True}

    async def member_list(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """Every node known to cluster.toml or the metadata, with its role in group 0.

        Read at a linearizable point (as topic metadata is): a follower learns a
        just-committed membership change a heartbeat late, and `member list`
        right after `member remove` must show the removal.
        """
        await self.h._meta_sync()
        meta_group = self.driver.groups[METADATA_GROUP]
        cs = meta_group.raft.conf_state
        addresses = {n.id: n.address for n in self.driver.cfg.nodes}
        for node_id, info in self.meta.nodes.items():
            addresses[node_id] = info.address
        nodes = []
        for node_id in sorted(addresses):
            if meta_group.leader == node_id:
                role = "controller_leader"
            elif node_id in cs.voters or node_id in cs.voters_outgoing:
                role = "voter"
            elif node_id in cs.learners or node_id in cs.learners_next:
                role = "learner"
            else:
                role = "not_member"
            nodes.append(
                {
                    "id": node_id,
                    "address": addresses[node_id],
                    "role": role,
                    "registered": node_id in self.meta.nodes,
                    "groups": self._replica_groups(node_id),
                }
            )
        return {"nodes": nodes}


def _reported_peer_address(reply: dict[str, Any], address: str) -> str | None:
    """The peer address a node reports for itself, if it is one the metadata may
    record: a well-formed address other than its client address."""
    peer_address = reply.get("peer_address")
    if not isinstance(peer_address, str) or peer_address == address:
        return None
    try:
        parse_address(peer_address)
    except ValueError:
        log.warning("event=peer_address_invalid node=%s peer_address=%r",
                    reply.get("node"), peer_address)  # fmt: skip
        return None
    return peer_address
