"""Moving a snapshot's records from a peer: the ``replica_fetch`` op, both ends.

A partition snapshot (log/partition.py ``snapshot_state``) carries only the
small state; the records of ``[start_offset, next_offset)`` stay in the
sender's batch keys. Before a follower steps a SNAPSHOT message into Raft it
pulls the batches it lacks with ``replica_fetch`` requests over an ordinary
client-role connection to the sender, so an applied snapshot always has its
records (server/snapshots.py decides when).

Why writing fetched batches before the snapshot is installed is safe: every
offset below the snapshot's ``next_offset`` belongs to a batch committed at or
before the snapshot index, and a committed batch is the same bytes at the same
offset on every replica (Raft's Log Matching + deterministic apply). So a
pre-written batch either is overwritten later by the identical batch (this
replica applies that entry itself) or is exactly what the snapshot promises.
It is invisible until then: reads stop at the high watermark
(``PartitionStateMachine.read``). Hence a transfer can stop anywhere (crash,
disconnect) and resume from what is present (``contiguous_end``).

Log compaction (log/compaction.py) rewrites committed batches in place, through
the log: a sender's batch may be more compacted than the snapshot, which is
harmless (this replica replays the same CompactRecords later, and removing a
removed record again changes nothing). A replica's OWN batches may be less
compacted than the snapshot, which is not: ``SnapshotRange.fetch_from``
fetches everything again then.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import trio
from raftlog.client.errors import ErrorCode, TLSError
from raftlog.client.keepalive import open_tcp_stream
from raftlog.client.protocol import REPLICA_CLIENT_PREFIX, FrameDecoder, encode_frame, hello
from raftlog.client.tls import start_tls

from .config import DEFAULT_SNAPSHOT_CHUNK_BYTES
from .errors import HandlerError
from .failpoints import failpoint
from .groups import GroupKind
from .tls import RevocationWatch, peer_context

log = logging.getLogger("raftlog.snapshots")

DEFAULT_CHUNK_BYTES = DEFAULT_SNAPSHOT_CHUNK_BYTES


@dataclass(slots=True, frozen=True)
class SnapshotRange:
    """The record range a partition snapshot promises (decoded from its data)."""

    start_offset: int
    next_offset: int
    # CompactRecords applied up to the snapshot (log/compaction.py); 0: none.
    compactions: int = 0

    @classmethod
    def of(cls, data: bytes) -> SnapshotRange:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        start, nxt = obj["start_offset"], obj["next_offset"]
        if not (isinstance(start, int) and isinstance(nxt, int) and 0 <= start <= nxt):
            raise ValueError(f"bad snapshot range [{start!r}, {nxt!r})")
        compaction = obj.get("compaction") or (0, 0)
        return cls(start, nxt, compaction[0] if isinstance(compaction[0], int) else 0)

    def fetch_from(self, sm: Any) -> int:
        """Where a transfer into ``sm``'s store starts: after the batches it already has.

        Except when the snapshot holds compactions this replica never applied: its
        own batches may still hold records the snapshot's replicas removed, and
        no later entry would remove them here, so every batch is fetched again
        (the sender's batches have the same keys and offsets, compacted).
        """
        if self.compactions != getattr(sm, "compactions", 0):
            return self.start_offset
        return sm.contiguous_end(self.start_offset, self.next_offset)


class TransferError(Exception):
    """The sender could not provide the records; the snapshot message is dropped."""


# ---------------------------------------------------------------- server side


async def serve_replica_fetch(cfg: Any, driver: Any, ctx: Any, fields: dict[str, Any]) -> dict:
    """Committed batches of a partition from ``offset``, for a peer's snapshot transfer.

    No ReadIndex: the requester asks only for offsets below a snapshot's
    ``next_offset``, which are committed and final wherever they are applied,
    and ``read`` never returns anything beyond this node's applied state.
    Only peers may ask: the ``node`` must be a cluster member and, when
    ``[auth] peer_token`` is set, ``token`` must be it.
    """
    node = fields["node"]
    known = node in cfg.node_ids() or node in getattr(driver.metadata, "nodes", {})
    token = cfg.auth.peer_token
    if not known or (
        token is not None
        and not hmac.compare_digest(str(fields.get("token") or "").encode(), token.encode())
    ):
        raise HandlerError(ErrorCode.UNAUTHORIZED, "replica_fetch is for cluster peers only")
    # Over TLS the connection itself must be that node's: the listener marks it
    # ``replica`` only when its certificate is valid for that node's host.
    if getattr(cfg, "tls", None) is not None and not (
        getattr(ctx, "replica", False) and ctx.client_id == f"{REPLICA_CLIENT_PREFIX}{node}"
    ):
        raise HandlerError(
            ErrorCode.UNAUTHORIZED, f"replica_fetch over TLS needs the certificate of {node}"
        )
    group = driver.groups.get(fields["group"])
    if group is None or group.kind is not GroupKind.PARTITION:
        raise HandlerError(
            ErrorCode.UNKNOWN_PARTITION, f"group {fields['group']} is not hosted here"
        )
    sm = group.sm
    offset = fields["offset"]
    out: list[list[Any]] = []
    if sm.start_offset <= offset < sm.next_offset:
        max_bytes = min(
            fields.get("max_bytes") or DEFAULT_CHUNK_BYTES,
            cfg.limits.max_fetch_bytes,
            cfg.limits.max_frame_bytes // 2,
        )
        out = [list(b) for b in sm.read(offset, max(1, max_bytes))]
        snapshots = getattr(driver, "snapshots", None)
        if snapshots is not None and out:
            snapshots.note_served(sum(len(b[3]) for b in out))
    return {"batches": out, "start_offset": sm.start_offset, "end_offset": sm.next_offset}


# ---------------------------------------------------------------- client side


class PeerConnection:
    """One client-role connection to a peer, one request at a time."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        max_frame_bytes: int,
        revocation: RevocationWatch | None = None,
    ) -> None:
        self._stream = stream
        self._decoder = FrameDecoder(max_frame_bytes)
        self._frames: list[dict[str, Any]] = []
        self._next_id = 0
        self.address = ""
        # [tls] crl_file: a reload of this node may revoke the peer's certificate
        # while a transfer runs; its records must not be taken after that.
        self._revocation = revocation

    @classmethod
    async def open(
        cls, address: str, *, node_id: str, cfg: Any, timeout_s: float
    ) -> PeerConnection:
        host, _, port = address.rpartition(":")
        # [tls]: as a peer does, with this node's certificate (server/tls.py),
        # which also earns the transfer its exemption from client limits.
        context = peer_context(cfg, node_id) if getattr(cfg, "tls", None) else None
        with trio.fail_after(timeout_s):
            # Keepalive as on every socket the node owns (each request's timeout
            # already bounds the waits here).
            stream: trio.abc.Stream = await open_tcp_stream(
                host.strip("[]"), int(port), cfg.limits.tcp_keepalive_s
            )
            revocation = None
            if context is not None:
                try:
                    secured = await start_tls(stream, context, address)
                except (TLSError, OSError) as exc:
                    raise TransferError(f"TLS with {address} failed: {exc}") from None
                stream = secured
                revocation = RevocationWatch.of(cfg, node_id, secured)
            conn = cls(stream, cfg.limits.max_frame_bytes, revocation)
            conn.address = address
            try:
                tokens = cfg.auth.client_tokens
                await stream.send_all(
                    encode_frame(
                        hello(
                            "client",
                            f"{REPLICA_CLIENT_PREFIX}{node_id}",
                            credential=tokens[0] if tokens else None,
                            cluster=cfg.name,
                            # Not counted against the sender's client limit
                            # nor throttled (server/listener.py).
                            peer_credential=cfg.auth.peer_token,
                        )
                    )
                )
                reply = await conn._read_frame()
                if reply.get("type") != "hello_ok":
                    raise TransferError(f"hello refused by {address}: {reply.get('message')}")
            except BaseException:
                await stream.aclose()
                raise
        return conn

    async def _read_frame(self) -> dict[str, Any]:
        while not self._frames:
            data = await self._stream.receive_some(65536)
            if not data:
                raise TransferError("connection closed by the peer")
            self._frames.extend(self._decoder.feed(data))
        return self._frames.pop(0)

    async def request(self, op: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
        if self._revocation is not None and self._revocation.revoked():
            # Checked before each chunk: a reply already read was from a peer
            # this node still trusted when it asked.
            raise TransferError(
                f"{self.address}'s TLS certificate was revoked by this node's crl_file "
                "(reloaded during the transfer)"
            )
        self._next_id += 1
        req_id = self._next_id
        with trio.fail_after(timeout_s):
            await self._stream.send_all(encode_frame({"type": op, "id": req_id, **fields}))
            while True:
                reply = await self._read_frame()
                if reply.get("id") == req_id:
                    break
        if not reply.get("ok"):
            raise TransferError(f"{op} failed: {reply.get('error')}: {reply.get('message')}")
        return reply

    async def aclose(self) -> None:
        await self._stream.aclose()


def _checked_batches(raw: Any) -> list[tuple[int, int, int, bytes]]:
    """The reply's batches as typed tuples; TransferError on anything else (a buggy peer)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TransferError("replica_fetch reply: batches is not a list")
    out = []
    for b in raw:
        if not (
            isinstance(b, list | tuple)
            and len(b) == 4
            and all(type(v) is int and v >= 0 for v in b[:3])
            and isinstance(b[3], bytes)
        ):
            raise TransferError(f"replica_fetch reply: malformed batch {b!r:.80}")
        out.append((b[0], b[1], b[2], b[3]))
    return out


async def fetch_missing_batches(
    *,
    sm: Any,
    conn: PeerConnection,
    gid: int,
    wanted: SnapshotRange,
    node_id: str,
    cfg: Any,
    chunk_bytes: int,
    timeout_s: float,
    still_wanted: Any = lambda: True,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Pull the batches of ``wanted`` that ``sm``'s store lacks; returns chunks fetched.

    Chunks of at most ``chunk_bytes`` (one request in flight: the sender's
    loop serves one bounded read at a time). Each chunk is written unsynced:
    a chunk lost in a crash is fetched again, and the snapshot install's
    synced save later makes all of them durable (WAL order). ``on_chunk``
    gets each written chunk's record bytes, as it goes (metrics show a long
    transfer's progress, not only its end).
    """
    pos = wanted.fetch_from(sm)
    chunks = 0
    while pos < wanted.next_offset:
        if not still_wanted():
            raise TransferError("group no longer hosted")
        reply = await conn.request(
            "replica_fetch",
            timeout_s,
            group=gid,
            offset=pos,
            max_bytes=chunk_bytes,
            node=node_id,
            token=cfg.auth.peer_token,
        )
        batches = _checked_batches(reply.get("batches"))
        sender_start = reply.get("start_offset", 0)
        if not batches:
            if isinstance(sender_start, int) and sender_start > pos:
                # Retention on the sender moved its start past ``pos`` through a
                # TRUNCATE_PREFIX entry committed after the snapshot: this
                # replica applies it too, so these records are going anyway.
                log.info("event=snapshot_transfer_skip group=%d from=%d to=%d",
                         gid, pos, sender_start)  # fmt: skip
                pos = min(sender_start, wanted.next_offset)
                continue
            raise TransferError(f"sender has no batch at offset {pos} of group {gid}")
        batches = [b for b in batches if b[0] < wanted.next_offset]
        if not batches:
            raise TransferError(f"sender answered offset {pos} with batches beyond the snapshot")
        first_base, _, first_count, _ = batches[0]
        if not first_base <= pos < first_base + first_count:
            raise TransferError(f"sender answered offset {pos} with a batch at {first_base}")
        wb = sm.store.new_batch()
        try:
            pos = sm.put_fetched(batches, wb)
        except Exception as exc:  # wrong shapes or types from a buggy peer
            raise TransferError(f"bad batches from sender: {exc}") from exc
        sm.store.write(wb, sync=False)
        chunks += 1
        if on_chunk is not None:
            on_chunk(sum(len(b[3]) for b in batches))
        failpoint("snapshot_mid_transfer")
        # Let the driver loop and other groups run between chunks.
        await trio.lowlevel.checkpoint()
    return chunks
