"""The values the Raft core consumes and produces.

Everything here is a plain dataclass or enum: no I/O, no clocks. The driver
(``raftlog.server``) and the storage (``raftlog.log``) exchange exactly these
types with the core, and ``raftlog.raft.codec`` turns them into bytes.

Node ids are short strings (``"n1"``), as in cluster.toml. A Raft group does
not know its own group id: the driver multiplexes groups and tags messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

NodeId = str

# Index 0 / term 0 is the empty log's sentinel "entry" (Raft paper §5.3: the
# AppendEntries consistency check for the first entry compares against it).
NO_INDEX = 0


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class EntryType(IntEnum):
    # An entry with empty data is the leader's no-op of Raft §5.4.2 / §8.
    NORMAL = 0
    # data is an encoded ConfChange (raftlog.raft.codec.encode_conf_change).
    CONF_CHANGE = 1


@dataclass(slots=True, frozen=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Approximate encoded size, for batching limits."""
        return len(self.data) + 16


@dataclass(slots=True, frozen=True)
class HardState:
    """What must be on disk before any message that depends on it leaves (Raft Figure 2)."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


@dataclass(slots=True, frozen=True)
class ConfState:
    """A group's membership.

    ``voters_outgoing`` is non-empty only during joint consensus (Raft §6): then
    decisions need a majority of ``voters`` and of ``voters_outgoing``.
    ``learners`` receive the log but never vote or count towards a quorum.
    """

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()
    voters_outgoing: tuple[NodeId, ...] = ()
    # Learners that are voters in the outgoing config and become learners when
    # the joint configuration is left (etcd's LearnersNext).
    learners_next: tuple[NodeId, ...] = ()
    # Leave the joint configuration automatically once it is committed.
    auto_leave: bool = False

    def is_joint(self) -> bool:
        return bool(self.voters_outgoing)

    def all_nodes(self) -> tuple[NodeId, ...]:
        seen: dict[NodeId, None] = {}
        for group in (self.voters, self.voters_outgoing, self.learners, self.learners_next):
            for node in group:
                seen[node] = None
        return tuple(seen)


class ConfChangeType(IntEnum):
    ADD_VOTER = 0
    REMOVE_NODE = 1
    ADD_LEARNER = 2


@dataclass(slots=True, frozen=True)
class ConfChangeItem:
    type: ConfChangeType
    node_id: NodeId


@dataclass(slots=True, frozen=True)
class ConfChange:
    """One membership change, carried in the log as an entry of type CONF_CHANGE.

    One item is a simple (one-server) change; several items, or ``enter_joint``,
    mean joint consensus. An empty ``changes`` with ``leave_joint`` leaves a
    joint configuration. ``context`` is opaque to the core (the driver puts
    e.g. the new node's address there).
    """

    changes: tuple[ConfChangeItem, ...] = ()
    enter_joint: bool = False
    leave_joint: bool = False
    context: bytes = b""
    # The membership this change applies to, filled in by the leader at
    # propose time (RaftNode.propose_conf_change). A replica that joins later
    # (empty configuration) or restarted with a stale one applies the change
    # to this base, not to what it happens to hold. None in entries written
    # before the field existed: then the replica's own membership is the base.
    base: ConfState | None = None


@dataclass(slots=True, frozen=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(slots=True, frozen=True)
class Snapshot:
    """A state-machine snapshot: everything up to ``meta.index`` (Raft §7).

    ``data`` is opaque to the core. Large payloads are streamed by the driver;
    the core only ever sees the metadata plus whatever small blob the
    application chooses to put here.
    """

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.meta.index == 0


class MessageType(IntEnum):
    # Local messages: never sent over the network.
    HUP = 0  # start an election (or pre-election)
    BEAT = 1  # leader: send heartbeats now
    PROPOSE = 2
    # Network messages.
    APPEND = 10
    APPEND_RESP = 11
    VOTE = 12
    VOTE_RESP = 13
    PRE_VOTE = 14
    PRE_VOTE_RESP = 15
    HEARTBEAT = 16
    HEARTBEAT_RESP = 17
    SNAPSHOT = 18
    TIMEOUT_NOW = 19
    READ_INDEX = 20  # follower forwards a read-index request to the leader
    READ_INDEX_RESP = 21
    TRANSFER_LEADER = 22  # follower forwards a transfer request to the leader


@dataclass(slots=True, frozen=True)
class Message:
    """One Raft RPC. Field use per type follows etcd-io/raft's raftpb.Message.

    - APPEND: ``index``/``log_term`` = the entry preceding ``entries``
      (prevLogIndex/prevLogTerm of Figure 2), ``commit`` = leader's commit.
    - APPEND_RESP: ``index`` = last index now matching (accept) or the
      rejected prevLogIndex (reject); on reject ``reject_hint`` and
      ``log_term`` say where the follower's log could match, so the leader
      skips a whole term per round trip (fast backtracking, Raft §5.3 end).
    - VOTE / PRE_VOTE: ``index``/``log_term`` = candidate's last entry (§5.4.1);
      PRE_VOTE carries the term the candidate *would* use (thesis §9.6).
    - VOTE_RESP / PRE_VOTE_RESP: ``commit``/``log_term`` = the voter's commit
      index and that entry's term, so a candidate can learn it
      (``RaftNode._learn_commit``).
    - HEARTBEAT: ``commit`` = min(leader commit, follower match); ``context``
      carries a read-index request id being confirmed (§6.4).
    - SNAPSHOT: ``snapshot`` set.
    - READ_INDEX / READ_INDEX_RESP: ``context`` = the caller's request id,
      ``index`` = the read index in the response.
    """

    type: MessageType
    to: NodeId
    frm: NodeId
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state the driver may want to observe; never persisted."""

    leader: NodeId | None
    role: Role


@dataclass(slots=True, frozen=True)
class ReadState:
    """A linearizable read may be served once the applied index reaches ``index``."""

    index: int
    context: bytes


@dataclass(slots=True)
class Ready:
    """What the driver must do, in this order (etcd-io/raft's Ready contract):

    1. Persist ``snapshot`` (if any), ``entries`` and ``hard_state`` atomically
       and durably. Entries replace any stored entries at the same or higher
       index (a conflicting suffix is truncated in the same write).
    2. ``messages`` may be sent before or in parallel with step 1: they depend
       on nothing unpersisted (the leader's AppendEntries and heartbeats, thesis
       §10.2.1). ``persisted_messages`` must be sent only after step 1 is
       durable (vote grants and append acks, Raft Figure 2 "before responding").
    3. Apply ``snapshot`` and then ``committed_entries`` to the state machine,
       and answer ``read_states`` once the applied index has reached theirs.
    4. Call ``advance(ready)``.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    persisted_messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    def must_sync(self) -> bool:
        """Whether step 1 needs an fsync (a new term, vote or entries)."""
        return bool(self.entries) or self.snapshot is not None or (self.hard_state is not None)
