"""``run_bench``: load generation for ``raftlog bench produce|consume``.

Modes
    produce, single: ``concurrency`` AsyncClients (one connection each), each
        awaiting one single-record ``produce`` after another (idempotent).
        Latency = time from the call to its acknowledgement, every record.
    produce, batch: ``concurrency`` batching Producers (``batch_size``,
        ``linger``). Latency = time from ``send`` to the record's delivery;
        measured on one record in ``LATENCY_SAMPLE`` (a callback per record
        would cost more than the send itself), reported with the sample count.
    consume: every partition read from its start offset up to the end offset
        seen when the run starts (filled first with ``count`` records if it
        holds fewer and ``fill`` is set), with large fetches.

Load is split over ``procs`` OS processes (spawned, not forked: trio and
threads do not survive fork) because one Python process saturates one core
long before the cluster does. Workers connect first, then all start on one
event so the measured window is the same; throughput = total records / the
slowest worker's elapsed time. Progress goes to stderr once a second.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import platform
import random
import sys
import time
import urllib.request
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from .aio import AsyncClient
from .errors import RaftlogError, TopicExistsError
from .producer import Producer
from .protocol import LINEARIZABLE, SERIALIZABLE
from .tls import TLSConfig

LATENCY_SAMPLE = 16  # batch mode: measure one record in this many
PROGRESS_EVERY = 1.0


@dataclass(slots=True)
class BenchConfig:
    mode: str  # "produce" or "consume"
    bootstrap: list[str]
    topic: str = "bench"
    partitions: int = 3
    replicas: int = 3
    record_size: int = 100
    duration: float = 10.0
    count: int | None = None  # total records; overrides duration
    procs: int = 1
    concurrency: int = 64
    batched: bool = False
    batch_size: int = 256 * 1024
    linger: float = 0.005
    # Per Producer: bytes accepted but not yet acknowledged (Kafka's
    # buffer.memory). Latency is measured from send(), so it includes the time a
    # record waits in this buffer: a large buffer buys nothing once the cluster
    # is the bottleneck except queueing delay. None: 2 batches per partition.
    buffer_memory: int | None = None
    # Offered load in records/s over all procs (kafka-producer-perf-test's
    # --throughput): latency at a load the cluster sustains, instead of at
    # saturation, where it is only the buffered records over the throughput
    # (Little's law). None: as fast as possible.
    rate: float | None = None
    # What the records hold (compression ratios depend on it): "fixed", one
    # random value repeated (kafka-producer-perf-test's default); "random", a
    # fresh random value per record (incompressible: the worst case); "text",
    # JSON-like events that differ in their numbers (compresses like logs).
    payload: str = "fixed"
    compression: str = "none"  # batch mode: the Producer's compression
    fill: bool = True
    # consume: "serializable" reads each partition from any replica's copy
    # (client/replica_reads.py), so followers share the fetch load.
    consistency: str = LINEARIZABLE
    request_timeout: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)
    # TLS to the nodes: file paths, so the spawned worker processes get it too.
    tls: TLSConfig | None = None
    credential: str | None = None  # the hello's token, for clusters with [auth]
    # Node id -> its metrics address (cluster.toml's metrics_address): the report
    # then has each node's CPU per record, read from process_cpu_seconds_total.
    metrics: dict[str, str] | None = None


def _client(cfg: BenchConfig) -> AsyncClient:
    return AsyncClient(
        cfg.bootstrap, request_timeout=cfg.request_timeout, tls=cfg.tls, credential=cfg.credential
    )


@dataclass(slots=True)
class _WorkerResult:
    records: int = 0
    bytes: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: array = field(default_factory=lambda: array("d"))
    first_error: str | None = None
    cpu_s: float = 0.0  # this worker process's CPU over its measured window


# ---------------------------------------------------------------- public entry


def run_bench(cfg: BenchConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the benchmark described by ``cfg``; return the report as a dict."""
    if cfg.mode not in ("produce", "consume"):
        raise ValueError(f"unknown bench mode {cfg.mode!r}")
    trio.run(_prepare, cfg)
    shares = _split(cfg.concurrency if cfg.mode == "produce" else cfg.partitions, cfg.procs)
    counts = _split(cfg.count, len(shares)) if cfg.count is not None else [None] * len(shares)
    cfg.extra["workers"] = len(shares)
    nodes = NodeCpu(cfg.metrics or {})
    if len(shares) == 1:
        counter = mp.Value("q", 0, lock=False)
        start = _InlineEvent(nodes.start)
        results = [_run_progress_inline(cfg, 0, shares[0], counts[0], counter, start, progress)]
    else:
        results = _run_procs(cfg, shares, counts, progress, nodes.start)
    nodes.stop()
    report = _report(cfg, results)
    report["cpu"] = _cpu_report(results, nodes, report["records"])
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"{report['mode']} ({report['variant']}): {report['records']:,} records in "
        f"{report['elapsed_s']:.2f}s over {report['procs']} proc(s)",
        f"  throughput: {report['records_per_s']:,.0f} records/s, {report['mb_per_s']:.2f} MB/s"
        + (f" (offered {report['config']['rate']:,.0f}/s)" if report["config"].get("rate") else ""),
    ]
    lat = report.get("latency_ms")
    if lat:
        lines.append(
            f"  ack latency: p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms, "
            f"p999 {lat['p999']:.3f} ms, max {lat['max']:.3f} ms "
            f"({lat['samples']:,} samples)"
        )
    cpu = report.get("cpu")
    if cpu and cpu.get("us_per_record") is not None:
        parts = [f"client {_us(cpu['client']['us_per_record'])}"] + [
            f"{node} {_us(n['us_per_record'])}" for node, n in cpu["nodes"].items()
        ]
        lines.append(
            f"  CPU per record: {', '.join(parts)} µs; "
            + (f"all {_us(cpu['us_per_record'])} µs, " if cpu["nodes"] else "")
            + f"{cpu['cores_busy']:.2f} cores busy"
        )
    py = report.get("python")
    if py:
        lines.append(f"  bench client: python {py['version']} ({py['executable']})")
    limit = report.get("cpu_latency_limit_us")
    if limit is not None and limit < CPU_LATENCY_DEFAULT_US:
        lines.append(f"  machine: CPU latency QoS limit {limit} us in force (idle CPUs poll)")
    if report["errors"]:
        lines.append(f"  errors: {report['errors']} (first: {report['first_error']})")
    return "\n".join(lines)


def _us(value: float) -> str:
    # Batches cost a few µs per record, single produces hundreds.
    return f"{value:.1f}" if value < 10 else f"{value:,.0f}"


# ---------------------------------------------------------------- setup and reports


async def _prepare(cfg: BenchConfig) -> None:
    """Create the topic if missing; for consume, fill it up to ``count`` records."""
    async with _client(cfg) as client:
        if cfg.topic not in await client.list_topics():
            with contextlib.suppress(TopicExistsError):
                await client.create_topic(cfg.topic, cfg.partitions, cfg.replicas)
        cfg.partitions = await client.partitions_for(cfg.topic)
        if cfg.mode != "consume" or not cfg.fill:
            return
        want = cfg.count or 100_000
        have = 0
        for p in range(cfg.partitions):
            offsets = await client.list_offsets(cfg.topic, p)
            have += offsets.end_offset - offsets.start_offset
        missing = want - have
        if missing <= 0:
            return
        value = os.urandom(cfg.record_size)
        async with Producer(client, batch_size=cfg.batch_size, linger=0.01) as producer:
            for i in range(missing):
                await producer.send(cfg.topic, value, partition=i % cfg.partitions)
        print(f"filled {cfg.topic} with {missing:,} records", file=sys.stderr)


def _split(total: int | None, parts: int) -> list[int]:
    assert total is not None
    parts = max(1, min(parts, total)) if total > 0 else 1
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _spread(total: int, parts: int) -> list[int]:
    """``total`` split into exactly ``parts`` near-equal shares (some may be 0)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _pace(cfg: BenchConfig) -> float | None:
    """The offered rate of each load task (client or producer), or None (unpaced)."""
    return cfg.rate / cfg.concurrency if cfg.rate else None


async def _wait_until(when: float) -> None:
    """Sleep until perf_counter() reaches ``when`` (no-op when already late)."""
    delay = when - time.perf_counter()
    if delay > 0:
        await trio.sleep(delay)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def _report(cfg: BenchConfig, results: list[_WorkerResult]) -> dict[str, Any]:
    records = sum(r.records for r in results)
    nbytes = sum(r.bytes for r in results)
    elapsed = max((r.elapsed for r in results), default=0.0) or 1e-9
    report: dict[str, Any] = {
        "mode": cfg.mode,
        "variant": ("batch" if cfg.batched else "single") if cfg.mode == "produce"
        else f"fetch, {cfg.consistency}",
        "topic": cfg.topic,
        "partitions": cfg.partitions,
        "record_size": cfg.record_size,
        "procs": len(results),
        "concurrency": cfg.concurrency if cfg.mode == "produce" else cfg.partitions,
        "records": records,
        "bytes": nbytes,
        "elapsed_s": elapsed,
        "records_per_s": records / elapsed,
        "mb_per_s": nbytes / elapsed / 1e6,
        "errors": sum(r.errors for r in results),
        # The interpreter build moves every figure (a PGO+LTO distribution
        # CPython runs raftlog ~25 % faster than a plain source build).
        "python": {"version": platform.python_version(), "executable": sys.executable},
        # So does a CPU latency QoS request ([cluster] cpu_latency_qos_us): idle
        # CPUs that poll instead of halting wake faster for every hop.
        "cpu_latency_limit_us": cpu_latency_limit_us(),
        "first_error": next((r.first_error for r in results if r.first_error), None),
        "config": {
            **{k: v for k, v in asdict(cfg).items() if k not in ("extra", "tls")},
            "tls": cfg.tls is not None,  # file paths say nothing about the run
        },
    }
    lats = sorted(x for r in results for x in r.latencies)
    if lats:
        report["latency_ms"] = {
            "p50": _percentile(lats, 0.50) * 1000,
            "p99": _percentile(lats, 0.99) * 1000,
            "p999": _percentile(lats, 0.999) * 1000,
            "max": lats[-1] * 1000,
            "samples": len(lats),
        }
    return report


# ---------------------------------------------------------------- CPU accounting


def _process_cpu() -> float:
    t = os.times()  # this process, every thread
    return t.user + t.system


def scrape_cpu_seconds(address: str, timeout: float = 2.0) -> float | None:
    """A node's ``process_cpu_seconds_total`` from its metrics endpoint, or None."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as reply:
            text = reply.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "process_cpu_seconds_total":
            try:
                return float(value)
            except ValueError:
                return None
    return None


class NodeCpu:
    """The nodes' CPU seconds over the measured window, from their metrics.

    Read just before the workers start and after they finish: the same window
    as the throughput (workers connect and warm up before it). A node whose
    endpoint does not answer at either end is left out of the report.
    """

    def __init__(self, metrics: dict[str, str]) -> None:
        self.metrics = dict(metrics)
        self._before: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.wall_s = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        self._before = self._read()
        self._t0 = time.monotonic()

    def stop(self) -> None:
        self.wall_s = time.monotonic() - self._t0 if self._t0 else 0.0
        after = self._read()
        self.seconds = {
            node: after[node] - before
            for node, before in self._before.items()
            if node in after and after[node] >= before
        }

    def _read(self) -> dict[str, float]:
        out = {}
        for node, address in self.metrics.items():
            value = scrape_cpu_seconds(address)
            if value is not None:
                out[node] = value
        return out


def _cpu_report(results: list[_WorkerResult], nodes: NodeCpu, records: int) -> dict[str, Any]:
    """CPU per record for the client and each node (``records`` acknowledged or
    fetched), and how many of the machine's cores the run kept busy. The point:
    on a machine the client shares with three nodes, throughput is whatever the
    CPU per record allows, and this says where it goes."""
    client_s = sum(r.cpu_s for r in results)
    elapsed = max((r.elapsed for r in results), default=0.0) or 1e-9
    per = (lambda secs: secs / records * 1e6) if records else (lambda secs: None)
    node_report = {
        node: {"cpu_s": secs, "cores": secs / (nodes.wall_s or elapsed), "us_per_record": per(secs)}
        for node, secs in sorted(nodes.seconds.items())
    }
    total_s = client_s + sum(nodes.seconds.values())
    return {
        "client": {"cpu_s": client_s, "cores": client_s / elapsed, "us_per_record": per(client_s)},
        "nodes": node_report,
        "us_per_record": per(total_s),
        "cores_busy": total_s / (nodes.wall_s if nodes.seconds else elapsed),
    }


# ---------------------------------------------------------------- processes


class _InlineEvent:
    """Stands in for an mp.Event when the worker runs in this process."""

    def __init__(self, on_start: Callable[[], None] = lambda: None) -> None:
        self._on_start = on_start

    def wait(self, timeout: float | None = None) -> bool:
        self._on_start()
        return True

    def set(self) -> None:
        pass


def _run_progress_inline(
    cfg: BenchConfig,
    index: int,
    share: int,
    count: int | None,
    counter: Any,
    start: Any,
    progress: bool,
) -> _WorkerResult:
    import threading

    done = threading.Event()
    if progress:
        thread = threading.Thread(target=_progress_loop, args=([counter], done), daemon=True)
        thread.start()
    try:
        return _worker_main(cfg, index, share, count, counter, start)
    finally:
        done.set()
        if progress:
            thread.join(2)
            print(file=sys.stderr)


def _progress_loop(counters: list[Any], done: Any) -> None:
    t0 = time.monotonic()
    last, last_t = 0, t0
    while not done.wait(PROGRESS_EVERY):
        now = time.monotonic()
        total = sum(c.value for c in counters)
        rate = (total - last) / max(now - last_t, 1e-9)
        print(
            f"\r[{now - t0:6.1f}s] {total:>12,} records  {rate:>12,.0f} rec/s",
            end="",
            file=sys.stderr,
            flush=True,
        )
        last, last_t = total, now


def _run_procs(
    cfg: BenchConfig,
    shares: list[int],
    counts: list[int | None],
    progress: bool,
    on_start: Callable[[], None] = lambda: None,
) -> list[_WorkerResult]:
    import threading

    ctx = mp.get_context("spawn")
    counters = [ctx.Value("q", 0, lock=False) for _ in shares]
    start = ctx.Event()
    ready = ctx.Barrier(len(shares) + 1)
    results_q = ctx.Queue()
    procs = [
        ctx.Process(
            target=_proc_entry,
            args=(cfg, i, share, counts[i], counters[i], start, ready, results_q),
            daemon=True,
        )
        for i, share in enumerate(shares)
    ]
    for proc in procs:
        proc.start()
    done = threading.Event()
    results: list[_WorkerResult] = []
    try:
        ready.wait(timeout=60)  # every worker connected
        on_start()
        start.set()
        if progress:
            threading.Thread(target=_progress_loop, args=(counters, done), daemon=True).start()
        deadline = time.monotonic() + (cfg.duration if cfg.count is None else 3600) + 120
        while len(results) < len(procs) and time.monotonic() < deadline:
            try:
                results.append(results_q.get(timeout=1.0))
            except Exception:  # queue.Empty; also keep polling if a worker died
                if not any(p.is_alive() for p in procs) and results_q.empty():
                    break
    finally:
        done.set()
        if progress:
            print(file=sys.stderr)
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
    if len(results) < len(procs):
        missing = len(procs) - len(results)
        results.append(
            _WorkerResult(errors=missing, first_error=f"{missing} worker process(es) died")
        )
    return results


def _proc_entry(
    cfg: BenchConfig,
    index: int,
    share: int,
    count: int | None,
    counter: Any,
    start: Any,
    ready: Any,
    results_q: Any,
) -> None:
    class _Start:
        def wait(self, timeout: float | None = None) -> bool:
            ready.wait(timeout=60)
            return bool(start.wait(timeout=60))

    result = _worker_main(cfg, index, share, count, counter, _Start())
    results_q.put(result)


def _worker_main(
    cfg: BenchConfig, index: int, share: int, count: int | None, counter: Any, start: Any
) -> _WorkerResult:
    if cfg.mode == "consume":
        return trio.run(_consume_worker, cfg, index, counter, start)
    if cfg.batched:
        return trio.run(_produce_batch_worker, cfg, index, share, count, counter, start)
    return trio.run(_produce_single_worker, cfg, index, share, count, counter, start)


async def _wait_start(start: Any) -> None:
    # The start signal is a multiprocessing object: wait for it off the loop.
    await trio.to_thread.run_sync(start.wait)


PAYLOADS = ("fixed", "random", "text")
_POOL_BYTES = 64 * 1024 * 1024


def payloads(kind: str, record_size: int, seed: int = 0) -> list[bytes]:
    """The values a worker cycles through: one for "fixed"; for "random" more than
    a batch holds (so a batch never repeats one); for "text" 4096 distinct events."""
    if kind == "fixed":
        return [os.urandom(record_size)]
    if kind == "random":
        n = max(1, min(65_536, _POOL_BYTES // max(1, record_size)))
        blob = os.urandom(n * record_size)
        return [blob[i * record_size : (i + 1) * record_size] for i in range(n)]
    if kind == "text":
        rng = random.Random(seed)
        pages = ("/", "/home", "/cart", "/search", "/item", "/checkout", "/account")
        events = ("view", "click", "add_to_cart", "purchase", "scroll")
        pool = []
        for i in range(4096):
            event = (
                f'{{"ts":{1_790_000_000_000 + i * 37},"user":{rng.randrange(10**6)},'
                f'"session":"{rng.getrandbits(64):016x}","event":"{rng.choice(events)}",'
                f'"page":"{rng.choice(pages)}","ms":{rng.randrange(5000)}}}'
            ).encode()
            pool.append(event[:record_size].ljust(record_size, b" "))
        return pool
    raise ValueError(f"unknown payload {kind!r} (one of {', '.join(PAYLOADS)})")


# ---------------------------------------------------------------- machine

CPU_LATENCY_DEVICE = "/dev/cpu_dma_latency"
# What the device reads when no process holds a request (PM_QOS_DEFAULT_VALUE).
CPU_LATENCY_DEFAULT_US = 2_000_000_000


def cpu_latency_limit_us(device: str = CPU_LATENCY_DEVICE) -> int | None:
    """The CPU latency QoS limit in force over all holders (reading the device gives
    it; see server/cpu_latency.py); None where it cannot be read (not root)."""
    try:
        with open(device, "rb") as f:
            raw = f.read(4)
    except OSError:
        return None
    return int.from_bytes(raw, sys.byteorder, signed=True) if len(raw) == 4 else None


# ---------------------------------------------------------------- workers


async def _produce_single_worker(
    cfg: BenchConfig, index: int, share: int, count: int | None, counter: Any, start: Any
) -> _WorkerResult:
    result = _WorkerResult()
    pool = payloads(cfg.payload, cfg.record_size, seed=index)
    value = pool[0]
    clients = [_client(cfg) for _ in range(share)]
    remaining = [count if count is not None else -1]
    lat = result.latencies
    perf = time.perf_counter
    async with contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
        # Warm up: connections, metadata, producer ids, before the clock starts.
        for i, client in enumerate(clients):
            await client.partitions_for(cfg.topic)
            await client.produce(cfg.topic, value, partition=(index + i) % cfg.partitions)
        await _wait_start(start)
        t0 = perf()
        cpu0 = _process_cpu()
        stop_at = t0 + cfg.duration

        pace = _pace(cfg)  # records/s per client, or None

        async def run(i: int, client: AsyncClient) -> None:
            partition = (index * share + i) % cfg.partitions
            sent = 0
            while True:
                if remaining[0] == 0 or (count is None and perf() >= stop_at):
                    return
                if remaining[0] > 0:
                    remaining[0] -= 1
                if pace is not None:
                    await _wait_until(t0 + sent / pace)
                sent += 1
                s = perf()
                try:
                    await client.produce(cfg.topic, pool[sent % len(pool)], partition=partition)
                except RaftlogError as exc:
                    result.errors += 1
                    result.first_error = result.first_error or str(exc)
                    continue
                lat.append(perf() - s)
                result.records += 1
                counter.value += 1

        async with trio.open_nursery() as inner:
            for i, client in enumerate(clients):
                inner.start_soon(run, i, client)
        result.elapsed = perf() - t0
        result.cpu_s = _process_cpu() - cpu0
    result.bytes = result.records * cfg.record_size
    return result


async def _produce_batch_worker(
    cfg: BenchConfig, index: int, share: int, count: int | None, counter: Any, start: Any
) -> _WorkerResult:
    result = _WorkerResult()
    pool = payloads(cfg.payload, cfg.record_size, seed=index)
    perf = time.perf_counter
    lat = result.latencies
    counts = _split(count, share) if count is not None else [None] * share

    pace = _pace(cfg)  # records/s per producer, or None

    async def run(i: int, producer: Producer, n: int | None, stop_at: float) -> None:
        # Records without a key and without a partition: the Producer fills one
        # partition's batch, then moves on (sticky round-robin over all partitions).
        partition = None
        sent = 0
        send = producer.send
        values = pool[i % len(pool) :] + pool[: i % len(pool)]  # producers start apart
        n_values = len(values)
        topic = cfg.topic
        t_start = perf()
        while (n is None and perf() < stop_at) or (n is not None and sent < n):
            if pace is not None:
                await _wait_until(t_start + sent / pace)
            for _ in range(256):  # check the clock once per 256 sends
                value = values[sent % n_values]
                if sent % LATENCY_SAMPLE == 0:
                    s = perf()
                    delivery = await send(topic, value, None, partition)
                    delivery.add_callback(
                        lambda md, err, s=s: err is None and lat.append(perf() - s)
                    )
                else:
                    await send(topic, value, None, partition)
                sent += 1
                if n is not None and sent >= n:
                    break
            counter.value += 256

    async with contextlib.AsyncExitStack() as stack:
        producers = []
        for _ in range(share):
            client = await stack.enter_async_context(_client(cfg))
            await client.partitions_for(cfg.topic)
            producers.append(
                await stack.enter_async_context(
                    Producer(
                        client,
                        batch_size=cfg.batch_size,
                        linger=cfg.linger,
                        buffer_memory=cfg.buffer_memory or 2 * cfg.partitions * cfg.batch_size,
                        compression=cfg.compression,
                    )
                )
            )
        await _wait_start(start)
        t0 = perf()
        cpu0 = _process_cpu()
        async with trio.open_nursery() as inner:
            for i, producer in enumerate(producers):
                inner.start_soon(run, i, producer, counts[i], t0 + cfg.duration)
        for producer in producers:
            await producer.flush()
        result.elapsed = perf() - t0
        result.cpu_s = _process_cpu() - cpu0
        for producer in producers:
            result.records += producer.stats["records"] - producer.stats["failed_records"]
            result.errors += producer.stats["failed_records"]
    counter.value = result.records
    result.bytes = result.records * cfg.record_size
    return result


async def _consume_worker(cfg: BenchConfig, index: int, counter: Any, start: Any) -> _WorkerResult:
    result = _WorkerResult()
    perf = time.perf_counter
    # Worker i of n reads partitions i, i+n, i+2n, ...
    workers = int(cfg.extra.get("workers", 1))
    mine = [p for p in range(cfg.partitions) if p % workers == index]
    async with _client(cfg) as client:
        bounds = {p: await client.list_offsets(cfg.topic, p) for p in mine}
        await _wait_start(start)
        t0 = perf()
        cpu0 = _process_cpu()
        stop_at = t0 + cfg.duration if cfg.count is None else math.inf

        # With --count, every partition reads its share of the total count.
        shares = _spread(cfg.count, cfg.partitions) if cfg.count is not None else None
        limits = {p: shares[p] if shares is not None else None for p in mine}

        wait = 1.0 if cfg.consistency == SERIALIZABLE else 0.0

        async def read(p: int) -> None:
            offset, end = bounds[p].start_offset, bounds[p].end_offset
            limit = limits[p]
            if limit is not None:
                end = min(end, offset + limit)
            while offset < end and perf() < stop_at:
                # A replica behind the end it was told answers after a long poll,
                # so an empty answer still means the partition was read through.
                fetched = await client.fetch(cfg.topic, p, offset, max_bytes=4 * 1024 * 1024,
                                             max_wait=wait, consistency=cfg.consistency)
                if not fetched.records:
                    break
                records = fetched.records
                if records[-1].offset >= end:
                    records = [r for r in records if r.offset < end]
                n = len(records)
                result.records += n
                result.bytes += sum(len(r.value) for r in records)
                counter.value += n
                offset = fetched.records[-1].offset + 1

        async with trio.open_nursery() as nursery:
            for p in mine:
                nursery.start_soon(read, p)
        result.elapsed = perf() - t0
        result.cpu_s = _process_cpu() - cpu0
    return result
