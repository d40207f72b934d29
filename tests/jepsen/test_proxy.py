"""Link proxies against plain echo servers on 127.0.0.1."""

from __future__ import annotations

import random
from functools import partial

import pytest
import trio
from raftlog.jepsen.partitions import bridge, cut_links, halves, isolate, majorities_ring
from raftlog.jepsen.proxy import LinkMode, LinkProxy, ProxyMesh

DEADLINE = 5.0


async def echo_handler(stream: trio.SocketStream) -> None:
    try:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def start_echo(nursery: trio.Nursery) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, echo_handler, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def start_proxy(nursery: trio.Nursery, port: int) -> LinkProxy:
    proxy = LinkProxy("a", "b", ("127.0.0.1", port))
    await nursery.start(proxy.serve)
    return proxy


async def roundtrip(stream: trio.SocketStream, payload: bytes) -> bytes:
    await stream.send_all(payload)
    got = b""
    while len(got) < len(payload):
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        got += chunk
    return got


async def test_pass_mode_forwards_both_ways() -> None:
    async with trio.open_nursery() as nursery:
        proxy = await start_proxy(nursery, await start_echo(nursery))
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            assert await roundtrip(stream, b"hello" * 1000) == b"hello" * 1000
            await stream.aclose()
        assert proxy.bytes_forwarded >= 2 * 5000
        nursery.cancel_scope.cancel()


async def test_cut_resets_open_connections_and_refuses_new_ones() -> None:
    async with trio.open_nursery() as nursery:
        proxy = await start_proxy(nursery, await start_echo(nursery))
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            assert await roundtrip(stream, b"x") == b"x"
            proxy.cut()
            # The open connection is reset: reading ends (EOF or reset error).
            with pytest.raises((trio.BrokenResourceError, EOFError)):
                for _ in range(100):
                    await stream.send_all(b"y")
                    if not await stream.receive_some(10):
                        raise EOFError
            # New connections are accepted by the kernel but reset at once.
            fresh = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            with pytest.raises((trio.BrokenResourceError, EOFError)):
                await fresh.send_all(b"z")
                if not await fresh.receive_some(10):
                    raise EOFError
            assert proxy.open_connections == 0
            proxy.heal()
            healed = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            assert await roundtrip(healed, b"back") == b"back"
        nursery.cancel_scope.cancel()


async def test_hold_delivers_nothing_until_healed_then_everything_in_order() -> None:
    async with trio.open_nursery() as nursery:
        proxy = await start_proxy(nursery, await start_echo(nursery))
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            assert await roundtrip(stream, b"0") == b"0"
            proxy.hold()
            for i in range(1, 6):
                await stream.send_all(str(i).encode())
            with trio.move_on_after(0.3) as waited:
                await stream.receive_some(10)
            assert waited.cancelled_caught, "a held link delivered data"
            proxy.heal()
            got = b""
            while len(got) < 5:
                got += await stream.receive_some(10)
            assert got == b"12345"
        nursery.cancel_scope.cancel()


async def test_delay_adds_latency_to_each_chunk() -> None:
    async with trio.open_nursery() as nursery:
        proxy = await start_proxy(nursery, await start_echo(nursery))
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            proxy.set_delay(150)
            t0 = trio.current_time()
            assert await roundtrip(stream, b"slow") == b"slow"
            # Both directions pass the proxy: at least two delays.
            assert trio.current_time() - t0 >= 0.3
            assert proxy.mode is LinkMode.PASS
        nursery.cancel_scope.cancel()


async def test_mesh_applies_a_grudge_to_exactly_the_named_links() -> None:
    async with trio.open_nursery() as nursery:
        ports = {n: await start_echo(nursery) for n in ("n1", "n2", "n3")}
        mesh = ProxyMesh({n: f"127.0.0.1:{p}" for n, p in ports.items()})
        await mesh.listen()
        await nursery.start(mesh.serve)
        assert set(mesh.dial_table("n1")) == {"n2", "n3"}
        cut = mesh.apply(isolate(mesh.nodes, "n3"))
        assert cut == {("n1", "n3"), ("n2", "n3"), ("n3", "n1"), ("n3", "n2")}
        with trio.fail_after(DEADLINE):
            ok_link = mesh.dial_table("n1")["n2"]
            host, port = ok_link.rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            assert await roundtrip(stream, b"ping") == b"ping"
        assert mesh.links[("n1", "n3")].mode is LinkMode.CUT
        mesh.apply(isolate(mesh.nodes, "n1"), LinkMode.HOLD)
        assert mesh.links[("n1", "n3")].mode is LinkMode.HOLD
        assert mesh.links[("n3", "n2")].mode is LinkMode.PASS  # healed: not in this grudge
        mesh.heal()
        assert set(mesh.status().values()) == {"pass"}
        nursery.cancel_scope.cancel()


NODES = ["n1", "n2", "n3", "n4", "n5"]


def reachable(grudge, a: str, b: str) -> bool:
    return a not in grudge[b] and b not in grudge[a]


def test_halves_cut_a_minority_from_a_majority() -> None:
    g = halves(NODES, random.Random(1))
    sizes = sorted(len(NODES) - len(v) for v in g.values())
    assert sizes == [2, 2, 3, 3, 3]


def test_bridge_node_sees_everyone_and_the_halves_do_not_see_each_other() -> None:
    g = bridge(NODES, random.Random(2))
    (b,) = [n for n, v in g.items() if not v]
    others = [n for n in NODES if n != b]
    assert all(reachable(g, b, n) for n in others)
    assert sum(1 for x in others for y in others if x < y and not reachable(g, x, y)) == 4


def test_majorities_ring_gives_each_node_a_different_majority() -> None:
    g = majorities_ring(NODES, random.Random(3))
    views = {n: frozenset(NODES) - g[n] for n in NODES}
    assert all(len(v) == 3 and n in v for n, v in views.items())
    assert len(set(views.values())) == 5


def test_cut_links_are_directed() -> None:
    g = {"a": frozenset({"b"}), "b": frozenset()}
    assert cut_links(g) == {("b", "a")}
