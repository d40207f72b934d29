"""Raft traffic to peers: one outbound stream per peer (one TCP connection per
direction, as etcd does), frames ``{"type": "raft", "msgs": [[group, bytes], ...]}``.

Raft tolerates lost messages (it retransmits on the next heartbeat or append;
Raft paper §5.3), so the transport never blocks the driver and never grows
without bound: each peer has a bounded queue, and when a slow or dead peer
lets it fill, the OLDEST frames are dropped and counted. Newer messages carry
newer terms and commit indexes, so the oldest are the least useful.

``send`` only queues; ``flush`` (the driver calls it after each batch of
sends) writes everything queued at once: for each connected peer whose writer
task is idle, one frame goes to the socket with one non-blocking write, in the
driver's own call. Left to the writer task, a leader's appends would leave
only after the driver's turn, i.e. after the leader's own inline fsync,
putting two fsyncs in series on every produce instead of overlapping them
(thesis §10.2.1). Whatever the kernel does not take is handed to the writer
task, which alone ever waits for the socket; it also sends anything nobody
flushed.

With ``[tls]`` each link is a TLS stream (server/tls.py): the dialler checks
the peer's certificate against ``ca_file`` and the host it dials, and presents
its own. A TLS stream has no descriptor for direct writes (``socket_fd`` is
None), and its TLS state belongs to trio's SSLStream (whose EOF watcher reads
it meanwhile), so ``flush`` leaves its frames to the writer task, which still
sends a turn's frames in one write. Before an fsync on its own loop the
driver awaits ``deliver``: the writer tasks hand the frames to the kernel
first, so the followers' fsyncs overlap the leader's again. The plaintext
direct path is unchanged.
"""

from __future__ import annotations

import collections
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import msgpack
import trio
from raftlog.client.errors import TLSError
from raftlog.client.keepalive import open_tcp_stream
from raftlog.client.protocol import HEADER, FrameDecoder, FrameError, encode_frame, hello
from raftlog.client.sockio import socket_fd, write_now
from raftlog.client.tls import hello_error, start_tls

from .config import ClusterConfig, parse_address
from .metrics import Metrics
from .tls import RevocationWatch, dial_failure_reason, peer_context

log = logging.getLogger(__name__)

Msgs = list[tuple[int, bytes]]


@dataclass(slots=True)
class TransportOptions:
    max_queued_frames: int = 4096  # per peer; one frame = one driver turn's messages
    max_queued_bytes: int = 64 * 1024 * 1024  # per peer
    connect_timeout_s: float = 2.0
    hello_timeout_s: float = 2.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 1.0  # a restarted peer is found within about one election timeout


@dataclass(slots=True)
class _Peer:
    node_id: str
    address: str
    queue: collections.deque[tuple[Msgs, int]] = field(default_factory=collections.deque)
    queued_bytes: int = 0
    dropped: int = 0
    connected: bool = False
    # The connected socket's descriptor for direct writes; None whenever the
    # stream is not open, so a write never reaches a closed or reused one.
    fd: int | None = None
    writing: bool = False  # the writer task is inside send_all: direct writes wait
    # The unsent tail of a direct write (a view: no copy); the writer sends it first.
    pending: bytes | memoryview = b""
    wake: trio.Event = field(default_factory=trio.Event)
    # Set by ``redial``: the peer just dialled us, so it is up: stop backing off.
    redial: trio.Event = field(default_factory=trio.Event)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)


def _msgs_size(msgs: Msgs) -> int:
    return sum(len(data) + 16 for _, data in msgs)


class PeerTransport:
    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: str,
        incarnation: str,
        *,
        metrics: Metrics | None = None,
        options: TransportOptions | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.incarnation = incarnation
        self.metrics = metrics if metrics is not None else Metrics()
        self.options = options or TransportOptions()
        self.rng = rng or random.Random()
        # Frames are split below the receiver's limit (peers share the config),
        # keeping room for the frame's own msgpack overhead. A single message
        # must still fit: config requires max_batch_bytes <= max_frame_bytes / 2.
        frame_limit = cfg.limits.max_frame_bytes
        self.max_frame_payload = frame_limit - min(64 * 1024, frame_limit // 4)
        self._peers: dict[str, _Peer] = {}
        self._nursery: trio.Nursery | None = None
        # Set (and replaced) whenever a writer task finished a write or its link
        # went down: what ``deliver`` waits for.
        self._progress = trio.Event()
        # [tls]: built now, so a bad certificate stops the node at start (ConfigError).
        self._ssl = peer_context(cfg, node_id)
        for node in cfg.nodes:
            if node.id != node_id:
                self._peers[node.id] = _Peer(node.id, cfg.dial_address(node_id, node.id))

    # ------------------------------------------------------------ driver API

    def send(self, peer: str, msgs: Msgs, *, flush_follows: bool = False) -> None:
        """Queue ``msgs`` for ``peer``; never blocks, never raises.

        ``flush_follows``: the caller calls ``flush()`` before it next yields, so
        a link that ``flush`` can write directly need not wake its writer task
        (a wake that finds nothing to send costs two extra passes of trio's
        loop, each with an ``epoll_wait``, on every Raft round).
        """
        state = self._peers.get(peer)
        if state is None or not msgs:
            if state is None:
                log.debug("event=send_to_unknown_peer peer=%s", peer)
            return
        size = _msgs_size(msgs)
        state.queue.append((msgs, size))
        state.queued_bytes += size
        opts = self.options
        while len(state.queue) > opts.max_queued_frames or (
            state.queued_bytes > opts.max_queued_bytes and len(state.queue) > 1
        ):
            _, old_size = state.queue.popleft()
            state.queued_bytes -= old_size
            state.dropped += 1
            self.metrics.peer_queue_drops.inc(peer=peer)
        if not (flush_follows and self._writable_now(state)):
            state.wake.set()

    def flush(self) -> None:
        """Write what ``send`` queued now, without blocking, on every idle link."""
        for state in self._peers.values():
            if state.queue and self._writable_now(state):
                self._write_now(state)

    @staticmethod
    def _writable_now(state: _Peer) -> bool:
        """Can ``flush`` write this link itself (a descriptor, no write under way)?"""
        return state.fd is not None and not state.writing and not state.pending

    def _write_now(self, state: _Peer) -> None:
        """Everything queued, written now without blocking; the rest goes to the writer."""
        data, count = self._drain(state)
        assert state.fd is not None
        # A broken connection takes 0 bytes: the writer task meets the same
        # error on its next write and reconnects; Raft retransmits what is lost.
        written = write_now(state.fd, data)
        self.metrics.peer_msgs_out.inc(count, peer=state.node_id)
        if written < len(data):
            state.pending = memoryview(data)[written:]
            state.wake.set()

    def undelivered(self) -> bool:
        """Frames of a connected link that only its writer task can send (TLS)
        are queued or being written."""
        return any(
            state.connected and state.fd is None and (state.queue or state.pending or state.writing)
            for state in self._peers.values()
        )

    async def deliver(self) -> None:
        """Wait until ``undelivered()`` is False. Callers bound the wait: a slow
        or dead peer's full socket keeps its frames queued for the writer task."""
        while self.undelivered():
            await self._progress.wait()

    def _note_progress(self) -> None:
        progress, self._progress = self._progress, trio.Event()
        progress.set()

    def redial(self, peer: str) -> None:
        """``peer`` just connected to us (its hello was accepted): if our link to
        it is down, dial now instead of at the end of the backoff.

        A restarted node dials every peer as it starts, but the peers' own
        links to it may be in a backoff of up to ``backoff_max_s``, and Raft
        needs both directions (our appends and votes go out on our link).
        Without this, a node stopped right after another restarted could leave
        a group without a reachable majority for up to a second."""
        state = self._peers.get(peer)
        if state is not None and not state.connected:
            state.redial.set()

    def is_connected(self, peer: str) -> bool:
        state = self._peers.get(peer)
        return state is not None and state.connected

    def queued(self, peer: str) -> int:
        return len(self._peers[peer].queue)

    def dropped(self, peer: str) -> int:
        return self._peers[peer].dropped

    def peers(self) -> list[str]:
        return list(self._peers)

    def add_peer(self, node_id: str, address: str) -> None:
        if node_id == self.node_id or node_id in self._peers:
            return
        state = _Peer(node_id, address)
        self._peers[node_id] = state
        if self._nursery is not None:
            self._nursery.start_soon(self._peer_loop, state)

    def remove_peer(self, node_id: str) -> None:
        state = self._peers.pop(node_id, None)
        if state is not None:
            state.cancel_scope.cancel()
            self.metrics.peer_connected.remove(peer=node_id)

    # ------------------------------------------------------------ tasks

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for state in self._peers.values():
                nursery.start_soon(self._peer_loop, state)
            task_status.started()
            await trio.sleep_forever()

    async def _peer_loop(self, state: _Peer) -> None:
        backoff = self.options.backoff_initial_s
        with state.cancel_scope:
            while True:
                stream = await self._dial(state)
                if stream is not None:
                    backoff = self.options.backoff_initial_s  # reset on success
                    await self._stream_to(state, stream)
                # Full jitter, capped: peers restarting together do not redial in lockstep.
                with trio.move_on_after(self.rng.uniform(backoff / 2, backoff)):
                    await state.redial.wait()
                if state.redial.is_set():
                    state.redial = trio.Event()
                    backoff = self.options.backoff_initial_s
                else:
                    backoff = min(backoff * 2, self.options.backoff_max_s)

    async def _dial(self, state: _Peer) -> trio.abc.Stream | None:
        opts = self.options
        host, port = parse_address(state.address)
        try:
            with trio.fail_after(opts.connect_timeout_s):
                # Heartbeats keep this link busy and keepalive probes only idle
                # ones: the TCP_USER_TIMEOUT set with it ends the link if the
                # peer's host is gone.
                keepalive = self.cfg.limits.tcp_keepalive_s
                stream: trio.abc.Stream = await open_tcp_stream(host, port, keepalive)
        except (OSError, trio.TooSlowError) as exc:
            self.metrics.peer_reconnects.inc(peer=state.node_id, result="unreachable")
            log.debug("event=peer_dial_failed peer=%s address=%s error=%r",
                      state.node_id, state.address, str(exc))  # fmt: skip
            return None
        if self._ssl is not None:
            secured = await self._start_tls(state, stream)
            if secured is None:
                return None
            stream = secured
        frame = hello(
            "peer",
            self.node_id,
            credential=self.cfg.auth.peer_token,
            cluster=self.cfg.name,
            incarnation=self.incarnation,
            log_format=self.cfg.log_format,
            peer_address=self.cfg.node(self.node_id).peer_address,
        )
        try:
            with trio.fail_after(opts.hello_timeout_s):
                await stream.send_all(encode_frame(frame))
                reply = await _read_one(stream)
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, FrameError) as exc:
            self.metrics.peer_reconnects.inc(peer=state.node_id, result="hello_failed")
            refused = hello_error(state.address, exc) if self._ssl is not None else None
            if isinstance(refused, TLSError):
                # TLS 1.3: the peer checks our certificate after our handshake
                # ends, so its refusal arrives here. Loud: retrying cannot fix it.
                self.metrics.tls_handshake_failures.inc(side="dial", reason="certificate")
                log.error("event=peer_tls_failed peer=%s address=%s error=%r",
                          state.node_id, state.address, str(refused))  # fmt: skip
            else:
                log.debug("event=peer_hello_failed peer=%s error=%r", state.node_id, str(exc))
            await trio.aclose_forcefully(stream)
            return None
        if reply.get("type") != "hello_ok":
            self.metrics.peer_reconnects.inc(peer=state.node_id, result="refused")
            # Loud: this does not heal by retrying (wrong cluster, wiped node, bad token).
            log.error("event=peer_refused_us peer=%s code=%s message=%r",
                      state.node_id, reply.get("error"), reply.get("message"))  # fmt: skip
            await trio.aclose_forcefully(stream)
            return None
        self.metrics.peer_reconnects.inc(peer=state.node_id, result="ok")
        log.info("event=peer_connected peer=%s address=%s", state.node_id, state.address)
        return stream

    async def _start_tls(self, state: _Peer, stream: trio.abc.Stream) -> trio.abc.Stream | None:
        """The TLS handshake of a fresh link; None (stream closed, failure counted) if it failed."""
        assert self._ssl is not None
        try:
            with trio.fail_after(self.options.hello_timeout_s):
                # The latest reload's context (tls.reload), not the one of our start.
                context = peer_context(self.cfg, self.node_id) or self._ssl
                return await start_tls(stream, context, state.address)
        except (TLSError, OSError, trio.TooSlowError) as exc:
            reason = "timeout" if isinstance(exc, trio.TooSlowError) else dial_failure_reason(exc)
            self.metrics.tls_handshake_failures.inc(side="dial", reason=reason)
            self.metrics.peer_reconnects.inc(peer=state.node_id, result="tls_failed")
            # A certificate problem does not heal by retrying: say it loudly.
            level = logging.ERROR if isinstance(exc, TLSError) else logging.DEBUG
            log.log(level, "event=peer_tls_failed peer=%s address=%s reason=%s error=%r",
                    state.node_id, state.address, reason, str(exc))  # fmt: skip
            await trio.aclose_forcefully(stream)  # start_tls closed it, unless it timed out
            return None

    async def _stream_to(self, state: _Peer, stream: trio.abc.Stream) -> None:
        state.connected = True
        state.pending = b""  # a frame tail from an old connection would corrupt this one
        self.metrics.peer_connected.set(1, peer=state.node_id)
        try:
            async with stream:
                state.fd = socket_fd(stream)
                try:
                    async with trio.open_nursery() as nursery:
                        # Peers never write after hello_ok; a read returning means
                        # the connection is gone, which a writer alone would notice
                        # only at its next write. Both tasks handle their own
                        # errors (no exception crosses the nursery, so strict
                        # exception groups of trio >= 0.25 change nothing here).
                        nursery.start_soon(_watch_eof, stream, nursery.cancel_scope)
                        await self._write_loop(state, stream)
                        nursery.cancel_scope.cancel()
                finally:
                    state.fd = None  # before the stream closes
        finally:
            state.connected = False
            state.pending = b""
            self._note_progress()
            self.metrics.peer_connected.set(0, peer=state.node_id)
            log.info("event=peer_disconnected peer=%s", state.node_id)

    async def _write_loop(self, state: _Peer, stream: trio.abc.Stream) -> None:
        watch = (
            RevocationWatch.of(self.cfg, self.node_id, stream)
            if isinstance(stream, trio.SSLStream)
            else None
        )
        try:
            while True:
                if not state.queue and not state.pending:
                    await state.wake.wait()
                # Let the rest of this scheduling turn queue too: one write per turn.
                await trio.lowlevel.cancel_shielded_checkpoint()
                state.wake = trio.Event()
                if watch is not None and watch.revoked():
                    # A reload's CRL revokes the peer's certificate: send it nothing
                    # more. The redial meets the CRL in its handshake (and is refused).
                    self.metrics.tls_connections_revoked.inc(role="dial")
                    log.error("event=tls_connection_revoked peer=%s address=%s",
                              state.node_id, state.address)  # fmt: skip
                    return
                data, count = self._drain(state)
                if state.pending:
                    data, state.pending = b"".join((state.pending, data)), b""
                if data:
                    state.writing = True
                    try:
                        await stream.send_all(data)
                    finally:
                        state.writing = False
                        self._note_progress()
                    self.metrics.peer_msgs_out.inc(count, peer=state.node_id)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("event=peer_stream_broken peer=%s error=%r", state.node_id, str(exc))

    def _drain(self, state: _Peer) -> tuple[bytes, int]:
        """Everything queued as few frames as possible, under the frame limit."""
        frames: list[bytes] = []
        current: Msgs = []
        current_size = 0
        count = 0
        while state.queue:
            msgs, size = state.queue.popleft()
            state.queued_bytes -= size
            for item in msgs:
                item_size = len(item[1]) + 16
                if item_size > self.max_frame_payload:
                    log.error("event=peer_msg_too_large peer=%s group=%d bytes=%d",
                              state.node_id, item[0], len(item[1]))  # fmt: skip
                    continue
                if current and current_size + item_size > self.max_frame_payload:
                    frames.append(_raft_frame(current))
                    current, current_size = [], 0
                current.append(item)
                current_size += item_size
                count += 1
        if current:
            frames.append(_raft_frame(current))
        return b"".join(frames), count


def _raft_frame(msgs: Msgs) -> bytes:
    body = msgpack.packb({"type": "raft", "msgs": msgs}, use_bin_type=True)
    return HEADER.pack(len(body)) + body


async def _read_one(stream: trio.abc.Stream) -> dict[str, Any]:
    decoder = FrameDecoder(1024 * 1024)
    while True:
        data = await stream.receive_some(65536)
        if not data:
            raise trio.BrokenResourceError("closed during hello")
        frames = decoder.feed(data)
        if frames:
            return frames[0]


async def _watch_eof(stream: trio.abc.Stream, scope: trio.CancelScope) -> None:
    try:
        while await stream.receive_some(65536):
            pass  # peers send nothing after hello_ok; ignore anything that comes
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()
