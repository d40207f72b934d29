"""Produces during a flood of connections that never say hello, on a running cluster.

    raftlog cluster up &
    python -m tests.bench.connection_flood [--target 127.0.0.1:7101] [--seconds 10]

One client produces sequentially to a 3-partition topic for ``--seconds``
(``--rounds`` times) with no flood, then the same with a flood against
``--target``: a separate process opens TCP connections to that node as fast
as it can and sends nothing on them, keeping each until the node closes it
(at most ``--max-open`` at once on its side). The node holds at most
``[limits] max_pending_connections`` of them and closes the oldest for each
newcomer (server/pending_connections.py), so the flood costs it a socket
accept and a task per connection, not a descriptor forever, and peers and
clients still get in. With ``[limits] max_connection_rate_per_address`` in
``--config``, connections beyond that rate are closed at their accept instead
(server/address_limits.py); on 127.0.0.1 the bench's own new clients share
the flood's address, and so its rate. With ``[limits] max_connection_rate``
the node stops accepting beyond it (server/accept_loop.py): the flood's
connects then wait in the kernel's queue, or for their SYN to be resent, so
``--dialers`` keeps several in flight.

Reports produces per second, p50 and p99 with and without the flood, the
flood's connections, how long new clients dialling the flooded node took to
be answered, and what the target's /metrics say about the flood (read from
its ``metrics_address`` in ``--config``). When the target has a
``peer_address``, another node's hello (a snapshot transfer's, which opens a
new connection as a redialling peer does) is timed on both of its addresses
during the flood.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import time
import urllib.request
from collections.abc import Awaitable
from typing import Any

import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import RaftlogError, TopicExistsError
from raftlog.client.protocol import FrameDecoder, encode_frame, hello
from raftlog.server.config import load_config

TOPIC = "connection-flood"


def _flood(host: str, port: int, seconds: float, max_open: int, dialers: int, out: Any) -> None:
    async def main() -> None:
        opened = closed_by_node = refused = 0
        slots = trio.Semaphore(max_open)

        async def hold(stream: trio.SocketStream) -> None:
            nonlocal closed_by_node
            try:
                with contextlib.suppress(trio.BrokenResourceError):
                    while await stream.receive_some(4096):
                        pass
                closed_by_node += 1
            finally:
                await stream.aclose()
                slots.release()

        async def dial(nursery: trio.Nursery) -> None:
            nonlocal opened, refused
            while True:
                await slots.acquire()
                try:
                    stream = await trio.open_tcp_stream(host, port)
                except OSError:
                    refused += 1
                    slots.release()
                    await trio.sleep(0.001)  # the node's backlog is full: back off a little
                    continue
                opened += 1
                nursery.start_soon(hold, stream)

        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                for _ in range(dialers):
                    nursery.start_soon(dial, nursery)
        out.put({"opened": opened, "closed_by_node": closed_by_node, "refused": refused})

    trio.run(main)


def _metric(url: str | None, name: str) -> float | None:
    if url is None:
        return None
    found = None  # the sum over the metric's labels
    with urllib.request.urlopen(url, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                found = (found or 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


async def _produce_for(client: AsyncClient, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        try:
            await client.produce(TOPIC, b"x" * 100, partition=i % 3)
            latencies.append(time.perf_counter() - t0)
        except RaftlogError:
            errors += 1
        i += 1
    return latencies, errors


async def _fresh_connections(address: str, seconds: float) -> list[float | None]:
    """Every 0.2 s a new client dials ``address`` and lists the topics: how long
    each took to be answered (None: it failed)."""
    took: list[float | None] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        try:
            async with AsyncClient([address], request_timeout=5.0) as fresh:
                await fresh.list_topics()
            took.append(time.perf_counter() - t0)
        except Exception:  # any failure to get in counts as one (an exception group too)
            took.append(None)
        await trio.sleep(0.2)
    return took


async def _peer_hello(address: str, cluster: str, ident: str) -> float | None:
    """Seconds until ``address`` answered ``ident``'s hello (None: not within 10 s)."""
    host, _, port = address.rpartition(":")
    t0 = time.perf_counter()
    with trio.move_on_after(10.0):
        try:
            stream = await trio.open_tcp_stream(host, int(port))
        except OSError:
            return None
        async with stream:
            await stream.send_all(encode_frame(hello("client", ident, cluster=cluster)))
            decoder = FrameDecoder(1 << 20)
            while data := await stream.receive_some(65536):
                if decoder.feed(data):
                    return time.perf_counter() - t0
    return None


async def _peer_hellos(
    addresses: dict[str, str], cluster: str, ident: str, seconds: float
) -> dict[str, list[float | None]]:
    """Every 0.2 s, ``ident``'s hello on each of ``addresses`` (name -> address)."""
    took: dict[str, list[float | None]] = {name: [] for name in addresses}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for name, address in addresses.items():
            took[name].append(await _peer_hello(address, cluster, ident))
        await trio.sleep(0.2)
    return took


def _answered(what: str, took: list[float | None]) -> str:
    answered = sorted(t * 1e3 for t in took if t is not None)
    slowest = f", slowest {answered[-1]:.1f} ms" if answered else ""
    return f"{what}: {len(answered)}/{len(took)} answered{slowest}"


async def _into(outcome: dict[str, Any], key: str, work: Awaitable[Any]) -> None:
    outcome[key] = await work


def _summary(what: str, latencies: list[float], errors: int, seconds: float) -> str:
    ordered = sorted(latencies) or [0.0]
    p50 = ordered[len(ordered) // 2] * 1e3
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3
    return (
        f"{what:>8}: {len(latencies) / seconds:,.0f} produces/s, p50 {p50:.2f} ms, "
        f"p99 {p99:.2f} ms, errors {errors}"
    )


async def main(args: argparse.Namespace) -> None:
    cfg = load_config(args.config)
    target = next(n for n in cfg.nodes if n.address == args.target)
    url = f"http://{target.metrics_address}/metrics" if target.metrics_address else None
    bootstrap = [n.address for n in cfg.nodes]
    async with AsyncClient(bootstrap) as client:
        with contextlib.suppress(TopicExistsError):
            await client.create_topic(TOPIC, partitions=3, replicas=3)
        await _produce_for(client, 1.0)  # warm up connections and leaders
        for round_no in range(args.rounds):
            quiet = await _produce_for(client, args.seconds)
            print(_summary("no flood", *quiet, args.seconds), flush=True)
            evicted_before = _metric(url, "raftlog_pending_connections_evicted_total")
            limited_before = _metric(url, "raftlog_connections_rate_limited_total")
            throttled_before = _metric(url, "raftlog_accept_throttled_seconds_total")
            results: Any = mp.get_context("spawn").Queue()
            flooder = mp.get_context("spawn").Process(
                target=_flood,
                args=(target.host, target.port, args.seconds, args.max_open, args.dialers, results),
            )
            flooder.start()
            try:
                outcome: dict[str, Any] = {}
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        _into, outcome, "fresh", _fresh_connections(args.target, args.seconds)
                    )
                    if target.peer_address:
                        other = next(n.id for n in cfg.nodes if n is not target)
                        both = {"address": target.address, "peer_address": target.peer_address}
                        hellos = _peer_hellos(both, cfg.name, f"replica:{other}", args.seconds)
                        nursery.start_soon(_into, outcome, "peer", hellos)
                    flooded = await _produce_for(client, args.seconds)
                fresh: list[float | None] = outcome["fresh"]
                pending_now = _metric(url, "raftlog_pending_connections")
                peers = _metric(url, 'raftlog_connections{role="peer"}')
                counts = await trio.to_thread.run_sync(results.get, True, args.seconds + 30)
            finally:
                flooder.join(30)
                if flooder.is_alive():
                    flooder.kill()
            print(_summary("flood", *flooded, args.seconds))
            print("   " + _answered(f"new clients dialling {args.target}", fresh), flush=True)
            for name, took in outcome.get("peer", {}).items():
                print("   " + _answered(f"another node's new connection to the {name}", took))
            evicted = _delta(
                evicted_before, _metric(url, "raftlog_pending_connections_evicted_total")
            )
            rate_limited = _delta(
                limited_before, _metric(url, "raftlog_connections_rate_limited_total")
            )
            throttled = _delta(
                throttled_before, _metric(url, "raftlog_accept_throttled_seconds_total")
            )
            print(
                f"   round {round_no + 1}: flood opened {counts['opened']:,} connections to "
                f"{args.target} ({counts['opened'] / args.seconds:,.0f}/s), "
                f"{counts['closed_by_node']:,} closed by the node, {counts['refused']} refused; "
                f"node: evicted {evicted}, rate-limited {rate_limited}, "
                f"accept paused {throttled if throttled is None else round(throttled, 1)} s, "
                f"pending near the end {pending_now}, "
                f"peer links {peers}",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cluster.toml")
    parser.add_argument("--target", default="127.0.0.1:7101", help="the node to flood")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-open", type=int, default=4000, help="the flood's own cap")
    parser.add_argument(
        "--dialers", type=int, default=1, help="the flood's connects in flight at once"
    )
    trio.run(main, parser.parse_args())
