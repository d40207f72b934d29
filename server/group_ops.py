"""The group_* request handlers: the wire face of server/group_coordinator.py.

Only the metadata group's leader (the controller) coordinates consumer
groups; any other node answers NOT_LEADER with its address, which the client
follows. A coordinator lives for one controller term. A new one (a new
controller, or this node leading again) is created only after a ReadIndex
barrier, i.e. after this leader committed an entry of its term and applied
everything before it (Raft §5.4.2, §6.4), and then restores every group from
the metadata state machine's SET_CONSUMER_GROUP records: the members of the
last persisted generation keep their partitions.

Durability and fencing (the argument is in the coordinator's docstring):
* every generation the coordinator forms is proposed as a record through the
  metadata group, and a join learns its assignment only after the record is
  committed and applied;
* a heartbeat is accepted, and a join answered (with an assignment, or
  "still rebalancing": ``confirmed``, which lets a cooperative member keep
  consuming), only after a ReadIndex round that started after the request
  arrived, so a deposed controller that still believes it leads (CheckQuorum
  has not deposed it yet, or its group is quiesced) cannot extend a member's
  ownership past what the new controller restores.

``group_join`` is a bounded long poll: while the group is rebalancing the
server holds the join until the generation forms, something changes, or
``max_wait_ms`` (capped under the client's per-attempt timeout) passes; the
client then simply joins again with its member id.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import COOPERATIVE, EAGER, REBALANCE_PROTOCOLS
from raftlog.log.commands import SetConsumerGroup
from raftlog.raft.types import Role

from .acl import visible_group
from .errors import HandlerError, raise_outcome, raise_result_error
from .group_coordinator import (
    DEFAULT_REBALANCE_TIMEOUT_S,
    DEFAULT_SESSION_TIMEOUT_S,
    GroupCoordinator,
    GroupDeletion,
    GroupError,
    GroupView,
    JoinResult,
)
from .groups import METADATA_GROUP

log = logging.getLogger("raftlog.groups")

DEFAULT_JOIN_WAIT_S = 1.0
# Below the client's shortest attempt of an idempotent request (ATTEMPT_MIN).
MAX_JOIN_WAIT_S = 1.5
# A leadership confirmation (ReadIndex) before a heartbeat or join is answered:
# past this the request gets NOT_AVAILABLE (no effect; the client retries).
BARRIER_TIMEOUT_S = 1.0
# A generation's record that has not committed by then is given up: the
# rebalance starts over with a higher number (the record may still commit).
RECORD_TIMEOUT_S = 5.0

Handler = Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]]


def _seconds(fields: dict[str, Any], name: str, default: float) -> float:
    value = fields.get(name)
    return default if value is None else value / 1000.0


class GroupOps:
    """group_join / heartbeat / leave / describe / list / delete (one per node)."""

    def __init__(self, handlers: Any) -> None:
        self.h = handlers
        self.driver = handlers.driver
        self.metrics = handlers.metrics
        self._coord: GroupCoordinator | None = None
        self._term = -1
        self._counted_rebalances = 0
        self._seen_version = 0
        self._changed = trio.Event()

    def handlers(self) -> dict[str, Handler]:
        return {
            "group_join": self.group_join,
            "group_heartbeat": self.group_heartbeat,
            "group_leave": self.group_leave,
            "group_describe": self.group_describe,
            "group_list": self.group_list,
            "group_delete": self.group_delete,
        }

    # ------------------------------------------------------------ coordinator

    def _failover_margin_s(self) -> float:
        """Two of the longest election timeouts: a deposed controller cut off from
        its quorum keeps answering until CheckQuorum makes it step down, about
        one election timeout after a new leader can have been elected."""
        cfg = self.h.cfg
        return 2 * (2 * cfg.election_ticks * cfg.tick_ms / 1000.0)

    async def _coordinator(self) -> GroupCoordinator:
        """This term's coordinator; a new term's is restored from the metadata records."""
        try:
            group = self.h._require_meta_leader()
        except HandlerError:
            self._drop()
            raise
        term = group.raft.term
        if self._coord is not None and term == self._term:
            return self._coord
        # Load only what every earlier leader committed: after our no-op is
        # applied (the barrier), no older record can commit any more, and every
        # committed one is in our state machine (Leader Completeness, §5.4).
        await self._confirm_leadership()
        group = self.h._require_meta_leader()
        if group.raft.term != term:
            raise HandlerError(ErrorCode.NOT_AVAILABLE, "the controller term changed: retry")
        if self._coord is not None and self._term == term:
            return self._coord  # another request restored it while we waited
        if self._coord is not None:
            log.info("event=group_coordinator_reset term=%d", term)
        self._drop()
        now = trio.current_time()
        coord = GroupCoordinator(now, failover_margin_s=self._failover_margin_s())
        records = list(self.h.meta.consumer_groups.values())
        coord.restore(records, now)
        log.info(
            "event=group_coordinator_restored term=%d groups=%d members=%d",
            term, sum(1 for r in records if r.members), sum(len(r.members) for r in records),
        )  # fmt: skip
        self._coord = coord
        self._term = term
        self._counted_rebalances = 0
        self._seen_version = 0
        self._after(coord)
        return coord

    async def _confirm_leadership(self) -> None:
        """Return once this node, as leader, confirmed its leadership with a quorum
        AFTER the call (ReadIndex, Raft §6.4) and applied up to that point."""
        deadline = trio.current_time() + BARRIER_TIMEOUT_S
        outcome = await self.driver.read_barrier(METADATA_GROUP, deadline)
        if outcome.error is ErrorCode.NOT_LEADER:
            self._drop()
            raise HandlerError(outcome.error, outcome.message, **outcome.details)
        if outcome.error is not None:
            raise HandlerError(
                ErrorCode.NOT_AVAILABLE,
                f"node {self.h.node_id} cannot confirm it still leads the metadata group "
                f"({outcome.error.value}: {outcome.message}); retry",
            )

    def _drop(self) -> None:
        """Forget this incarnation's groups (leadership lost or a new term)."""
        self._coord = None
        if self.metrics is not None:
            self.metrics.consumer_groups.set(0)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _after(self, coord: GroupCoordinator) -> None:
        """Propose the records the call made, update metrics, and wake the held
        joins if the call changed anything."""
        if coord is not self._coord:
            return  # an earlier incarnation's late outcome: nobody listens any more
        for record in coord.take_records():
            self._persist(coord, record)
        if self.metrics is not None:
            self.metrics.consumer_groups.set(coord.active_groups())
            formed = coord.rebalances - self._counted_rebalances
            if formed > 0:
                self.metrics.group_rebalances.inc(formed)
        self._counted_rebalances = coord.rebalances
        if coord.version != self._seen_version:
            self._seen_version = coord.version
            self._wake()

    def _persist(self, coord: GroupCoordinator, record: SetConsumerGroup) -> None:
        """Submit ``record`` now (records of one term enter the log in the order they
        were made) and report its outcome to ``coord`` from the driver's turn."""
        waiter = self.driver.submit(
            METADATA_GROUP, record, deadline=trio.current_time() + RECORD_TIMEOUT_S
        )

        def done(outcome: Any) -> None:
            result = outcome.value
            ok = outcome.error is None and getattr(result, "ok", False)
            if not ok:
                log.warning(
                    "event=group_record_failed group=%s generation=%d error=%s %s",
                    record.group, record.generation,
                    outcome.error or getattr(result, "error", None),
                    outcome.message or getattr(result, "message", ""),
                )  # fmt: skip
            coord.persisted(record.group, record.generation, ok, trio.current_time())
            self._after(coord)

        waiter.on_done(done)

    async def _run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``coordinator.<method>(*args, now=..., **kwargs)``, errors as HandlerError."""
        coord = await self._coordinator()
        try:
            return getattr(coord, method)(*args, now=trio.current_time(), **kwargs)
        except GroupError as exc:
            raise HandlerError(exc.code, exc.message, **exc.details) from None
        finally:
            self._after(coord)

    # ------------------------------------------------------------ handlers

    async def group_join(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        group_name: str = fields["group"]
        topic = await self.h._topic(fields["topic"])
        session = _seconds(fields, "session_timeout_ms", DEFAULT_SESSION_TIMEOUT_S)
        rebalance = _seconds(fields, "rebalance_timeout_ms", DEFAULT_REBALANCE_TIMEOUT_S)
        wait = min(MAX_JOIN_WAIT_S, max(0.0, _seconds(fields, "max_wait_ms", DEFAULT_JOIN_WAIT_S)))
        wait_until = trio.current_time() + wait
        member_id: str | None = fields.get("member_id")
        instance_id: str | None = fields.get("instance_id")
        owned = _owned_partitions(fields.get("owned"), len(topic.partitions))
        protocol = fields.get("rebalance") or EAGER
        if protocol not in REBALANCE_PROTOCOLS:
            raise HandlerError(
                ErrorCode.INVALID_REQUEST,
                f"rebalance must be one of {REBALANCE_PROTOCOLS}, got {protocol!r:.50}",
            )
        while True:
            result: JoinResult = await self._run(
                "join", group_name, topic.name, member_id,
                partitions=len(topic.partitions), client_id=ctx.client_id,
                session_timeout=session, rebalance_timeout=rebalance, instance_id=instance_id,
                owned=owned, cooperative=protocol == COOPERATIVE,
            )  # fmt: skip
            member_id = result.member_id
            if result.partitions is not None or trio.current_time() >= wait_until:
                break
            coord = self._coord
            wake = coord.wake_at(group_name) if coord is not None else None
            if wake is None or wake <= trio.current_time():
                wake = math.inf  # nothing due on its own: wait for a change (never spin)
            changed = self._changed
            with trio.move_on_at(min(wait_until, wake)):
                await changed.wait()
        # Make sure this node still leads before answering: a deposed controller
        # must not hand a member an assignment, or let a cooperative member keep
        # its partitions, past what the new controller restored (module docstring).
        await self._confirm_leadership()
        if result.partitions is not None:
            log.info(
                "event=group_joined group=%s member=%s generation=%d partitions=%s",
                group_name, member_id, result.generation, list(result.partitions),
            )  # fmt: skip
        return {
            "member_id": result.member_id,
            "generation": result.generation,
            "state": result.state.value,
            "partitions": None if result.partitions is None else list(result.partitions),
            "confirmed": True,
        }

    async def group_heartbeat(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        # The topic's partition count as this node applied it: a grown topic
        # (alter_topic) starts a rebalance at the next heartbeat of any member.
        coord = await self._coordinator()
        topic_name = coord.topic_of(fields["group"])
        topic = self.h.meta.topics.get(topic_name) if topic_name is not None else None
        if topic_name is not None and topic is None:
            # The topic was deleted (its stored groups with it): so is the group.
            coord.forget_topic(topic_name, trio.current_time())
            self._after(coord)
            raise HandlerError(ErrorCode.UNKNOWN_TOPIC, f"topic {topic_name!r} was deleted")
        await self._run(
            "heartbeat", fields["group"], fields["member_id"], fields["generation"],
            partitions=len(topic.partitions) if topic is not None else None,
        )  # fmt: skip
        # Accepted here; answered only once a quorum confirmed this node still leads
        # (a ReadIndex started after the request arrived: module docstring).
        await self._confirm_leadership()
        return {}

    async def group_leave(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        left = await self._run("leave", fields["group"], fields["member_id"])
        if left:
            log.info("event=group_left group=%s member=%s", fields["group"], fields["member_id"])
        return {"left": bool(left)}

    async def group_describe(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        view = await self._run("describe", fields["group"])
        return {**group_view_json(view), "coordinator": self.h.node_id}

    async def group_list(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        views = await self._run("list_groups")
        return {
            "groups": [group_view_json(v) for v in views if visible_group(ctx.user, v.name)],
            "coordinator": self.h.node_id,
        }

    async def group_delete(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """Commit the group's tombstone and answer what the caller needs to delete its
        offsets (the topic, its partition count, and the number to fence them at).

        The tombstone commits BEFORE any offset is deleted: a consumer that joins
        meanwhile gets a generation above the deletion's, so its claims win over
        the deletes (they are refused as FENCED where it claimed first), and no
        deleted offset can be brought back by a member of the old generations.
        """
        deletion = await self._delete(fields["group"], fields.get("topic"), "request")
        return {
            "group": deletion.group,
            "topic": deletion.topic,
            "generation": deletion.generation,
            "partitions": deletion.partitions,
        }

    async def _delete(self, name: str, topic: str | None, reason: str) -> GroupDeletion:
        """Commit ``name``'s tombstone (see ``group_delete``); its offsets go after."""
        deletion: GroupDeletion = await self._run("delete", name, topic=topic)
        if deletion.record is not None:
            coord = self._coord
            deadline = trio.current_time() + RECORD_TIMEOUT_S
            outcome = await self.driver.propose(METADATA_GROUP, deletion.record, deadline)
            raise_result_error(raise_outcome(outcome))
            if coord is not None and coord is self._coord:
                coord.deleted(name, deletion.generation, trio.current_time())
                self._after(coord)
            log.info(
                "event=group_deleted group=%s topic=%s generation=%d reason=%s",
                name, deletion.topic, deletion.generation, reason,
            )  # fmt: skip
        return deletion

    async def delete_idle_groups(self, retention_s: float) -> list[str]:
        """The controller's half of offsets retention: delete every group that has
        had no members for ``retention_s``, exactly as ``raftlog group delete``
        would. The partitions' leaders then delete the offsets of deleted groups
        (server/offsets_retention.py). Returns the groups deleted; nothing when
        this node is not the controller."""
        if self.driver.groups[METADATA_GROUP].role is not Role.LEADER:
            return []
        try:
            coord = await self._coordinator()
        except HandlerError:  # deposed, or the term changed while restoring: next round
            return []
        try:
            idle = coord.idle_groups(trio.current_time(), retention_s)
        finally:
            self._after(coord)
        deleted = []
        for name in idle:
            try:
                await self._delete(name, None, "offsets_retention")
            except HandlerError as exc:  # joined meanwhile, or the controller moved
                log.info("event=group_expiry_skipped group=%s error=%s", name, exc)
                continue
            deleted.append(name)
            if self.metrics is not None:
                self.metrics.groups_expired.inc()
        return deleted


def _owned_partitions(value: Any, partitions: int) -> tuple[int, ...]:
    """The ``owned`` field of a join: distinct partition numbers of the topic."""
    if value is None:
        return ()
    if not all(type(p) is int and 0 <= p < partitions for p in value):
        raise HandlerError(
            ErrorCode.INVALID_REQUEST,
            f"owned must list partition numbers in [0, {partitions}), got {value!r:.200}",
        )
    return tuple(sorted(set(value)))


def group_view_json(view: GroupView) -> dict[str, Any]:
    """A group as group_describe and group_list answer it (without the coordinator)."""
    return {
        "group": view.name,
        "topic": view.topic,
        "state": view.state.value,
        "generation": view.generation,
        "members": [
            {
                "member_id": m,
                "client_id": client,
                "partitions": list(parts),
                "instance_id": view.instance_ids.get(m),
                "rebalance": COOPERATIVE if m in view.cooperative else EAGER,
            }
            for m, client, parts in view.members
        ],
        # Partitions this generation gave nobody yet: their previous owner (a
        # cooperative member) is giving them up; the next rebalance hands them out.
        "withheld": list(view.withheld),
    }
