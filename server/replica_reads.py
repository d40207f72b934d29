"""Serializable reads: a partition read served from any replica's own copy.

``fetch`` and ``list_offsets`` are linearizable by default: the leader
confirms its leadership with a ReadIndex round first (Raft §6.4). A request
with ``consistency = "serializable"`` skips that round and is answered by
whichever replica it reaches, from what that replica has applied: etcd's
serializable range, NATS' direct get, Kafka's fetch from a follower.

What it still guarantees:

* Every record returned is committed. A replica applies an entry only once it
  knows the entry is committed (Raft §5.3-5.4), so a deposed leader or a
  partitioned follower never hands out a record that could be lost.
* At the offset every replica gives it: Log Matching (Raft §5.3) makes the
  committed prefix identical on all replicas, so a consumer can move between
  replicas by offset and sees no gap, duplicate or reordering.

What it gives up: recency. A lagging replica answers with an older end
offset, and a minority cut off from the leader keeps serving its last
committed prefix (that is the point: reads stay available there).

Two rules keep a stale replica from answering for a different log:

* the request names the Raft group the client's metadata maps the partition
  to (``raft_group``); a replica whose metadata maps it elsewhere (a topic deleted
  and created again under the same name, partitions added) answers
  NOT_AVAILABLE instead of serving another log's records;
* an offset past the replica's end waits (up to ``max_wait_ms``) for the
  replica to apply that far, then answers NOT_AVAILABLE with the replica's
  end: only the leader can say whether the offset is past the partition's end
  (OUT_OF_RANGE), so the client asks another replica.
"""

from __future__ import annotations

from typing import Any

import trio
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import CONSISTENCIES, LINEARIZABLE, SERIALIZABLE

from .errors import HandlerError, out_of_range
from .groups import Group


def is_serializable(fields: dict[str, Any]) -> bool:
    """Whether a read asks for ``serializable``; INVALID_REQUEST for unknown levels."""
    consistency = fields.get("consistency")
    if consistency is None or consistency == LINEARIZABLE:
        return False
    if consistency == SERIALIZABLE:
        return True
    raise HandlerError(
        ErrorCode.INVALID_REQUEST,
        f"consistency must be one of {', '.join(CONSISTENCIES)}; got {consistency!r}",
    )


def stale_metadata(node_id: str, topic: str, partition: int, detail: str) -> HandlerError:
    return HandlerError(
        ErrorCode.NOT_AVAILABLE,
        f"node {node_id} cannot serve {topic}/{partition} from its copy: {detail}; "
        "ask another replica or refresh metadata",
    )


def expected_partition(handlers: Any, fields: dict[str, Any]) -> Any | None:
    """The partition's metadata from this node's own view, checked against the
    group the client expects; None when the topic is unknown here and the
    client named no group (the caller then confirms with a metadata read)."""
    name, partition = fields["topic"], fields["partition"]
    expected = fields.get("raft_group")
    topic = handlers.meta.topics.get(name)
    if topic is None or not 0 <= partition < len(topic.partitions):
        if expected is None:
            return None
        # The client's metadata knows it and this node's does not: behind.
        raise stale_metadata(handlers.node_id, name, partition, "its metadata does not know it yet")
    pinfo = topic.partitions[partition]
    if expected is not None and pinfo.group_id != expected:
        raise stale_metadata(
            handlers.node_id, name, partition,
            f"its metadata maps it to Raft group {pinfo.group_id}, the request expects group "
            f"{expected} (the topic was deleted and created again)",
        )  # fmt: skip
    return pinfo


async def wait_for_offset(
    driver: Any, node_id: str, group: Group, offset: int, max_wait_ms: int
) -> None:
    """Wait until this replica's copy reaches ``offset`` (or passes it, for a
    long poll at the end) or ``max_wait_ms`` ends. OUT_OF_RANGE below the start
    (the start only moves forward, so that answer is final on every replica);
    NOT_AVAILABLE if the copy still ends before ``offset``."""
    start = group.sm.start_offset
    if offset < start:
        raise out_of_range(offset, start, group.sm.next_offset)
    # At the end this is the long poll; past it, the replica catching up.
    await wait_applied_past(driver, group, offset, max_wait_ms)
    end = group.sm.next_offset
    if offset > end:
        raise HandlerError(
            ErrorCode.NOT_AVAILABLE,
            f"replica {node_id} has applied records up to offset {end}, before {offset}: "
            "it is behind the leader, or the offset is past the partition's end "
            "(a linearizable read says which)",
            replica_end_offset=end,
        )


async def wait_applied_past(driver: Any, group: Group, offset: int, max_wait_ms: int) -> None:
    """Wait up to ``max_wait_ms`` for the group to apply a record at ``offset``:
    the fetch long poll. UNKNOWN_TOPIC if the topic is deleted meanwhile."""
    if max_wait_ms <= 0:
        return
    wait_until = trio.current_time() + max_wait_ms / 1000.0
    while offset >= group.sm.next_offset and trio.current_time() < wait_until:
        if group.gid not in driver.groups:
            raise HandlerError(ErrorCode.UNKNOWN_TOPIC, "topic deleted")
        await driver.wait_applied(group.gid, wait_until)
