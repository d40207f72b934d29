"""Pending ReadIndex requests on the leader (Raft §6.4, thesis §6.4).

For each request the leader records its commit index at arrival, then sends
a heartbeat round carrying the request's context. Once a quorum acknowledges
a context, that request AND every request queued before it are safe: the
leader was still leader when all of them arrived, so their recorded indexes
are linearizable read points.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import NodeId


@dataclass(slots=True)
class ReadIndexStatus:
    index: int
    context: bytes
    # Who asked: the leader itself or the follower that forwarded the request.
    requester: NodeId
    acks: dict[NodeId, bool] = field(default_factory=dict)


class ReadOnly:
    def __init__(self) -> None:
        # Insertion-ordered: the queue order is the order requests arrived.
        self._pending: dict[bytes, ReadIndexStatus] = {}

    def add_request(self, index: int, context: bytes, requester: NodeId, self_id: NodeId) -> bool:
        """Queue a request; False if a request with this context is already pending."""
        if context in self._pending:
            return False
        status = ReadIndexStatus(index, context, requester)
        status.acks[self_id] = True  # the leader confirms itself
        self._pending[context] = status
        return True

    def recv_ack(self, node: NodeId, context: bytes) -> dict[NodeId, bool] | None:
        status = self._pending.get(context)
        if status is None:
            return None
        status.acks[node] = True
        return status.acks

    def advance(self, context: bytes) -> list[ReadIndexStatus]:
        """Pop and return every request up to and including ``context``, in order."""
        if context not in self._pending:
            return []
        out: list[ReadIndexStatus] = []
        for ctx in list(self._pending):
            out.append(self._pending.pop(ctx))
            if ctx == context:
                break
        return out

    def last_pending_context(self) -> bytes | None:
        if not self._pending:
            return None
        return next(reversed(self._pending))

    def __len__(self) -> int:
        return len(self._pending)

    def reset(self) -> None:
        self._pending.clear()
