"""A raw protocol client for listener tests: frames in, frames out, bounded waits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import trio
from raftlog.client.protocol import HEADER, FrameDecoder, encode_frame, hello

WAIT_S = 10.0  # generous: CI machines run many suites at once


class RawConn:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(1 << 30)
        self.frames: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, port: int) -> RawConn:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, frame: dict[str, Any]) -> None:
        await self.stream.send_all(encode_frame(frame))

    async def send_raw(self, body: bytes) -> None:
        await self.stream.send_all(HEADER.pack(len(body)) + body)

    async def send_obj(self, obj: Any) -> None:
        await self.send_raw(msgpack.packb(obj, use_bin_type=True))

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(WAIT_S):
            while not self.frames:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError("connection closed")
                self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    async def closed(self) -> bool:
        """True once the server has closed the connection (bounded wait)."""
        with trio.fail_after(WAIT_S):
            try:
                while data := await self.stream.receive_some(65536):
                    self.frames += self.decoder.feed(data)
            except trio.BrokenResourceError:
                pass
        return True

    async def hello(self, role: str = "client", ident: str = "c1", **kw: Any) -> dict[str, Any]:
        await self.send(hello(role, ident, **kw))
        return await self.recv()

    async def request(self, req_id: int, op: str, **fields: Any) -> dict[str, Any]:
        await self.send({"type": op, "id": req_id, **fields})
        return await self.recv()

    async def aclose(self) -> None:
        await self.stream.aclose()


async def wait_until(predicate: Callable[[], bool], what: str, limit_s: float = 10.0) -> None:
    """Poll a condition owned by another object (no event to wait on), bounded."""
    with trio.move_on_after(limit_s):
        while not predicate():  # noqa: ASYNC110 -- the state has no event to wait for
            await trio.sleep(0.005)
        return
    raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
