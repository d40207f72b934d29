"""The listener with fake handlers: hello, pipelining, coalescing, quotas, peer role."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.client.protocol import NOT_SAID, FrameDecoder, encode_frame, hello
from raftlog.server.config import ClusterConfig, Limits, QuotaConfig
from raftlog.server.listener import Listener, Quotas
from raftlog.server.log_format import LogFormats
from raftlog.server.token_bucket import TokenBucket

from .cluster_harness import make_config
from .conftest import FakeNode, start_fake_node
from .rawclient import RawConn, wait_until


async def client(node: FakeNode, ident: str = "c1") -> RawConn:
    conn = await RawConn.open(node.port)
    reply = await conn.hello("client", ident)
    assert reply["type"] == "hello_ok" and reply["node"] == "n1", reply
    return conn


async def test_request_reaches_handler_with_context(fake_node: FakeNode) -> None:
    conn = await client(fake_node, "app-7")
    reply = await conn.request(5, "create_topic", topic="t", partitions=2, replicas=3)
    assert reply["id"] == 5 and reply["ok"] is True
    assert reply["client"] == "app-7" and reply["node"] == "n1"
    assert reply["fields"] == {"topic": "t", "partitions": 2, "replicas": 3}
    assert fake_node.metrics.requests.value(op="create_topic", code="OK") == 1


async def test_replies_come_out_of_order(fake_node: FakeNode) -> None:
    conn = await client(fake_node)
    await conn.send({"type": "fetch", "id": 1, "topic": "t", "partition": 0, "offset": 100})
    await conn.send({"type": "fetch", "id": 2, "topic": "t", "partition": 0, "offset": 200})
    fake_node.gate(200).set()
    first = await conn.recv()
    assert (first["id"], first["offset"]) == (2, 200)
    fake_node.gate(100).set()
    second = await conn.recv()
    assert (second["id"], second["offset"]) == (1, 100)


async def test_handler_error_and_crash_answer_that_request_only(fake_node: FakeNode) -> None:
    conn = await client(fake_node)
    reply = await conn.request(1, "describe_topic", topic="nope")
    assert reply == {
        "id": 1, "ok": False, "error": "UNKNOWN_TOPIC", "message": "no such topic", "topic": "nope"
    }  # fmt: skip
    reply = await conn.request(2, "delete_topic", topic="x")
    assert (reply["id"], reply["error"]) == (2, "INTERNAL")
    reply = await conn.request(3, "list_topics")
    assert (reply["id"], reply["error"]) == (3, "INTERNAL")
    reply = await conn.request(4, "metadata")
    assert reply["ok"] is True


class CountingStream(trio.abc.Stream):
    """Wraps a stream and counts send_all calls (socket writes)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.writes = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def memory_listener(cfg: ClusterConfig, node: FakeNode) -> Listener:
    return Listener.create(
        cfg,
        "n1",
        store_incarnations=node.book,
        on_request=node.on_request,
        on_peer_msgs=node.on_peer,
        metrics=node.metrics,
    )


async def read_frames(stream: trio.abc.Stream, count: int) -> list[dict[str, Any]]:
    decoder = FrameDecoder()
    frames: list[dict[str, Any]] = []
    with trio.fail_after(5):
        while len(frames) < count:
            frames += decoder.feed(await stream.receive_some(65536))
    return frames


async def test_replies_ready_in_one_turn_go_out_in_one_write(cfg: ClusterConfig) -> None:
    node = FakeNode(cfg)
    listener = memory_listener(cfg, node)
    client_end, server_end = trio.testing.memory_stream_pair()
    counting = CountingStream(server_end)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.handle_stream, counting)
        await client_end.send_all(encode_frame(hello("client", "c")))
        await read_frames(client_end, 1)
        writes_after_hello = counting.writes
        reqs = [
            encode_frame({"type": "fetch", "id": i, "topic": "t", "partition": 0, "offset": 7})
            for i in range(1, 6)
        ]
        await client_end.send_all(b"".join(reqs))
        await trio.testing.wait_all_tasks_blocked()
        assert node.entered == 5
        node.gate(7).set()  # all five handlers finish in the same scheduling turn
        replies = await read_frames(client_end, 5)
        assert sorted(r["id"] for r in replies) == [1, 2, 3, 4, 5]
        assert counting.writes == writes_after_hello + 1
        nursery.cancel_scope.cancel()


async def test_a_lone_reply_larger_than_the_socket_buffer_arrives_whole(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Over TCP the handler writes a lone reply itself; what the kernel does not
    take goes to the writer task, and the next reply queues behind it."""
    cfg = make_config(tmp_path, 1)
    node = await start_fake_node(nursery, cfg)
    conn = await client(node)
    big = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # echoed back: over the socket buffers
    await conn.send({"type": "produce", "id": 1, "topic": "t", "partition": 0,
                     "records": big, "count": 1, "crc": 0})  # fmt: skip
    await trio.testing.wait_all_tasks_blocked()  # answered; the tail waits for us to read
    await conn.send({"type": "metadata", "id": 2})
    first = await conn.recv()
    second = await conn.recv()
    assert first["id"] == 1 and first["fields"]["records"] == big
    assert second["id"] == 2 and second["op"] == "metadata"


async def test_pipelining_window_is_bounded(cfg: ClusterConfig) -> None:
    cfg = dataclasses.replace(cfg, limits=Limits(max_pending_requests_per_connection=2))
    node = FakeNode(cfg)
    listener = memory_listener(cfg, node)
    client_end, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.handle_stream, server_end)
        await client_end.send_all(encode_frame(hello("client", "c")))
        await read_frames(client_end, 1)
        frames = [
            encode_frame({"type": "fetch", "id": i, "topic": "t", "partition": 0, "offset": i})
            for i in range(1, 5)
        ]
        await client_end.send_all(b"".join(frames))
        await trio.testing.wait_all_tasks_blocked()
        assert node.entered == 2  # the other two wait in the socket, not in memory
        for i in range(1, 5):
            node.gate(i).set()
        replies = await read_frames(client_end, 4)
        assert sorted(r["offset"] for r in replies) == [1, 2, 3, 4]
        assert node.entered == 4
        nursery.cancel_scope.cancel()


async def test_frames_split_at_every_byte_under_lockstep_scheduling(cfg: ClusterConfig) -> None:
    node = FakeNode(cfg)
    listener = memory_listener(cfg, node)
    client_end, server_end = trio.testing.lockstep_stream_pair()
    data = encode_frame(hello("client", "c")) + b"".join(
        encode_frame({"type": "metadata", "id": i}) for i in range(1, 4)
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.handle_stream, server_end)

        async def dribble() -> None:
            for i in range(len(data)):  # one byte per write: every split point
                await client_end.send_all(data[i : i + 1])

        nursery.start_soon(dribble)
        frames = await read_frames(client_end, 4)
        assert frames[0]["type"] == "hello_ok"
        assert sorted(f["id"] for f in frames[1:]) == [1, 2, 3]
        nursery.cancel_scope.cancel()


class StuckWriter(CountingStream):
    """A client that never reads: every write after the first blocks forever."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        if self.writes > 1:
            await trio.sleep_forever()
        await self.inner.send_all(data)


async def test_client_that_never_reads_bounds_server_memory(cfg: ClusterConfig) -> None:
    cfg = dataclasses.replace(cfg, limits=Limits(max_pending_requests_per_connection=3))
    node = FakeNode(cfg)
    listener = memory_listener(cfg, node)
    client_end, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.handle_stream, StuckWriter(server_end))
        await client_end.send_all(encode_frame(hello("client", "c")))
        await read_frames(client_end, 1)  # hello_ok was the one write that went through
        await client_end.send_all(
            b"".join(encode_frame({"type": "metadata", "id": i}) for i in range(1, 51))
        )
        await trio.testing.wait_all_tasks_blocked()
        # Answered-but-unsent replies count against the window: 3, not 50.
        assert node.entered == 3
        nursery.cancel_scope.cancel()


def test_token_bucket_admits_burst_then_throttles_until_refilled() -> None:
    bucket = TokenBucket.full(rate=10.0, now=0.0)
    assert bucket.take(25.0, now=0.0) == 0.0  # a big item passes when full, into debt
    wait = bucket.take(1.0, now=0.0)
    assert wait > 1.5  # 15 tokens of debt at 10/s
    assert bucket.take(1.0, now=1.0) > 0  # still 5 in debt
    assert bucket.take(1.0, now=2.0) == 0.0


def test_request_quota_is_per_client_id() -> None:
    now = [0.0]
    quotas = Quotas(QuotaConfig(requests_per_sec=2.0), clock=lambda: now[0])
    assert quotas.check("a", "metadata", {}) is None
    assert quotas.check("a", "metadata", {}) is None
    refused = quotas.check("a", "metadata", {})
    assert refused is not None and refused[0] == "requests_per_sec"
    assert quotas.check("b", "metadata", {}) is None  # another client has its own bucket
    now[0] = 1.0
    assert quotas.check("a", "metadata", {}) is None


def test_refilled_buckets_are_dropped_and_indebted_ones_kept() -> None:
    """Client ids are the clients' choice: one new id per connection must not grow the
    node's memory for good. A bucket back to full is forgotten at the next sweep; one
    still in debt is kept, so reconnecting under the same id escapes nothing."""
    now = [0.0]
    quotas = Quotas(QuotaConfig(requests_per_sec=2.0, produce_bytes_per_sec=100.0), lambda: now[0])
    for i in range(1000):
        assert quotas.check(f"churn-{i}", "metadata", {}) is None
    assert quotas.check("heavy", "produce", {"records": b"x" * 5000}) is None  # 49 s of debt
    assert quotas.buckets == 1000 + 2
    now[0] = Quotas.SWEEP_INTERVAL_S
    refused = quotas.check("heavy", "produce", {"records": b"x"})
    assert refused is not None and refused[0] == "produce_bytes_per_sec"
    assert quotas.buckets == 2  # heavy's two buckets (its request bucket was just used)
    now[0] += 2 * Quotas.SWEEP_INTERVAL_S
    assert quotas.check("other", "metadata", {}) is None
    assert quotas.buckets == 2  # "other", and heavy's produce bucket, still in debt


async def test_produce_quota_throttles_before_the_handler(
    tmp_path: Any, nursery: trio.Nursery
) -> None:
    cfg = make_config(tmp_path, 1, quotas=QuotaConfig(produce_bytes_per_sec=100.0))
    node = await start_fake_node(nursery, cfg)
    conn = await client(node, "producer-1")
    produce = {"topic": "t", "partition": 0, "count": 1, "crc": 0}
    first = await conn.request(1, "produce", records=b"x" * 150, **produce)
    assert first["ok"] is True
    second = await conn.request(2, "produce", records=b"y" * 10, **produce)
    assert second["error"] == "THROTTLED" and second["retry_after_ms"] > 0
    assert [c[2]["records"] for c in node.calls] == [b"x" * 150]  # nothing else reached it
    assert node.metrics.throttled.value(quota="produce_bytes_per_sec") == 1


# ---------------------------------------------------------------- peer role


async def peer(node: FakeNode, ident: str, incarnation: str, **kw: Any) -> tuple[RawConn, dict]:
    conn = await RawConn.open(node.port)
    kw.setdefault("cluster", node.cfg.name)
    reply = await conn.hello("peer", ident, incarnation=incarnation, **kw)
    return conn, reply


async def test_peer_frames_reach_driver_and_incarnation_is_recorded(fake_node: FakeNode) -> None:
    conn, reply = await peer(fake_node, "n2", "inc-A")
    assert reply["type"] == "hello_ok"
    assert fake_node.book.get("n2") == "inc-A"
    await conn.send({"type": "raft", "msgs": [[0, b"m1"], [7, b"m2"]]})
    await conn.send({"type": "raft", "msgs": [[3, b"m3"]]})
    await fake_node.wait_peer_msgs(2)
    assert fake_node.peer_msgs == [("n2", [(0, b"m1"), (7, b"m2")]), ("n2", [(3, b"m3")])]


async def test_peer_with_changed_incarnation_is_refused(fake_node: FakeNode) -> None:
    fake_node.book.set("n2", "old-incarnation")
    conn, reply = await peer(fake_node, "n2", "wiped-and-restarted")
    assert reply["error"] == "CLUSTER_MISMATCH" and "incarnation" in reply["message"]
    assert await conn.closed()
    assert fake_node.book.get("n2") == "old-incarnation"
    _, ok = await peer(fake_node, "n2", "old-incarnation")
    assert ok["type"] == "hello_ok"


async def test_peer_hello_refusals(fake_node: FakeNode) -> None:
    cases = [
        ({"ident": "n2", "incarnation": "i", "cluster": "other"}, "CLUSTER_MISMATCH"),
        ({"ident": "n9", "incarnation": "i"}, "CLUSTER_MISMATCH"),  # not a member
        ({"ident": "n1", "incarnation": "i"}, "CLUSTER_MISMATCH"),  # itself
        ({"ident": "n3", "incarnation": None}, "INVALID_REQUEST"),
    ]
    for kw, code in cases:
        conn, reply = await peer(fake_node, kw.pop("ident"), kw.pop("incarnation"), **kw)
        assert reply["error"] == code, (kw, reply)
        assert await conn.closed()
    assert fake_node.peer_msgs == []
    assert fake_node.metrics.hello_rejected.value(code="CLUSTER_MISMATCH") == 3


async def test_a_peer_that_reads_less_than_the_cluster_writes_is_refused(
    cfg: ClusterConfig, nursery: trio.Nursery
) -> None:
    formats = LogFormats(own=2, cluster=lambda: 2)
    node = await start_fake_node(nursery, cfg, log_formats=formats)
    for said, code in ((None, "UNSUPPORTED_VERSION"), (1, "UNSUPPORTED_VERSION"),
                       ("2", "INVALID_REQUEST"), (0, "INVALID_REQUEST")):  # fmt: skip
        # None: a node older than log formats says nothing, so it reads format 1.
        conn, reply = await peer(node, "n2", "i", log_format=said)
        assert reply["error"] == code, (said, reply)
        assert await conn.closed()
        assert formats.of_peer("n2") is None
    assert "reads only up to 1" in reply_message(await peer(node, "n2", "i", log_format=1))
    conn, ok = await peer(node, "n2", "i", log_format=2)
    assert ok["type"] == "hello_ok"
    await conn.send({"type": "raft", "msgs": [[0, b"m"]]})
    await node.wait_peer_msgs(1)
    assert formats.of_peer("n2") == 2  # what the controller counts (server/log_format.py)
    await conn.aclose()
    with trio.fail_after(5):
        while True:
            if formats.of_peer("n2") is None:  # the link is gone: not known to read it
                break
            await trio.sleep(0.01)


async def test_a_peer_hello_says_its_peer_address_which_is_kept_while_the_link_lives(
    cfg: ClusterConfig, nursery: trio.Nursery
) -> None:
    formats = LogFormats(own=6, cluster=lambda: 6)
    node = await start_fake_node(nursery, cfg, log_formats=formats)
    for said in (7, "", "no-port", "127.0.0.1:x", ["127.0.0.1:1"]):
        conn, reply = await peer(node, "n2", "i", log_format=6, peer_address=said)
        assert reply["error"] == "INVALID_REQUEST", (said, reply)
        assert "peer_address" in reply["message"]
        assert await conn.closed()
    links = []
    for said in ("127.0.0.1:7302", None):  # None: it has no peer address
        conn, ok = await peer(node, "n2", "i", log_format=6, peer_address=said)
        assert ok["type"] == "hello_ok"
        await conn.send({"type": "raft", "msgs": [[0, b"m"]]})
        await node.wait_peer_msgs(len(links) + 1)  # the link is past its hello
        assert formats.peer_address_of("n2") == said
        links.append(conn)
    # A node too old to say: not taken for "none".
    old, ok = await peer(node, "n3", "i", log_format=6)
    await old.send({"type": "raft", "msgs": [[0, b"m"]]})
    await node.wait_peer_msgs(3)
    assert formats.peer_address_of("n3") is NOT_SAID
    await links[-1].aclose()
    await wait_until(lambda: formats.peer_address_of("n2") is NOT_SAID, "n2's link gone")


def reply_message(conn_reply: tuple[RawConn, dict]) -> str:
    return str(conn_reply[1].get("message"))


async def test_peer_token_required_when_configured(tmp_path: Any, nursery: trio.Nursery) -> None:
    from raftlog.server.config import AuthConfig

    cfg = make_config(tmp_path, 2, auth=AuthConfig(peer_token="s3cret"))
    node = await start_fake_node(nursery, cfg)
    _, reply = await peer(node, "n2", "i", credential="wrong")
    assert reply["error"] == "UNAUTHORIZED"
    _, ok = await peer(node, "n2", "i", credential="s3cret")
    assert ok["type"] == "hello_ok"


async def test_malformed_peer_frame_closes_that_connection(fake_node: FakeNode) -> None:
    conn, _ = await peer(fake_node, "n2", "i")
    await conn.send({"type": "raft", "msgs": [["not-an-int", b"x"]]})
    assert await conn.closed()
    conn2, _ = await peer(fake_node, "n2", "i")
    await conn2.send({"type": "raft", "msgs": [[1, b"ok"]]})
    await fake_node.wait_peer_msgs(1)
    assert fake_node.peer_msgs == [("n2", [(1, b"ok")])]


async def test_incarnations_persist_in_the_node_store(tmp_path: Any) -> None:
    from raftlog.log.store import NodeStore
    from raftlog.server.listener import serve

    cfg = make_config(tmp_path, 2)
    path = tmp_path / "n1"
    with NodeStore.open(path, cluster=cfg.name, node_id="n1") as store:
        async with trio.open_nursery() as inner:
            node = FakeNode(cfg)
            await inner.start(
                lambda task_status: serve(
                    cfg, "n1", store_incarnations=store, on_request=node.on_request,
                    on_peer_msgs=node.on_peer, metrics=node.metrics, task_status=task_status,
                )
            )  # fmt: skip
            node.port = cfg.node("n1").port
            _, reply = await peer(node, "n2", "first-life")
            assert reply["type"] == "hello_ok"
            inner.cancel_scope.cancel()
    # After a restart of n1, n2's recorded incarnation still stands: a wiped n2 is refused.
    with NodeStore.open(path, cluster=cfg.name, node_id="n1") as store:
        assert store.peer_incarnation("n2") == "first-life"
        node = FakeNode(cfg)
        async with trio.open_nursery() as inner:
            await inner.start(
                lambda task_status: serve(
                    cfg, "n1", store_incarnations=store, on_request=node.on_request,
                    on_peer_msgs=node.on_peer, metrics=node.metrics, task_status=task_status,
                )
            )  # fmt: skip
            node.port = cfg.node("n1").port
            _, reply = await peer(node, "n2", "second-life")
            assert reply["error"] == "CLUSTER_MISMATCH"
            inner.cancel_scope.cancel()


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 2**32), st.binary(max_size=40)), max_size=4),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(1, 64), min_size=1, max_size=20),
)
def test_peer_frames_survive_any_chunking(
    batches: list[list[tuple[int, bytes]]], cuts: list[int]
) -> None:
    """However TCP splits the byte stream, the driver sees exactly the frames sent."""

    async def main() -> None:
        cfg = make_config(Path("/nonexistent"), 2)
        node = FakeNode(cfg)
        listener = memory_listener(cfg, node)
        client_end, server_end = trio.testing.memory_stream_pair()
        data = encode_frame(hello("peer", "n2", cluster=cfg.name, incarnation="i"))
        data += b"".join(encode_frame({"type": "raft", "msgs": b}) for b in batches)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.handle_stream, server_end)
            pos, i = 0, 0
            while pos < len(data):
                step = cuts[i % len(cuts)]
                await client_end.send_all(data[pos : pos + step])
                await trio.testing.wait_all_tasks_blocked()
                pos, i = pos + step, i + 1
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert node.peer_msgs == [("n2", b) for b in batches if b]

    trio.run(main)


async def test_a_reload_right_after_a_hello_is_checked_still_reaches_that_connection(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A reload that lands between a hello's check and the start of its
    connection (the hello_ok on its way: a checkpoint) revokes that connection
    too. The connection once took the credentials' generation when it started,
    after the reload, and so never checked its revoked token again."""
    from raftlog.server.config import AuthConfig

    tokens = tuple(f"tok-{i}" for i in range(8))
    cfg = make_config(tmp_path, 1, auth=AuthConfig(client_tokens=("kept", *tokens)))
    node = await start_fake_node(nursery, cfg)
    for i, token in enumerate(tokens):
        conn = await RawConn.open(node.port)
        assert (await conn.hello("client", f"c{i}", credential=token))["type"] == "hello_ok"
        # No checkpoint since the hello_ok arrived: the node's task for this
        # connection may not have gone on from sending it yet.
        cfg.auth.replace_clients(("kept", *tokens[i + 1 :]), ())  # what a reload does
        reply = await conn.request(1, "metadata")
        assert reply.get("error") == "UNAUTHORIZED", (token, reply)
        assert "revoked or rotated" in reply["message"]
        await conn.aclose()
