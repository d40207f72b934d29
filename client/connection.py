"""One pipelined trio TCP connection from a client to one node.

Many tasks share a connection: each request gets a correlation id and waits
for the reply with that id; a reader task dispatches replies (which may come
out of order, DESIGN.md §4) and a writer task coalesces every frame queued in
one scheduling turn into one socket write. When the connection drops, every
pending request fails with ConnectionLostError: for a write the outcome is
unknown (it may have been committed before the reply was lost).

With an ``ssl_context`` the TCP stream is wrapped in TLS before the hello
(client/tls.py); the connection then uses the stream API throughout, since
``socket_fd`` has no descriptor to offer for a TLS stream.

A node closes a client connection idle for its ``connections_max_idle_ms``
(server/connection_sweeper.py) and announces that limit in its hello_ok. A
connection is ``expired`` at 90 % of it (Kafka's clients use 9 minutes against
the brokers' 10), and the client dials a new one instead of sending into a
connection the node may be closing at that moment: such a request's outcome
would be unknown.

The socket has TCP keepalive (client/keepalive.py, ``tcp_keepalive``): an
idle connection to a node whose host vanished is reset by the kernel within
about twice that many seconds and the next call dials afresh, instead of
sending its request into a dead connection and waiting out its timeout.
"""

from __future__ import annotations

import itertools
import logging
import math
import ssl
from dataclasses import dataclass, field
from typing import Any

import msgpack
import trio

from .errors import (
    ConnectionLostError,
    InternalError,
    RaftlogError,
    RequestTimeoutError,
    error_from_reply,
)
from .keepalive import DEFAULT_TCP_KEEPALIVE_S, open_tcp_stream
from .protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER,
    FrameDecoder,
    FrameError,
    announced_limits,
    encode_frame,
    hello,
)
from .sockio import read_chunk, socket_fd, write_now
from .tls import hello_error, start_tls

log = logging.getLogger(__name__)

_READ_CHUNK = 256 * 1024
# A connection is retired at this share of the node's announced idle limit.
IDLE_MARGIN = 0.9


@dataclass(slots=True)
class _Waiter:
    """One request waiting for its reply; set exactly once by the reader (or on close)."""

    event: trio.Event = field(default_factory=trio.Event)
    reply: dict[str, Any] | None = None
    error: RaftlogError | None = None


class Connection:
    """A connected, hello'd connection. Create with ``await Connection.open(...)``."""

    def __init__(
        self, address: str, stream: trio.abc.Stream, *, max_frame_bytes: int, node: str
    ) -> None:
        self.address = address
        self.node = node  # the node id the server announced in hello_ok
        self.limits: dict[str, int] = {}  # the node's [limits] from hello_ok (protocol.py)
        self._stream = stream
        self._decoder = FrameDecoder(max_frame_bytes)
        self._ids = itertools.count(1)
        self._pending: dict[int, _Waiter] = {}
        self._outbuf: list[bytes] = []
        self._writing = False  # a task is inside _flush; it will also send frames queued meanwhile
        # A request is first written with one non-blocking os.write: trio's
        # send_all yields to the scheduler even when the kernel takes everything
        # at once, a full scheduling pass on every request's critical path.
        self._fd = socket_fd(stream)
        self._closed = False
        self._close_reason = "connection closed"
        self._cancel = trio.CancelScope()
        # Idle this long (nothing pending) and the connection is ``expired``:
        # the node's announced limit with a margin, or the client's own if less.
        self.max_idle: float | None = None
        self.last_active = trio.current_time()  # the last reply, or the hello
        # When bytes last came from the node: a request that times out while
        # others were answered tells of its group, not of the node (client/aio.py).
        self.last_received = self.last_active

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        nursery: trio.Nursery,
        address: str,
        *,
        client_id: str,
        credential: str | None = None,
        connect_timeout: float = 5.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: float | None = None,
        tcp_keepalive: int = DEFAULT_TCP_KEEPALIVE_S,
    ) -> Connection:
        """Dial, exchange hellos, start the reader and writer tasks in ``nursery``.

        ``max_idle``: the client's own limit on an idle connection, in seconds
        (None: only the node's). ``tcp_keepalive``: the socket's keepalive idle
        time in seconds (0: none).

        Raises OSError when the node cannot be reached (nothing was sent), the
        error reply to the hello (UNAUTHORIZED, UNSUPPORTED_VERSION ...), or
        TLSError when TLS fails for a reason retrying cannot fix.
        """
        host, _, port = address.rpartition(":")
        host = host.strip("[]")  # "[::1]:7101" -> "::1"
        stream: trio.abc.Stream
        try:
            with trio.fail_after(connect_timeout):
                stream = await open_tcp_stream(host, int(port), tcp_keepalive)
                if ssl_context is not None:
                    stream = await start_tls(stream, ssl_context, address)
        except trio.TooSlowError:
            what = "connect" if ssl_context is None else "connect and TLS handshake"
            raise TimeoutError(f"{address}: {what} timed out after {connect_timeout}s") from None
        try:
            with trio.fail_after(connect_timeout):
                greeting = hello("client", client_id, credential=credential)
                await stream.send_all(encode_frame(greeting))
                decoder = FrameDecoder(max_frame_bytes)
                frames: list[dict[str, Any]] = []
                while not frames:
                    data = await stream.receive_some(_READ_CHUNK)
                    if not data:
                        if ssl_context is not None:
                            raise hello_error(address, ConnectionResetError("EOF"))
                        raise ConnectionRefusedError(
                            f"{address} closed the connection during hello: "
                            "does the node require TLS?"
                        )
                    frames = decoder.feed(data)
        except trio.TooSlowError:
            await stream.aclose()
            raise TimeoutError(f"{address}: no hello reply within {connect_timeout}s") from None
        except (OSError, trio.BrokenResourceError, FrameError) as exc:
            await stream.aclose()
            if ssl_context is not None and isinstance(exc, trio.BrokenResourceError):
                raise hello_error(address, exc) from None
            if isinstance(exc, ConnectionRefusedError):
                raise
            raise ConnectionRefusedError(f"{address}: hello failed: {exc}") from None
        first = frames[0]
        if first.get("ok") is False:
            await stream.aclose()
            raise error_from_reply(
                str(first.get("error")), str(first.get("message", "")), _details(first)
            )
        if first.get("type") != "hello_ok":
            await stream.aclose()
            raise InternalError(f"{address}: unexpected hello reply {first!r}")
        conn = cls(address, stream, max_frame_bytes=max_frame_bytes, node=str(first.get("node")))
        conn.limits = announced_limits(first)
        conn.max_idle = _idle_limit(max_idle, conn.limits.get("connections_max_idle_ms"))
        conn._decoder = decoder
        # Frames that arrived glued to the hello reply are ordinary replies.
        for frame in frames[1:]:
            conn._dispatch(frame)
        nursery.start_soon(conn._run)
        log.debug("event=connected address=%s node=%s", address, conn.node)
        return conn

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        return len(self._pending)

    def expired(self, now: float) -> bool:
        """Idle long enough that the node may be closing it: dial a new one."""
        return (
            self.max_idle is not None
            and not self._pending
            and now - self.last_active >= self.max_idle
        )

    async def _run(self) -> None:
        with self._cancel:
            try:
                await self._reader()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._close_reason = f"connection to {self.address} lost: {exc}"
            except FrameError as exc:
                self._close_reason = f"bad frame from {self.address}: {exc}"
            except Exception as exc:  # a malformed reply must not kill the client's nursery
                log.warning("event=connection_reader_failed address=%s error=%r", self.address, exc)
                self._close_reason = f"unexpected error reading from {self.address}: {exc!r}"
        self._fail_all()
        with trio.CancelScope(shield=True):
            await self._stream.aclose()

    def close(self) -> None:
        """Close the connection; pending requests fail with ConnectionLostError."""
        if not self._closed:
            self._close_reason = f"connection to {self.address} closed by the client"
        self._cancel.cancel()
        self._fail_all()

    def _fail_all(self) -> None:
        self._closed = True
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            if not waiter.event.is_set():
                waiter.error = ConnectionLostError(self._close_reason, address=self.address)
                waiter.event.set()

    # ------------------------------------------------------------ io tasks

    async def _reader(self) -> None:
        stream = self._stream
        decoder = self._decoder
        fd = self._fd
        drained = True
        while True:
            if fd is not None:
                data = await read_chunk(fd, _READ_CHUNK, drained)
                drained = len(data) < _READ_CHUNK
            else:
                data = await stream.receive_some(_READ_CHUNK)
            if not data:
                self._close_reason = f"{self.address} closed the connection"
                return
            self.last_received = trio.current_time()
            for frame in decoder.feed(data):
                self._dispatch(frame)

    def _dispatch(self, frame: dict[str, Any]) -> None:
        req_id = frame.get("id")
        waiter = self._pending.pop(req_id, None) if isinstance(req_id, int) else None
        if waiter is None:
            if frame.get("ok") is False and req_id == 0:
                # A connection-level error (e.g. INVALID_REQUEST for a frame the
                # server could not attribute); the server closes after it.
                self._close_reason = f"{self.address}: {frame.get('error')}: {frame.get('message')}"
            return  # a reply to a request that already timed out
        waiter.reply = frame
        waiter.event.set()

    async def _flush(self, budget: float) -> None:
        """Write every queued frame; frames queued while we write go out with the next write.

        Used when ``request``'s direct write could not take everything (a full
        socket) or while another task is flushing: there is no writer task,
        the first requester that needs to wait for the socket writes, and
        requesters arriving meanwhile just queue behind it, so their frames
        share its next write.
        The write is shielded from the caller's cancellation because a
        half-written frame would corrupt the stream for every other request;
        if it cannot finish within ``budget`` (peer not reading) the
        connection is closed instead.
        """
        self._writing = True
        try:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + budget
                while self._outbuf and not self._closed:
                    buf, self._outbuf = self._outbuf, []
                    await self._stream.send_all(b"".join(buf) if len(buf) > 1 else buf[0])
            if scope.cancelled_caught:
                self._close_reason = f"write to {self.address} stalled for {budget:.1f}s"
                self.close()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._close_reason = f"connection to {self.address} lost: {exc}"
            self.close()
        finally:
            self._writing = False

    # ------------------------------------------------------------ requests

    async def request(
        self, op: str, fields: dict[str, Any], budget: float = 10.0
    ) -> dict[str, Any]:
        """Send one request and wait for its reply (at most ``budget`` seconds).

        Returns the reply's result fields (``ok`` reply). Raises the matching
        RaftlogError for an error reply, RequestTimeoutError when no reply came
        in time, ConnectionLostError when the connection dropped first.
        """
        if self._closed:
            # Nothing was sent: the caller may retry freely.
            raise ConnectionLostError(self._close_reason, address=self.address, sent=False)
        req_id = next(self._ids)
        sent_at = trio.current_time()
        waiter = _Waiter()
        self._pending[req_id] = waiter
        frame = {"type": op, "id": req_id, **fields}
        body = msgpack.packb(frame, use_bin_type=True)
        data = HEADER.pack(len(body)) + body
        if self._fd is not None and not self._writing and not self._outbuf:
            data = data[write_now(self._fd, data) :]  # full or broken: _flush sorts it out
        if data:
            self._outbuf.append(data)
        try:
            with trio.move_on_after(budget if math.isfinite(budget) else math.inf):
                if self._outbuf and not self._writing:
                    await self._flush(budget)
                await waiter.event.wait()
        finally:
            self._pending.pop(req_id, None)
            self.last_active = trio.current_time()
        if waiter.error is not None:
            raise waiter.error
        reply = waiter.reply
        if reply is None:
            raise RequestTimeoutError(
                f"{op}: no reply from {self.address} within {budget:.3f}s (outcome unknown)",
                address=self.address,
                node_answered=self.last_received > sent_at,  # other requests meanwhile
            )
        if reply.get("ok") is False:
            raise error_from_reply(
                str(reply.get("error")), str(reply.get("message", "")), _details(reply)
            )
        return reply


def _idle_limit(own: float | None, announced_ms: int | None) -> float | None:
    """How long a connection may stay idle: the client's own limit or
    IDLE_MARGIN of the node's, whichever is shorter (None: no limit)."""
    limits = [own] if own is not None else []
    if announced_ms is not None:
        limits.append(announced_ms / 1000 * IDLE_MARGIN)
    return min(limits, default=None)


def _details(reply: dict[str, Any]) -> dict[str, object]:
    return {k: v for k, v in reply.items() if k not in ("id", "ok", "error", "message")}
