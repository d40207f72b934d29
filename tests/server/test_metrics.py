"""Metrics registry rendering and the /metrics HTTP endpoint on 127.0.0.1."""

from __future__ import annotations

import socket
import time

import pytest
import trio
from raftlog.server import metrics as metrics_module
from raftlog.server.metrics import Metrics, MetricType, Registry, serve_metrics

from tests.tcp_sockets import established, served_on

from .rawclient import wait_until


def test_counter_gauge_render_with_labels() -> None:
    reg = Registry()
    c = reg.counter("raftlog_x_total", "X things.", ["code"])
    g = reg.gauge("raftlog_y", "Y level.")
    c.inc(code="OK")
    c.inc(2, code="OK")
    c.inc(code='we"ird')
    g.set(7.5)
    g.dec(0.5)
    text = reg.render()
    assert "# TYPE raftlog_x_total counter" in text
    assert 'raftlog_x_total{code="OK"} 3' in text
    assert 'raftlog_x_total{code="we\\"ird"} 1' in text
    assert "raftlog_y 7\n" in text
    with pytest.raises(ValueError):
        c.inc(-1, code="OK")
    with pytest.raises(ValueError):
        c.inc(other="x")


def test_histogram_buckets_are_cumulative() -> None:
    reg = Registry()
    h = reg.histogram("raftlog_lat_seconds", "Latency.", buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 0.7, 5.0):
        h.observe(v)
    text = reg.render()
    assert 'raftlog_lat_seconds_bucket{le="0.1"} 1' in text
    assert 'raftlog_lat_seconds_bucket{le="1"} 3' in text
    assert 'raftlog_lat_seconds_bucket{le="+Inf"} 4' in text
    assert "raftlog_lat_seconds_count 4" in text
    assert "raftlog_lat_seconds_sum 6.25" in text


def test_duplicate_metric_name_refused() -> None:
    reg = Registry()
    reg.counter("raftlog_a", "a")
    with pytest.raises(ValueError, match="twice"):
        reg.gauge("raftlog_a", "a")


async def http_get(port: int, path: str) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = bytearray()
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    return bytes(data)


async def test_metrics_endpoint_serves_registry_over_http() -> None:
    metrics = Metrics()
    metrics.produce_requests.inc(code="OK")
    metrics.fsync_latency.observe(0.002)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve_metrics, "127.0.0.1:0", metrics.registry)
        port = listeners[0].socket.getsockname()[1]
        reply = await http_get(port, "/metrics")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"text/plain; version=0.0.4" in head
        assert b'raftlog_produce_requests_total{code="OK"} 1' in body
        assert b"raftlog_fsync_seconds_count 1" in body
        # Counted after the first scrape: the endpoint renders live values.
        metrics.produce_requests.inc(code="OK")
        assert b'raftlog_produce_requests_total{code="OK"} 2' in await http_get(port, "/metrics")
        assert (await http_get(port, "/nope")).startswith(b"HTTP/1.1 404")
        nursery.cancel_scope.cancel()


class HugeRegistry:
    """A registry whose page no socket buffer holds."""

    def render(self) -> str:
        return "x" * (64 << 20)


async def test_a_scraper_that_stops_reading_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "_SEND_TIMEOUT_S", 0.2)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve_metrics, "127.0.0.1:0", HugeRegistry())
        port = listeners[0].socket.getsockname()[1]
        with trio.socket.socket() as scraper:
            scraper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await scraper.connect(("127.0.0.1", port))
            await scraper.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            await wait_until(lambda: established(served_on(port)) != [], "accepted")
            # Never read: the node's send blocks, and then gives up and closes.
            await wait_until(lambda: established(served_on(port)) == [], "closed by the node")
        nursery.cancel_scope.cancel()


def test_process_metrics_are_read_at_scrape_time() -> None:
    text = Metrics().registry.render()
    assert "# TYPE process_cpu_seconds_total counter" in text
    samples = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("process_")
    }
    assert set(samples) >= {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    }
    assert samples["process_resident_memory_bytes"] > 1_000_000
    assert samples["process_open_fds"] >= 3  # stdin, stdout, stderr at least
    # Burn CPU: the next scrape shows it (a stored value would not move). The
    # kernel's per-process times are tick-based: burn well past their 10 ms
    # granularity and ask for half of it back.
    before = samples["process_cpu_seconds_total"]
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    after = next(
        float(line.split()[1])
        for line in Metrics().registry.render().splitlines()
        if line.startswith("process_cpu_seconds_total ")
    )
    assert after >= before + 0.1


def test_a_sampled_metric_without_a_value_has_no_sample() -> None:
    registry = Registry()
    registry.sampled("x_bytes", "X.", MetricType.GAUGE, lambda: None)
    registry.sampled("y_total", "Y.", MetricType.COUNTER, lambda: 3.0)
    text = registry.render()
    assert "# TYPE x_bytes gauge" in text and "\nx_bytes " not in text
    assert "y_total 3\n" in text
