"""One consumer group member's side of the group protocol: join, heartbeat, leave.

Only the wire calls (see ``group_join`` ... in protocol.py and the coordinator
in server/group_coordinator.py); what to do with an assignment is the
Consumer's business (consumer.py). Requests go through
``AsyncClient.request``, which routes them to the controller (the metadata
group's leader, the coordinator) and follows NOT_LEADER redirects.

The member id is chosen here (client id + random suffix) and kept across
rejoins, so a join retried after a lost reply is the same join. After a
coordinator fail-over the new controller has restored the group from its
persisted generation: the member's heartbeats, redirected there by
NOT_LEADER, keep succeeding with the same id and generation (no rejoin).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from .aio import AsyncClient
from .errors import RequestTimeoutError
from .protocol import COOPERATIVE

# How long the server may hold one join while the group rebalances; under
# the client's shortest attempt of an idempotent request (aio.ATTEMPT_MIN).
JOIN_POLL_MS = 1000
MIN_JOIN_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Assignment:
    generation: int
    partitions: tuple[int, ...]
    # When the join that returned it was SENT: like a heartbeat, it keeps the
    # session alive from then on (not from when the reply came back).
    granted_at: float = 0.0


class GroupMember:
    def __init__(
        self,
        client: AsyncClient,
        group: str,
        topic: str,
        *,
        session_timeout: float,
        rebalance_timeout: float,
        instance_id: str | None = None,
        cooperative: bool = False,
    ) -> None:
        self.client = client
        self.group = group
        self.topic = topic
        self.session_timeout = session_timeout
        self.rebalance_timeout = rebalance_timeout
        self.member_id = f"{client.client_id}-{uuid.uuid4().hex[:8]}"
        # Static membership (Kafka's group.instance.id): a restart joins with a new
        # member id and this instance id, and takes the old member's partitions.
        self.instance_id = instance_id
        # Keeps consuming its partitions while it rejoins (Kafka KIP-429).
        self.cooperative = cooperative

    @property
    def heartbeat_interval(self) -> float:
        # A third of the session: two heartbeats may be lost before it expires.
        return self.session_timeout / 3

    async def join(
        self,
        owned: Iterable[int] = (),
        on_confirmed: Callable[[float], None] | None = None,
    ) -> Assignment:
        """Join (or rejoin) and return the assignment once the generation forms.

        ``owned``: the partitions a cooperative member keeps consuming while it
        rejoins (the coordinator gives none of them to another member).
        ``on_confirmed(sent)`` is called for every answer the coordinator
        confirmed with a quorum (the server says ``confirmed``) while the group
        still rebalances: like a successful heartbeat sent at ``sent``, it lets
        the member keep its partitions a session timeout from then.

        Bounded: the coordinator completes a rebalance within the rebalance
        timeout (dropping members that did not rejoin), and a new coordinator
        waits at most a session timeout and a margin; past that (plus one
        request timeout) RequestTimeoutError.
        """
        owned_list = sorted(set(owned))
        extra: dict[str, object] = {"owned": owned_list} if owned_list else {}
        if self.instance_id is not None:
            extra["instance_id"] = self.instance_id
        if self.cooperative:
            extra["rebalance"] = COOPERATIVE
        budget = self.rebalance_timeout + 2 * self.session_timeout + self.client.request_timeout
        deadline = trio.current_time() + budget
        while True:
            sent = trio.current_time()
            reply = await self.client.request(
                "group_join",
                idempotent=True,  # same member id: a retried join is the same join
                group=self.group,
                topic=self.topic,
                member_id=self.member_id,
                session_timeout_ms=int(self.session_timeout * 1000),
                rebalance_timeout_ms=int(self.rebalance_timeout * 1000),
                max_wait_ms=JOIN_POLL_MS,
                **extra,
            )
            partitions = reply.get("partitions")
            if partitions is not None:
                return Assignment(int(reply["generation"]), tuple(sorted(partitions)), sent)
            if on_confirmed is not None and reply.get("confirmed") is True:
                on_confirmed(sent)
            if trio.current_time() >= deadline:
                raise RequestTimeoutError(
                    f"group {self.group!r}: no generation formed within {budget:.0f}s"
                )
            if trio.current_time() - sent < MIN_JOIN_POLL_S:
                # Answered without holding the join (a server that does not long
                # poll): pace the polls instead of spinning.
                await trio.sleep(MIN_JOIN_POLL_S)

    async def heartbeat(self, generation: int) -> None:
        """Raises RebalanceInProgressError / UnknownMemberError when we must rejoin,
        RequestTimeoutError when no answer came within a heartbeat interval.

        One heartbeat waits at most an interval: a controller that is paused or
        cut off would otherwise hold it for a whole request attempt, longer than
        a short session. The next one then avoids that node (a new controller
        is found through NOT_LEADER redirects), well before the session ends.
        """
        target = self.client._controller
        with trio.move_on_after(self.heartbeat_interval):
            await self.client.request(
                "group_heartbeat",
                idempotent=True,
                group=self.group,
                member_id=self.member_id,
                generation=generation,
            )
            return
        if target is not None:
            self.client._forget_leader(target)
        raise RequestTimeoutError(
            f"group {self.group!r}: no heartbeat answer within {self.heartbeat_interval:.2f}s"
        )

    async def leave(self) -> None:
        await self.client.request(
            "group_leave", idempotent=True, group=self.group, member_id=self.member_id
        )
