"""The machine's ceiling for concurrent requests: trio request/response, no Raft, no disk.

    python -m tests.bench.echo_ceiling [--clients 64] [--seconds 10] [--procs 1]

``--clients`` connections (spread over ``--procs`` client processes) each send a
produce-shaped request of one 100-byte record and wait for its reply, like
``raftlog bench produce --single --concurrency 64``. One server process decodes
each frame and answers it with a small reply frame, using the same direct
socket I/O and msgpack framing as a node's listener (``client/sockio.py``,
``client/protocol.py``), and nothing else: no validation, no Raft, no fsync,
no followers.

So its throughput bounds what a raftlog leader could answer on this machine
with the benchmark client beside it, and its CPU per request is the part of a
produce's cost that is only transport. Issue 3's 64-client target (25,000
records/s over 2 cores) leaves ~80 µs of CPU per request for the client and
all three nodes together.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from typing import Any

import trio
from raftlog.client.protocol import FrameDecoder, encode_frame, encode_record_rows, ok_reply
from raftlog.client.sockio import read_chunk, socket_fd, write_now

from tests.bench.loopback_rtt import serve_on_free_port

RECORD = b"x" * 100
READ_CHUNK = 65536


async def _write(stream: trio.SocketStream, fd: int, frame: bytes) -> None:
    taken = write_now(fd, frame)
    if taken < len(frame):
        await stream.send_all(frame[taken:])


def _serve(port: Any, ready: Any, delay: float) -> None:
    async def answer(stream: trio.SocketStream) -> None:
        fd = socket_fd(stream)
        assert fd is not None
        decoder = FrameDecoder()
        offset = 0
        drained = True
        while data := await read_chunk(fd, READ_CHUNK, drained):
            drained = len(data) < READ_CHUNK
            replies = []
            for frame in decoder.feed(data):
                offset += 1
                replies.append(encode_frame(ok_reply(frame["id"], partition=0, offset=offset)))
            if delay:
                await trio.sleep(delay)
            await _write(stream, fd, b"".join(replies))

    serve_on_free_port(answer, port, ready)


async def _clients(port: int, clients: int, seconds: float) -> tuple[int, list[float], float]:
    """Requests answered, sampled latencies, client CPU seconds over the window."""
    latencies: list[float] = []
    done = 0
    stop_at = 0.0

    async def one() -> None:
        nonlocal done
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        fd = socket_fd(stream)
        assert fd is not None
        decoder = FrameDecoder()
        records = encode_record_rows([(None, None, RECORD, None)])
        req_id = 0
        async with stream:
            while time.perf_counter() < stop_at:
                req_id += 1
                request = {"id": req_id, "op": "produce", "topic": "t", "partition": 0}
                request["records"] = records
                started = time.perf_counter()
                await _write(stream, fd, encode_frame(request))
                frames: list[dict[str, Any]] = []
                while not frames:
                    data = await read_chunk(fd, READ_CHUNK, True)
                    if not data:
                        return
                    frames = decoder.feed(data)
                done += 1
                if req_id % 16 == 0:
                    latencies.append(time.perf_counter() - started)

    before = os.times()
    stop_at = time.perf_counter() + seconds
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(one)
    after = os.times()
    return done, latencies, (after.user + after.system) - (before.user + before.system)


def _client_proc(port: int, clients: int, seconds: float, out: Any) -> None:
    out.put(trio.run(_clients, port, clients, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--procs", type=int, default=1, help="client processes")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="hold each reply this long: the client's cost at a raftlog-like latency",
    )
    args = parser.parse_args()
    if args.clients < args.procs or args.procs < 1:
        parser.error("need at least one client per client process")
    ready, port = mp.Event(), mp.Value("i", 0)
    server = mp.Process(target=_serve, args=(port, ready, args.delay_ms / 1e3), daemon=True)
    server.start()
    procs: list[mp.Process] = []
    try:
        if not ready.wait(10):
            raise SystemExit("server did not start")
        before = _proc_cpu(server.pid)
        out: Any = mp.Queue()
        each, extra = divmod(args.clients, args.procs)
        for i in range(args.procs):
            share = (port.value, each + (i < extra), args.seconds, out)
            procs.append(mp.Process(target=_client_proc, args=share))
            procs[-1].start()
        results = [out.get(timeout=args.seconds + 30) for _ in procs]
        server_cpu = _proc_cpu(server.pid) - before
    finally:
        for p in [*procs, server]:
            p.join(10 if p is not server else 0)
            if p.is_alive():
                p.terminate()
                p.join(5)
    done = sum(r[0] for r in results)
    lat = sorted(x for r in results for x in r[1])
    client_cpu = sum(r[2] for r in results)
    rate = done / args.seconds
    if not lat:
        raise SystemExit(f"too few requests answered to report latency ({done})")
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
    per = 1e6 / max(done, 1)
    print(
        f"echo ceiling: {args.clients} clients, {args.procs} process(es), {args.seconds:.0f} s: "
        f"{rate:,.0f} requests/s, p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms\n"
        f"  CPU per request: client {client_cpu * per:.0f} µs, server "
        f"{server_cpu * per:.0f} µs; {(client_cpu + server_cpu) / args.seconds:.2f} cores busy"
    )


def _proc_cpu(pid: int | None) -> float:
    """User + system CPU seconds of a child process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


if __name__ == "__main__":
    main()
