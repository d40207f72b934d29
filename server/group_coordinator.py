"""Consumer-group coordinator: membership, generations and partition assignment.

Pure and deterministic: no sockets, no trio, no clock. Every call takes
``now`` (seconds on any monotonic clock), so tests drive it with a fake clock
and the server (server/group_ops.py) passes ``trio.current_time()``.

The design (Kafka's classic group protocol, eager or cooperative, kept small)
--------------------------------------------------------------------------
* The coordinator of every group is the metadata group's leader (the
  controller). Live membership (sessions, joins in progress) is in its
  memory; every FORMED generation is persisted through the metadata Raft
  group (a SET_CONSUMER_GROUP record: topic, generation, members with their
  timeouts and partitions; log/metadata.py), like Kafka's group metadata in
  __consumer_offsets. So is a group going empty, so that members who left
  or expired are not brought back by a later controller.
* One group consumes one topic. A member joins with ``join``; its session
  stays alive while it joins or heartbeats at least every
  ``session_timeout``; a member silent for longer is expired.
* Any membership change (join of a new member, leave, expiry, a changed
  partition count) starts a rebalance: the group goes REBALANCING and every
  member must join again. Heartbeats answer REBALANCE_IN_PROGRESS, which
  tells a member to rejoin. An *eager* member first stops consuming all its
  partitions (committing what it processed); a *cooperative* one (Kafka
  KIP-429) keeps consuming them and reports them in its join (``owned``).
  Once every member has rejoined (or the rebalance deadline dropped the
  ones that did not) the next generation is formed: its number, assignment
  and members go into a record (``take_records``) that the server
  proposes; the group stays REBALANCING, and no member learns its
  assignment, until ``persisted`` reports the record committed.
  A record that fails (no longer leader, timeout) restarts the rebalance:
  the members, still polling their joins, simply join again.
* Cooperative rebalancing: a generation never gives a member a partition
  that ANOTHER member of that generation reported owning in its join; such a
  partition is *withheld* (assigned to nobody) and its owner, whose new
  assignment lacks it, gives it up and joins again reporting what it still
  owns. Once no member owns a withheld partition any more, the next
  rebalance starts at once and hands it to the member the sticky assignment
  chose (two rebalances, as in KIP-429). A member that heartbeats with the
  current generation has applied its assignment, so it owns exactly that
  (a second way the release is noticed). A partition thus changes hands
  only after its previous owner let go, and partitions that stay put are
  never paused. Eager members report nothing owned, so a group may mix both.
  A restored generation that leaves partitions unassigned (the controller
  changed between the two rebalances) starts a rebalance at once: the
  members' joins then say again who still owns what.
* Static members (a ``group_instance_id``, Kafka KIP-345): a consumer that
  restarts joins under a new member id with its old instance id and takes
  the old member's place and partitions in the current generation, without
  a rebalance (``_take_over``). It does not leave when it closes, so the
  group waits a session timeout for it to come back before rebalancing.
  The replaced member id is fenced (FENCED_INSTANCE_ID), so a second process
  with the same instance id stops instead of taking the partitions back.
* Assignment is sticky (``sticky_assign``, like Kafka's StickyAssignor for
  one topic): balanced to within one partition, and each member keeps the
  partitions it owned in the generation before, as far as the balance
  allows, so a member leaving or joining moves only the partitions it must.
  A group with no history gets "range" over the sorted member ids. Either
  way it is deterministic, and a partition goes to exactly one member of a
  generation. Because a member
  of generation g can only appear in g+1 after rejoining (having given up
  its partitions), two members never own one partition at once, except a
  member that was dropped (expired or timed out) while it still consumed:
  the usual zombie. Its commits are fenced by generation where the offsets
  live, in each partition's own Raft group (log/partition.py): a partition
  refuses a commit older than the highest generation that committed there
  (FENCED), and a new owner claims each partition (commits its start with
  its generation) before it hands out a record. A zombie can still READ
  until its session runs out, and a commit landing before the claim can
  cost duplicates, never loss: at-least-once. A cooperative member that has
  not joined a rebalance is not dropped by its deadline before one session
  timeout after it was last told it is a member (``Member.affirmed_at``): it
  keeps consuming while it rejoins, and only gives its partitions up a
  session after its last such answer. (An eager member that has not noticed
  the rebalance is dropped at the deadline, as in Kafka: a zombie if it still
  consumes, fenced as above.)

Coordinator fail-over
---------------------
* A new coordinator is created by the server only after it has applied
  everything committed before its term (a ReadIndex barrier: the new
  leader's no-op is committed, Raft §5.4.2 / §6.4), and ``restore`` loads
  the persisted groups as STABLE with their generation and members. Each
  member's session starts at the load: it gets a full session timeout to
  find the new controller. It heartbeats with its (member id, generation)
  and keeps consuming: no rebalance, no pause. A member that really died
  expires after its session timeout and a normal rebalance follows.
* Generations are monotonic across controllers: the next generation is
  the persisted one + 1 (and the metadata state machine refuses a record
  that does not move a group forward).
* Why no partition is owned by two members of different generations,
  although the old controller keeps answering until CheckQuorum deposes it
  (DESIGN §3.5) and may be quiesced and never notice (server/driver.py):
  (1) a generation is formed, and handed to any member, only after its
  record is COMMITTED; the record of g+1 is proposed by a leader of some
  term T' and can commit only with a quorum of that term. The old leader
  (term T < T') cannot commit anything once a quorum has moved past T, and
  whatever it did commit is in the new leader's log (Leader Completeness,
  Raft §5.4) and therefore loaded by ``restore``. So every generation
  number has exactly one assignment, cluster-wide, whichever controller
  formed it. (2) Answers that let a member keep or take partitions
  WITHOUT a new record (a heartbeat OK, a rejoin of a STABLE group) are
  sent only after a ReadIndex round that started after the request arrived
  (server/group_ops.py): the old leader still had a quorum of its term
  then, so the new leader was elected, and restored the group, after the
  member SENT that request. The member gives its partitions up one session
  timeout after sending its last successful heartbeat or join (client/
  consumer.py), which is no later than one session timeout after the
  restore: exactly when the new coordinator may expire it. A restored
  member that has not rejoined here is also never dropped by a rebalance
  deadline before that instant (``Member.fence``).
* No start-up grace: a group with NO record at the restore forms its
  generation as soon as its members have joined. Nobody can own a partition
  of it: a generation is handed out only after its record committed, and
  every committed record is restored. Only an in-memory coordinator
  (``durable=False``), which cannot know what a previous one handed out,
  waits its largest session timeout plus ``failover_margin_s`` after it
  started before forming a group's generation. (The grace used to apply to
  every group without a record, so a fresh cluster's first consumer waited
  ~11 s for its partitions.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from raftlog.client.errors import ErrorCode
from raftlog.log.commands import GroupMemberEntry, SetConsumerGroup
from raftlog.log.metadata import ConsumerGroupInfo

DEFAULT_SESSION_TIMEOUT_S = 10.0
DEFAULT_REBALANCE_TIMEOUT_S = 60.0
MIN_SESSION_TIMEOUT_S = 0.1
MAX_SESSION_TIMEOUT_S = 300.0
MAX_REBALANCE_TIMEOUT_S = 600.0
# Kafka's limit for group.instance.id.
MAX_INSTANCE_ID_CHARS = 249
# Member ids fenced by a static member's takeover, remembered per group (oldest
# forgotten first): enough for restarts in a row; a forgotten one is only told
# UNKNOWN_MEMBER, and its rejoin takes the instance back (the duplicate's fault).
MAX_FENCED_PER_GROUP = 64


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
    # Restored members only: until then it may still own its restored partitions
    # (its last successful heartbeat went to the previous coordinator), so a
    # rebalance deadline must not drop it and hand them out before.
    fence: float = 0.0
    # A static member's group_instance_id (Kafka KIP-345): a new member id that
    # joins with it takes this member's place and partitions (``_take_over``).
    instance_id: str | None = None
    # Cooperative members: the partitions it said it still owns in its last join
    # (eager members own nothing while they rejoin); ``_try_complete`` gives
    # none of them to another member.
    owned: frozenset[int] = frozenset()
    # When it was last told it is a member (a join, an accepted heartbeat): the
    # client keeps its partitions up to a session timeout after that.
    affirmed_at: float = 0.0
    # It joined saying it rebalances cooperatively: it keeps consuming while it
    # rejoins, so a rebalance deadline must not drop it while it may still do so.
    cooperative: bool = False

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
    # Loaded from a record (or re-created from a group that was): no start-up grace.
    restored: bool = False
    # The highest generation number put into a record (committed or not): the
    # next one is above it, so a number never names two assignments.
    proposed: int = 0
    # REBALANCING only: the generation formed, waiting for its record to commit.
    pending: tuple[int, dict[str, tuple[int, ...]]] | None = None
    # The last formed (or restored) assignment, kept through a rebalance so the
    # next generation can leave partitions where they were (``sticky_assign``).
    previous: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Member ids a static member's takeover replaced -> their instance id: they
    # get FENCED_INSTANCE_ID instead of rejoining and taking the instance back.
    fenced: dict[str, str] = field(default_factory=dict)
    # Deleted (``raftlog group delete``): a tombstone that only keeps the number,
    # so a group joined again under the name counts on from it. Hidden from
    # list and describe; the first join makes a new group of it.
    deleted: bool = False
    # When its last member went, or this coordinator first saw it empty (None:
    # it has members, or nobody looked yet): offsets retention (``idle_groups``).
    empty_since: float | None = None


@dataclass(frozen=True, slots=True)
class JoinResult:
    member_id: str
    generation: int
    state: GroupState
    partitions: tuple[int, ...] | None  # None until the group is STABLE


@dataclass(frozen=True, slots=True)
class GroupDeletion:
    """What ``delete`` decided: the group's topic and partition count, the number
    the deletion takes (its offsets are deleted with it as their fence), and the
    tombstone record to commit first (None: the group was deleted already)."""

    group: str
    topic: str
    generation: int
    partitions: int
    record: SetConsumerGroup | None


@dataclass(frozen=True, slots=True)
class GroupView:
    name: str
    topic: str | None
    state: GroupState
    generation: int
    members: tuple[tuple[str, str, tuple[int, ...]], ...]  # (member id, client id, partitions)
    # Static members only: member id -> instance id.
    instance_ids: dict[str, str] = field(default_factory=dict)
    # Member ids that rebalance cooperatively; partitions this generation withheld.
    cooperative: frozenset[str] = frozenset()
    withheld: tuple[int, ...] = ()


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


def sticky_assign(
    members: list[str], partitions: int, previous: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """Balanced like ``range_assign``, keeping what each member owned before.

    Every member gets ``partitions // m`` or one more; the ones that get one
    more are those that already own the most (ties by member id), which keeps
    the largest number of partitions in place. A member keeps its lowest
    previous partitions up to its share; the rest, and every partition nobody
    keeps, go in ascending order to the members below their share, in member
    id order. Previous owners that are gone, partitions past ``partitions`` and
    a partition claimed twice (first member id wins) are ignored. With nothing
    to keep it is ``range_assign``.
    """
    ordered = sorted(members)
    if not ordered:
        return {}
    kept: dict[str, list[int]] = {}
    taken: set[int] = set()
    for member in ordered:
        owned = sorted(set(previous.get(member, ())))
        keep = [p for p in owned if p < partitions and p not in taken]
        taken.update(keep)
        kept[member] = keep
    if not taken:
        return range_assign(ordered, partitions)
    base, extra = divmod(partitions, len(ordered))
    larger = set(sorted(ordered, key=lambda m: (-len(kept[m]), m))[:extra])
    share = {member: base + (member in larger) for member in ordered}
    free = [p for p in range(partitions) if p not in taken]
    for member in ordered:
        free.extend(kept[member][share[member] :])
        del kept[member][share[member] :]
    free.sort()
    spare = iter(free)
    for member in ordered:
        kept[member].extend(next(spare) for _ in range(share[member] - len(kept[member])))
    return {member: tuple(sorted(kept[member])) for member in ordered}


class GroupCoordinator:
    """All consumer groups of one coordinator incarnation (one controller term).

    ``durable=False`` forms a generation at once, with no record (an in-memory
    coordinator: the client tests' fake server); the server is always durable.
    """

    def __init__(self, now: float, *, failover_margin_s: float = 1.0, durable: bool = True) -> None:
        self.started_at = now
        self.failover_margin_s = failover_margin_s
        self.durable = durable
        self.groups: dict[str, ConsumerGroup] = {}
        self.rebalances = 0  # generations formed, for raftlog_group_rebalances_total
        # Bumped by every change a waiting join may care about (members, state),
        # so the server wakes its long-polling joins only when something moved.
        self.version = 0
        # Records to persist, in the order they were made (``take_records``).
        self._records: list[SetConsumerGroup] = []

    # ------------------------------------------------------------ persistence

    def restore(self, records: Iterable[ConsumerGroupInfo], now: float) -> None:
        """Load the persisted groups (a new coordinator, before any request): STABLE
        with their generation, members and assignment; every member's session
        starts now. An empty record gives an EMPTY group that keeps counting."""
        for rec in records:
            g = ConsumerGroup(
                rec.name, rec.topic, rec.partitions, generation=rec.generation,
                restored=True, proposed=rec.generation,
            )  # fmt: skip
            for m in rec.members:
                session = m.session_timeout_ms / 1000.0
                g.members[m.member_id] = Member(
                    m.member_id, m.client_id, session, m.rebalance_timeout_ms / 1000.0,
                    last_seen=now, fence=now + session, instance_id=m.instance_id,
                    affirmed_at=now,
                )  # fmt: skip
                g.assignment[m.member_id] = tuple(m.partitions)
            g.state = GroupState.STABLE if g.members else GroupState.EMPTY
            g.deleted = rec.deleted
            self.groups[rec.name] = g
            if _withheld(g):
                # Formed with withheld partitions, and who still owns them was in
                # the previous controller's memory: let the joins say it again.
                self._start_rebalance(g, now)
        self.version += 1

    def take_records(self) -> list[SetConsumerGroup]:
        """The records made since the last call, oldest first: propose them in this
        order (an empty-group record must not overtake the generation before it)."""
        out, self._records = self._records, []
        return out

    def persisted(self, group: str, generation: int, ok: bool, now: float) -> None:
        """The outcome of ``generation``'s record. Committed: the generation is
        formed (the group goes STABLE, held joins get their partitions). Failed or
        unknown: the rebalance starts over; the members' polling joins rejoin it and
        the next attempt takes a higher number, so whatever happened to this record
        (a TIMEOUT may still commit) no number names two assignments."""
        g = self.groups.get(group)
        if g is None or g.pending is None or g.pending[0] != generation:
            return  # superseded (a membership change abandoned it): nothing to do
        assignment = g.pending[1]
        g.pending = None
        if ok:
            self._form(g, generation, assignment)
        else:
            self._start_rebalance(g, now)

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
        instance_id: str | None = None,
        owned: Iterable[int] = (),
        cooperative: bool = False,
    ) -> JoinResult:
        """Join (or rejoin, or poll a pending join of) ``member_id``; a new id when None.

        Idempotent for a given member id: a client that lost the reply, or
        polls until the group is stable, simply calls again. A known member
        joining a STABLE group gets the current assignment back (no rebalance).
        An id this coordinator does not know is accepted as a new member: after
        a coordinator fail-over members rejoin under their old ids.

        ``instance_id`` makes the member static (Kafka's group.instance.id): an
        unknown member id joining with the instance id of a current member
        takes that member's place, partitions and generation, with no rebalance
        (a restarted consumer gets its partitions back), and the replaced id is
        fenced (FENCED_INSTANCE_ID).

        ``owned``: the partitions a ``cooperative`` member still consumes (it keeps
        them through the rebalance); no generation gives them to another member
        until it joins again without them. A member of a STABLE group that
        joins reporting it gave up the last withheld partition starts the next
        rebalance (which hands them out).
        """
        _check_timeout("session", session_timeout, MIN_SESSION_TIMEOUT_S, MAX_SESSION_TIMEOUT_S)
        _check_timeout("rebalance", rebalance_timeout, MIN_SESSION_TIMEOUT_S,
                       MAX_REBALANCE_TIMEOUT_S)  # fmt: skip
        if partitions < 1:
            raise GroupError(ErrorCode.INVALID_REQUEST, f"topic {topic!r} has no partitions")
        if instance_id is not None and not 0 < len(instance_id) <= MAX_INSTANCE_ID_CHARS:
            raise GroupError(
                ErrorCode.INVALID_REQUEST,
                f"instance id must have 1 to {MAX_INSTANCE_ID_CHARS} characters",
            )
        g = self.groups.get(group)
        if g is not None:
            self._expire(g, now)
        if g is None or g.state is GroupState.EMPTY:
            g = self.groups[group] = ConsumerGroup(
                group, topic, partitions,
                generation=g.generation if g else 0,
                restored=g.restored if g else False,
                proposed=g.proposed if g else 0,
            )  # fmt: skip
        elif g.topic != topic:
            raise GroupError(
                ErrorCode.INVALID_REQUEST,
                f"group {group!r} consumes topic {g.topic!r}; one group consumes one topic",
            )
        if member_id is not None and member_id in g.fenced:
            raise _fenced_instance(group, member_id, g.fenced[member_id])
        member_id = member_id or f"{client_id or 'member'}-{uuid.uuid4().hex[:12]}"
        member = g.members.get(member_id)
        if member is None and instance_id is not None:
            member = self._take_over(g, instance_id, member_id, client_id, now)
        if member is None:
            g.members[member_id] = Member(
                member_id, client_id, session_timeout, rebalance_timeout, now,
                instance_id=instance_id,
            )  # fmt: skip
            self.version += 1
            g.pending = None  # a generation waiting for its record: it lacks this member
            if g.state is not GroupState.REBALANCING:
                self._start_rebalance(g, now)
        else:
            member.last_seen = now
            member.session_timeout = session_timeout
            member.rebalance_timeout = rebalance_timeout
        member = g.members[member_id]
        member.owned = frozenset(owned)
        member.affirmed_at = now
        member.cooperative = cooperative
        if g.state is GroupState.STABLE:
            self._release(g, now)
        if g.state is GroupState.STABLE and partitions != g.partitions:
            self._start_rebalance(g, now)  # the topic grew: spread the new partitions
        g.partitions = partitions
        if g.state is GroupState.REBALANCING:
            g.joined.add(member_id)
            self._try_complete(g, now)
        if g.state is GroupState.STABLE:
            return JoinResult(member_id, g.generation, g.state, g.assignment[member_id])
        return JoinResult(member_id, g.generation, g.state, None)

    def topic_of(self, group: str) -> str | None:
        g = self.groups.get(group)
        return None if g is None else g.topic

    def heartbeat(
        self, group: str, member_id: str, generation: int, now: float, partitions: int | None = None
    ) -> None:
        """Keep ``member_id``'s session alive; raises GroupError when it must rejoin.

        UNKNOWN_MEMBER: expired, left, or joined another coordinator: join again.
        REBALANCE_IN_PROGRESS: a rebalance is running, or ``generation`` is not
        the current one: give up the partitions and join again.
        ``partitions``: the topic's partition count now; when a stable group's
        topic has grown (``raftlog topic alter``), a rebalance spreads the new ones.
        """
        g = self.groups.get(group)
        if g is not None:
            self._expire(g, now)
            if (
                g.state is GroupState.STABLE
                and partitions is not None
                and partitions != g.partitions
            ):
                g.partitions = partitions
                self._start_rebalance(g, now)
        member = g.members.get(member_id) if g is not None else None
        if g is not None and member is None and member_id in g.fenced:
            raise _fenced_instance(group, member_id, g.fenced[member_id])
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
        member.affirmed_at = now
        # It heartbeats with this generation only after applying its assignment
        # (a cooperative member gave up what it lost first): it owns just that.
        member.owned = frozenset(g.assignment.get(member_id, ()))
        self._release(g, now)
        if g.state is GroupState.REBALANCING:
            raise GroupError(
                ErrorCode.REBALANCE_IN_PROGRESS,
                f"group {group!r} is rebalancing to hand out released partitions: rejoin",
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

    def list_groups(self, now: float) -> list[GroupView]:
        """Every group this coordinator knows (restored or joined), by name."""
        return [
            self.describe(name, now) for name, g in sorted(self.groups.items()) if not g.deleted
        ]

    def delete(self, group: str, now: float, topic: str | None = None) -> GroupDeletion:
        """Start deleting ``group`` (Kafka's DeleteGroups): only a group with no
        members. The deletion takes the next number, like a generation would; the
        caller commits its tombstone record, then reports it with ``deleted``, and
        deletes the group's committed offsets fenced at that number.

        A group deleted already answers the same again with no record, so an
        operator whose offset deletes did not all finish simply runs it again.
        Raises UNKNOWN_GROUP for a group this coordinator never knew, and
        GROUP_NOT_EMPTY while it has members (a live member would commit again).
        ``topic``, when given, must be the group's (INVALID_REQUEST otherwise).
        """
        g = self.groups.get(group)
        if g is None:
            raise GroupError(
                ErrorCode.UNKNOWN_GROUP,
                f"consumer group {group!r} is not known (it never formed a generation)",
            )
        if topic is not None and topic != g.topic:
            raise GroupError(
                ErrorCode.INVALID_REQUEST,
                f"group {group!r} consumes topic {g.topic!r}, not {topic!r}",
            )
        self._expire(g, now)
        if g.deleted:
            return GroupDeletion(g.name, g.topic, g.generation, g.partitions, None)
        if g.members:
            raise GroupError(
                ErrorCode.GROUP_NOT_EMPTY,
                f"consumer group {group!r} has {len(g.members)} member(s): stop its "
                "consumers first (a live member would commit its offsets again)",
                members=len(g.members),
            )
        number = max(g.generation, g.proposed) + 1
        g.proposed = number
        record = SetConsumerGroup(g.name, g.topic, number, g.partitions, (), deleted=True)
        return GroupDeletion(g.name, g.topic, number, g.partitions, record)

    def deleted(self, group: str, generation: int, now: float) -> bool:
        """The tombstone of ``generation`` committed. True when the group is now
        deleted; False when somebody joined it meanwhile (its generation, above
        the tombstone's, is the group's from now on)."""
        g = self.groups.get(group)
        if g is None or g.members or g.proposed != generation:
            return False
        g.deleted = True
        g.generation = generation
        self.version += 1
        return True

    def forget_topic(self, topic: str, now: float) -> list[str]:
        """Drop every group of ``topic`` (deleted): their members are told
        UNKNOWN_TOPIC, and a topic created again under the name starts with no
        members. No record: deleting the topic removed the stored groups."""
        gone = [name for name, g in self.groups.items() if g.topic == topic]
        for name in gone:
            del self.groups[name]
        if gone:
            self.version += 1
        return gone

    def describe(self, group: str, now: float) -> GroupView:
        g = self.groups.get(group)
        if g is None or g.deleted:
            return GroupView(group, None, GroupState.EMPTY, 0, ())
        self._expire(g, now)
        members = tuple(
            (m.member_id, m.client_id, g.assignment.get(m.member_id, ()))
            for m in sorted(g.members.values(), key=lambda m: m.member_id)
        )
        instance_ids = {
            m.member_id: m.instance_id for m in g.members.values() if m.instance_id is not None
        }
        cooperative = frozenset(m.member_id for m in g.members.values() if m.cooperative)
        return GroupView(
            g.name, g.topic, g.state, g.generation, members, instance_ids,
            cooperative, tuple(sorted(_withheld(g))),
        )  # fmt: skip

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
        if g.state is GroupState.REBALANCING and g.pending is None:
            times += [
                max(g.rebalance_deadline, _may_drop_at(m))
                for m in g.members.values()
                if m.member_id not in g.joined
            ]
            if g.joined.issuperset(g.members):
                times.append(self._grace_end(g))  # only the grace holds the generation back
        # A hair past the instant: expiry is strict (now > last_seen + timeout).
        return min(times) + 1e-6

    def idle_groups(self, now: float, retention_s: float) -> list[str]:
        """Groups that have had no members for at least ``retention_s``: the ones
        offsets retention deletes (Kafka's ``offsets.retention.minutes``, counted
        from when the group went empty as since KIP-211, so a live group that
        commits rarely keeps its offsets).

        Sessions past their timeout end here first, as on any call. A group
        that was already empty when this coordinator restored it counts from
        the first call that sees it: a controller change restarts the count,
        which can delay a deletion but never bring one forward.
        """
        idle = []
        for g in self.groups.values():
            self._expire(g, now)
            if g.deleted or g.members:
                continue
            if g.empty_since is None:
                g.empty_since = now
            elif now - g.empty_since >= retention_s:
                idle.append(g.name)
        return idle

    def active_groups(self) -> int:
        return sum(1 for g in self.groups.values() if g.members)

    # ------------------------------------------------------------ transitions

    def _grace_end(self, g: ConsumerGroup) -> float:
        """No generation forms before this (see the module docstring: members of a
        previous coordinator must have given up their partitions by then)."""
        if g.restored or self.durable:
            return self.started_at  # every generation handed out is in a restored record
        longest = max((m.session_timeout for m in g.members.values()), default=0.0)
        return self.started_at + longest + self.failover_margin_s

    def _take_over(
        self, g: ConsumerGroup, instance_id: str, member_id: str, client_id: str, now: float
    ) -> Member | None:
        """A static member's new id takes the place of the member holding
        ``instance_id``: same partitions, same generation, same place in a
        rebalance (and in a formed generation waiting for its record); the old
        id is fenced. None when no member holds the instance id.

        The generation's assignment is unchanged, only who holds one slot of it,
        so "one assignment per generation number" still holds across
        controllers; the record names the old id with the instance id, and a
        restored coordinator maps the new id back through the instance id on
        its next join. If the old process is still alive (two processes with
        one instance id), it reads the slot's partitions until its next
        heartbeat is refused, like any zombie: duplicates, never loss.
        """
        old = next((m for m in g.members.values() if m.instance_id == instance_id), None)
        if old is None:
            return None
        del g.members[old.member_id]
        member = Member(
            member_id, client_id, old.session_timeout, old.rebalance_timeout, now,
            fence=old.fence, instance_id=instance_id, affirmed_at=now,
        )  # fmt: skip
        g.members[member_id] = member
        slots = [g.assignment, g.previous] + ([g.pending[1]] if g.pending else [])
        for mapping in slots:
            if old.member_id in mapping:
                mapping[member_id] = mapping.pop(old.member_id)
        if old.member_id in g.joined:
            g.joined.discard(old.member_id)
            g.joined.add(member_id)
        g.fenced[old.member_id] = instance_id
        while len(g.fenced) > MAX_FENCED_PER_GROUP:
            del g.fenced[next(iter(g.fenced))]
        self.version += 1
        return member

    def _expire(self, g: ConsumerGroup, now: float) -> None:
        gone = [m for m, member in g.members.items() if member.expired(now)]
        if g.state is GroupState.REBALANCING and now >= g.rebalance_deadline:
            # Too slow to rejoin: dropped from the generation being formed (not a
            # restored member before its fence: see ``Member.fence``, nor one
            # that may still consume its partitions: see ``Member.affirmed_at``).
            gone += [
                m
                for m, member in g.members.items()
                if m not in g.joined and m not in gone and now >= _may_drop_at(member)
            ]
        if gone:
            self._remove(g, gone, now)
        elif g.state is GroupState.REBALANCING:
            self._try_complete(g, now)

    def _remove(self, g: ConsumerGroup, gone: list[str], now: float) -> None:
        self.version += 1
        for m in gone:
            g.members.pop(m, None)
            g.joined.discard(m)
        g.pending = None  # a generation waiting for its record: it holds a member now gone
        if not g.members:
            g.state = GroupState.EMPTY
            g.assignment = {}
            g.previous = {}
            g.joined = set()
            g.empty_since = now
            if self.durable and (g.generation or g.proposed):
                # Persist the emptiness, or a later controller restores the
                # members of the last record and waits out their sessions.
                number = max(g.generation, g.proposed)
                self._records.append(SetConsumerGroup(g.name, g.topic, number, g.partitions))
        elif g.state is GroupState.STABLE:
            self._start_rebalance(g, now)
        else:
            self._try_complete(g, now)

    def _start_rebalance(self, g: ConsumerGroup, now: float) -> None:
        # The old assignment ends here. Eager members own nothing until the next
        # generation is formed; cooperative ones keep what they report in their
        # joins, and ``_try_complete`` gives that to nobody else.
        self.version += 1
        g.state = GroupState.REBALANCING
        if g.assignment:  # not when a rebalance starts over: keep the formed one
            g.previous = g.assignment
        g.assignment = {}
        g.joined = set()
        g.pending = None
        g.rebalance_deadline = now + max(m.rebalance_timeout for m in g.members.values())

    def _try_complete(self, g: ConsumerGroup, now: float) -> None:
        if g.state is not GroupState.REBALANCING or not g.members or g.pending is not None:
            return
        if not g.joined.issuperset(g.members) or now < self._grace_end(g):
            return
        generation = max(g.generation, g.proposed) + 1
        assignment = _withhold_owned(
            sticky_assign(list(g.members), g.partitions, g.previous), g.members
        )
        if not self.durable:
            self._form(g, generation, assignment)
            return
        # Formed, but handed to nobody until its record commits (``persisted``).
        g.proposed = generation
        g.pending = (generation, assignment)
        members = tuple(
            GroupMemberEntry(
                m.member_id,
                m.client_id,
                round(m.session_timeout * 1000),
                round(m.rebalance_timeout * 1000),
                assignment[m.member_id],
                m.instance_id,
            )
            for m in sorted(g.members.values(), key=lambda m: m.member_id)
        )
        self._records.append(SetConsumerGroup(g.name, g.topic, generation, g.partitions, members))
        self.version += 1

    def _form(
        self, g: ConsumerGroup, generation: int, assignment: dict[str, tuple[int, ...]]
    ) -> None:
        g.generation = generation
        g.assignment = assignment
        g.state = GroupState.STABLE
        g.joined = set()
        for member in g.members.values():
            member.fence = 0.0  # it rejoined: it owns only what this generation gives it
        self.rebalances += 1
        self.version += 1

    def _release(self, g: ConsumerGroup, now: float) -> None:
        """A STABLE group whose withheld partitions nobody owns any more: start
        the rebalance that hands them out (the second of KIP-429's two)."""
        withheld = _withheld(g)
        if not withheld or any(m.owned & withheld for m in g.members.values()):
            return
        self._start_rebalance(g, now)


def _withheld(g: ConsumerGroup) -> frozenset[int]:
    """The partitions a STABLE group's generation gave nobody: a cooperative
    member still owned them when it formed (a whole assignment covers every
    partition), or so the restored record says."""
    if g.state is not GroupState.STABLE or not g.assignment:
        return frozenset()
    given = {p for parts in g.assignment.values() for p in parts}
    return frozenset(p for p in range(g.partitions) if p not in given)


def _withhold_owned(
    target: dict[str, tuple[int, ...]], members: dict[str, Member]
) -> dict[str, tuple[int, ...]]:
    """``target`` without the partitions another member still owns (cooperative):
    those go to their new owner in the next generation, after the old one let go."""
    owners: dict[int, set[str]] = {}
    for member in members.values():
        for p in member.owned:
            owners.setdefault(p, set()).add(member.member_id)
    return {
        member: tuple(p for p in parts if owners.get(p, {member}) == {member})
        for member, parts in target.items()
    }


def _may_drop_at(member: Member) -> float:
    """The earliest a rebalance deadline may drop ``member`` (if it did not join):
    not before its restore fence, nor, for a cooperative member, before its last
    affirmation's session ran out (it may consume until then)."""
    if not member.cooperative:
        return member.fence
    return max(member.fence, member.affirmed_at + member.session_timeout)


def _fenced_instance(group: str, member_id: str, instance_id: str) -> GroupError:
    return GroupError(
        ErrorCode.FENCED_INSTANCE_ID,
        f"member {member_id!r} of group {group!r} was replaced by a newer member with "
        f"instance id {instance_id!r}: two consumers share that instance id, or this one "
        "restarted and its old session was taken over",
    )


def _check_timeout(what: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise GroupError(
            ErrorCode.INVALID_REQUEST,
            f"{what} timeout must be in [{low * 1000:.0f}, {high * 1000:.0f}] ms, "
            f"got {value * 1000:.0f} ms",
        )
