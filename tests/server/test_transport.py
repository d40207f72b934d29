"""PeerTransport against real listeners with a fake driver (no Raft involved)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import trio
import trio.lowlevel
import trio.testing
from raftlog.client.protocol import FrameDecoder, encode_frame, hello_ok
from raftlog.server.config import ClusterConfig
from raftlog.server.metrics import Metrics
from raftlog.server.transport import PeerTransport, TransportOptions

from .cluster_harness import free_ports, make_config
from .conftest import FakeNode, start_fake_node
from .rawclient import wait_until

FAST = TransportOptions(backoff_initial_s=0.01, backoff_max_s=0.1)


async def start_transport(
    nursery: trio.Nursery, cfg: ClusterConfig, node_id: str = "n1", **kw
) -> PeerTransport:
    kw.setdefault("options", FAST)
    transport = PeerTransport(cfg, node_id, f"inc-{node_id}", rng=random.Random(7), **kw)
    await nursery.start(transport.run)
    return transport


async def wait_connected(transport: PeerTransport, peer: str, want: bool = True) -> None:
    await wait_until(lambda: transport.is_connected(peer) == want, f"connected={want}")


async def test_messages_arrive_in_order_with_sender_id(
    cfg: ClusterConfig, nursery: trio.Nursery
) -> None:
    receiver = await start_fake_node(nursery, cfg, "n2")
    transport = await start_transport(nursery, cfg)
    await wait_connected(transport, "n2")
    assert receiver.book.get("n1") == "inc-n1"  # the hello carried our incarnation
    for i in range(50):
        transport.send("n2", [(i % 3, f"m{i}".encode())])
        if i % 10 == 0:
            await trio.lowlevel.checkpoint()
    await receiver.wait_peer_msgs_total(50)
    got = [m for frm, msgs in receiver.peer_msgs for m in msgs]
    assert {frm for frm, _ in receiver.peer_msgs} == {"n1"}
    assert got == [(i % 3, f"m{i}".encode()) for i in range(50)]


async def test_one_turn_of_sends_is_one_frame(cfg: ClusterConfig, nursery: trio.Nursery) -> None:
    receiver = await start_fake_node(nursery, cfg, "n2")
    transport = await start_transport(nursery, cfg)
    await wait_connected(transport, "n2")
    for group in range(5):  # one driver turn: no checkpoint between the sends
        transport.send("n2", [(group, b"x")])
    await receiver.wait_peer_msgs_total(5)
    assert receiver.peer_msgs == [("n1", [(g, b"x") for g in range(5)])]


async def test_flush_writes_at_once_without_the_writer_task(
    cfg: ClusterConfig, nursery: trio.Nursery
) -> None:
    """A leader's appends must leave before its fsync, i.e. inside the driver's turn."""
    receiver = await start_fake_node(nursery, cfg, "n2")
    transport = await start_transport(nursery, cfg)
    await wait_connected(transport, "n2")
    transport.send("n2", [(1, b"a"), (2, b"b")])
    assert transport.queued("n2") == 1  # send only queues
    transport.flush()
    assert transport.queued("n2") == 0  # written to the socket with no checkpoint between
    await receiver.wait_peer_msgs_total(2)
    assert receiver.peer_msgs == [("n1", [(1, b"a"), (2, b"b")])]


async def test_a_send_that_flush_will_write_does_not_wake_the_writer_task(
    cfg: ClusterConfig, nursery: trio.Nursery
) -> None:
    """The driver promises a flush in the same turn (flush_follows): a writer task woken
    for frames already written would cost two extra loop passes on every Raft round."""
    receiver = await start_fake_node(nursery, cfg, "n2")
    transport = await start_transport(nursery, cfg)
    await wait_connected(transport, "n2")
    await trio.testing.wait_all_tasks_blocked()  # n2's writer parked on its wake event
    n2 = transport._peers["n2"]
    assert not n2.wake.is_set()
    transport.send("n2", [(1, b"a")], flush_follows=True)
    transport.flush()
    assert transport.queued("n2") == 0 and not n2.wake.is_set()
    await receiver.wait_peer_msgs_total(1)
    # Without the promise the writer task is what sends it.
    transport.send("n2", [(2, b"b")])
    assert n2.wake.is_set()
    await receiver.wait_peer_msgs_total(2)
    # A link flush cannot write (n3 is down: no descriptor) still wakes its writer.
    n3 = transport._peers["n3"]
    transport.send("n3", [(3, b"c")], flush_follows=True)
    transport.flush()
    assert n3.wake.is_set() and transport.queued("n3") == 1


async def test_flushes_into_a_full_socket_keep_frames_whole_and_in_order(
    cfg: ClusterConfig, nursery: trio.Nursery
) -> None:
    """A direct write the kernel takes only part of leaves its tail to the writer task;
    frames flushed meanwhile queue behind it, so the peer decodes every frame in order."""
    n2 = cfg.node("n2")
    resume = trio.Event()
    got: list[bytes] = []
    done = trio.Event()
    total = 300

    async def slow_peer(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)  # the hello
        await stream.send_all(encode_frame(hello_ok("n2", cfg.name)))
        await resume.wait()  # let the socket buffers fill first
        decoder = FrameDecoder(cfg.limits.max_frame_bytes)
        while len(got) < total:
            data = await stream.receive_some(1 << 20)
            assert data, "the transport closed the connection"
            for frame in decoder.feed(data):
                got.extend(payload for _gid, payload in frame["msgs"])
        done.set()

    listeners = await trio.open_tcp_listeners(n2.port, host=n2.host)
    nursery.start_soon(trio.serve_listeners, slow_peer, listeners)
    transport = await start_transport(nursery, cfg)
    await wait_connected(transport, "n2")
    sent = [i.to_bytes(4, "big") * (16 * 1024) for i in range(total)]  # 64 KiB each
    for payload in sent:
        transport.send("n2", [(0, payload)])
        transport.flush()
    assert transport.dropped("n2") == 0
    resume.set()
    with trio.fail_after(10):
        await done.wait()
    assert got == sent


async def test_large_turn_is_split_under_the_frame_limit(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    from raftlog.server.config import Limits

    cfg = make_config(tmp_path, 2, limits=Limits(max_frame_bytes=4096, max_batch_bytes=1024))
    receiver = await start_fake_node(nursery, cfg, "n2")
    transport = await start_transport(nursery, cfg)
    await wait_connected(transport, "n2")
    transport.send("n2", [(g, bytes(500)) for g in range(20)])
    await receiver.wait_peer_msgs_total(20)
    assert len(receiver.peer_msgs) > 1  # several frames, each accepted by the receiver
    assert receiver.metrics.frame_errors.value(reason="too_large") == 0


async def test_reconnects_after_peer_restart(cfg: ClusterConfig, nursery: trio.Nursery) -> None:
    transport = await start_transport(nursery, cfg)
    first: FakeNode | None = None
    async with trio.open_nursery() as peer_nursery:
        first = await start_fake_node(peer_nursery, cfg, "n2")
        await wait_connected(transport, "n2")
        transport.send("n2", [(1, b"before")])
        await first.wait_peer_msgs_total(1)
        peer_nursery.cancel_scope.cancel()  # the peer process "dies"
    await wait_connected(transport, "n2", want=False)
    # Same book: the restarted peer still has its data dir, so it knows us.
    second = await start_fake_node(nursery, cfg, "n2", book=first.book)
    await wait_connected(transport, "n2")
    transport.send("n2", [(1, b"after")])
    await second.wait_peer_msgs_total(1)
    assert second.peer_msgs[-1] == ("n1", [(1, b"after")])
    assert transport.metrics.peer_reconnects.value(peer="n2", result="ok") == 2


async def test_a_peer_that_dials_us_is_redialled_at_once(
    cfg: ClusterConfig, nursery: trio.Nursery
) -> None:
    """A restarted node dials its peers as it starts; each peer's own link to it
    may be deep in its backoff (here a minute, so only ``redial`` can connect it
    within the test), and Raft needs that direction too."""
    slow = TransportOptions(backoff_initial_s=60.0, backoff_max_s=60.0)
    n1 = await start_transport(nursery, cfg, "n1", options=slow)  # n2 is down: backs off
    await wait_until(
        lambda: n1.metrics.peer_reconnects.value(peer="n2", result="unreachable") >= 1,
        "n1's first dial of n2 to fail",
    )
    # n2 "restarts": its listener reports each admitted peer hello, and the node
    # wiring (server/node.py) hands that to its transport's redial.
    connected_to_n2: list[str] = []
    n2 = await start_fake_node(nursery, cfg, "n2", on_peer_connected=connected_to_n2.append)
    n1.redial("n2")
    await wait_connected(n1, "n2")
    n1.send("n2", [(1, b"hello again")])
    await n2.wait_peer_msgs_total(1)
    assert connected_to_n2 == ["n1"]
    dials = n1.metrics.peer_reconnects.value(peer="n2", result="ok")
    n1.redial("n2")  # already connected: nothing to do
    await trio.testing.wait_all_tasks_blocked()
    assert n1.metrics.peer_reconnects.value(peer="n2", result="ok") == dials == 1


async def test_dead_peer_queue_is_bounded_and_others_unaffected(
    cfg: ClusterConfig, nursery: trio.Nursery
) -> None:
    receiver = await start_fake_node(nursery, cfg, "n3")  # n2 never starts
    opts = dataclasses.replace(FAST, max_queued_frames=100)
    transport = await start_transport(nursery, cfg, options=opts)
    await wait_connected(transport, "n3")
    for i in range(10_000):
        transport.send("n2", [(0, b"heartbeat %d" % i)])
    transport.send("n3", [(0, b"for n3")])
    assert transport.queued("n2") == 100
    assert transport.dropped("n2") == 9_900
    assert transport.metrics.peer_queue_drops.value(peer="n2") == 9_900
    await receiver.wait_peer_msgs_total(1)
    assert receiver.peer_msgs == [("n1", [(0, b"for n3")])]
    assert not transport.is_connected("n2")


async def test_queue_bounded_by_bytes(cfg: ClusterConfig, nursery: trio.Nursery) -> None:
    opts = dataclasses.replace(FAST, max_queued_bytes=10_000)
    transport = await start_transport(nursery, cfg, options=opts)
    for _ in range(100):
        transport.send("n2", [(0, bytes(1000))])
    assert transport.queued("n2") < 10  # roughly 10 KB worth, never 100 KB
    assert transport.dropped("n2") == 100 - transport.queued("n2")


async def test_refused_hello_never_connects(cfg: ClusterConfig, nursery: trio.Nursery) -> None:
    receiver = await start_fake_node(nursery, cfg, "n2")
    receiver.book.set("n1", "an-older-incarnation")  # we were wiped, as far as n2 knows
    transport = await start_transport(nursery, cfg)
    await wait_until(
        lambda: transport.metrics.peer_reconnects.value(peer="n2", result="refused") >= 2,
        "two refused dials",
    )
    assert not transport.is_connected("n2")
    transport.send("n2", [(0, b"x")])
    assert receiver.peer_msgs == []
    assert receiver.metrics.hello_rejected.value(code="CLUSTER_MISMATCH") >= 2


async def test_dial_override_routes_the_link(tmp_path: Path, nursery: trio.Nursery) -> None:
    listen_cfg = make_config(tmp_path, 2)
    receiver = await start_fake_node(nursery, listen_cfg, "n2")
    # n1's own view: n2's advertised address is dead, but its dial table says
    # where to connect (jepsen puts a proxy there).
    (dead,) = free_ports(1)
    n2 = dataclasses.replace(listen_cfg.node("n2"), address=f"127.0.0.1:{dead}", port=dead)
    n1 = dataclasses.replace(listen_cfg.node("n1"), dial={"n2": listen_cfg.node("n2").address})
    dial_cfg = dataclasses.replace(listen_cfg, nodes=[n1, n2])
    transport = await start_transport(nursery, dial_cfg, metrics=Metrics())
    await wait_connected(transport, "n2")
    transport.send("n2", [(4, b"via dial")])
    await receiver.wait_peer_msgs_total(1)
    assert receiver.peer_msgs == [("n1", [(4, b"via dial")])]


async def test_send_to_unknown_peer_is_ignored(cfg: ClusterConfig) -> None:
    transport = PeerTransport(cfg, "n1", "inc")
    transport.send("n9", [(0, b"x")])  # never raises
    transport.send("n2", [])
    assert transport.queued("n2") == 0
    assert transport.peers() == ["n2", "n3"]


async def test_stuck_peer_that_stops_reading_stays_bounded(
    cfg: ClusterConfig, nursery: trio.Nursery
) -> None:
    """Worse than a dead peer: a connected one (SIGSTOPped, say) whose socket fills up."""
    n2 = cfg.node("n2")
    stuck_conns: list[trio.SocketStream] = []

    async def stuck_peer(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)  # the hello
        await stream.send_all(encode_frame(hello_ok("n2", cfg.name)))
        stuck_conns.append(stream)
        await trio.sleep_forever()  # never reads again

    listeners = await trio.open_tcp_listeners(n2.port, host=n2.host)
    nursery.start_soon(trio.serve_listeners, stuck_peer, listeners)
    receiver = await start_fake_node(nursery, cfg, "n3")
    opts = dataclasses.replace(FAST, max_queued_frames=50)
    transport = await start_transport(nursery, cfg, options=opts)
    await wait_connected(transport, "n2")
    await wait_connected(transport, "n3")
    for i in range(2_000):  # ~128 MB offered; far beyond any socket buffer
        transport.send("n2", [(0, bytes(64 * 1024))])
        transport.send("n3", [(0, b"%d" % i)])
        await trio.lowlevel.checkpoint()
    await receiver.wait_peer_msgs_total(2_000)  # n3 got everything despite n2
    assert transport.queued("n2") <= 50
    assert transport.dropped("n2") > 1_000
    assert transport.is_connected("n2")  # stuck, not disconnected: Raft copes with the loss


async def test_add_and_remove_peer_at_runtime(tmp_path: Path, nursery: trio.Nursery) -> None:
    cfg = make_config(tmp_path, 3)
    two_node_view = dataclasses.replace(cfg, nodes=cfg.nodes[:2])  # n1 does not know n3 yet
    receiver = await start_fake_node(nursery, cfg, "n3")
    transport = await start_transport(nursery, two_node_view)
    assert transport.peers() == ["n2"]
    transport.send("n3", [(0, b"too early")])  # unknown peer: ignored
    transport.add_peer("n3", cfg.node("n3").address)
    await wait_connected(transport, "n3")
    transport.send("n3", [(0, b"welcome")])
    await receiver.wait_peer_msgs_total(1)
    assert receiver.peer_msgs == [("n1", [(0, b"welcome")])]
    transport.remove_peer("n3")
    assert "n3" not in transport.peers() and not transport.is_connected("n3")
    transport.send("n3", [(0, b"gone")])  # ignored, never raises
    await wait_until(
        lambda: receiver.metrics.connections.value(role="peer") == 0, "n3 sees the stream close"
    )
