"""The group_* request handlers: the wire face of server/group_coordinator.py.

Only the metadata group's leader (the controller) coordinates consumer
groups; any other node answers NOT_LEADER with its address, which the client
follows. The coordinator's state is kept per controller term: a node that
lost the leadership and won it back starts empty, as a different node would
(members rejoin; see the coordinator's docstring for the start-up grace that
keeps a new coordinator from handing out partitions an old generation's
members may still be reading).

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

from .errors import HandlerError
from .group_coordinator import (
    DEFAULT_REBALANCE_TIMEOUT_S,
    DEFAULT_SESSION_TIMEOUT_S,
    GroupCoordinator,
    GroupError,
    JoinResult,
)

log = logging.getLogger("raftlog.groups")

DEFAULT_JOIN_WAIT_S = 1.0
# Below the client's shortest attempt of an idempotent request (ATTEMPT_MIN).
MAX_JOIN_WAIT_S = 1.5

Handler = Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]]


def _seconds(fields: dict[str, Any], name: str, default: float) -> float:
    value = fields.get(name)
    return default if value is None else value / 1000.0


class GroupOps:
    """group_join / group_heartbeat / group_leave / group_describe (one per node)."""

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
        }

    # ------------------------------------------------------------ coordinator

    def _failover_margin_s(self) -> float:
        """Two of the longest election timeouts: a deposed controller cut off from
        its quorum keeps answering until CheckQuorum makes it step down, about
        one election timeout after a new leader can have been elected."""
        cfg = self.h.cfg
        return 2 * (2 * cfg.election_ticks * cfg.tick_ms / 1000.0)

    def _coordinator(self) -> GroupCoordinator:
        try:
            group = self.h._require_meta_leader()
        except HandlerError:
            self._drop()
            raise
        term = group.raft.term
        if self._coord is None or term != self._term:
            if self._coord is not None:
                log.info("event=group_coordinator_reset term=%d", term)
            self._drop()
            self._coord = GroupCoordinator(
                trio.current_time(), failover_margin_s=self._failover_margin_s()
            )
            self._term = term
            self._counted_rebalances = 0
            self._seen_version = 0
        return self._coord

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
        """Metrics, and wake the held joins, if the call changed anything."""
        if self.metrics is not None:
            self.metrics.consumer_groups.set(coord.active_groups())
            formed = coord.rebalances - self._counted_rebalances
            if formed > 0:
                self.metrics.group_rebalances.inc(formed)
        self._counted_rebalances = coord.rebalances
        if coord.version != self._seen_version:
            self._seen_version = coord.version
            self._wake()

    def _run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``coordinator.<method>(*args, now=..., **kwargs)``, errors as HandlerError."""
        coord = self._coordinator()
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
        while True:
            result: JoinResult = self._run(
                "join", group_name, topic.name, member_id,
                partitions=len(topic.partitions), client_id=ctx.client_id,
                session_timeout=session, rebalance_timeout=rebalance,
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
        }

    async def group_heartbeat(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        self._run("heartbeat", fields["group"], fields["member_id"], fields["generation"])
        return {}

    async def group_leave(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        left = self._run("leave", fields["group"], fields["member_id"])
        if left:
            log.info("event=group_left group=%s member=%s", fields["group"], fields["member_id"])
        return {"left": bool(left)}

    async def group_describe(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        view = self._run("describe", fields["group"])
        return {
            "group": view.name,
            "topic": view.topic,
            "state": view.state.value,
            "generation": view.generation,
            "coordinator": self.h.node_id,
            "members": [
                {"member_id": m, "client_id": client, "partitions": list(parts)}
                for m, client, parts in view.members
            ],
        }
