"""Pending ReadIndex requests and lease probes on the leader (Raft §6.4, thesis §6.4).

For each request the leader records its commit index at arrival, then sends
a heartbeat round carrying the request's id. Once a quorum acknowledges an
id, that request AND every request queued before it are safe: the leader was
still leader when all of them arrived, so their recorded indexes are
linearizable read points.

The heartbeat carries an id the leader assigns (a per-node sequence number),
never the caller's context: callers may reuse contexts, and a delayed ack of
an OLD heartbeat round must never confirm a NEW request -- a newer leader
may have been elected in between.

With lease reads (thesis §6.4.1) every heartbeat round is such an id: a
*probe* with no requester. Each entry remembers the leader's tick count when
its round was first sent, because a lease may only start when the heartbeat
left, never when its ack came back (the ack may have been delayed for long).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import NodeId

# Probes pile up while no quorum answers (a cut-off leader): past this many
# pending entries the ones older than the lease could ever use are dropped.
_PRUNE_ABOVE = 64


@dataclass(slots=True)
class ReadIndexStatus:
    index: int
    # The caller's context, returned in its ReadState / READ_INDEX_RESP.
    context: bytes
    # Who asked: the leader itself or the follower that forwarded the request;
    # None for a lease probe, which nobody waits for.
    requester: NodeId | None
    # The leader's tick count when this round's heartbeat was first sent.
    sent_tick: int = 0
    seq: int = 0
    acks: dict[NodeId, bool] = field(default_factory=dict)


class ReadOnly:
    def __init__(self) -> None:
        # Insertion-ordered: the queue order is the order requests arrived.
        self._pending: dict[bytes, ReadIndexStatus] = {}
        self._seq = 0

    @property
    def next_seq(self) -> int:
        """The sequence number the next round will get."""
        return self._seq + 1

    def add_request(
        self,
        index: int,
        context: bytes,
        requester: NodeId | None,
        self_id: NodeId,
        sent_tick: int = 0,
    ) -> bytes:
        """Queue a request; returns the id to carry in the confirming heartbeats."""
        self._seq += 1
        rid = self._seq.to_bytes(8, "big")
        status = ReadIndexStatus(index, context, requester, sent_tick, self._seq)
        status.acks[self_id] = True  # the leader confirms itself
        self._pending[rid] = status
        return rid

    def add_probe(self, self_id: NodeId, sent_tick: int, oldest_useful_tick: int) -> bytes:
        """Queue a lease probe: a round only the lease waits for."""
        if len(self._pending) > _PRUNE_ABOVE:
            self._pending = {
                rid: s
                for rid, s in self._pending.items()
                if s.requester is not None or s.sent_tick >= oldest_useful_tick
            }
        return self.add_request(0, b"", None, self_id, sent_tick)

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
