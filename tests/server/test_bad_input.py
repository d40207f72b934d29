"""Bad input never kills the node: every case gets its error code or a closed
connection, and the listener keeps serving a client that was connected all along."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raftlog.client.protocol import HEADER, PROTOCOL_VERSION, FrameDecoder, encode_frame, hello
from raftlog.server.config import AuthConfig, ClusterConfig, Limits
from raftlog.server.listener import Listener

from .cluster_harness import make_config
from .conftest import FakeNode, start_fake_node
from .rawclient import RawConn


async def bystander(node: FakeNode) -> RawConn:
    conn = await RawConn.open(node.port)
    assert (await conn.hello("client", "bystander"))["type"] == "hello_ok"
    return conn


async def assert_still_served(conn: RawConn, req_id: int) -> None:
    reply = await conn.request(req_id, "metadata")
    assert reply["id"] == req_id and reply["ok"] is True


@pytest.fixture
def small_frames_cfg(tmp_path: Path) -> ClusterConfig:
    return make_config(tmp_path, 1, limits=Limits(max_frame_bytes=1024, max_batch_bytes=512))


async def test_oversized_frame_closes_only_that_connection(
    small_frames_cfg: ClusterConfig, nursery: trio.Nursery
) -> None:
    node = await start_fake_node(nursery, small_frames_cfg)
    other = await bystander(node)
    bad = await RawConn.open(node.port)
    assert (await bad.hello())["type"] == "hello_ok"
    # Only the header: the server must refuse before buffering the body.
    await bad.stream.send_all(HEADER.pack(1025))
    assert await bad.closed()
    assert node.metrics.frame_errors.value(reason="too_large") == 1
    await assert_still_served(other, 1)
    # The limit is inclusive: a frame of exactly max_frame_bytes is accepted.
    ok = await RawConn.open(node.port)
    assert (await ok.hello())["type"] == "hello_ok"
    frame = {"type": "metadata", "id": 9, "pad": b""}
    size = len(msgpack.packb(frame, use_bin_type=True))
    frame["pad"] = b"p" * (1024 - size - 1)  # bin8 -> bin16 header grows by one byte
    body = msgpack.packb(frame, use_bin_type=True)
    assert len(body) == 1024
    await ok.send_raw(body)
    assert (await ok.recv())["id"] == 9


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xc1\xc1\xc1", "malformed"),  # 0xc1 is never used in msgpack
        (msgpack.packb([1, 2, 3]), "malformed"),  # not a map
        (msgpack.packb("hello"), "malformed"),
        (b"\x82\xa1a", "malformed"),  # truncated map
    ],
)
async def test_undecodable_frames_close_the_connection(
    fake_node: FakeNode, body: bytes, reason: str
) -> None:
    other = await bystander(fake_node)
    for before_hello in (True, False):
        bad = await RawConn.open(fake_node.port)
        if not before_hello:
            assert (await bad.hello())["type"] == "hello_ok"
        await bad.send_raw(body)
        assert await bad.closed()
    assert fake_node.metrics.frame_errors.value(reason=reason) == 2
    await assert_still_served(other, 1)


@pytest.mark.parametrize(
    ("frame", "reply_id", "message"),
    [
        ({"type": "frobnicate", "id": 4}, 4, "unknown request type 'frobnicate'"),
        ({"type": 17, "id": 4}, 4, "unknown request type 17"),
        ({"type": "metadata"}, 0, "'id' must be a positive integer"),
        ({"type": "metadata", "id": -3}, 0, "'id' must be a positive integer"),
        ({"type": "metadata", "id": True}, 0, "'id' must be a positive integer"),
        ({"type": "produce", "id": 5, "topic": "t"}, 5, "missing required field 'partition'"),
        (
            {"type": "fetch", "id": 6, "topic": "t", "partition": "0", "offset": 0},
            6,
            "field 'partition' must be int, got str",
        ),
        (
            {"type": "fetch", "id": 7, "topic": "t", "partition": 0, "offset": False},
            7,
            "field 'offset' must be int, got bool",
        ),
        (
            {"type": "produce", "id": 8, "topic": "t", "partition": 0, "records": "text",
             "count": 1, "crc": 0},
            8,
            "field 'records' must be bytes, got str",
        ),
    ],
)
async def test_invalid_requests_get_invalid_request_and_connection_lives(
    fake_node: FakeNode, frame: dict[str, Any], reply_id: int, message: str
) -> None:
    conn = await RawConn.open(fake_node.port)
    assert (await conn.hello())["type"] == "hello_ok"
    await conn.send(frame)
    reply = await conn.recv()
    assert (reply["id"], reply["ok"], reply["error"]) == (reply_id, False, "INVALID_REQUEST")
    assert message in reply["message"]
    assert fake_node.calls == []  # the handler never saw it
    await assert_still_served(conn, 100)


async def hello_refused(node: FakeNode, frame: dict[str, Any]) -> dict[str, Any]:
    other = await bystander(node)
    conn = await RawConn.open(node.port)
    await conn.send(frame)
    reply = await conn.recv()
    assert reply["id"] == 0 and reply["ok"] is False
    assert await conn.closed()
    await assert_still_served(other, 1)
    return reply


async def test_missing_hello_is_refused(fake_node: FakeNode) -> None:
    reply = await hello_refused(fake_node, {"type": "metadata", "id": 1})
    assert reply["error"] == "INVALID_REQUEST" and "hello" in reply["message"]
    assert [c[0] for c in fake_node.calls] == ["bystander"]  # never the refused one


async def test_wrong_protocol_version_is_refused(fake_node: FakeNode) -> None:
    frame = {**hello("client", "c"), "version": PROTOCOL_VERSION + 1}
    reply = await hello_refused(fake_node, frame)
    assert reply["error"] == "UNSUPPORTED_VERSION"


@pytest.mark.parametrize(
    "frame",
    [
        {**hello("client", "c"), "role": "admin"},
        {**hello("client", "c"), "id": ""},
        {**hello("client", "c"), "id": 42},
    ],
)
async def test_malformed_hello_is_refused(fake_node: FakeNode, frame: dict[str, Any]) -> None:
    assert (await hello_refused(fake_node, frame))["error"] == "INVALID_REQUEST"


async def test_client_of_another_cluster_is_refused(fake_node: FakeNode) -> None:
    reply = await hello_refused(fake_node, hello("client", "c", cluster="elsewhere"))
    assert reply["error"] == "CLUSTER_MISMATCH"


async def test_bad_credential_refused_when_auth_configured(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cfg = make_config(tmp_path, 1, auth=AuthConfig(client_tokens=("tok-1", "tok-2")))
    node = await start_fake_node(nursery, cfg)
    for credential in (None, "tok-3"):
        conn = await RawConn.open(node.port)
        reply = await conn.hello("client", "c", credential=credential)
        assert reply["error"] == "UNAUTHORIZED"
        assert await conn.closed()
    conn = await RawConn.open(node.port)
    assert (await conn.hello("client", "c", credential="tok-2"))["type"] == "hello_ok"
    await assert_still_served(conn, 1)


@pytest.mark.parametrize("hello_timeout_ms", [10_000, 300])  # the default, and a setting
async def test_silent_connection_is_closed_after_hello_timeout(
    fake_node: FakeNode, autojump_clock: Any, hello_timeout_ms: int
) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    limits = dataclasses.replace(fake_node.cfg.limits, hello_timeout_ms=hello_timeout_ms)
    listener = Listener.create(
        dataclasses.replace(fake_node.cfg, limits=limits), "n1",
        store_incarnations=fake_node.book,
        on_request=fake_node.on_request, on_peer_msgs=fake_node.on_peer,
        metrics=fake_node.metrics,
    )  # fmt: skip
    started = trio.current_time()  # the autojump clock's: exact, and no real wait
    await listener.handle_stream(server_end)  # returns by itself: nobody said hello
    assert trio.current_time() - started == pytest.approx(hello_timeout_ms / 1000)
    assert await client_end.receive_some(10) == b""


# ---------------------------------------------------------------- fuzz

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
_ops = st.sampled_from(["produce", "fetch", "metadata", "create_topic", "nope", "commit_offset"])
_frames = st.fixed_dictionaries(
    {"type": _ops | _values, "id": st.integers(-2, 5) | _values},
    optional={"topic": _values, "partition": _values, "offset": _values, "records": _values},
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(_frames, min_size=1, max_size=6))
def test_fuzzed_requests_each_get_exactly_one_reply(frames: list[dict[str, Any]]) -> None:
    async def main() -> None:
        cfg = make_config(Path("/nonexistent"), 1)
        node = FakeNode(cfg)
        node.gate(0).set()
        listener = Listener.create(
            cfg, "n1", store_incarnations=node.book, on_request=node.on_request,
            on_peer_msgs=node.on_peer, metrics=node.metrics,
        )  # fmt: skip
        client_end, server_end = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.handle_stream, server_end)
            payload = encode_frame(hello("client", "fuzz"))
            payload += b"".join(encode_frame(f) for f in frames)
            await client_end.send_all(payload)
            decoder = FrameDecoder()
            replies: list[dict[str, Any]] = []
            with trio.fail_after(5):
                while len(replies) < len(frames) + 1:
                    replies += decoder.feed(await client_end.receive_some(65536))
            # fetch frames block on other offsets' gates: release everything
            assert replies[0]["type"] == "hello_ok"
            assert all(isinstance(r.get("ok"), bool) for r in replies[1:])
            nursery.cancel_scope.cancel()

    # Offsets other than 0 would block forever: make every fetch gate open.
    for f in frames:
        if f.get("type") == "fetch":
            f["offset"] = 0
    trio.run(main)


def test_dataclass_replace_keeps_limits_independent(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 1)
    small = dataclasses.replace(cfg, limits=Limits(max_frame_bytes=2048, max_batch_bytes=1024))
    assert cfg.limits.max_frame_bytes != small.limits.max_frame_bytes
