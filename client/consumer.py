"""Consumers: ``Consumer`` (trio, async iterator) and ``SyncConsumer`` (blocking).

A consumer reads one topic's partitions in offset order and remembers, per
partition, its *position*: the offset of the next record to hand out. It
starts from the group's committed offset (``group`` may be None for a
consumer that never commits), or, when the group never committed there, from
``auto_offset_reset`` ("earliest" = the partition's start offset, "latest" =
its end offset). ``commit()`` stores the positions through each partition's
Raft log, so a consumer restarted with the same group resumes exactly after
the last committed record (at-least-once for what was consumed but not yet
committed).

Two modes:

* Manual (``partitions=[...]``, or ``group=None``): reads exactly the given
  partitions (all of them when ``group`` is None and none are given) and never
  talks to the group coordinator. Two manual consumers of one group on one
  partition both read it and overwrite each other's commits.
* Group-managed (a ``group`` and no ``partitions``; Kafka's ``subscribe``):
  ``start()`` joins the group at the coordinator (the metadata group's
  leader) and reads only the partitions assigned to this member; the members
  of a group split the topic's partitions (ranges over the sorted member
  ids). A background task heartbeats every ``session_timeout / 3``. When the
  group rebalances (a member joined, left or died) the consumer stops handing
  out records of its partitions, commits what it has *processed* (with
  ``auto_commit``), rejoins, and resumes the new assignment from the group's
  committed offsets. ``close()`` (or leaving ``async with``) commits and
  leaves the group, so the others rebalance at once instead of after the
  session timeout.

Two rebalance protocols (``rebalance=``), as Kafka's consumers have:

* ``"eager"`` (the default): on every rebalance the consumer gives up all its
  partitions before it rejoins, so every member pauses until the new
  generation forms, even those whose partitions stay put.
* ``"cooperative"`` (Kafka KIP-429, the CooperativeStickyAssignor): the
  consumer keeps consuming its partitions while it rejoins and tells the
  coordinator which it owns; the new generation gives none of them to
  another member. A partition that must move is taken from its owner only
  (the owner stops it, commits what it processed, and rejoins); a second
  rebalance then hands it to its new owner. Partitions that stay put never
  pause. The price is a second rebalance whenever partitions move.
  Safety is the same as eager's: the consumer keeps its partitions only as
  long as the coordinator confirmed, within the last session timeout, that
  it is a member (a heartbeat, or a join answered ``confirmed``); past that,
  or when the coordinator no longer knows it (UNKNOWN_MEMBER), or a commit is
  fenced, it gives everything up as an eager member does. Members of both
  kinds may share a group.

"Processed": a record returned by ``poll()`` counts as processed once
``poll()`` is called again; a record from iteration once the next one is
asked for. A rebalance that revokes a partition while the application still
works on its last batch commits the position before that batch, so the new
owner reads the batch again: duplicates, never loss.

Commits are fenced by generation (group-managed; Kafka's ILLEGAL_GENERATION /
CommitFailedException). Every commit carries the member's generation, and the
partition refuses one of a generation older than a generation that already
committed there (log/partition.py). On each assignment, before handing out a
record, the consumer *claims* every assigned partition by committing its
starting position with its generation (``_claim``): from then on a member that
was dropped while it still consumed (a "zombie": paused or cut off longer than
its session) can no longer move that partition's offset. A commit refused that
way (``FencedError``) means the assignment is stale: the consumer stops handing
out the partition's records at once, gives the rest up and rejoins by itself.

Limits (group-managed), each a deliberate simplification:

* A zombie still READS until it notices (its heartbeats fail, or a commit is
  fenced): the records it hands out meanwhile are also handed to the new
  owner. Duplicates, never loss: the guarantee is at-least-once.
* A consumer gives its partitions up when no heartbeat (or join) SENT in
  the last session timeout succeeded: by then the coordinator may have
  expired it. A controller change costs nothing else: the new controller
  restores the group's persisted generation, and heartbeats redirected to
  it by NOT_LEADER keep the same member id, generation and partitions.
* One group consumes one topic.
* A static member (``group_instance_id``) that closes is not replaced until its
  session times out: its partitions are read by nobody meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import trio

from .aio import DEFAULT_MAX_FETCH_BYTES, AsyncClient
from .errors import (
    ErrorCode,
    FencedError,
    FencedInstanceIdError,
    OutOfRangeError,
    RaftlogError,
    RebalanceInProgressError,
    RequestTimeoutError,
    UnauthorizedError,
    UnknownMemberError,
)
from .group_member import Assignment, GroupMember
from .models import FetchResult
from .protocol import COOPERATIVE, EAGER, LINEARIZABLE, REBALANCE_PROTOCOLS, Record
from .replica_reads import check_consistency

if TYPE_CHECKING:
    from .sync import Client

log = logging.getLogger(__name__)

RESET_POLICIES = ("earliest", "latest")
DEFAULT_SESSION_TIMEOUT_S = 10.0
DEFAULT_REBALANCE_TIMEOUT_S = 60.0
# While a rebalance runs there is nothing to hand out: wait at least this long
# for the new assignment before returning empty (no busy loop of empty polls).
ASSIGNMENT_WAIT_S = 0.5
# Pause between attempts to rejoin a coordinator that cannot be reached.
REJOIN_BACKOFF_S = 0.5
# After a heartbeat that got no answer (a controller paused, dead or cut off),
# the next one goes out this soon, not a whole interval later: a new controller
# is usually there within an election timeout, and the session is short.
HEARTBEAT_RETRY_S = 0.1
# start(): joins whose claim was fenced (a newer generation formed meanwhile)
# before giving up; each join already waits for the newest generation.
START_FENCED_ATTEMPTS = 3


class Consumer:
    """Reads ``topic``'s partitions for ``group``; ``async for partition, record in consumer``.

    Group-managed (no ``partitions``, a ``group``): use ``async with consumer``
    or ``await consumer.start()`` ... ``await consumer.close()``.

    ``group_instance_id`` (group-managed; Kafka's ``group.instance.id``) makes
    the member static: ``close()`` does not leave the group, and a consumer
    started again with the same instance id within ``session_timeout`` takes
    its partitions back without a rebalance of the others. Give every process
    its own id (a host name, a pod name): a second consumer with the same id
    takes the partitions over, and the first one's reads then raise
    ``FencedInstanceIdError``.

    ``rebalance="cooperative"`` (group-managed) keeps consuming the partitions
    that stay with this member through a rebalance, instead of pausing them
    all (Kafka's cooperative rebalancing; see the module docstring).

    ``consistency="serializable"`` reads records from any replica (the
    client's ``prefer_replica`` first) instead of the leader: the same records
    at the same offsets, possibly later, and still served by a replica cut off
    from the leader. ``at_end()`` then means the end of that replica's copy.
    """

    def __init__(
        self,
        client: AsyncClient,
        group: str | None,
        topic: str,
        partitions: list[int] | None = None,
        *,
        auto_offset_reset: str = "earliest",
        max_wait: float = 0.5,
        max_records: int | None = None,
        max_bytes: int = DEFAULT_MAX_FETCH_BYTES,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT_S,
        rebalance_timeout: float = DEFAULT_REBALANCE_TIMEOUT_S,
        auto_commit: bool = True,
        claim_uncommitted: bool = True,
        group_instance_id: str | None = None,
        consistency: str = LINEARIZABLE,
        rebalance: str = EAGER,
    ) -> None:
        check_consistency(consistency)
        if rebalance not in REBALANCE_PROTOCOLS:
            raise ValueError(f"rebalance must be one of {REBALANCE_PROTOCOLS}, got {rebalance!r}")
        if rebalance != EAGER and (group is None or partitions is not None):
            raise ValueError(
                "rebalance applies to a group-managed consumer (a group, no partitions)"
            )
        if auto_offset_reset not in RESET_POLICIES:
            raise ValueError(f"auto_offset_reset must be one of {RESET_POLICIES}")
        if group_instance_id is not None and (group is None or partitions is not None):
            raise ValueError(
                "group_instance_id needs a group-managed consumer (a group, no partitions)"
            )
        self.client = client
        self.group = group
        self.topic = topic
        self.auto_offset_reset = auto_offset_reset
        self.max_wait = max_wait
        self.max_records = max_records
        self.max_bytes = max_bytes
        # How fetches and offset resets read (AsyncClient.fetch); committed
        # offsets are always read from the leader.
        self.consistency = consistency
        # Group-managed only: commit processed positions on a rebalance and on close.
        self.auto_commit = auto_commit
        # Group-managed only: claim (commit the starting position of) partitions the
        # group never committed too. False: only those it did, so a partition without
        # a committed offset keeps none (``raftlog group reset-offsets --partition``).
        self.claim_uncommitted = claim_uncommitted
        self.cooperative = rebalance == COOPERATIVE
        self._assigned = list(partitions) if partitions is not None else None
        self._positions: dict[int, int] = {}
        self._ends: dict[int, int] = {}  # last end_offset seen per partition
        self._committed_positions: dict[int, int] = {}
        self._buffer: deque[tuple[int, Record]] = deque()  # fetched, not handed out
        self._started = False
        self._member: GroupMember | None = None
        if partitions is None and group is not None:
            self._member = GroupMember(
                client, group, topic,
                session_timeout=session_timeout, rebalance_timeout=rebalance_timeout,
                instance_id=group_instance_id, cooperative=rebalance == COOPERATIVE,
            )  # fmt: skip
        # Set when a newer member took this one's group_instance_id: every read raises it.
        self._fatal: FencedInstanceIdError | UnauthorizedError | None = None
        self._generation: int | None = None
        # Bumped whenever the assignment changes: records fetched for an older
        # assignment are dropped, never handed out.
        self._epoch = 0
        self._ready: trio.Event | None = None  # group-managed: set while an assignment holds
        # Set (and renewed) when the current assignment ends or changes.
        self._revoked: trio.Event | None = None
        # Set when a commit of the current generation was FENCED: the group task rejoins.
        self._stale: trio.Event | None = None
        # Handed out but not yet known to be processed: partition -> first such offset.
        self._unconfirmed: dict[int, int] = {}
        # SyncConsumer takes records in the caller's thread while the group task
        # may revoke in the client's thread: both hold this for their few lines.
        self._lock = threading.Lock()
        self._group_scope: trio.CancelScope | None = None
        self._fetch_scope: trio.CancelScope | None = None
        self._closed = False

    # ------------------------------------------------------------ positions

    @property
    def group_managed(self) -> bool:
        return self._member is not None

    @property
    def partitions(self) -> list[int]:
        """The partitions this consumer reads now (group-managed: its current
        assignment, empty while a rebalance runs)."""
        if self._assigned is None:
            raise RuntimeError("consumer not started: call await consumer.start()")
        return list(self._assigned)

    @property
    def generation(self) -> int | None:
        """The group generation of the current assignment (None: manual, or rebalancing)."""
        return self._generation

    @property
    def member_id(self) -> str | None:
        return self._member.member_id if self._member is not None else None

    async def start(self) -> None:
        """Resolve the partitions and their starting positions (done on first use);
        group-managed: join the group and start heartbeating."""
        if self._started:
            return
        if self._closed:
            raise RuntimeError("consumer is closed")
        if self._member is not None:
            self._ready = trio.Event()
            self._stale = trio.Event()
            assignment = await self._join_and_assign()
            self._spawn_group_task(assignment.granted_at)
        else:
            if self._assigned is None:
                count = await self.client.partitions_for(self.topic, consistency=self.consistency)
                self._assigned = list(range(count))
            await self._init_positions(self._assigned)
        self._started = True

    async def _init_positions(self, partitions: list[int]) -> None:
        for p in partitions:
            if p in self._positions:
                continue  # seek() before start wins
            committed = (
                await self.client.committed(self.group, self.topic, p)
                if self.group is not None
                else None
            )
            if committed is not None:
                self._positions[p] = committed
                self._committed_positions[p] = committed
            else:
                self._positions[p] = await self._reset_position(p)

    async def _reset_position(self, partition: int) -> int:
        offsets = await self.client.list_offsets(
            self.topic, partition, consistency=self.consistency
        )
        self._ends[partition] = offsets.end_offset
        if self.auto_offset_reset == "earliest":
            return offsets.start_offset
        return offsets.end_offset

    def seek(self, partition: int, offset: int) -> None:
        """Make ``offset`` the next record handed out for ``partition``."""
        if self._assigned is not None and partition not in self._assigned:
            raise ValueError(f"partition {partition} is not assigned to this consumer")
        with self._lock:
            self._positions[partition] = offset
            self._unconfirmed.pop(partition, None)
            self._buffer = deque((p, r) for p, r in self._buffer if p != partition)

    async def seek_to_time(self, timestamp_ms: int) -> dict[int, int]:
        """Seek every assigned partition to its first record stamped at or after
        ``timestamp_ms`` (ms since the epoch; ``AsyncClient.offset_for_time``), or to
        its end when all its records are older: Kafka's ``offsetsForTimes`` then
        ``seek``. Returns the new positions. A group member's later assignments
        start from the group's commits again, as after ``seek``."""
        await self.start()
        found = await self.client.offsets_for_time(
            self.topic, timestamp_ms, partitions=self.partitions, consistency=self.consistency
        )
        positions: dict[int, int] = {}
        for p, hit in found.items():
            if hit is None:
                offsets = await self.client.list_offsets(
                    self.topic, p, consistency=self.consistency
                )
                self._ends[p] = offsets.end_offset
                positions[p] = offsets.end_offset
            else:
                positions[p] = hit.offset
            self.seek(p, positions[p])
        return positions

    def position(self, partition: int) -> int:
        """The offset of the next record this consumer will hand out for ``partition``."""
        return self._positions[partition]

    def at_end(self) -> bool:
        """True when every partition's position has reached the end offset last seen
        (never while a group rebalance leaves this consumer without an assignment)."""
        if self._ready is not None and not self._ready.is_set():
            return False
        return (
            not self._buffer
            and all(self._positions.get(p, 0) >= self._ends.get(p, 0) for p in self._assigned or [])
            and all(p in self._ends for p in self._assigned or [])
        )

    # ------------------------------------------------------------ group membership

    async def _join_and_assign(self) -> Assignment:
        """start(): join and take the assignment; a claim that is fenced means a newer
        generation formed meanwhile, so join again (a few times)."""
        member = self._member
        assert member is not None
        attempt = 0
        while True:
            attempt += 1
            assignment = await member.join()
            try:
                await self._assign(assignment)
                return assignment
            except FencedError as exc:
                if attempt >= START_FENCED_ATTEMPTS:
                    raise
                log.info("event=consumer_claim_fenced group=%s member=%s error=%s",
                         self.group, member.member_id, exc)  # fmt: skip

    async def _assign(self, assignment: Assignment) -> None:
        """Take over ``assignment``: positions from the group's committed offsets,
        each partition claimed for its generation before any record is handed out."""
        parts = list(assignment.partitions)
        for p in [p for p in self._positions if p not in parts]:
            del self._positions[p]  # e.g. a seek() before start of a partition not ours
        preset = set(self._positions)  # seek() before start
        try:
            await self._init_positions(parts)
            await self._claim(parts, assignment.generation)
        except BaseException:
            # Not ours after all (a rejoin follows): positions read for this
            # assignment must not pass for seeks in the next one.
            for p in parts:
                if p not in preset:
                    self._positions.pop(p, None)
            raise
        self._adopt(parts, assignment.generation)
        assert self._ready is not None
        self._ready.set()
        log.info(
            "event=consumer_assigned group=%s member=%s generation=%d partitions=%s",
            self.group, self.member_id, assignment.generation, parts,
        )  # fmt: skip

    async def _claim(self, partitions: list[int], generation: int) -> None:
        """Fence older generations out of ``partitions``: commit each starting position
        with our generation. After this, a commit of any older generation there is
        refused (log/partition.py), so a zombie of the previous owner can no longer
        move the offset we resume from. A claim that is FENCED means a newer
        generation already claimed: this assignment is stale (FencedError).

        The race: a zombie of generation g may commit between our read of the
        committed offset (``_init_positions``) and this claim of g+1; it still
        passes, since g+1 has not committed yet. Our claim then overwrites it
        with the position we resume from. That only costs DUPLICATES, never a
        loss: the committed offset is exactly where we start, so we read again
        whatever the zombie committed past it, and a zombie commit below it
        (backwards) is overwritten. Once the claim is applied nothing older
        passes. (A claim that times out may still land: harmless, the rejoin
        that follows claims again.)
        """
        assert self.group is not None
        for p in partitions:
            if not self.claim_uncommitted and p not in self._committed_positions:
                continue  # nothing committed here to protect, and nothing to add
            position = self._positions[p]
            await self.client.commit_offset(
                self.group, self.topic, p, position, generation=generation
            )
            self._committed_positions[p] = position

    def _drop_fenced(self, partition: int, generation: int | None) -> None:
        """A commit of ``generation`` on ``partition`` was FENCED: a newer generation
        owns it. Stop handing out its records now and make the group task rejoin
        (which gives the rest of this stale assignment up). A fence of an older
        generation than the current one (a commit that raced a rebalance) says
        nothing about the current assignment."""
        with self._lock:
            if generation is None or generation != self._generation:
                return
            if partition in (self._assigned or []):
                self._assigned = [p for p in self._assigned or [] if p != partition]
                self._positions.pop(partition, None)
                self._unconfirmed.pop(partition, None)
                self._buffer = deque((p, r) for p, r in self._buffer if p != partition)
                self._epoch += 1  # records being fetched now are dropped too
        if self._fetch_scope is not None:
            self._fetch_scope.cancel()
        if self._stale is not None:
            self._stale.set()
        log.info("event=consumer_commit_fenced group=%s member=%s generation=%d partition=%d",
                 self.group, self.member_id, generation, partition)  # fmt: skip

    async def _revoke(self, *, commit: bool = True) -> None:
        """Stop handing out records of every assigned partition (eager rebalance),
        then commit what was processed (``auto_commit``, unless ``commit`` is False)."""
        self._ready = trio.Event()
        if self._revoked is not None:
            self._revoked.set()
        if self._fetch_scope is not None:
            self._fetch_scope.cancel()  # a long poll of partitions no longer ours
        with self._lock:
            owned = self._assigned or []
            generation = self._generation  # the processed records' generation
            processed = {
                p: self._unconfirmed.get(p, self._positions[p])
                for p in owned
                if p in self._positions
            }
            self._epoch += 1
            self._assigned = []
            self._generation = None
            self._buffer.clear()
            self._unconfirmed.clear()
            for p in owned:
                self._positions.pop(p, None)
        if self.auto_commit and commit:
            await self._commit_quietly(processed, generation)

    async def _commit_quietly(self, offsets: dict[int, int], generation: int | None) -> None:
        """Commit what moved, with the generation the records were handed out in; a
        failure (FENCED included: a newer owner has claimed) only means those
        records come again."""
        assert self.group is not None
        todo = {p: o for p, o in offsets.items() if self._committed_positions.get(p) != o}
        for p, offset in sorted(todo.items()):
            try:
                await self.client.commit_offset(
                    self.group, self.topic, p, offset, generation=generation
                )
            except RaftlogError as exc:
                log.warning("event=consumer_commit_failed group=%s partition=%d error=%s",
                            self.group, p, exc)  # fmt: skip
                continue
            self._committed_positions[p] = offset

    def _spawn_group_task(self, granted_at: float) -> None:
        nursery = self.client._nursery
        if nursery is None:
            raise RuntimeError("AsyncClient used outside 'async with'")
        self._group_scope = trio.CancelScope()
        nursery.start_soon(self._group_task, self._group_scope, granted_at)

    async def _group_task(self, scope: trio.CancelScope, granted_at: float) -> None:
        """Heartbeat; on REBALANCE_IN_PROGRESS / UNKNOWN_MEMBER, or when no heartbeat
        succeeded for a session timeout, give the partitions up and rejoin."""
        member = self._member
        assert member is not None
        with scope:
            try:
                await self._heartbeat_loop(member, granted_at)
            except (FencedInstanceIdError, UnauthorizedError) as exc:
                # Fenced: not ours any more, and rejoining would take the instance
                # back from the newer member. Unauthorized (a token or a grant
                # withdrawn, cluster.toml [[auth.user]]): retrying cannot help.
                # Either way give up without committing and stop; reads raise it.
                log.warning("event=consumer_stopped group=%s member=%s error=%s",
                            self.group, member.member_id, exc)  # fmt: skip
                self._fatal = exc
                await self._revoke(commit=False)
                assert self._ready is not None
                self._ready.set()  # wake a read waiting for an assignment: it raises

    async def _heartbeat_loop(self, member: GroupMember, granted_at: float) -> None:
        """Heartbeat every interval; rejoin when told to, when a commit was fenced,
        or when no heartbeat succeeded for a session timeout."""
        last_ok = granted_at  # when the join was sent: the session counts from there
        pause = member.heartbeat_interval
        while True:
            stale = self._stale
            assert stale is not None
            with trio.move_on_after(pause):
                await stale.wait()
            if stale.is_set():  # a commit was fenced: this generation is over
                log.info("event=consumer_rejoin group=%s member=%s reason=FENCED",
                         self.group, member.member_id)  # fmt: skip
                last_ok = await self._rebalance()
                pause = member.heartbeat_interval
                continue
            pause = member.heartbeat_interval
            sent = trio.current_time()
            told = False  # the coordinator said: rejoin
            keep = False  # ... and we may keep our partitions meanwhile (cooperative)
            # Past last_ok + session the coordinator may have expired us and
            # handed our partitions out: give them up by then, not later.
            with trio.move_on_at(last_ok + member.session_timeout):
                try:
                    await member.heartbeat(self._generation or 0)
                    last_ok = sent
                except (FencedInstanceIdError, UnauthorizedError):
                    raise  # fatal: see _group_task
                except (RebalanceInProgressError, UnknownMemberError) as exc:
                    told = True
                    # Still a member, only rebalancing: a cooperative consumer keeps
                    # its partitions. Not known any more: they may be someone else's.
                    keep = self.cooperative and isinstance(exc, RebalanceInProgressError)
                    log.info("event=consumer_rejoin group=%s member=%s reason=%s",
                             self.group, member.member_id, exc.code.value)  # fmt: skip
                except RaftlogError as exc:  # transient: retried soon
                    log.debug("event=heartbeat_failed group=%s error=%s", self.group, exc)
                    pause = min(pause, HEARTBEAT_RETRY_S)
            if not told and trio.current_time() < last_ok + member.session_timeout:
                continue
            if not told:
                log.warning("event=consumer_session_lost group=%s member=%s",
                            self.group, member.member_id)  # fmt: skip
            if keep and self._generation is not None:
                last_ok = await self._rebalance_cooperatively(last_ok)
            else:
                last_ok = await self._rebalance()

    async def _rebalance(self) -> float:
        """Give the partitions up and rejoin; returns when the winning join was sent
        (the session counts from there, not from when the assignment arrived)."""
        # A fence of the generation being given up needs no second rejoin.
        self._stale = trio.Event()
        await self._revoke()
        member = self._member
        assert member is not None
        while True:
            try:
                assignment = await member.join()
                await self._assign(assignment)
                return assignment.granted_at
            except (FencedInstanceIdError, UnauthorizedError):
                raise  # fatal: see _group_task
            except RaftlogError as exc:
                log.warning("event=consumer_join_failed group=%s error=%s", self.group, exc)
                await trio.sleep(REJOIN_BACKOFF_S)

    async def _rebalance_cooperatively(self, last_ok: float) -> float:
        """Rejoin while consuming the partitions we own (Kafka KIP-429); returns
        when the winning join was sent.

        Each join reports what we own; each answer the coordinator confirmed
        extends our hold on it a session timeout from when that join was sent.
        An assignment that lacks some of our partitions: stop those, commit what
        was processed, and join again at once, so the next rebalance can hand
        them out. If the hold runs out (no confirmed answer for a session), a
        claim is fenced, or joining keeps failing until then, fall back to the
        eager way: give everything up and rejoin.
        """
        member = self._member
        assert member is not None
        while True:
            with trio.CancelScope(deadline=last_ok + member.session_timeout) as hold:

                def confirmed(sent: float) -> None:
                    nonlocal last_ok
                    last_ok = max(last_ok, sent)
                    hold.deadline = last_ok + member.session_timeout

                try:
                    assignment = await member.join(self._assigned or [], confirmed)
                    confirmed(assignment.granted_at)
                    gave_up = await self._assign_cooperatively(assignment)
                except (FencedInstanceIdError, UnauthorizedError):
                    raise  # fatal: see _group_task
                except FencedError as exc:
                    log.info("event=consumer_claim_fenced group=%s member=%s error=%s",
                             self.group, member.member_id, exc)  # fmt: skip
                    break
                except RaftlogError as exc:
                    log.warning("event=consumer_join_failed group=%s error=%s", self.group, exc)
                    await trio.sleep(REJOIN_BACKOFF_S)
                    continue
                if not gave_up:
                    return assignment.granted_at
                continue  # gave partitions up: rejoin so they can be handed out
            if hold.cancelled_caught:
                log.warning("event=consumer_session_lost group=%s member=%s during=rejoin",
                            self.group, member.member_id)  # fmt: skip
                break
        return await self._rebalance()

    async def _assign_cooperatively(self, assignment: Assignment) -> bool:
        """Move to ``assignment`` keeping the partitions it leaves us: stop and commit
        the ones it takes away, then claim the new ones. True when it took any."""
        new = list(assignment.partitions)
        old = set(self._assigned or [])
        lost = old - set(new)
        if lost:
            await self._revoke_partitions(lost)
        gained = [p for p in new if p not in old]
        try:
            await self._init_positions(gained)
            await self._claim(gained, assignment.generation)
        except BaseException:
            for p in gained:  # not ours after all: no stale positions for a later seek
                self._positions.pop(p, None)
            raise
        # Only now: a heartbeat with this generation tells the coordinator we gave
        # up what it took away (server/group_coordinator.py).
        self._adopt(new, assignment.generation)
        log.info(
            "event=consumer_assigned group=%s member=%s generation=%d partitions=%s "
            "kept=%d gained=%s revoked=%s",
            self.group, self.member_id, assignment.generation, new,
            len(old & set(new)), gained, sorted(lost),
        )  # fmt: skip
        return bool(lost)

    async def _revoke_partitions(self, lost: set[int]) -> None:
        """Stop handing out records of ``lost`` (cooperative rebalance; the others go
        on), then commit what was processed there (``auto_commit``)."""
        if self._fetch_scope is not None:
            self._fetch_scope.cancel()  # a long poll that includes them
        with self._lock:
            generation = self._generation
            processed = {
                p: self._unconfirmed.get(p, self._positions[p])
                for p in lost
                if p in self._positions
            }
            self._epoch += 1
            self._assigned = [p for p in self._assigned or [] if p not in lost]
            self._buffer = deque((p, r) for p, r in self._buffer if p not in lost)
            for p in lost:
                self._positions.pop(p, None)
                self._unconfirmed.pop(p, None)
        if self.auto_commit:
            await self._commit_quietly(processed, generation)

    def _adopt(self, partitions: list[int], generation: int) -> None:
        """Make ``partitions`` of ``generation`` the assignment (fetches started for
        the previous one are dropped), and wake a read waiting without partitions."""
        with self._lock:
            self._assigned = partitions
            self._generation = generation
            self._epoch += 1
        if self._revoked is not None:
            self._revoked.set()
        self._revoked = trio.Event()

    async def close(self) -> None:
        """Group-managed: stop heartbeating, commit the positions (``auto_commit``)
        and leave the group, so its partitions are reassigned at once. A no-op
        for a manual consumer."""
        if self._closed:
            return
        self._closed = True
        if self._member is None or not self._started:
            return
        if self._group_scope is not None:
            self._group_scope.cancel()
        with self._lock:
            owned = {p: self._positions[p] for p in self._assigned or [] if p in self._positions}
            generation = self._generation
            self._assigned = []
            self._generation = None
            self._buffer.clear()
            self._epoch += 1
        if self.auto_commit:
            await self._commit_quietly(owned, generation)
        if self._member.instance_id is not None:
            # A static member does not leave (Kafka KIP-345): its partitions wait a
            # session timeout for it to restart under the same instance id.
            log.info("event=consumer_closed_static group=%s instance=%s",
                     self.group, self._member.instance_id)  # fmt: skip
            return
        try:
            await self._member.leave()
        except RaftlogError as exc:  # it expires after its session timeout anyway
            log.warning("event=consumer_leave_failed group=%s error=%s", self.group, exc)

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # ------------------------------------------------------------ reading

    async def poll(self, max_wait: float | None = None) -> list[tuple[int, Record]]:
        """Records not handed out yet, as (partition, record); may be empty.

        Fetches every partition; if none has records, long-polls them all for
        up to ``max_wait`` seconds and returns as soon as one has data. The
        returned records count as consumed (positions advance past them).
        """
        self._confirm()  # the caller is done with what the last poll returned
        await self._fill(max_wait)
        with self._lock:
            out = list(self._buffer)
            self._buffer.clear()
            for p, record in out:
                self._positions[p] = record.offset + 1
                if self._member is not None:
                    self._unconfirmed.setdefault(p, record.offset)
        return out

    def _confirm(self) -> None:
        if self._unconfirmed:
            with self._lock:
                self._unconfirmed.clear()

    async def _fill(self, max_wait: float | None = None) -> None:
        """Fetch into the buffer (if it is empty) WITHOUT advancing positions."""
        await self.start()
        if self._fatal is not None:
            raise self._fatal
        if self._buffer:
            return
        wait = self.max_wait if max_wait is None else max_wait
        ready = self._ready
        if ready is not None and not ready.is_set():
            with trio.move_on_after(max(wait, ASSIGNMENT_WAIT_S)):
                await ready.wait()
            if self._fatal is not None:
                raise self._fatal
            if not ready.is_set():
                return
        if not self.partitions:
            # Assigned nothing (more members than partitions): wait like an empty
            # long poll, or until a rebalance may bring partitions.
            revoked = self._revoked if self._revoked is not None else trio.Event()
            with trio.move_on_after(wait):
                await revoked.wait()
            await trio.lowlevel.checkpoint()
            return
        epoch = self._epoch
        results: dict[int, FetchResult] = {}
        with trio.CancelScope() as scope:
            self._fetch_scope = scope
            results = await self._fetch_all(0.0, epoch)
            if not any(r.records for r in results.values()) and wait > 0:
                results = await self._fetch_all(wait, epoch)
        if self._fetch_scope is scope:
            self._fetch_scope = None
        if epoch != self._epoch:
            return  # the assignment changed meanwhile: these records are not ours
        for p in self.partitions:
            result = results.get(p)
            if result is not None and result.records:
                self._buffer.extend((p, r) for r in result.records)

    def _take(self) -> tuple[int, Record] | None:
        """Hand out the next buffered record: only now does its position advance.
        None when a rebalance emptied the buffer meanwhile."""
        with self._lock:
            if not self._buffer:
                return None
            p, record = self._buffer.popleft()
            self._positions[p] = record.offset + 1
            if self._member is not None:
                self._unconfirmed = {p: record.offset}
            return p, record

    async def _fetch_one(self, partition: int, wait: float, epoch: int) -> FetchResult:
        offset = self._positions.get(partition)
        if offset is None or epoch != self._epoch:
            return FetchResult([], 0, 0)  # revoked before this fetch started
        try:
            result = await self.client.fetch(
                self.topic, partition, offset, self.max_records, self.max_bytes, wait,
                consistency=self.consistency,
            )  # fmt: skip
        except OutOfRangeError as exc:
            if epoch != self._epoch:
                return FetchResult([], 0, 0)
            # Retention removed our position, or it is past the end (the log was
            # truncated/recreated): apply the reset policy.
            start, end = exc.details.get("start_offset"), exc.details.get("end_offset")
            if not (isinstance(start, int) and isinstance(end, int)):
                self._positions[partition] = await self._reset_position(partition)
                return FetchResult([], 0, self._ends.get(partition, 0))
            self._positions[partition] = start if self.auto_offset_reset == "earliest" else end
            self._ends[partition] = end
            return FetchResult([], start, end)
        self._ends[partition] = result.end_offset
        if not result.records and epoch == self._epoch:
            # Only records a compacted topic removed (README, "Compacted topics"):
            # move past them, or the next fetch would ask for them again.
            after = result.next_offset(offset)
            if after > offset and self._positions.get(partition) == offset:
                self._positions[partition] = after
        return result

    async def _fetch_all(self, wait: float, epoch: int) -> dict[int, FetchResult]:
        parts = self.partitions
        if not parts:
            return {}
        if len(parts) == 1:
            return {parts[0]: await self._fetch_one(parts[0], wait, epoch)}
        results: dict[int, FetchResult] = {}
        async with trio.open_nursery() as nursery:

            async def one(p: int) -> None:
                result = await self._fetch_one(p, wait, epoch)
                results[p] = result
                if result.records and wait > 0:
                    nursery.cancel_scope.cancel()  # data: stop the other long polls

            for p in parts:
                nursery.start_soon(one, p)
        return results

    async def __aiter__(self) -> AsyncIterator[tuple[int, Record]]:
        # Positions advance record by record, so breaking out of the loop and
        # committing never skips records that were fetched but not handed out.
        while True:
            await self._fill()
            while self._buffer:
                item = self._take()
                if item is None:
                    break
                yield item
                self._confirm()  # asked for the next one: that one is processed

    # ------------------------------------------------------------ commits

    async def commit(
        self, offsets: dict[int, int] | None = None, *, reset: bool = False
    ) -> dict[int, int]:
        """Commit ``offsets`` (partition -> next offset to consume), default the positions.

        ``reset``: the commits are an operator's offset reset, which the nodes
        audit (``raftlog group reset-offsets`` passes it).

        Only partitions whose position moved since the last commit are sent, in
        partition order. Returns what was committed.

        Group-managed: the commit carries this member's generation. FencedError
        (nothing more committed; the partitions before the failing one were)
        when the partition refuses it because a newer generation has claimed the
        partition (the consumer then stops handing out its records and rejoins
        by itself), and, without asking, when the consumer holds no assignment
        (a rebalance is running) or a partition is not assigned to it.
        """
        if self.group is None:
            raise ValueError("commit() needs a consumer group")
        await self.start()
        with self._lock:
            generation = self._generation if self._member is not None else None
            assigned = set(self._assigned or [])
            todo = (
                dict(offsets)
                if offsets is not None
                else {
                    p: pos
                    for p, pos in self._positions.items()
                    if self._committed_positions.get(p) != pos
                }
            )
        if self._member is not None and todo:
            if generation is None:
                raise FencedError(
                    f"group {self.group!r}: no assignment while the group rebalances; "
                    "nothing committed (the records come again)"
                )
            foreign = sorted(set(todo) - assigned)
            if foreign:
                raise FencedError(
                    f"group {self.group!r}: partitions {foreign} are not assigned to this "
                    f"member in generation {generation}; nothing committed"
                )
        for p, offset in sorted(todo.items()):
            try:
                await self.client.commit_offset(
                    self.group, self.topic, p, offset, generation=generation, reset=reset
                )
            except FencedError:
                self._drop_fenced(p, generation)
                raise
            except RequestTimeoutError as exc:
                # An earlier attempt's outcome is unknown, so the client reports
                # the retry's FENCED as a timeout: the commit may have landed
                # before the fence, but the assignment is stale all the same.
                if exc.details.get("cause") == ErrorCode.FENCED.value:
                    self._drop_fenced(p, generation)
                raise
            self._committed_positions[p] = offset
            self._note_processed(p, offset)
        return todo

    def _note_processed(self, partition: int, offset: int) -> None:
        """The application committed ``offset``: every record before it is processed.
        A rebalance's auto-commit (``_revoke``) must then not go back below it,
        as it would for records of the last poll it still counts as unprocessed
        (jepsen's groups workload, seed 43: a revoke moved an explicit commit of
        882 back to 881 within one generation, and 881 was delivered again)."""
        with self._lock:
            first = self._unconfirmed.get(partition)
            if first is None or offset <= first:
                return
            if offset >= self._positions.get(partition, offset):
                del self._unconfirmed[partition]
            else:
                self._unconfirmed[partition] = offset

    async def committed(self) -> dict[int, int | None]:
        """The group's committed offsets, per assigned partition (None: never committed)."""
        if self.group is None:
            raise ValueError("committed() needs a consumer group")
        await self.start()
        return {p: await self.client.committed(self.group, self.topic, p) for p in self.partitions}


class SyncConsumer:
    """Blocking facade over ``Consumer`` on a ``Client``: ``for partition, record in c``.

    Group-managed like ``Consumer`` when given a group and no ``partitions``;
    its heartbeats run on the Client's event loop. ``close()`` (or leaving
    ``with``) commits and leaves the group.
    """

    def __init__(self, client: Client, group: str | None, topic: str, **options: Any) -> None:
        self._client = client
        self._consumer = Consumer(client.async_client, group, topic, **options)

    @property
    def consumer(self) -> Consumer:
        return self._consumer

    def start(self) -> None:
        self._client.run(self._consumer.start)

    def poll(self, max_wait: float | None = None) -> list[tuple[int, Record]]:
        return self._client.run(self._consumer.poll, max_wait)

    def __iter__(self) -> Iterator[tuple[int, Record]]:
        return self.records(follow=True)

    def records(self, *, follow: bool = False) -> Iterator[tuple[int, Record]]:
        """Iterate (positions advance record by record); without ``follow`` stop
        once every partition is drained."""
        consumer = self._consumer
        while True:
            self._client.run(consumer._fill, None if follow else 0.0)
            if not consumer._buffer:
                if not follow and consumer.at_end():
                    return
                continue
            while True:
                item = consumer._take()
                if item is None:
                    break
                yield item
                consumer._confirm()

    def commit(self, offsets: dict[int, int] | None = None) -> dict[int, int]:
        return self._client.run(self._consumer.commit, offsets)

    def committed(self) -> dict[int, int | None]:
        return self._client.run(self._consumer.committed)

    def seek(self, partition: int, offset: int) -> None:
        self._consumer.seek(partition, offset)

    def seek_to_time(self, timestamp_ms: int) -> dict[int, int]:
        return self._client.run(self._consumer.seek_to_time, timestamp_ms)

    def position(self, partition: int) -> int:
        self._client.run(self._consumer.start)
        return self._consumer.position(partition)

    @property
    def partitions(self) -> list[int]:
        self._client.run(self._consumer.start)
        return self._consumer.partitions

    @property
    def generation(self) -> int | None:
        return self._consumer.generation

    def at_end(self) -> bool:
        return self._consumer.at_end()

    def close(self) -> None:
        """Group-managed: commit (``auto_commit``) and leave the group; else nothing."""
        self._client.run(self._consumer.close)

    def __enter__(self) -> SyncConsumer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
