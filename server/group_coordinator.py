"""Consumer-group coordinator: membership, generations and partition assignment.

Pure and deterministic: no sockets, no trio, no clock. Every call takes
``now`` (seconds on any monotonic clock), so tests drive it with a fake clock
and the server (server/group_ops.py) passes ``trio.current_time()``.

The design (Kafka's classic, "eager" group protocol, kept small)
-----------------------------------------------------------------
* The coordinator of every group is the metadata group's leader (the
  controller). Membership lives in its memory only, not in a Raft log: a
  new controller starts empty and members rejoin it when their heartbeats
  come back UNKNOWN_MEMBER (or NOT_LEADER from the old one).
* One group consumes one topic. A member joins with ``join``; its session
  stays alive while it joins or heartbeats at least every
  ``session_timeout``; a member silent for longer is expired.
* Any membership change (join of a new member, leave, expiry, a changed
  partition count) starts a rebalance: the group goes REBALANCING and every
  member must join again. Heartbeats answer REBALANCE_IN_PROGRESS, which
  tells a member to stop consuming its partitions (committing what it
  processed) and rejoin. The rebalance completes when every member has
  rejoined, or at the rebalance deadline, which drops the members that did
  not. Only then is generation+1 formed and the partitions assigned.
* Assignment is "range" over the sorted member ids: deterministic, and a
  partition goes to exactly one member of a generation. Because a member
  of generation g can only appear in g+1 after rejoining (having given up
  its partitions), two members never own one partition at once, except a
  member that was dropped (expired or timed out) while it still consumed:
  the usual zombie. Its commits are NOT fenced by generation (offsets live
  in each partition's own Raft group, not here), so a zombie can still
  commit; since a consumer only commits positions past records it has
  processed, this can cause duplicates, never loss: at-least-once.
* Coordinator fail-over. Members of the old controller's generation may
  still consume until they notice. A consumer drops its partitions when it
  has had no successful heartbeat for a session timeout (client side), so a
  new coordinator forms no generation until ``startup_grace`` (the group's
  largest session timeout, plus ``failover_margin_s`` for an old leader
  that still answers until CheckQuorum deposes it, DESIGN §3.5) has passed
  since it started. A fresh cluster pays this wait once, too.
* Generations count from 0 again on a new coordinator: a member only ever
  sends a generation that the coordinator it talks to gave it, since a
  heartbeat of a member unknown here fails before the generation is looked at.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum

from raftlog.client.errors import ErrorCode

DEFAULT_SESSION_TIMEOUT_S = 10.0
DEFAULT_REBALANCE_TIMEOUT_S = 60.0
MIN_SESSION_TIMEOUT_S = 0.1
MAX_SESSION_TIMEOUT_S = 300.0
MAX_REBALANCE_TIMEOUT_S = 600.0


class GroupState(StrEnum):
    EMPTY = "empty"  # no members
    REBALANCING = "rebalancing"  # waiting for every member to (re)join
    STABLE = "stable"  # a generation is formed; its assignment holds


class GroupError(Exception):
    """A refused group request; ``code`` is the wire error code."""

    def __init__(self, code: ErrorCode, message: str, **details: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


@dataclass(slots=True)
class Member:
    member_id: str
    client_id: str
    session_timeout: float
    rebalance_timeout: float
    last_seen: float

    def expired(self, now: float) -> bool:
        return now > self.last_seen + self.session_timeout


@dataclass(slots=True)
class ConsumerGroup:
    name: str
    topic: str
    partitions: int
    generation: int = 0
    state: GroupState = GroupState.EMPTY
    members: dict[str, Member] = field(default_factory=dict)
    # Members that joined the generation being formed (REBALANCING only).
    joined: set[str] = field(default_factory=set)
    rebalance_deadline: float = 0.0
    # member id -> partitions, for ``generation``; empty unless STABLE.
    assignment: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JoinResult:
    member_id: str
    generation: int
    state: GroupState
    partitions: tuple[int, ...] | None  # None until the group is STABLE


@dataclass(frozen=True, slots=True)
class GroupView:
    name: str
    topic: str | None
    state: GroupState
    generation: int
    members: tuple[tuple[str, str, tuple[int, ...]], ...]  # (member id, client id, partitions)


def range_assign(members: list[str], partitions: int) -> dict[str, tuple[int, ...]]:
    """Contiguous ranges over the sorted member ids; the first ``partitions % m``
    members get one extra. Members beyond the partition count get nothing."""
    ordered = sorted(members)
    if not ordered:
        return {}
    base, extra = divmod(partitions, len(ordered))
    out: dict[str, tuple[int, ...]] = {}
    start = 0
    for i, member in enumerate(ordered):
        count = base + (1 if i < extra else 0)
        out[member] = tuple(range(start, start + count))
        start += count
    return out


class GroupCoordinator:
    """All consumer groups of one coordinator incarnation (one controller term)."""

    def __init__(self, now: float, *, failover_margin_s: float = 1.0) -> None:
        self.started_at = now
        self.failover_margin_s = failover_margin_s
        self.groups: dict[str, ConsumerGroup] = {}
        self.rebalances = 0  # generations formed, for raftlog_group_rebalances_total
        # Bumped by every change a waiting join may care about (members, state),
        # so the server wakes its long-polling joins only when something moved.
        self.version = 0

    # ------------------------------------------------------------ requests

    def join(
        self,
        group: str,
        topic: str,
        member_id: str | None,
        now: float,
        *,
        partitions: int,
        client_id: str = "",
        session_timeout: float = DEFAULT_SESSION_TIMEOUT_S,
        rebalance_timeout: float = DEFAULT_REBALANCE_TIMEOUT_S,
    ) -> JoinResult:
        """Join (or rejoin, or poll a pending join of) ``member_id``; a new id when None.

        Idempotent for a given member id: a client that lost the reply, or
        polls until the group is stable, simply calls again. A known member
        joining a STABLE group gets the current assignment back (no rebalance).
        An id this coordinator does not know is accepted as a new member: after
        a coordinator fail-over members rejoin under their old ids.
        """
        _check_timeout("session", session_timeout, MIN_SESSION_TIMEOUT_S, MAX_SESSION_TIMEOUT_S)
        _check_timeout("rebalance", rebalance_timeout, MIN_SESSION_TIMEOUT_S,
                       MAX_REBALANCE_TIMEOUT_S)  # fmt: skip
        if partitions < 1:
            raise GroupError(ErrorCode.INVALID_REQUEST, f"topic {topic!r} has no partitions")
        g = self.groups.get(group)
        if g is not None:
            self._expire(g, now)
        if g is None or g.state is GroupState.EMPTY:
            g = self.groups[group] = ConsumerGroup(
                group, topic, partitions, generation=g.generation if g else 0
            )
        elif g.topic != topic:
            raise GroupError(
                ErrorCode.INVALID_REQUEST,
                f"group {group!r} consumes topic {g.topic!r}; one group consumes one topic",
            )
        member_id = member_id or f"{client_id or 'member'}-{uuid.uuid4().hex[:12]}"
        member = g.members.get(member_id)
        if member is None:
            g.members[member_id] = Member(
                member_id, client_id, session_timeout, rebalance_timeout, now
            )
            self.version += 1
            if g.state is not GroupState.REBALANCING:
                self._start_rebalance(g, now)
        else:
            member.last_seen = now
            member.session_timeout = session_timeout
            member.rebalance_timeout = rebalance_timeout
        if g.state is GroupState.STABLE and partitions != g.partitions:
            self._start_rebalance(g, now)  # the topic grew: spread the new partitions
        g.partitions = partitions
        if g.state is GroupState.REBALANCING:
            g.joined.add(member_id)
            self._try_complete(g, now)
        if g.state is GroupState.STABLE:
            return JoinResult(member_id, g.generation, g.state, g.assignment[member_id])
        return JoinResult(member_id, g.generation, g.state, None)

    def heartbeat(self, group: str, member_id: str, generation: int, now: float) -> None:
        """Keep ``member_id``'s session alive; raises GroupError when it must rejoin.

        UNKNOWN_MEMBER: expired, left, or joined another coordinator: join again.
        REBALANCE_IN_PROGRESS: a rebalance is running, or ``generation`` is not
        the current one: give up the partitions and join again.
        """
        g = self.groups.get(group)
        if g is not None:
            self._expire(g, now)
        member = g.members.get(member_id) if g is not None else None
        if g is None or member is None:
            raise GroupError(
                ErrorCode.UNKNOWN_MEMBER,
                f"member {member_id!r} is not in group {group!r} here (expired, left, "
                "or the coordinator changed): join again",
            )
        member.last_seen = now
        if g.state is GroupState.REBALANCING or generation != g.generation:
            raise GroupError(
                ErrorCode.REBALANCE_IN_PROGRESS,
                f"group {group!r} is rebalancing (generation {generation} is over): rejoin",
                generation=g.generation,
            )

    def leave(self, group: str, member_id: str, now: float) -> bool:
        """Remove ``member_id`` at once (the others rebalance without waiting for its
        session to expire). False when it was not a member (already gone: fine)."""
        g = self.groups.get(group)
        if g is None:
            return False
        self._expire(g, now)
        if member_id not in g.members:
            return False
        self._remove(g, [member_id], now)
        return True

    def describe(self, group: str, now: float) -> GroupView:
        g = self.groups.get(group)
        if g is None:
            return GroupView(group, None, GroupState.EMPTY, 0, ())
        self._expire(g, now)
        members = tuple(
            (m.member_id, m.client_id, g.assignment.get(m.member_id, ()))
            for m in sorted(g.members.values(), key=lambda m: m.member_id)
        )
        return GroupView(g.name, g.topic, g.state, g.generation, members)

    # ------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Apply everything due by ``now`` to every group (expiries, deadlines)."""
        for g in list(self.groups.values()):
            self._expire(g, now)

    def wake_at(self, group: str) -> float | None:
        """The earliest time ``group`` may change without a request (a session
        expiry, the rebalance deadline, the end of the start-up grace)."""
        g = self.groups.get(group)
        if g is None or not g.members:
            return None
        times = [m.last_seen + m.session_timeout for m in g.members.values()]
        if g.state is GroupState.REBALANCING:
            times.append(g.rebalance_deadline)
            if g.joined.issuperset(g.members):
                times.append(self._grace_end(g))  # only the grace holds the generation back
        # A hair past the instant: expiry is strict (now > last_seen + timeout).
        return min(times) + 1e-6

    def active_groups(self) -> int:
        return sum(1 for g in self.groups.values() if g.members)

    # ------------------------------------------------------------ transitions

    def _grace_end(self, g: ConsumerGroup) -> float:
        """No generation forms before this (see the module docstring: members of a
        previous coordinator must have given up their partitions by then)."""
        longest = max((m.session_timeout for m in g.members.values()), default=0.0)
        return self.started_at + longest + self.failover_margin_s

    def _expire(self, g: ConsumerGroup, now: float) -> None:
        gone = [m for m, member in g.members.items() if member.expired(now)]
        if g.state is GroupState.REBALANCING and now >= g.rebalance_deadline:
            # Too slow to rejoin: dropped from the generation being formed.
            gone += [m for m in g.members if m not in g.joined and m not in gone]
        if gone:
            self._remove(g, gone, now)
        elif g.state is GroupState.REBALANCING:
            self._try_complete(g, now)

    def _remove(self, g: ConsumerGroup, gone: list[str], now: float) -> None:
        self.version += 1
        for m in gone:
            g.members.pop(m, None)
            g.joined.discard(m)
        if not g.members:
            g.state = GroupState.EMPTY
            g.assignment = {}
            g.joined = set()
        elif g.state is GroupState.STABLE:
            self._start_rebalance(g, now)
        else:
            self._try_complete(g, now)

    def _start_rebalance(self, g: ConsumerGroup, now: float) -> None:
        # Eager protocol: the old assignment ends here; nobody owns anything
        # until every member has rejoined and the next generation is formed.
        self.version += 1
        g.state = GroupState.REBALANCING
        g.assignment = {}
        g.joined = set()
        g.rebalance_deadline = now + max(m.rebalance_timeout for m in g.members.values())

    def _try_complete(self, g: ConsumerGroup, now: float) -> None:
        if g.state is not GroupState.REBALANCING or not g.members:
            return
        if not g.joined.issuperset(g.members) or now < self._grace_end(g):
            return
        g.generation += 1
        g.assignment = range_assign(list(g.members), g.partitions)
        g.state = GroupState.STABLE
        g.joined = set()
        self.rebalances += 1
        self.version += 1


def _check_timeout(what: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise GroupError(
            ErrorCode.INVALID_REQUEST,
            f"{what} timeout must be in [{low * 1000:.0f}, {high * 1000:.0f}] ms, "
            f"got {value * 1000:.0f} ms",
        )
