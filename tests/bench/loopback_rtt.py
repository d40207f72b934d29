"""The machine's floor for one request: a trio echo round trip over 127.0.0.1.

    python -m tests.bench.loopback_rtt [--count 5000]

Run it next to any latency figure: this VM's loopback round trip has been seen
to vary from ~95 to ~170 µs between hours, and every raftlog request pays
several of them (client -> leader -> follower -> leader -> client). The echo
server runs in a child process, as a node would.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from typing import Any

import trio

PAYLOAD = b"x" * 200  # about a produce request of one 100-byte record


def serve_on_free_port(handler: Any, port: Any, ready: Any) -> None:
    """Run ``handler`` for every connection to a free port of 127.0.0.1, forever
    (a child process's body): the port goes into ``port.value``, then ``ready`` is set."""

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port.value = listeners[0].socket.getsockname()[1]
        ready.set()
        await trio.serve_listeners(handler, listeners)

    trio.run(main)


async def _echo(stream: trio.SocketStream) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data)


def _serve(port: Any, ready: Any) -> None:
    serve_on_free_port(_echo, port, ready)


async def _measure(port: int, count: int) -> tuple[list[float], float, float]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        for _ in range(100):  # warm up
            await stream.send_all(PAYLOAD)
            await stream.receive_some(65536)
        rtts = []
        before = os.times()
        for _ in range(count):
            start = time.perf_counter()
            await stream.send_all(PAYLOAD)
            got = 0
            while got < len(PAYLOAD):
                got += len(await stream.receive_some(65536))
            rtts.append(time.perf_counter() - start)
        after = os.times()
    return sorted(rtts), (after.user - before.user) / count, (after.system - before.system) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    ready = mp.Event()
    port = mp.Value("i", 0)
    server = mp.Process(target=_serve, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(10):
            raise SystemExit("echo server did not start")
        rtts, user, system = trio.run(_measure, port.value, args.count)
    finally:
        server.terminate()
        server.join(5)
    p50, p99 = rtts[len(rtts) // 2], rtts[int(len(rtts) * 0.99)]
    print(
        f"loopback echo round trip: p50 {p50 * 1e6:.0f} µs, p99 {p99 * 1e6:.0f} µs; "
        f"client CPU {user * 1e6:.0f} µs user + {system * 1e6:.0f} µs sys per round trip"
    )


if __name__ == "__main__":
    main()
