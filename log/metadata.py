"""The metadata state machine: the cluster's controller group (group 0, like Kafka's KRaft).

It holds the registered nodes, the topics with their partitions' Raft group ids
and replica sets, the producer id counter, every consumer group's last
formed generation (server/group_coordinator.py loads them on a controller
change), and the users kept in the log (log/users.py). Every decision that must agree
across nodes is made here at APPLY time from replicated state only: group ids
are handed out from ``next_group_id``, and replicas are placed from the sorted
registered node ids, so every replica of group 0 computes the same placement.

The state is small, so it is persisted as ONE msgpack value (with the applied
index) in the driver's apply batch; snapshots use the same encoding.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from raftlog.client.errors import ErrorCode
from raftlog.raft.types import Entry, EntryType
from rocksdict import WriteBatch

from . import keys
from .codec import StoreCorruptionError
from .commands import (
    AllocProducerId,
    AlterTopic,
    Command,
    CommandError,
    CreateTopic,
    DeleteTopic,
    DeleteUser,
    GroupMemberEntry,
    RegisterNode,
    SetConsumerGroup,
    SetLogFormat,
    SetPartitionReplicas,
    SetUser,
    UnregisterNode,
    decode_entry_commands,
)
from .features import (
    BASELINE_LOG_FORMAT,
    DYNAMIC_USERS,
    LOG_FORMAT,
    NODE_PEER_ADDRESS,
    TOPIC_CONFIG_FORMATS,
)
from .store import NodeStore
from .users import (
    clashing_user,
    merged_record,
    user_keys_format_problem,
    user_name_problem,
    user_record_problem,
)

log = logging.getLogger(__name__)

__all__ = [
    "METADATA_GROUP_ID",
    "TOPIC_CONFIG_KEYS",
    "AllocProducerId",
    "AlterTopic",
    "ConsumerGroupInfo",
    "CreateTopic",
    "DeleteTopic",
    "MetaResult",
    "MetadataStateMachine",
    "NodeInfo",
    "PartitionInfo",
    "RegisterNode",
    "SetConsumerGroup",
    "SetLogFormat",
    "SetPartitionReplicas",
    "SetUser",
    "DeleteUser",
    "TopicInfo",
    "topic_config_format_problem",
    "topic_config_problem",
    "UnregisterNode",
]

METADATA_GROUP_ID = 0
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
# Bounds on one CREATE_TOPIC, so a single bad request cannot bloat every node.
MAX_PARTITIONS = 10_000
# The topic config keys a node understands (server/retention.py,
# server/compaction.py, server/handlers.py for max_message_bytes): a typo must
# be an error, not a silently ignored setting. All are positive integers
# except ``cleanup_policy`` (a name) and ``min_cleanable_dirty_ratio`` (a
# number in (0, 1]).
TOPIC_CONFIG_KEYS = (
    "retention_ms",
    "retention_bytes",
    "cleanup_policy",
    "delete_retention_ms",
    "min_compaction_lag_ms",
    "max_compaction_lag_ms",
    "min_cleanable_dirty_ratio",
    "max_message_bytes",
)
CLEANUP_POLICIES = ("delete", "compact")


def topic_config_problem(config: dict[str, Any], *, removals: bool = False) -> str | None:
    """Why ``config`` is not a valid topic config (None if it is). ``removals``:
    a None value is allowed and means "remove this key" (ALTER_TOPIC); check
    the merged result with ``removals=False`` too, for rules across keys."""
    for key, value in config.items():
        if key not in TOPIC_CONFIG_KEYS:
            return f"unknown topic config {key!r} (known: {', '.join(TOPIC_CONFIG_KEYS)})"
        if value is None and removals:
            continue
        if key == "cleanup_policy":
            if value not in CLEANUP_POLICIES:
                known = " or ".join(CLEANUP_POLICIES)
                return f"topic config cleanup_policy must be {known}, got {value!r}"
        elif key == "min_cleanable_dirty_ratio":
            if type(value) not in (int, float) or not 0 < value <= 1:
                return f"topic config {key} must be a number in (0, 1], got {value!r}"
        elif type(value) is not int or value <= 0:
            return f"topic config {key} must be a positive integer, got {value!r}"
    low, high = config.get("min_compaction_lag_ms"), config.get("max_compaction_lag_ms")
    if low is not None and high is not None and low > high:
        # Kafka refuses the same pair: a record could never be both too young
        # to compact and overdue for it.
        return f"topic config min_compaction_lag_ms ({low}) is above max_compaction_lag_ms ({high})"
    return None


def topic_config_format_problem(config: dict[str, Any], log_format: int) -> str | None:
    """Why ``config`` may not be written while the cluster is at ``log_format``
    (None if it may): it names a key that a node of an older format does not
    know (log/features.py ``TOPIC_CONFIG_FORMATS``). Removing such a key counts
    too: an older node refuses any key it does not know."""
    for key in config:
        needs = TOPIC_CONFIG_FORMATS.get(key, BASELINE_LOG_FORMAT)
        if needs > log_format:
            return (
                f"topic config {key} needs log format {needs}, and this cluster is at "
                f"{log_format}: every node must run a raftlog version that reads format "
                f"{needs} first (raftlog cluster status shows what each node reads)"
            )
    return None


@dataclass(slots=True, frozen=True)
class NodeInfo:
    address: str
    incarnation: str
    # Where the other nodes dial it, when that is not ``address`` (log format
    # NODE_PEER_ADDRESS on; server/membership.py ``sync_peers`` reads it).
    peer_address: str | None = None


@dataclass(slots=True, frozen=True)
class PartitionInfo:
    topic: str
    partition: int
    group_id: int
    replicas: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class TopicInfo:
    name: str
    config: dict[str, Any]
    partitions: list[PartitionInfo]


@dataclass(slots=True, frozen=True)
class ConsumerGroupInfo:
    """A consumer group's last persisted generation; no members: the group is empty.
    ``deleted``: a tombstone (``raftlog group delete``) that only keeps the number."""

    name: str
    topic: str
    generation: int
    partitions: int
    members: tuple[GroupMemberEntry, ...]
    deleted: bool = False


@dataclass(slots=True)
class MetaResult:
    """Outcome of one metadata command (errors are values, as on the wire)."""

    error: ErrorCode | None = None
    message: str = ""
    topic: TopicInfo | None = None  # CREATE_TOPIC
    producer_id: int | None = None  # ALLOC_PRODUCER_ID
    group_ids: tuple[int, ...] = ()  # DELETE_TOPIC: the groups to stop
    # The log index of the entry the command was applied from: a node has applied
    # the command once its applied index reaches it (``raftlog user --wait``).
    index: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


def _fail(code: ErrorCode, message: str) -> MetaResult:
    return MetaResult(error=code, message=message)


def place_replicas(
    group_id: int, node_ids: Sequence[str], replication_factor: int
) -> tuple[str, ...]:
    """Round-robin over the sorted node ids, starting at ``group_id % n``.

    Consecutive groups start on consecutive nodes, which spreads both replicas
    and (the first replica campaigns first) leaders over the cluster.
    """
    nodes = sorted(node_ids)
    n = len(nodes)
    start = group_id % n
    return tuple(nodes[(start + i) % n] for i in range(replication_factor))


class MetadataStateMachine:
    def __init__(self, store: NodeStore, group_id: int = METADATA_GROUP_ID) -> None:
        self.store = store
        self.group_id = group_id
        self.applied_index = 0
        self.nodes: dict[str, NodeInfo] = {}
        self.topics: dict[str, TopicInfo] = {}
        self.next_group_id = 1  # group 0 is this group itself
        self.next_producer_id = 1
        self.consumer_groups: dict[str, ConsumerGroupInfo] = {}
        # The format every replica of every group may write (log/features.py).
        self.log_format = BASELINE_LOG_FORMAT
        # User name -> its record (log/users.py). Replaced, never changed in
        # place, on every change: a reader holding it sees one state, and
        # server/metadata_users.py sees a change by the object changing.
        self.users: dict[str, dict[str, Any]] = {}
        value = store.db.get(keys.sm_meta(group_id, keys.SmField.APPLIED))
        if value is not None:
            try:
                self._set_state(msgpack.unpackb(value, raw=False, strict_map_key=False))
            except Exception as exc:  # msgpack or shape errors: the dir is damaged
                raise StoreCorruptionError(f"metadata state undecodable: {exc}") from exc

    # ---- queries ------------------------------------------------------------------

    def groups_for(self, node_id: str) -> dict[int, PartitionInfo]:
        """The partition groups ``node_id`` is a replica of, by group id."""
        return {
            p.group_id: p
            for t in self.topics.values()
            for p in t.partitions
            if node_id in p.replicas
        }

    def partition_of_group(self, group_id: int) -> PartitionInfo | None:
        for t in self.topics.values():
            for p in t.partitions:
                if p.group_id == group_id:
                    return p
        return None

    # ---- apply ----------------------------------------------------------------------

    def apply(self, entries: Sequence[Entry], batch: WriteBatch) -> list[list[MetaResult]]:
        """One result list per entry, one MetaResult per command; entries at or below
        ``applied_index`` (a replay after restart) get an empty list."""
        results: list[list[MetaResult]] = []
        before = self.applied_index
        for entry in entries:
            if entry.index <= self.applied_index:
                results.append([])
                continue
            applied = self._apply_entry(entry)
            for result in applied:
                result.index = entry.index
            results.append(applied)
            self.applied_index = entry.index
        if self.applied_index != before:
            batch.put(keys.sm_meta(self.group_id, keys.SmField.APPLIED), self.snapshot_state())
        return results

    def _apply_entry(self, entry: Entry) -> list[MetaResult]:
        if entry.type is not EntryType.NORMAL or not entry.data:
            return []
        try:
            commands = decode_entry_commands(entry.data)
        except CommandError as exc:
            log.warning("undecodable metadata entry index=%d error=%s", entry.index, exc)
            return [_fail(ErrorCode.INVALID_REQUEST, f"undecodable entry: {exc}")]
        return [self._apply_command(c) for c in commands]

    def _apply_command(self, cmd: Command) -> MetaResult:
        if isinstance(cmd, RegisterNode):
            return self._register_node(cmd)
        if isinstance(cmd, CreateTopic):
            return self._create_topic(cmd)
        if isinstance(cmd, DeleteTopic):
            return self._delete_topic(cmd)
        if isinstance(cmd, AllocProducerId):
            pid = self.next_producer_id
            self.next_producer_id += 1
            return MetaResult(producer_id=pid)
        if isinstance(cmd, SetPartitionReplicas):
            return self._set_replicas(cmd)
        if isinstance(cmd, UnregisterNode):
            return self._unregister_node(cmd)
        if isinstance(cmd, SetConsumerGroup):
            return self._set_consumer_group(cmd)
        if isinstance(cmd, AlterTopic):
            return self._alter_topic(cmd)
        if isinstance(cmd, SetLogFormat):
            return self._set_log_format(cmd)
        if isinstance(cmd, SetUser | DeleteUser):
            return self._change_user(cmd)
        return _fail(ErrorCode.INVALID_REQUEST, f"{type(cmd).__name__} is not a metadata op")

    def _register_node(self, cmd: RegisterNode) -> MetaResult:
        if not cmd.node_id or not cmd.address:
            return _fail(ErrorCode.INVALID_REQUEST, "node id and address must be non-empty")
        problem = self._peer_address_problem(cmd)
        if problem is not None:
            return _fail(ErrorCode.INVALID_REQUEST, problem)
        old = self.nodes.get(cmd.node_id)
        info = NodeInfo(cmd.address, cmd.incarnation, cmd.peer_address)
        self.nodes[cmd.node_id] = info
        if old != info:
            log.info(
                "node registered node=%s address=%s peer_address=%s incarnation=%s previous=%s",
                cmd.node_id,
                cmd.address,
                cmd.peer_address,
                cmd.incarnation,
                old.incarnation if old else None,
            )
        return MetaResult()

    def _peer_address_problem(self, cmd: RegisterNode) -> str | None:
        """Why ``cmd``'s peer address may not be recorded (None if it may, or has none).
        Checked at apply, so every replica decides alike whatever its writer saw."""
        if cmd.peer_address is None:
            return None
        if self.log_format < NODE_PEER_ADDRESS:
            return (
                f"a node's peer_address needs log format {NODE_PEER_ADDRESS}, and this "
                f"cluster is at {self.log_format}"
            )
        if not cmd.peer_address or cmd.peer_address == cmd.address:
            return f"peer_address {cmd.peer_address!r} must be non-empty and not the address"
        return None

    def _set_log_format(self, cmd: SetLogFormat) -> MetaResult:
        """Raise the log format; a lower or equal one changes nothing (formats only
        rise: something may already be written in the higher one)."""
        if cmd.log_format < BASELINE_LOG_FORMAT:
            return _fail(ErrorCode.INVALID_REQUEST, f"no log format {cmd.log_format}")
        if cmd.log_format <= self.log_format:
            return MetaResult()
        if cmd.log_format > LOG_FORMAT:
            # Applied all the same: every replica must reach the same state. The
            # controller proposes it only once every node says it reads it, so a
            # node here was downgraded since, and its peers now refuse it.
            log.error(
                "event=log_format_unreadable log_format=%d this_build_reads=%d "
                "hint='upgrade this node: its peers refuse it'",
                cmd.log_format, LOG_FORMAT,
            )  # fmt: skip
        log.info("event=log_format_raised from=%d to=%d", self.log_format, cmd.log_format)
        self.log_format = cmd.log_format
        return MetaResult()

    def _unregister_node(self, cmd: UnregisterNode) -> MetaResult:
        """Forget a removed node, so that new topics are no longer placed on it."""
        held = sorted(
            p.group_id
            for t in self.topics.values()
            for p in t.partitions
            if cmd.node_id in p.replicas
        )
        if held:
            return _fail(
                ErrorCode.INVALID_REQUEST, f"{cmd.node_id} is still a replica of groups {held}"
            )
        if self.nodes.pop(cmd.node_id, None) is not None:
            log.info("node unregistered node=%s", cmd.node_id)
        return MetaResult()

    def _create_topic(self, cmd: CreateTopic) -> MetaResult:
        if not TOPIC_NAME.fullmatch(cmd.name):
            return _fail(
                ErrorCode.INVALID_REQUEST,
                f"bad topic name {cmd.name!r}: use 1-200 of [A-Za-z0-9._-]",
            )
        if cmd.name in self.topics:
            return _fail(ErrorCode.TOPIC_EXISTS, f"topic {cmd.name!r} already exists")
        # Keys are checked by the handler (entries already in logs must apply as
        # they did when written), but a key newer than the cluster's format is
        # refused here too, so no replica stores a setting another cannot know.
        problem = topic_config_format_problem(cmd.config, self.log_format)
        if problem is not None:
            return _fail(ErrorCode.UNSUPPORTED_VERSION, problem)
        if not 1 <= cmd.partitions <= MAX_PARTITIONS:
            return _fail(ErrorCode.INVALID_REQUEST, f"partitions must be in 1..{MAX_PARTITIONS}")
        if not 1 <= cmd.replication_factor <= len(self.nodes):
            return _fail(
                ErrorCode.INVALID_REQUEST,
                f"replication factor {cmd.replication_factor} needs 1..{len(self.nodes)} "
                "(registered nodes)",
            )
        node_ids = list(self.nodes)
        partitions = []
        for p in range(cmd.partitions):
            gid = self.next_group_id + p
            replicas = place_replicas(gid, node_ids, cmd.replication_factor)
            partitions.append(PartitionInfo(cmd.name, p, gid, replicas))
        self.next_group_id += cmd.partitions
        topic = TopicInfo(cmd.name, dict(cmd.config), partitions)
        self.topics[cmd.name] = topic
        log.info(
            "topic created topic=%s partitions=%d rf=%d groups=%d..%d",
            cmd.name,
            cmd.partitions,
            cmd.replication_factor,
            partitions[0].group_id,
            partitions[-1].group_id,
        )
        return MetaResult(topic=topic)

    def _delete_topic(self, cmd: DeleteTopic) -> MetaResult:
        topic = self.topics.pop(cmd.name, None)
        if topic is None:
            return _fail(ErrorCode.UNKNOWN_TOPIC, f"unknown topic {cmd.name!r}")
        log.info("topic deleted topic=%s", cmd.name)
        # Its consumer groups go with it (their offsets lived in its partitions):
        # a topic created later under the same name starts with no groups.
        for name in [n for n, g in self.consumer_groups.items() if g.topic == cmd.name]:
            del self.consumer_groups[name]
        # Group ids are never reused: a late message for a deleted group must
        # not reach a new topic's group.
        return MetaResult(group_ids=tuple(p.group_id for p in topic.partitions))

    def _alter_topic(self, cmd: AlterTopic) -> MetaResult:
        """More partitions (placed like CREATE_TOPIC's, with the topic's replication
        factor, on fresh group ids) and/or config keys set or removed. Existing
        partitions keep their groups, replicas and data."""
        topic = self.topics.get(cmd.name)
        if topic is None:
            return _fail(ErrorCode.UNKNOWN_TOPIC, f"unknown topic {cmd.name!r}")
        have = len(topic.partitions)
        if cmd.partitions and not have <= cmd.partitions <= MAX_PARTITIONS:
            return _fail(
                ErrorCode.INVALID_REQUEST,
                f"topic {cmd.name!r} has {have} partitions: it can grow to at most "
                f"{MAX_PARTITIONS}, never shrink (records are spread over them)",
            )
        problem = topic_config_format_problem(cmd.config, self.log_format)
        if problem is not None:
            return _fail(ErrorCode.UNSUPPORTED_VERSION, problem)
        config = {**topic.config, **cmd.config}
        config = {k: v for k, v in config.items() if v is not None}
        problem = topic_config_problem(cmd.config, removals=True) or topic_config_problem(config)
        if problem is not None:
            return _fail(ErrorCode.INVALID_REQUEST, problem)
        partitions = list(topic.partitions)
        rf = len(partitions[0].replicas)
        node_ids = list(self.nodes)
        if cmd.partitions > have and rf > len(node_ids):
            return _fail(
                ErrorCode.INVALID_REQUEST,
                f"replication factor {rf} needs {rf} registered nodes, have {len(node_ids)}",
            )
        for p in range(have, max(have, cmd.partitions)):
            gid = self.next_group_id
            self.next_group_id += 1
            partitions.append(PartitionInfo(cmd.name, p, gid, place_replicas(gid, node_ids, rf)))
        # A new TopicInfo: readers holding the old one see a consistent value.
        self.topics[cmd.name] = altered = TopicInfo(topic.name, config, partitions)
        log.info("topic altered topic=%s partitions=%d->%d config=%s",
                 cmd.name, have, len(partitions), config)  # fmt: skip
        return MetaResult(topic=altered)

    def _set_replicas(self, cmd: SetPartitionReplicas) -> MetaResult:
        topic = self.topics.get(cmd.topic)
        if topic is None:
            return _fail(ErrorCode.UNKNOWN_TOPIC, f"unknown topic {cmd.topic!r}")
        if not 0 <= cmd.partition < len(topic.partitions):
            return _fail(
                ErrorCode.UNKNOWN_PARTITION, f"topic {cmd.topic!r} has no partition {cmd.partition}"
            )
        replicas = cmd.replicas
        if not replicas or len(set(replicas)) != len(replicas):
            return _fail(ErrorCode.INVALID_REQUEST, "replicas must be non-empty and distinct")
        unknown = [r for r in replicas if r not in self.nodes]
        if unknown:
            return _fail(ErrorCode.INVALID_REQUEST, f"unregistered nodes: {', '.join(unknown)}")
        old = topic.partitions[cmd.partition]
        partitions = list(topic.partitions)
        partitions[cmd.partition] = PartitionInfo(
            old.topic, old.partition, old.group_id, tuple(replicas)
        )
        # A new TopicInfo: readers holding the old one see a consistent value.
        self.topics[cmd.topic] = TopicInfo(topic.name, topic.config, partitions)
        log.info(
            "replicas set topic=%s partition=%d group=%d replicas=%s",
            cmd.topic,
            cmd.partition,
            old.group_id,
            ",".join(replicas),
        )
        return MetaResult()

    def _set_consumer_group(self, cmd: SetConsumerGroup) -> MetaResult:
        """Store a group's generation. Generations only move forward: a record of a
        new generation must be above the stored one, and an "empty" record may not
        go below it, so a record from a deposed coordinator (which could only
        arrive here reordered, never in practice: see the coordinator's
        docstring) cannot roll a group back or bring dropped members back."""
        if not cmd.group or not TOPIC_NAME.fullmatch(cmd.topic):
            return _fail(ErrorCode.INVALID_REQUEST, "a group needs a name and a valid topic")
        if cmd.generation < 0 or cmd.partitions < 1:
            return _fail(ErrorCode.INVALID_REQUEST, "bad generation or partition count")
        ids = [m.member_id for m in cmd.members]
        instances = [m.instance_id for m in cmd.members if m.instance_id is not None]
        owned = [p for m in cmd.members for p in m.partitions]
        if (
            len(set(ids)) != len(ids)
            or len(set(instances)) != len(instances)
            or len(set(owned)) != len(owned)
            or not all(0 <= p < cmd.partitions for p in owned)
            or not all(m.session_timeout_ms > 0 and m.rebalance_timeout_ms > 0 for m in cmd.members)
        ):
            return _fail(
                ErrorCode.INVALID_REQUEST,
                "members (and their instance ids) must be distinct, with positive timeouts, "
                "each partition owned once",
            )
        if cmd.deleted and cmd.members:
            return _fail(ErrorCode.INVALID_REQUEST, "a deleted group has no members")
        if cmd.topic not in self.topics:
            if not cmd.members:
                # A group of a deleted topic going empty (or being deleted):
                # nothing left to store.
                self.consumer_groups.pop(cmd.group, None)
                return MetaResult()
            return _fail(ErrorCode.UNKNOWN_TOPIC, f"unknown topic {cmd.topic!r}")
        old = self.consumer_groups.get(cmd.group)
        stored = old.generation if old is not None else 0
        # A deletion takes a number of its own, like a generation: the offsets
        # it deletes are fenced at it (log/partition.py DeleteOffset).
        moves = bool(cmd.members) or cmd.deleted
        if cmd.generation < stored or (moves and cmd.generation == stored):
            return _fail(
                ErrorCode.REBALANCE_IN_PROGRESS,
                f"group {cmd.group!r} is at generation {stored}; {cmd.generation} is over",
            )
        self.consumer_groups[cmd.group] = ConsumerGroupInfo(
            cmd.group, cmd.topic, cmd.generation, cmd.partitions, cmd.members, cmd.deleted
        )
        return MetaResult()

    def _change_user(self, cmd: SetUser | DeleteUser) -> MetaResult:
        """Create, alter or delete a user. Every rule is checked here, on the merged
        record, so that every replica stores the same users whatever a handler
        (on a node whose metadata lagged) let through."""
        if self.log_format < DYNAMIC_USERS:
            return _fail(
                ErrorCode.UNSUPPORTED_VERSION,
                f"users in the metadata log need log format {DYNAMIC_USERS}, and this "
                f"cluster is at {self.log_format}: every node must run a raftlog version "
                f"that reads format {DYNAMIC_USERS} first (raftlog cluster status)",
            )
        problem = user_name_problem(cmd.name)
        if problem is not None:
            return _fail(ErrorCode.INVALID_REQUEST, problem)
        old = self.users.get(cmd.name)
        if isinstance(cmd, DeleteUser):
            if old is None:
                return _fail(ErrorCode.UNKNOWN_USER, f"no user {cmd.name!r} in the metadata")
            self.users = {n: r for n, r in self.users.items() if n != cmd.name}
            log.info("event=user_deleted user=%s", cmd.name)
            return MetaResult()
        if cmd.create and old is not None:
            return _fail(ErrorCode.USER_EXISTS, f"user {cmd.name!r} already exists")
        if not cmd.create and old is None:
            return _fail(ErrorCode.UNKNOWN_USER, f"no user {cmd.name!r} in the metadata")
        problem = user_keys_format_problem(cmd.record, self.log_format)
        if problem is not None:
            return _fail(ErrorCode.UNSUPPORTED_VERSION, f"user {cmd.name!r}: {problem}")
        record = merged_record(old or {}, cmd.record)
        problem = user_record_problem(record) or clashing_user(self.users, cmd.name, record)
        if problem is not None:
            return _fail(ErrorCode.INVALID_REQUEST, f"user {cmd.name!r}: {problem}")
        self.users = {**self.users, cmd.name: dict(sorted(record.items()))}
        log.info("event=user_%s user=%s", "created" if old is None else "altered", cmd.name)
        return MetaResult()

    # ---- snapshots ----------------------------------------------------------------------

    def snapshot_state(self) -> bytes:
        """The whole state, canonical (sorted), as of ``applied_index``."""
        return msgpack.packb(
            {
                "applied_index": self.applied_index,
                "next_group_id": self.next_group_id,
                "next_producer_id": self.next_producer_id,
                # A peer address is a 3rd field, only where there is one: a state
                # without any stays readable by builds before NODE_PEER_ADDRESS.
                "nodes": {
                    n: [i.address, i.incarnation, *([i.peer_address] if i.peer_address else [])]
                    for n, i in sorted(self.nodes.items())
                },
                "topics": [
                    [
                        t.name,
                        t.config,
                        [[p.partition, p.group_id, list(p.replicas)] for p in t.partitions],
                    ]
                    for _, t in sorted(self.topics.items())
                ],
                # A tombstone has a 6th field (true); the others keep the 5 of old.
                "consumer_groups": [
                    [g.name, g.topic, g.generation, g.partitions, [list(m) for m in g.members]]
                    + ([True] if g.deleted else [])
                    for _, g in sorted(self.consumer_groups.items())
                ],
                "log_format": self.log_format,
                # Only once there are users: a state without them stays readable
                # by builds that know no users (log formats below DYNAMIC_USERS).
                **({"users": dict(sorted(self.users.items()))} if self.users else {}),
            },
            use_bin_type=True,
        )

    def _set_state(self, obj: dict[str, Any]) -> None:
        self.applied_index = obj["applied_index"]
        self.next_group_id = obj["next_group_id"]
        self.next_producer_id = obj["next_producer_id"]
        self.nodes = {n: NodeInfo(*fields) for n, fields in obj["nodes"].items()}
        self.topics = {
            name: TopicInfo(
                name,
                config,
                [PartitionInfo(name, p, g, tuple(r)) for p, g, r in parts],
            )
            for name, config, parts in obj["topics"]
        }
        # Absent in a state written before log formats existed: the baseline.
        self.log_format = obj.get("log_format", BASELINE_LOG_FORMAT)
        # Absent in a state written before users were kept in the log.
        self.users = dict(obj.get("users", {}))
        # Absent in the state of a node written before consumer groups were persisted.
        self.consumer_groups = {
            name: ConsumerGroupInfo(
                name,
                topic,
                generation,
                partitions,
                # A member has 5 fields in a state written before static members.
                tuple(GroupMemberEntry(*m[:4], tuple(m[4]), *m[5:]) for m in members),
                bool(deleted and deleted[0]),
            )
            for name, topic, generation, partitions, members, *deleted in obj.get(
                "consumer_groups", []
            )
        }

    def restore_state(self, data: bytes, batch: WriteBatch) -> None:
        """Replace the state with a snapshot's (Raft §7) and persist it into ``batch``."""
        self._set_state(msgpack.unpackb(data, raw=False, strict_map_key=False))
        batch.put(keys.sm_meta(self.group_id, keys.SmField.APPLIED), data)
