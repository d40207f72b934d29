"""Pending ReadIndex requests on the leader (Raft §6.4, thesis §6.4).

For each request the leader records its commit index at arrival, then sends
a heartbeat round carrying the request's id. Once a quorum acknowledges an
id, that request AND every request queued before it are safe: the leader was
still leader when all of them arrived, so their recorded indexes are
linearizable read points.

The heartbeat carries an id the leader assigns (a per-node sequence number),
never the caller's context: callers may reuse contexts, and a delayed ack of
an OLD heartbeat round must never confirm a NEW request -- a newer leader
may have been elected in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import NodeId


@dataclass(slots=True)
class ReadIndexStatus:
    index: int
    # The caller's context, returned in its ReadState / READ_INDEX_RESP.
    context: bytes
    # Who asked: the leader itself or the follower that forwarded the request.
    requester: NodeId
    acks: dict[NodeId, bool] = field(default_factory=dict)


class ReadOnly:
    def __init__(self) -> None:
        # Insertion-ordered: the queue order is the order requests arrived.
        self._pending: dict[bytes, ReadIndexStatus] = {}
        self._seq = 0

    def add_request(self, index: int, context: bytes, requester: NodeId, self_id: NodeId) -> bytes:
        """Queue a request; returns the id to carry in the confirming heartbeats."""
        self._seq += 1
        rid = self._seq.to_bytes(8, "big")
        status = ReadIndexStatus(index, context, requester)
        status.acks[self_id] = True  # the leader confirms itself
        self._pending[rid] = status
        return rid

    def recv_ack(self, node: NodeId, rid: bytes) -> dict[NodeId, bool] | None:
        status = self._pending.get(rid)
        if status is None:
            return None
        status.acks[node] = True
        return status.acks

    def advance(self, rid: bytes) -> list[ReadIndexStatus]:
        """Pop and return every request up to and including ``rid``, in order."""
        if rid not in self._pending:
            return []
        out: list[ReadIndexStatus] = []
        for key in list(self._pending):
            out.append(self._pending.pop(key))
            if key == rid:
                break
        return out

    def last_pending_id(self) -> bytes | None:
        if not self._pending:
            return None
        return next(reversed(self._pending))

    def __len__(self) -> int:
        return len(self._pending)

    def reset(self) -> None:
        """Forget pending requests (leadership lost); ids keep increasing."""
        self._pending.clear()
