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

from .producer_order import Parked
from .waiters import Waiter

METADATA_GROUP = 0
# Entries a replica may trail its leader's log and still count as in sync (the
# raftlog_under_replicated_groups gauge, `raftlog cluster health --max-lag`): a
# produce stream keeps followers a few entries behind, a restarted node that is
# catching up thousands.
IN_SYNC_MAX_LAG = 100


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
    # Idempotent produces held until their predecessor is proposed
    # (producer_order.hold_early_batches); never in the log yet.
    parked: list[Parked] = field(default_factory=list)
    # In flight.
    proposals: dict[int, Proposal] = field(default_factory=dict)
    # Where each idempotent produce of ``proposals`` is: key -> (index, position).
    inflight_produces: dict[RetryKey, tuple[int, int]] = field(default_factory=dict)
    # Producer id -> the sequence after its last batch proposed by this leader
    # (cleared when no proposal is in flight). May run ahead of the truth (a
    # proposal refused at apply), which only makes hold_early_batches hold less.
    proposed_next_seq: dict[int, int] = field(default_factory=dict)
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
            self.queued_cmds
            or self.queued_reads
            or self.parked
            or self.proposals
            or self.reads
            or self.reads_at
        )

    def unproposed_waiters(self) -> list[Waiter]:
        """Waiters whose request never entered the log: queued commands and every
        read, wherever it is in its ReadIndex round. Failing them claims no effect."""
        waiters = [w for _, w in self.queued_cmds] + self.queued_reads
        waiters += [p.waiter for p in self.parked]
        for ws in self.reads.values():
            waiters += ws
        for _, ws in self.reads_at:
            waiters += ws
        return waiters

    def track_produces(self, index: int, proposal: Proposal, commands: list[Any]) -> None:
        """Note where each idempotent produce of a new proposal is (original_of),
        and how far each producer's proposed sequences reach (next_sequence)."""
        for position, cmd in enumerate(commands):
            if type(cmd) is Produce and (key := cmd.retry_key) is not None:
                self.inflight_produces[key] = (index, position)
                if proposal.produce_keys is None:
                    proposal.produce_keys = []
                proposal.produce_keys.append(key)
                if cmd.sequence is not None:
                    after = cmd.sequence + cmd.count
                    if after > self.proposed_next_seq.get(cmd.producer_id, -1):
                        self.proposed_next_seq[cmd.producer_id] = after

    def next_sequence(self, pid: int) -> int | None:
        """The sequence producer ``pid``'s next batch should start at, counting
        batches proposed here and not yet applied; None if neither the state
        machine nor a proposal in flight knows the producer."""
        applied = self.sm.next_sequence(pid)
        proposed = self.proposed_next_seq.get(pid)
        if proposed is None:
            return applied
        return proposed if applied is None else max(applied, proposed)

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
