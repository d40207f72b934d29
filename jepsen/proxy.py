"""TCP proxies on directed peer links, controlled by the harness (trio).

Every node reaches every peer through its own proxy (cluster.toml per-node
``dial`` table), so the harness can act on one direction of one link:

- ``pass``  forward bytes as they come;
- ``cut``   reset every connection (RST, no FIN) and refuse new ones;
- ``hold``  keep connections open but deliver nothing until the mode changes
            (then the backlog arrives at once: delayed, stale Raft messages);
- ``delay`` forward each chunk ``delay_ms`` after it was read (latency, not
            bandwidth: reading never waits for the delay).

The proxy is not frame-aware: it only cuts whole connections or delays whole
chunks, so length-prefixed framing is never corrupted. Only peer traffic goes
through proxies; clients connect to nodes directly.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import trio

from .partitions import Grudge, cut_links

log = logging.getLogger(__name__)

_CHUNK = 65536
_BACKLOG_CHUNKS = 4096  # per direction; past it the reader waits (backpressure)


class LinkMode(StrEnum):
    PASS = "pass"
    CUT = "cut"
    HOLD = "hold"


def _abort(stream: trio.SocketStream) -> None:
    """Close with RST: the peer sees a reset, as when a cable is pulled and the
    kernel gives up, rather than an orderly FIN."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


@dataclass(slots=True, eq=False)
class _Conn:
    scope: trio.CancelScope
    streams: tuple[trio.SocketStream, ...] = ()


@dataclass(eq=False)
class LinkProxy:
    """One directed link: ``src`` dials ``listen`` to reach ``dst`` at ``target``."""

    src: str
    dst: str
    target: tuple[str, int]
    host: str = "127.0.0.1"
    port: int = 0  # set once listening
    mode: LinkMode = LinkMode.PASS
    delay_ms: float = 0.0
    bytes_forwarded: int = 0
    connections_accepted: int = 0
    _conns: set[_Conn] = field(default_factory=set)
    _changed: trio.Event = field(default_factory=trio.Event)
    _listener: trio.SocketListener | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- control (call from the trio thread) ------------------------------

    def _set(self, mode: LinkMode) -> None:
        if mode is not self.mode:
            log.info("proxy link=%s->%s mode=%s", self.src, self.dst, mode.value)
        self.mode = mode
        self._changed.set()
        self._changed = trio.Event()

    def cut(self) -> None:
        self._set(LinkMode.CUT)
        for conn in list(self._conns):
            conn.scope.cancel()
            for s in conn.streams:
                _abort(s)

    def hold(self) -> None:
        self._set(LinkMode.HOLD)

    def heal(self) -> None:
        self.delay_ms = 0.0
        self._set(LinkMode.PASS)

    def set_delay(self, ms: float) -> None:
        self.delay_ms = max(0.0, ms)
        self._changed.set()
        self._changed = trio.Event()

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    # -- running ----------------------------------------------------------

    async def listen(self) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self._listener = listeners[0]
        self.port = self._listener.socket.getsockname()[1]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        if self._listener is None:
            await self.listen()
        assert self._listener is not None
        task_status.started()
        await trio.serve_listeners(self._handle, [self._listener])

    async def _handle(self, client: trio.SocketStream) -> None:
        # An error on one connection must never take the proxy (and the run) down.
        try:
            await self._proxy(client)
        except Exception as exc:
            log.warning("event=proxy_error link=%s->%s error=%r", self.src, self.dst, exc)
            _abort(client)

    async def _proxy(self, client: trio.SocketStream) -> None:
        self.connections_accepted += 1
        if self.mode is LinkMode.CUT:
            _abort(client)
            return
        try:
            upstream = await trio.open_tcp_stream(*self.target)
        except OSError:
            _abort(client)
            return
        conn = _Conn(trio.CancelScope(), (client, upstream))
        self._conns.add(conn)
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    for src, dst in ((client, upstream), (upstream, client)):
                        send, recv = trio.open_memory_channel(_BACKLOG_CHUNKS)
                        nursery.start_soon(self._read, src, send)
                        nursery.start_soon(self._write, recv, dst, conn)
        finally:
            self._conns.discard(conn)
            for s in conn.streams:
                _abort(s)

    async def _read(self, src: trio.SocketStream, out: trio.MemorySendChannel) -> None:
        async with out:
            try:
                while True:
                    chunk = await src.receive_some(_CHUNK)
                    if not chunk:
                        break
                    await out.send((trio.current_time(), chunk))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async def _write(
        self, inp: trio.MemoryReceiveChannel, dst: trio.SocketStream, conn: _Conn
    ) -> None:
        # When this direction ends (reader done and backlog delivered, or the
        # destination broke) the whole connection goes: both directions.
        try:
            await self._deliver(inp, dst)
        finally:
            conn.scope.cancel()

    async def _deliver(self, inp: trio.MemoryReceiveChannel, dst: trio.SocketStream) -> None:
        async with inp:
            async for read_at, chunk in inp:
                while True:
                    if self.mode is LinkMode.HOLD:
                        await self._changed.wait()
                        continue
                    due = read_at + self.delay_ms / 1000.0
                    if trio.current_time() < due:
                        changed = self._changed
                        with trio.move_on_at(due):
                            await changed.wait()
                        continue
                    break
                try:
                    await dst.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
                self.bytes_forwarded += len(chunk)


class ProxyMesh:
    """A proxy for every directed link between the nodes."""

    def __init__(self, addresses: Mapping[str, str], host: str = "127.0.0.1") -> None:
        self.nodes = sorted(addresses)
        self.links: dict[tuple[str, str], LinkProxy] = {}
        for src in self.nodes:
            for dst in self.nodes:
                if src == dst:
                    continue
                h, p = addresses[dst].rsplit(":", 1)
                self.links[(src, dst)] = LinkProxy(src, dst, (h, int(p)), host=host)

    async def listen(self) -> None:
        """Bind every proxy's port, so their addresses can go in cluster.toml."""
        for link in self.links.values():
            await link.listen()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            for link in self.links.values():
                await nursery.start(_serve_link, link)
            task_status.started()

    def dial_table(self, src: str) -> dict[str, str]:
        """``dial`` entries for node ``src``: each peer through its proxy."""
        return {dst: self.links[(src, dst)].address for dst in self.nodes if dst != src}

    def apply(self, grudge: Grudge, mode: LinkMode = LinkMode.CUT) -> set[tuple[str, str]]:
        """Cut (or hold) exactly the links the grudge names; every other link passes.

        ``hold`` keeps the named links' connections open and delivers their
        backlog on heal: old, delayed Raft messages arriving all at once.
        """
        if mode is LinkMode.PASS:
            raise ValueError("apply() needs cut or hold")
        cut = cut_links(grudge)
        for key, link in self.links.items():
            if key in cut and mode is LinkMode.CUT:
                link.cut()
            elif key in cut:
                link.hold()
            elif link.mode is not LinkMode.PASS:
                link.heal()
        return cut

    def heal(self) -> None:
        for link in self.links.values():
            link.heal()

    def delay_all(self, ms: float) -> None:
        for link in self.links.values():
            link.set_delay(ms)

    def status(self) -> dict[str, str]:
        return {f"{s}->{d}": link.mode.value for (s, d), link in sorted(self.links.items())}


async def _serve_link(link: LinkProxy, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    await link.serve(task_status=task_status)
