"""``raftlog bench --config``: the report's CPU per record, the client's own and
each node's (read from the nodes' ``process_cpu_seconds_total``)."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from raftlog.client.bench import NodeCpu, format_report, scrape_cpu_seconds
from raftlog.server.cli import main
from raftlog.server.cli_common import metrics_addresses

from .fake_server import FakeCluster
from .test_cli_data import dead_address


class _CpuCounter:
    """A node's metrics endpoint whose CPU counter moves by ``step`` per scrape."""

    def __init__(self, start: float, step: float) -> None:
        self._values = itertools.count(start, step)
        self.scrapes = 0

    def body(self) -> bytes:
        self.scrapes += 1
        value = next(self._values)
        return (
            "# HELP process_cpu_seconds_total CPU.\n"
            "# TYPE process_cpu_seconds_total counter\n"
            'raftlog_requests_total{op="produce",code="OK"} 7\n'
            f"process_cpu_seconds_total {value}\n"
        ).encode()


@pytest.fixture
def cpu_endpoint() -> Iterator[tuple[str, _CpuCounter]]:
    counter = _CpuCounter(start=10.0, step=0.5)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = counter.body()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", counter
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _cluster_toml(path: Path, nodes: list[tuple[str, str, str | None]]) -> Path:
    lines = ['[cluster]\nname = "t"\n']
    for node_id, address, metrics in nodes:
        lines.append(f'[[node]]\nid = "{node_id}"\naddress = "{address}"\n')
        if metrics:
            lines.append(f'metrics_address = "{metrics}"\n')
    path.write_text("".join(lines))
    return path


def test_scrape_reads_the_unlabelled_cpu_counter(cpu_endpoint):
    address, _ = cpu_endpoint
    assert scrape_cpu_seconds(address) == 10.0
    assert scrape_cpu_seconds(address) == 10.5
    assert scrape_cpu_seconds(dead_address(), timeout=1.0) is None


def test_node_cpu_is_the_difference_over_the_window_and_skips_dead_nodes(cpu_endpoint):
    address, _ = cpu_endpoint
    nodes = NodeCpu({"n1": address, "n2": dead_address()})
    nodes.start()
    nodes.stop()
    assert nodes.seconds == {"n1": 0.5}
    assert nodes.wall_s > 0


def test_metrics_addresses_come_from_the_config_unless_bootstrap_replaces_it(tmp_path):
    toml = _cluster_toml(
        tmp_path / "cluster.toml",
        [("n1", "127.0.0.1:7101", "127.0.0.1:9101"), ("n2", "127.0.0.1:7102", None)],
    )
    assert metrics_addresses(toml, None) == {"n1": "127.0.0.1:9101"}
    assert metrics_addresses(toml, "127.0.0.1:7101") == {"n1": "127.0.0.1:9101"}
    assert metrics_addresses(None, "127.0.0.1:7101") == {}
    assert metrics_addresses(tmp_path / "missing.toml", None) == {}


@pytest.mark.parametrize("procs", [1, 2])  # the load in this process, or in spawned workers
def test_bench_with_config_reports_cpu_per_record(
    sync_fake: FakeCluster, cpu_endpoint, tmp_path, procs: int
):
    address, counter = cpu_endpoint
    nodes = [(f"n{i + 1}", a, None) for i, a in enumerate(sync_fake.bootstrap())]
    nodes[0] = (nodes[0][0], nodes[0][1], address)
    nodes[1] = (nodes[1][0], nodes[1][1], dead_address())
    toml = _cluster_toml(tmp_path / "cluster.toml", nodes)
    args = ["bench", "produce", "--topic", "t", "--count", "400", "--concurrency", "4"]
    args += ["--procs", str(procs), "--json", "--config", str(toml)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    cpu = report["cpu"]
    # Scraped once before the workers start and once after: the 0.5 s step.
    assert counter.scrapes == 2
    assert list(cpu["nodes"]) == ["n1"]  # the dead endpoint is left out, not zero
    n1 = cpu["nodes"]["n1"]
    assert n1["cpu_s"] == pytest.approx(0.5)
    assert n1["us_per_record"] == pytest.approx(0.5 / report["records"] * 1e6)
    assert report["procs"] == procs
    assert cpu["client"]["cpu_s"] > 0
    assert cpu["us_per_record"] == pytest.approx(
        (cpu["client"]["cpu_s"] + 0.5) / report["records"] * 1e6
    )
    assert "CPU per record: client" in format_report(report)
    assert "n1 " in format_report(report)


def test_bench_without_metrics_reports_the_client_cpu_only(sync_fake: FakeCluster):
    args = ["bench", "produce", "--topic", "t", "--count", "200", "--concurrency", "2"]
    bootstrap = ["--bootstrap", ",".join(sync_fake.bootstrap())]
    result = CliRunner().invoke(main, [*args, "--json", *bootstrap], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["cpu"]["nodes"] == {}
    assert report["cpu"]["client"]["us_per_record"] > 0
    assert "all " not in format_report(report).split("CPU per record:")[1].splitlines()[0]
