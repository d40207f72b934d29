"""Client request handlers: one coroutine per op of client/protocol.py REQUESTS.

The listener validates field types, then calls ``RequestHandlers.handle``
concurrently for every request. A handler returns the reply's result dict or
raises ``HandlerError`` with a wire code; any other exception is a bug in
us, answered INTERNAL for that request only and logged with its traceback.

Writes go through the driver as commands (coalesced into one proposal per
group per loop turn) and are answered only after commit AND apply (DESIGN
§3.3). Reads of partition state (fetch, list_offsets, fetch_committed) are
linearizable: the leader confirms its leadership with a ReadIndex round and
serves once it has applied up to the read index (DESIGN §3.4), unless the
request asks for a serializable read (server/replica_reads.py): then any
replica answers from its own applied copy.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from raftlog.client.compression import is_compressed
from raftlog.client.errors import ErrorCode
from raftlog.log.commands import (
    AllocProducerId,
    AlterTopic,
    CommitOffset,
    CreateTopic,
    DeleteOffset,
    DeleteTopic,
    Produce,
)
from raftlog.log.compaction import produced_batch_problem
from raftlog.log.features import COMMIT_STAMPS, LOG_FORMAT
from raftlog.log.metadata import topic_config_format_problem, topic_config_problem
from raftlog.raft.types import Role

from . import tls
from .acl import visible_topics
from .auth_reload import reload_node
from .compaction import is_compacted
from .driver import MultiRaft
from .errors import (
    HandlerError,
    out_of_range,
    raise_outcome,
    raise_result_error,
    request_deadline,
)
from .group_ops import GroupOps
from .groups import METADATA_GROUP, Group
from .membership_ops import MembershipOps
from .metrics import Metrics
from .replica_reads import (
    expected_partition,
    is_serializable,
    wait_applied_past,
    wait_for_offset,
)
from .snapshot_transfer import serve_replica_fetch
from .user_ops import UserOps
from .waiters import Outcome

log = logging.getLogger("raftlog.handlers")

# A metadata read barrier from a follower needs the leader; if it cannot be
# reached quickly, fall back to local (possibly stale) metadata.
META_SYNC_TIMEOUT_S = 1.0
DEFAULT_FETCH_MAX_BYTES = 1024 * 1024
# How long a leadership transfer waits for a silent target to be heard from.
TRANSFER_REACH_WAIT_S = 2.0
# A batch produced to a compacted topic is unpacked to check its keys: on the
# event loop up to this size when uncompressed (~150 µs of work for 600
# records of 100 bytes), in a worker thread above it.
INLINE_RECORD_CHECK_BYTES = 64 * 1024
# ... and it may decompress to at most this many times max_batch_bytes (a few
# KiB of zeros can inflate to gigabytes).
COMPACTED_DECOMPRESSED_FACTOR = 16

Handler = Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]]


def _topic_limit_problem(topic: Any, size: int) -> str | None:
    """Why a produce batch of ``size`` bytes is over ``topic``'s
    ``max_message_bytes`` (Kafka's ``max.message.bytes``: the topic's own cap,
    below the node's ``max_batch_bytes``), or None. The producer keeps its
    batches under it; a record too large by itself ends here."""
    cap = topic.config.get("max_message_bytes")
    if cap is None or size <= cap:
        return None
    return (
        f"batch of {size} bytes exceeds topic {topic.name!r}'s max_message_bytes={cap} "
        f"(raftlog topic alter {topic.name} --max-message-bytes changes it)"
    )



def _partition_of(topic: Any, partition: int) -> Any:
    if not 0 <= partition < len(topic.partitions):
        raise HandlerError(
            ErrorCode.UNKNOWN_PARTITION,
            f"topic {topic.name!r} has no partition {partition} "
            f"(partitions: {len(topic.partitions)})",
        )
    return topic.partitions[partition]


class RequestHandlers:
    def __init__(self, cfg: Any, node_id: str, driver: MultiRaft, metrics: Any = None) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.driver = driver
        self.metrics = metrics
        self._ops: dict[str, Handler] = {
            "metadata": self.metadata,
            "create_topic": self.create_topic,
            "alter_topic": self.alter_topic,
            "delete_topic": self.delete_topic,
            "list_topics": self.list_topics,
            "describe_topic": self.describe_topic,
            "init_producer": self.init_producer,
            "produce": self.produce,
            "fetch": self.fetch,
            "list_offsets": self.list_offsets,
            "commit_offset": self.commit_offset,
            "fetch_committed": self.fetch_committed,
            "delete_offset": self.delete_offset,
            "cluster_status": self.cluster_status,
            "config_reload": self.config_reload,
            "member_list": self.member_list,
            "member_add": self.not_supported,
            "member_remove": self.not_supported,
            "leader_transfer": self.leader_transfer,
            "metadata_leader_transfer": self.metadata_leader_transfer,
            "partition_reassign": self.not_supported,
            "replica_fetch": self.replica_fetch,
        }
        # Membership and day-2 operations live in their own module.
        self.membership = MembershipOps(self)
        self._ops.update(self.membership.handlers())
        # Consumer group coordination (group_join/heartbeat/leave/describe).
        self.group_ops = GroupOps(self)
        self._ops.update(self.group_ops.handlers())
        # Users kept in the metadata log (raftlog user).
        self._ops.update(UserOps(self).handlers())

    async def handle(self, ctx: Any, op: str, fields: dict[str, Any]) -> dict[str, Any]:
        fn = self._ops.get(op)
        if fn is None:
            raise HandlerError(ErrorCode.INVALID_REQUEST, f"unknown request type {op!r}")
        try:
            return await fn(ctx, fields)
        except HandlerError as exc:
            if op == "produce":
                self._count_produce(exc.code.value)
            raise
        except Exception as exc:
            log.exception("event=handler_error op=%s", op)
            if self.driver.debug:
                raise
            raise HandlerError(ErrorCode.INTERNAL, f"internal error in {op}: {exc!r}") from exc

    # ------------------------------------------------------------ helpers

    @property
    def meta(self) -> Any:
        return self.driver.metadata

    def _count_produce(self, code: str) -> None:
        if self.metrics is not None:
            self.metrics.produce_requests.inc(code=code)

    def _not_leader(self, gid: int, leader: str | None) -> HandlerError:
        return HandlerError(
            ErrorCode.NOT_LEADER,
            f"node {self.node_id} is not the leader of group {gid}",
            leader=leader,
            leader_address=self.driver.leader_address(leader),
        )

    def _require_meta_leader(self) -> Group:
        group = self.driver.groups[METADATA_GROUP]
        if group.role is not Role.LEADER:
            raise self._not_leader(METADATA_GROUP, group.raft.leader_id)
        return group

    async def _meta_sync(self) -> None:
        """Linearizable metadata read point, from any node (a follower's ReadIndex is
        forwarded to the leader).

        Raises NOT_AVAILABLE (retriable, no effect) when the read point cannot be
        confirmed: answering from local state instead would let a node whose
        metadata is stale or empty (a rejoining or partitioned node) tell a client
        that an existing topic is unknown. jepsen's membership nemesis caught
        exactly that: a produce committed by one attempt was reported to the
        client as UNKNOWN_TOPIC by a rejoining node (an aborted-read anomaly).
        """
        deadline = trio.current_time() + META_SYNC_TIMEOUT_S
        outcome = await self.driver.read_barrier(METADATA_GROUP, deadline)
        if outcome.error is not None:
            raise HandlerError(
                ErrorCode.NOT_AVAILABLE,
                f"node {self.node_id} cannot confirm its cluster metadata is current "
                f"({outcome.error.value}: {outcome.message}); retry on another node",
            )

    async def _topic(self, name: str) -> Any:
        topic = self.meta.topics.get(name)
        if topic is None:
            await self._meta_sync()
            topic = self.meta.topics.get(name)
            if topic is None:
                raise HandlerError(ErrorCode.UNKNOWN_TOPIC, f"unknown topic {name!r}")
        return topic

    async def _partition(self, topic_name: str, partition: int) -> Any:
        return _partition_of(await self._topic(topic_name), partition)

    def _local_group(self, pinfo: Any) -> Group:
        group = self.driver.groups.get(pinfo.group_id)
        if group is None:
            # Not a replica here (or not created yet): send the client to the
            # preferred replica, which redirects again if it does not lead.
            hint = pinfo.replicas[0] if pinfo.replicas else None
            raise HandlerError(
                ErrorCode.NOT_LEADER,
                f"node {self.node_id} does not host group {pinfo.group_id}",
                leader=None,
                leader_address=self.driver.leader_address(hint),
            )
        return group

    def _led_group(self, pinfo: Any) -> Group:
        group = self._local_group(pinfo)
        if group.role is not Role.LEADER:
            raise self._not_leader(group.gid, group.raft.leader_id)
        return group

    async def _leader_group(self, topic: str, partition: int) -> Group:
        return self._led_group(await self._partition(topic, partition))

    async def _read_group(self, topic: str, partition: int, deadline: float) -> Group:
        """The group to serve a partition read from, after the linearizability barrier."""
        pinfo = await self._partition(topic, partition)
        if self.cfg.unsafe_follower_reads:
            # DELIBERATELY UNSAFE (jepsen only): local state of any replica, no ReadIndex.
            return self._local_group(pinfo)
        group = self._led_group(pinfo)
        raise_outcome(await self.driver.read_barrier(group.gid, deadline))
        return group

    async def _replica_group(self, fields: dict[str, Any]) -> Group:
        """The group to serve a serializable read from: this node's own copy, no
        ReadIndex round (server/replica_reads.py says what that still promises)."""
        pinfo = expected_partition(self, fields)
        if pinfo is None:
            pinfo = await self._partition(fields["topic"], fields["partition"])
        group = self._local_group(pinfo)
        if self.metrics is not None:
            self.metrics.reads.inc(path="serializable")
        return group

    def _partition_json(self, topic: str, pinfo: Any) -> dict[str, Any]:
        group = self.driver.groups.get(pinfo.group_id)
        leader = group.leader if group is not None else None
        return {
            "partition": pinfo.partition,
            "group": pinfo.group_id,
            "replicas": list(pinfo.replicas),
            "leader": leader,
            "leader_address": self.driver.leader_address(leader),
        }

    def _nodes_json(self) -> list[dict[str, str]]:
        """Registered nodes (metadata group) plus configured ones not registered yet."""
        nodes = {node_id: info.address for node_id, info in self.meta.nodes.items()}
        for n in self.cfg.nodes:
            nodes.setdefault(n.id, n.address)
        return [{"id": node_id, "address": address} for node_id, address in sorted(nodes.items())]

    def _topic_json(self, topic: Any) -> dict[str, Any]:
        return {
            "name": topic.name,
            "config": dict(topic.config),
            "partitions": [self._partition_json(topic.name, p) for p in topic.partitions],
        }

    # ------------------------------------------------------------ metadata ops

    async def metadata(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        if not is_serializable(fields):
            await self._meta_sync()
        # else: this node's own view, perhaps stale, for a client whose
        # serializable reads must work without a quorum (replica_reads.py).
        wanted = fields.get("topics")
        names = visible_topics(ctx.user, sorted(self.meta.topics))  # a user sees its own
        topics = [
            self._topic_json(self.meta.topics[name])
            for name in names
            if wanted is None or name in wanted
        ]
        return {
            "cluster": self.cfg.name,
            "node": self.node_id,
            "nodes": self._nodes_json(),
            "topics": topics,
        }

    async def list_topics(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        await self._meta_sync()
        return {"topics": visible_topics(ctx.user, sorted(self.meta.topics))}

    async def create_topic(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:

        deadline = request_deadline(fields)
        self._require_meta_leader()
        name = fields["topic"]
        replicas = fields["replicas"]
        if replicas > len(self.cfg.nodes) or replicas < 1:
            raise HandlerError(
                ErrorCode.INVALID_REQUEST,
                f"replicas must be in 1..{len(self.cfg.nodes)} (nodes), got {replicas}",
            )
        if fields["partitions"] < 1:
            raise HandlerError(ErrorCode.INVALID_REQUEST, "partitions must be >= 1")
        # Placement uses the registered nodes: right after the first election
        # the leader is still registering them (driver._maybe_register_nodes).
        # Members of group 0 only: `member add` registers a node before adding
        # it, `member remove` unregisters it (server/membership_ops.py).
        meta_conf = self.driver.groups[METADATA_GROUP].raft
        while not all(n in self.meta.nodes for n in meta_conf.conf_state.all_nodes()):
            if not await self.driver.wait_changed(deadline):
                break
        config = dict(fields.get("config") or {})
        # Checked here, not when applying: entries already in logs must apply
        # exactly as they did when they were written.
        problem = topic_config_problem(config)
        if problem is not None:
            raise HandlerError(ErrorCode.INVALID_REQUEST, problem)
        self._check_new_config(config)
        command = CreateTopic(name, fields["partitions"], replicas, config)
        result = raise_outcome(await self.driver.propose(METADATA_GROUP, command, deadline))
        raise_result_error(result)
        topic = self.meta.topics[name]
        log.info(
            "event=topic_created topic=%s partitions=%d replicas=%d",
            name,
            len(topic.partitions),
            replicas,
        )
        await self._wait_leaders(topic, deadline)
        return {"topic": self._topic_json(topic)}

    async def alter_topic(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """More partitions and/or config changes (log.metadata AlterTopic); replies
        like create_topic, once the new partitions hosted here have leaders."""
        deadline = request_deadline(fields)
        self._require_meta_leader()
        partitions = fields.get("partitions") or 0
        config = dict(fields.get("config") or {})
        if partitions < 0:
            raise HandlerError(ErrorCode.INVALID_REQUEST, "partitions must be >= 1")
        if not partitions and not config:
            raise HandlerError(ErrorCode.INVALID_REQUEST, "alter_topic: no partitions, no config")
        self._check_new_config(config)
        command = AlterTopic(fields["topic"], partitions, config)
        result = raise_outcome(await self.driver.propose(METADATA_GROUP, command, deadline))
        raise_result_error(result)
        topic = self.meta.topics[fields["topic"]]
        log.info("event=topic_altered topic=%s partitions=%d config=%s",
                 topic.name, len(topic.partitions), topic.config)  # fmt: skip
        await self._wait_leaders(topic, deadline)
        return {"topic": self._topic_json(topic)}

    def _check_new_config(self, config: dict[str, Any]) -> None:
        """What the metadata state cannot check: a key newer than the cluster's
        log format is refused with the same message the state machine would give
        (it checks too: this node's view may lag), and ``max_message_bytes``
        may not exceed this node's ``[limits] max_batch_bytes``, which a batch
        meets first anyway."""
        problem = topic_config_format_problem(config, self.meta.log_format)
        if problem is not None:
            raise HandlerError(ErrorCode.UNSUPPORTED_VERSION, problem)
        cap = config.get("max_message_bytes")
        node_cap = self.cfg.limits.max_batch_bytes
        if type(cap) is int and cap > node_cap:
            raise HandlerError(
                ErrorCode.INVALID_REQUEST,
                f"topic config max_message_bytes ({cap}) is above the nodes' "
                f"[limits] max_batch_bytes ({node_cap}): a batch that large is refused anyway",
            )

    async def _wait_leaders(self, topic: Any, deadline: float) -> None:
        """Until every partition of ``topic`` hosted here has a leader, or shortly before
        the deadline (the change is committed either way; clients retry on NOT_LEADER)."""
        leaders_by = deadline - min(1.0, (deadline - trio.current_time()) / 2)
        while trio.current_time() < leaders_by:
            gids = [p.group_id for p in topic.partitions]
            if all(
                self.driver.groups[g].leader is not None for g in gids if g in self.driver.groups
            ):
                break
            await self.driver.wait_changed(leaders_by)

    async def delete_topic(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:

        deadline = request_deadline(fields)
        self._require_meta_leader()
        result = raise_outcome(
            await self.driver.propose(METADATA_GROUP, DeleteTopic(fields["topic"]), deadline)
        )
        raise_result_error(result)
        log.info("event=topic_deleted topic=%s", fields["topic"])
        return {}

    async def describe_topic(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        # Read the topic at a linearizable point too: from local state alone, a
        # node that has not yet applied a just-committed delete_topic would still
        # describe the deleted topic (an admin read, so the extra round is cheap).
        await self._meta_sync()
        topic = await self._topic(fields["topic"])
        # Offsets of the partitions led here are linearizable: one ReadIndex
        # barrier per led group, all in parallel (the driver batches them per
        # turn). Other replicas report their local, possibly lagging view.
        deadline = trio.current_time() + META_SYNC_TIMEOUT_S
        async with trio.open_nursery() as nursery:
            for pinfo in topic.partitions:
                group = self.driver.groups.get(pinfo.group_id)
                if group is not None and group.role is Role.LEADER:
                    nursery.start_soon(self.driver.read_barrier, group.gid, deadline)
        parts = []
        for pinfo in topic.partitions:
            entry = self._partition_json(topic.name, pinfo)
            group = self.driver.groups.get(pinfo.group_id)
            if group is not None:
                status = self.driver.group_status(group)
                entry.update(
                    term=status["term"],
                    commit=status["commit"],
                    start_offset=group.sm.start_offset,
                    end_offset=group.sm.next_offset,
                    replica_state=[
                        {
                            "node": r["node"],
                            "match": r["match"],
                            "lag": r["lag"],
                            "state": r["state"],
                        }
                        for r in status["replicas"]
                    ],
                )
            else:
                entry.update(
                    term=None, commit=None, start_offset=None, end_offset=None, replica_state=[]
                )
            parts.append(entry)
        return {"topic": {"name": topic.name, "config": dict(topic.config), "partitions": parts}}

    async def init_producer(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:

        deadline = request_deadline(fields)
        self._require_meta_leader()
        result = raise_outcome(
            await self.driver.propose(METADATA_GROUP, AllocProducerId(), deadline)
        )
        raise_result_error(result)
        producer_id = getattr(result, "producer_id", result)
        return {"producer_id": int(producer_id)}

    # ------------------------------------------------------------ data path

    async def produce(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        deadline = request_deadline(fields)
        self._check_produce(fields)
        group = await self._leader_group(fields["topic"], fields["partition"])
        records: bytes = fields["records"]
        if self._batch_over_limit(fields) is not None:
            # Refuse only by the current limit: this node may not have applied
            # an alter that raised or removed it yet (a rare path: one round).
            await self._meta_sync()
            problem = self._batch_over_limit(fields)
            if problem is not None:
                # ``limit`` lets a producer split the batch to fit (KIP-126).
                limit = self.meta.topics[fields["topic"]].config["max_message_bytes"]
                raise HandlerError(ErrorCode.RECORD_TOO_LARGE, problem, limit=limit)
        await self._check_compacted_batch(fields)
        outcome = await self.driver.propose(
            group.gid, self._produce_command(fields), deadline, nbytes=len(records)
        )
        return self._produce_reply(outcome, fields)

    def handle_nowait(
        self,
        ctx: Any,
        op: str,
        fields: dict[str, Any],
        done: Callable[[dict[str, Any] | None, HandlerError | None], None],
    ) -> bool:
        """Start ``op`` without a task of its own when it can finish by callback.

        Only a produce to a partition this node knows and leads qualifies (the
        hot path): it is queued at once and ``done(reply, None)`` or
        ``done(None, error)`` is called from the driver's turn when the outcome
        is known, or by the driver's deadline expiry (TIMEOUT). That saves a
        task, a cancel scope and two task switches per request. False: nothing
        was done; serve the request with ``handle``.
        """
        if op != "produce":
            return False
        try:
            self._check_produce(fields)
            # From local state only: only a metadata read may conclude
            # UNKNOWN_TOPIC (see ``_topic``), which handle() does.
            topic = self.meta.topics.get(fields["topic"])
            if topic is None:
                return False
            group = self._led_group(_partition_of(topic, fields["partition"]))
            records: bytes = fields["records"]
            if _topic_limit_problem(topic, len(records)) is not None:
                return False  # over the topic's limit: handle() confirms it is current
            if is_compacted(topic.config):
                return False  # its records are checked first, maybe in a thread
            waiter = self.driver.submit(
                group.gid,
                self._produce_command(fields),
                len(records),
                deadline=request_deadline(fields),
            )
        except HandlerError as exc:
            self._count_produce(exc.code.value)
            done(None, exc)
            return True

        def finish(outcome: Outcome) -> None:
            try:
                reply = self._produce_reply(outcome, fields)
            except HandlerError as exc:
                self._count_produce(exc.code.value)
                done(None, exc)
                return
            except Exception as exc:  # a bug: answered as one, like handle() does
                log.exception("event=handler_error op=produce")
                done(None, HandlerError(ErrorCode.INTERNAL, f"internal error in produce: {exc!r}"))
                return
            done(reply, None)

        waiter.on_done(finish)
        return True

    def _check_produce(self, fields: dict[str, Any]) -> None:
        records: bytes = fields["records"]
        count: int = fields["count"]
        limits = self.cfg.limits
        if len(records) > limits.max_batch_bytes:
            raise HandlerError(
                ErrorCode.RECORD_TOO_LARGE,
                f"batch of {len(records)} bytes exceeds max_batch_bytes={limits.max_batch_bytes}",
                limit=limits.max_batch_bytes,
            )
        if count < 1:
            raise HandlerError(ErrorCode.INVALID_REQUEST, f"count must be >= 1, got {count}")
        if zlib.crc32(records) != fields["crc"]:
            raise HandlerError(ErrorCode.CORRUPT_BATCH, "crc of the records does not match")
        if (fields.get("producer_id") is None) != (fields.get("sequence") is None):
            raise HandlerError(ErrorCode.INVALID_REQUEST, "producer_id and sequence go together")

    def _batch_over_limit(self, fields: dict[str, Any]) -> str | None:
        topic = self.meta.topics.get(fields["topic"])
        return None if topic is None else _topic_limit_problem(topic, len(fields["records"]))

    def _compacted_topic(self, name: str) -> bool:
        topic = self.meta.topics.get(name)
        return topic is not None and is_compacted(topic.config)

    async def _check_compacted_batch(self, fields: dict[str, Any]) -> None:
        """INVALID_REQUEST for a batch a compacted topic cannot take: a record
        without a key, rows that are not records (log/compaction.py
        ``produced_batch_problem``). A large or compressed batch is unpacked
        in a worker thread, so that one client's batch does not hold up every
        partition's turn; it may decompress to at most 16 times
        ``max_batch_bytes``."""
        if not self._compacted_topic(fields["topic"]):
            return
        records: bytes = fields["records"]
        limit = COMPACTED_DECOMPRESSED_FACTOR * self.cfg.limits.max_batch_bytes

        def check() -> str | None:
            return produced_batch_problem(records, fields["count"], limit)

        # A compressed batch's unpacked size is unknown until it is inflated.
        inline = len(records) <= INLINE_RECORD_CHECK_BYTES and not is_compressed(records)
        problem = check() if inline else await trio.to_thread.run_sync(check)
        if problem is not None:
            raise HandlerError(
                ErrorCode.INVALID_REQUEST, f"topic {fields['topic']!r} is compacted: {problem}"
            )

    def _produce_command(self, fields: dict[str, Any]) -> Produce:
        return Produce(
            records=fields["records"],
            count=fields["count"],
            crc=fields["crc"],
            producer_id=fields.get("producer_id"),
            sequence=fields.get("sequence"),
            append_timestamp_ms=self.driver.stamp_ms(),
        )

    def _produce_reply(self, outcome: Outcome, fields: dict[str, Any]) -> dict[str, Any]:
        result = raise_outcome(outcome)
        raise_result_error(result)
        self._count_produce("OK")
        duplicate = bool(getattr(result, "duplicate", False))
        if self.metrics is not None and not duplicate:
            self.metrics.records_in.inc(fields["count"])
            self.metrics.bytes_in.inc(len(fields["records"]))
        return {"base_offset": result.base_offset, "duplicate": duplicate}

    def _check_range(self, group: Group, offset: int) -> None:
        start, end = group.sm.start_offset, group.sm.next_offset
        if offset < start or offset > end:
            raise out_of_range(offset, start, end)

    async def fetch(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        offset: int = fields["offset"]
        max_wait_ms = fields.get("max_wait_ms") or 0
        # fetch takes no timeout_ms: the default deadline, after its long poll.
        deadline = request_deadline({}) + max_wait_ms / 1000.0
        if is_serializable(fields):
            group = await self._replica_group(fields)
            await wait_for_offset(self.driver, self.node_id, group, offset, max_wait_ms)
        else:
            group = await self._read_group(fields["topic"], fields["partition"], deadline)
            self._check_range(group, offset)
            # Long poll at the end: a record committed after the read index is
            # committed, so returning it is still linearizable.
            await wait_applied_past(self.driver, group, offset, max_wait_ms)
        max_bytes = min(
            fields.get("max_bytes") or DEFAULT_FETCH_MAX_BYTES, self.cfg.limits.max_fetch_bytes
        )
        batches = group.sm.read(offset, max_bytes, fields.get("max_records"))
        if self.metrics is not None and batches:
            self.metrics.records_out.inc(sum(b[2] for b in batches))
            self.metrics.bytes_out.inc(sum(len(b[3]) for b in batches))
        return {
            "batches": [list(b) for b in batches],
            "start_offset": group.sm.start_offset,
            "end_offset": group.sm.next_offset,
        }

    async def list_offsets(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        timestamp_ms = fields.get("timestamp_ms")
        if timestamp_ms is not None and timestamp_ms < 0:
            raise HandlerError(
                ErrorCode.INVALID_REQUEST, f"timestamp_ms must be >= 0, got {timestamp_ms}"
            )
        if is_serializable(fields):
            group = await self._replica_group(fields)
        else:
            deadline = request_deadline(fields)
            group = await self._read_group(fields["topic"], fields["partition"], deadline)
        reply: dict[str, Any] = {
            "start_offset": group.sm.start_offset,
            "end_offset": group.sm.next_offset,
        }
        if timestamp_ms is not None:
            # Kafka's ListOffsets by timestamp: the first record appended at or
            # after the time, by the batches' (monotonic) append stamps.
            found = group.sm.offset_for_time(timestamp_ms)
            reply["offset"], reply["timestamp_ms"] = found if found is not None else (None, None)
        return reply

    async def commit_offset(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:

        deadline = request_deadline(fields)
        group = await self._leader_group(fields["topic"], fields["partition"])
        # A refused (FENCED) commit comes back as the entry's result, decided
        # by the state machine at apply: every replica refuses the same ones.
        command = CommitOffset(
            group=fields["group"],
            offset=fields["offset"],
            metadata=fields.get("metadata") or "",
            generation=fields.get("generation"),
            timestamp_ms=self._commit_stamp(),
        )
        result = raise_outcome(await self.driver.propose(group.gid, command, deadline))
        raise_result_error(result)
        return {}

    def _commit_stamp(self) -> int | None:
        """A commit's time, stored with its offset once every node reads stamped
        commits (log/features.py COMMIT_STAMPS); None before."""
        if self.driver.metadata.log_format < COMMIT_STAMPS:
            return None
        return self.driver.stamp_ms()

    async def delete_offset(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        deadline = request_deadline(fields)
        group = await self._leader_group(fields["topic"], fields["partition"])
        # Fenced like a commit, decided at apply (see DeleteOffset).
        command = DeleteOffset(group=fields["group"], generation=fields.get("generation"))
        result = raise_outcome(await self.driver.propose(group.gid, command, deadline))
        raise_result_error(result)
        return {}

    async def fetch_committed(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        deadline = request_deadline(fields)
        group = await self._read_group(fields["topic"], fields["partition"], deadline)
        committed = group.sm.committed_offset(fields["group"])
        if committed is None:
            return {"offset": None, "metadata": None}
        offset, metadata = committed
        return {"offset": offset, "metadata": metadata}

    # ------------------------------------------------------------ operations

    async def cluster_status(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        wanted = fields.get("groups")  # None: every group this node hosts
        groups = [
            self.driver.group_status(g)
            for gid, g in sorted(self.driver.groups.items())
            if wanted is None or gid in wanted
        ]
        # The nodes this one knows, so `cluster status --bootstrap ONE` can ask
        # every leader for its replicas' lag (only a leader knows them).
        # Its own incarnation and peer address too: `member add` registers a node
        # with what it reports (DESIGN §3 rule 7, server/membership_ops.py).
        reply = {
            "node": self.node_id,
            "incarnation": self.driver.store.identity.incarnation,
            "peer_address": self.cfg.node(self.node_id).peer_address,
            "groups": groups,
            "nodes": self._nodes_json(),
            # Whether its link to each peer is up: `cluster health` finds a cut
            # link (a partition, a firewall) that leaves every node reachable.
            "links": {
                peer: self.driver.transport.is_connected(peer) for peer in self.driver.peers
            },
            # log/features.py: what the cluster writes, what this node says it
            # reads ([cluster] max_log_format) and what its build reads.
            "log_format": {
                "cluster": self.meta.log_format,
                "node": self.cfg.log_format,
                "build": LOG_FORMAT,
            },
        }
        auth = self._auth_json()
        if auth is not None:
            # What this node took from [auth] (at start or its last reload), so
            # `cluster status` can show a node that was not reloaded with the rest.
            reply["auth"] = auth
        if self.cfg.tls is not None:
            # When the TLS files it loaded stop working: `cluster status` warns ahead.
            reply["tls"] = {"expires": tls.expiries(self.cfg, self.node_id)}
        return reply

    def _auth_json(self) -> dict[str, Any] | None:
        auth = self.cfg.auth
        if not auth.authenticates_clients:
            return None
        return {
            "fingerprint": auth.fingerprint,
            "users": len(auth.users),
            "client_tokens": len(auth.client_tokens),
            # Those of the metadata log, as this node has applied them.
            "metadata_users": len(self.driver.metadata_users.users),
        }

    async def config_reload(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """What SIGHUP does (server/auth_reload.py), asked over the wire, so that
        ``raftlog cluster reload`` reaches every node from one place: re-read this
        node's config file for the TLS files and [auth]. Each part answers None
        (reloaded) or why not (it keeps what it had); the reply carries the
        [auth] fingerprint the node holds afterwards."""
        metrics = self.metrics if self.metrics is not None else Metrics()
        reloaded = reload_node(self.cfg, self.node_id, metrics)
        log.info("event=config_reload_requested node=%s client=%s user=%s parts=%s",
                 self.node_id, ctx.client_id, getattr(ctx.user, "name", None),
                 ",".join(sorted(reloaded)) or "none")  # fmt: skip
        reply: dict[str, Any] = {"node": self.node_id, "reloaded": reloaded}
        auth = self._auth_json()
        if auth is not None:
            reply["auth"] = auth
        return reply

    async def member_list(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        meta_group = self.driver.groups[METADATA_GROUP]
        hosted: dict[str, list[int]] = {n.id: [] for n in self.cfg.nodes}
        for topic in self.meta.topics.values():
            for pinfo in topic.partitions:
                for node in pinfo.replicas:
                    hosted.setdefault(node, []).append(pinfo.group_id)
        nodes = []
        for n in self.cfg.nodes:
            role = "controller_leader" if meta_group.leader == n.id else "voter"
            nodes.append(
                {
                    "id": n.id,
                    "address": n.address,
                    "peer_address": n.peer_address,
                    "role": role,
                    "groups": sorted(hosted.get(n.id, [])),
                }
            )
        return {"nodes": nodes}

    async def leader_transfer(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        deadline = request_deadline(fields)
        group = await self._leader_group(fields["topic"], fields["partition"])
        target = fields["to"]
        # The group's current configuration, not the metadata's replica list:
        # during a reassignment the Raft configuration changes first.
        voters = group.raft.conf_state.voters
        if target not in voters:
            raise HandlerError(
                ErrorCode.INVALID_REQUEST,
                f"{target!r} is not a voter of group {group.gid} ({list(voters)})",
            )
        return await self._transfer(group, target, deadline)

    async def metadata_leader_transfer(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """Hand the metadata group's leadership (the controller) to voter ``to``.

        Asked of the metadata leader (a follower answers NOT_LEADER with the
        leader's address); the target is checked against the leader's own
        configuration of group 0, not a follower's possibly lagging one.
        """
        deadline = request_deadline(fields)
        group = self._require_meta_leader()
        target = fields["to"]
        cs = group.raft.conf_state
        if target not in cs.voters:
            known = target in self.meta.nodes or any(n.id == target for n in self.cfg.nodes)
            if not known:
                why = f"unknown node {target!r}"
            elif target in cs.learners or target in cs.learners_next:
                why = f"{target!r} is a learner of the metadata group, not a voter"
            else:
                why = f"{target!r} is not a voter of the metadata group"
            raise HandlerError(
                ErrorCode.INVALID_REQUEST,
                f"{why} (voters: {','.join(sorted(cs.voters))})",
            )
        return await self._transfer(group, target, deadline)

    async def _transfer(self, group: Group, target: str, deadline: float) -> dict[str, Any]:
        """Move ``group``'s leadership from this node to voter ``target`` and wait.

        Thesis §3.10: the leader brings the target up to date, then TimeoutNow
        makes it campaign at once (no election-timeout gap). Naming this node
        is a no-op.
        """
        reply = {"leader": target, "leader_address": self.driver.leader_address(target)}
        if target == self.node_id:
            return reply
        # The core would start a transfer to a silent target and abort it an
        # election timeout later. Wait a little for the target (a peer that has
        # just started is redialled within about a second), then refuse with a
        # retriable code: the operator sees why, and a retry can succeed.
        reach_by = min(deadline, trio.current_time() + TRANSFER_REACH_WAIT_S)
        while not self.driver.node_alive(target):
            if trio.current_time() >= reach_by:
                raise HandlerError(
                    ErrorCode.NOT_AVAILABLE,
                    f"{target!r} is not reachable from the leader {self.node_id} of group "
                    f"{group.gid} (nothing heard from it within an election timeout); "
                    "is it running?",
                )
            await self.driver.wait_changed(min(reach_by, trio.current_time() + 0.05))
        log.info("event=leader_transfer group=%d from=%s to=%s term=%d",
                 group.gid, self.node_id, target, group.raft.term)  # fmt: skip
        self.driver.transfer_leader(group.gid, target)
        while group.leader != target and trio.current_time() < deadline:
            await self.driver.wait_changed(deadline)
        if group.leader != target:
            raise HandlerError(
                ErrorCode.TIMEOUT, f"leadership transfer of group {group.gid} to {target} "
                "did not complete"
            )
        return reply

    async def replica_fetch(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        # Peers only; snapshot catch-up (server/snapshot_transfer.py).
        return await serve_replica_fetch(self.cfg, self.driver, ctx, fields)

    async def not_supported(self, ctx: Any, fields: dict[str, Any]) -> dict[str, Any]:
        raise HandlerError(ErrorCode.INVALID_REQUEST, "not supported yet")
