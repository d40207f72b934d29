"""Routing of serializable reads: any replica of the partition may answer.

A linearizable read must reach the partition's leader. A serializable one
(``fetch(..., consistency="serializable")``, see server/replica_reads.py for
what it promises) may be answered by any replica, so the client picks one:

1. ``prefer_replica`` (the client's option) when it holds the partition: the
   node on the consumer's own host or rack, as Kafka's ``client.rack``;
2. else the replica that answered this partition last (sticky: a consumer
   keeps reading one copy, whose end offset only grows);
3. else one chosen by a hash of the client id and the partition, so
   consumers of a topic spread over its replicas instead of all loading the
   leader, which also does the writes.

A replica that is unreachable, times out, is not a replica (NOT_LEADER), or
answers NOT_AVAILABLE (its copy or its metadata is behind) sends the request
to the next one. Replicas that just failed are tried last. After a round
with no answer the client refreshes metadata (replicas move, topics are
recreated) and tries again until the call's deadline.
"""

from __future__ import annotations

import logging
import zlib
from typing import TYPE_CHECKING, Any

import trio

from .errors import (
    ClusterUnreachableError,
    ConnectionLostError,
    NotAvailableError,
    NotLeaderError,
    RaftlogError,
    RequestTimeoutError,
    ThrottledError,
    UnknownPartitionError,
    UnknownTopicError,
)
from .models import PartitionMeta, TopicMeta
from .protocol import CONSISTENCIES, SERIALIZABLE

if TYPE_CHECKING:
    from .aio import AsyncClient

log = logging.getLogger(__name__)

REFRESH_BUDGET_S = 1.0  # a metadata refresh between rounds of replicas

# Errors after which another replica may well answer: the read had no effect.
_NEXT_REPLICA = (
    NotLeaderError,
    NotAvailableError,
    RequestTimeoutError,
    ConnectionLostError,
    ThrottledError,
)


async def replica_topic_meta(client: AsyncClient, topic: str, deadline: float) -> TopicMeta:
    """The topic's metadata as cached; a client that has none asks any node for
    its own view (serializable metadata): reads meant to work without a quorum
    must not first need the metadata group's leader."""
    meta = client._topics.get(topic)
    if meta is not None:
        return meta
    reply = await client._call(
        "metadata", {"topics": [topic], "consistency": SERIALIZABLE}, idempotent=True,
        budget=max(0.0, deadline - trio.current_time()),
    )  # fmt: skip
    client._apply_metadata(reply)
    meta = client._topics.get(topic)
    if meta is None:
        raise UnknownTopicError(
            f"topic {topic!r} is not in node {reply.get('node')}'s metadata "
            "(read without the metadata group's leader: it may be behind)",
            topic=topic,
        )
    return meta


def check_consistency(consistency: str) -> bool:
    """True for serializable; ValueError for anything but the two levels."""
    if consistency not in CONSISTENCIES:
        raise ValueError(f"consistency must be one of {CONSISTENCIES}, got {consistency!r}")
    return consistency == SERIALIZABLE


def replica_order(
    pmeta: PartitionMeta,
    *,
    topic: str,
    client_id: str,
    prefer: str | None,
    last: str | None,
    suspects: set[str],
) -> list[str]:
    """The partition's replicas in the order a serializable read tries them."""
    replicas = sorted(pmeta.replicas)
    if not replicas:
        return []
    spread = zlib.crc32(f"{client_id}/{topic}/{pmeta.partition}".encode()) % len(replicas)
    order = replicas[spread:] + replicas[:spread]
    for first in (last, prefer):  # prefer ends up in front of last
        if first in order:
            order.remove(first)
            order.insert(0, first)
    healthy = [n for n in order if n not in suspects]
    return healthy + [n for n in order if n in suspects]


async def read_from_replicas(
    client: AsyncClient,
    op: str,
    fields: dict[str, Any],
    *,
    topic: str,
    partition: int,
    budget: float,
    attempt_budget: float,
) -> dict[str, Any]:
    """Send a serializable read ``op`` to the partition's replicas, one after
    another, until one answers or ``budget`` seconds pass."""
    deadline = trio.current_time() + budget
    fields["consistency"] = SERIALIZABLE
    last: RaftlogError | None = None
    rounds = 0
    while True:
        meta = await replica_topic_meta(client, topic, deadline)
        if not 0 <= partition < len(meta.partitions):
            raise UnknownPartitionError(
                f"topic {topic!r} has no partition {partition} "
                f"(partitions: {len(meta.partitions)})",
                topic=topic,
            )
        pmeta = meta.partitions[partition]
        if pmeta.group is not None:
            fields["raft_group"] = pmeta.group
        now = trio.current_time()
        suspects = {
            node
            for node, address in client._nodes.items()
            if client._suspect.get(address, 0.0) > now
        }
        order = replica_order(
            pmeta,
            topic=topic,
            client_id=client.client_id,
            prefer=client.prefer_replica,
            last=client._read_replicas.get((topic, partition)),
            suspects=suspects,
        )
        for node in order:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                break
            address = client._nodes.get(node)
            if address is None:
                continue
            try:
                conn = await client._connection(address, remaining)
                # What the dial left of the budget, not what there was before it.
                left = deadline - trio.current_time()
                if left <= 0:
                    last = last or RequestTimeoutError(
                        f"{op}: no replica of {topic}/{partition} answered within {budget:.1f}s"
                    )
                    break
                reply = await conn.request(op, fields, min(left, attempt_budget))
            except OSError as exc:
                last = ClusterUnreachableError(f"cannot connect to {node} at {address}: {exc}")
                client._forget_leader(address)
                continue
            except _NEXT_REPLICA as exc:
                log.debug("event=replica_read_next node=%s error=%s", node, exc)
                last = exc
                if isinstance(exc, ConnectionLostError):
                    client._drop(address)
                if isinstance(exc, RequestTimeoutError | ConnectionLostError):
                    client._forget_leader(address)  # tried last for a while
                continue
            client._read_replicas[(topic, partition)] = node
            return reply
        rounds += 1
        if trio.current_time() >= deadline:
            if last is None:
                raise ClusterUnreachableError(
                    f"{op}: no replica of {topic}/{partition} known to this client"
                )
            raise last
        # Nobody answered: replicas may have moved, or the topic been recreated.
        # Bounded: without a quorum the refresh cannot succeed.
        await client._refresh_quietly(min(deadline, trio.current_time() + REFRESH_BUDGET_S))
        await client._backoff(rounds, deadline, cap=0.1)
