"""Per-group bookkeeping of the multi-raft driver.

One ``Group`` per Raft group hosted on this node: the core, its state
machine, and everything queued for or waiting on it. Only the driver task
mutates a Group's core; handlers only append to the ``queued_*`` lists and
await their waiters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import trio
from raftlog.log.commands import Produce, RetryKey
from raftlog.raft.node import RaftNode
from raftlog.raft.types import Entry, NodeId, Role

from .waiters import Waiter

METADATA_GROUP = 0


class GroupKind(Enum):
    METADATA = "metadata"
    PARTITION = "partition"


class StateMachine(Protocol):
    """What the driver needs of log.partition / log.metadata state machines."""

    applied_index: int

    def apply(self, entries: list[Entry], batch: Any) -> list[list[Any]]: ...


@dataclass(slots=True)
class Proposal:
    """An entry this node proposed as leader, awaiting its apply (keyed by index)."""

    term: int
    waiters: list[Waiter]  # one per command of the entry, in order
    nbytes: int
    # The idempotent produces in the entry, to forget in Group.inflight_produces
    # when the proposal ends (None: there are none).
    produce_keys: list[RetryKey] | None = None
    # Retries of a command of this entry that arrived while it was in flight:
    # (command position, the retry's command, its waiter).
    retries: list[tuple[int, Any, Waiter]] | None = None

    def all_waiters(self) -> list[Waiter]:
        if not self.retries:
            return self.waiters
        return self.waiters + [w for _, _, w in self.retries]


@dataclass(slots=True)
class Group:
    gid: int
    kind: GroupKind
    raft: RaftNode
    sm: Any  # PartitionStateMachine | MetadataStateMachine
    topic: str | None = None
    partition: int | None = None
    replicas: tuple[NodeId, ...] = ()
    # Filled by handlers, drained by the driver once per turn.
    queued_cmds: list[tuple[Any, Waiter]] = field(default_factory=list)
    queued_reads: list[Waiter] = field(default_factory=list)
    # In flight.
    proposals: dict[int, Proposal] = field(default_factory=dict)
    # Where each idempotent produce of ``proposals`` is: key -> (index, position).
    inflight_produces: dict[RetryKey, tuple[int, int]] = field(default_factory=dict)
    uncommitted_bytes: int = 0
    reads: dict[bytes, list[Waiter]] = field(default_factory=dict)  # read ctx -> waiters
    reads_at: list[tuple[int, list[Waiter]]] = field(default_factory=list)  # read index reached
    # Observed from Ready.soft_state.
    role: Role = Role.FOLLOWER
    leader: NodeId | None = None
    # Set (and replaced) after every apply: long-poll fetches wait on it.
    applied_event: trio.Event = field(default_factory=trio.Event)
    # Quiescence (see driver module docstring).
    quiet: bool = False
    quiet_checks: int = 0
    quiet_mark: tuple[int, int, int] = (0, 0, 0)  # (term, commit, last) at the last check
    quiet_under: NodeId | None = None  # a quiet follower: the leader node it relies on
    # (term, vote) last persisted: a Ready changing only the commit needs no fsync.
    durable_term_vote: tuple[int, NodeId | None] = (0, None)
    # Unsafe ack-before-commit mode only: offsets predicted at append time.
    unsafe_next_offset: int = 0

    @property
    def applied(self) -> int:
        return self.sm.applied_index

    def has_work(self) -> bool:
        return bool(
            self.queued_cmds or self.queued_reads or self.proposals or self.reads or self.reads_at
        )

    def unproposed_waiters(self) -> list[Waiter]:
        """Waiters whose request never entered the log: queued commands and every
        read, wherever it is in its ReadIndex round. Failing them claims no effect."""
        waiters = [w for _, w in self.queued_cmds] + self.queued_reads
        for ws in self.reads.values():
            waiters += ws
        for _, ws in self.reads_at:
            waiters += ws
        return waiters

    def track_produces(self, index: int, proposal: Proposal, commands: list[Any]) -> None:
        """Note where each idempotent produce of a new proposal is (original_of)."""
        for position, cmd in enumerate(commands):
            if type(cmd) is Produce and (key := cmd.retry_key) is not None:
                self.inflight_produces[key] = (index, position)
                if proposal.produce_keys is None:
                    proposal.produce_keys = []
                proposal.produce_keys.append(key)

    def original_of(self, cmd: Any) -> tuple[Proposal, int] | None:
        """The in-flight proposal holding the batch ``cmd`` retries, and where."""
        if type(cmd) is not Produce or (key := cmd.retry_key) is None:
            return None
        where = self.inflight_produces.get(key)
        if where is None or (proposal := self.proposals.get(where[0])) is None:
            return None
        return proposal, where[1]

    def forget_produces(self, index: int, proposal: Proposal) -> None:
        """The proposal at ``index`` ended: its batches are no longer in flight."""
        for key in proposal.produce_keys or ():
            # Only if it still points here: a later proposal may have taken the
            # key after this one was dropped from ``proposals``.
            where = self.inflight_produces.get(key)
            if where is not None and where[0] == index:
                del self.inflight_produces[key]

    def notify_applied(self) -> None:
        event, self.applied_event = self.applied_event, trio.Event()
        event.set()


def in_sequence_order(live: list[tuple[Any, Waiter]]) -> list[tuple[Any, Waiter]]:
    """``live`` with each producer's idempotent produces sorted by sequence.

    A producer's pipelined batches can reach the leader out of order: after a
    timeout the client forgets the leader, and its next batches of the
    partition go to other nodes and come back by redirects of different
    lengths (a node stalled in a slow fsync answers seconds late). In one
    proposal, a batch ahead of its predecessor would be refused at apply
    (OUT_OF_ORDER_SEQUENCE) and its retry would wait for another commit. The
    commands of one proposal are all unanswered, so any order of them is a
    valid linearization: putting a producer's batches in sequence order costs
    nothing. Each producer's batches keep the positions its batches had, so
    other commands do not move. Batches in different proposals are still
    judged in log order at apply.
    """
    if len(live) < 2:
        return live
    last: dict[int, int] = {}
    for cmd, _ in live:
        if (pid := _sequenced_producer(cmd)) is not None:
            previous = last.get(pid)
            if previous is not None and cmd.sequence < previous:
                break
            last[pid] = cmd.sequence
    else:
        return live  # the common case: already in order
    positions: dict[int, list[int]] = {}
    for i, (cmd, _) in enumerate(live):
        if (pid := _sequenced_producer(cmd)) is not None:
            positions.setdefault(pid, []).append(i)
    ordered = list(live)
    for indexes in positions.values():
        # sorted() is stable: a retry queued with its original stays after it.
        by_sequence = sorted((live[i] for i in indexes), key=lambda item: item[0].sequence)
        for i, item in zip(indexes, by_sequence, strict=True):
            ordered[i] = item
    return ordered


def _sequenced_producer(cmd: Any) -> int | None:
    """The producer id of an idempotent produce with a sequence, else None."""
    if type(cmd) is Produce and cmd.sequence is not None:
        return cmd.producer_id
    return None
