"""The data-path CLI (topic, produce, consume, bench) via click's CliRunner.

Exit codes are part of the contract: 0 ok, 1 error reply, 2 usage, 3 unreachable.
"""

from __future__ import annotations

import json
import platform
import socket
import sys
import threading
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from raftlog.client.bench import cpu_latency_limit_us, format_report, payloads
from raftlog.client.compression import MAGIC
from raftlog.client.errors import ClusterUnreachableError, ConnectionLostError, UnknownTopicError
from raftlog.client.sync import Client
from raftlog.server.cli import main
from raftlog.server.cli_common import bootstrap_addresses, config_nodes, run_client

from .fake_server import FakeCluster


def run(args: list[str], stdin: str | None = None):
    return CliRunner().invoke(main, args, input=stdin, catch_exceptions=False)


def boot(fake: FakeCluster) -> list[str]:
    return ["--bootstrap", ",".join(fake.bootstrap())]


def dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_topic_create_list_describe_delete(sync_fake: FakeCluster):
    result = run(
        [
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--replicas",
            "2",
            "--retention-ms",
            "60000",
            *boot(sync_fake),
        ]
    )
    assert result.exit_code == 0, result.output
    assert "orders" in sync_fake.topics
    assert sync_fake.topics["orders"]["config"] == {"retention_ms": 60000}
    listed = run(["topic", "list", "--json", *boot(sync_fake)])
    assert json.loads(listed.output) == ["orders", "t"]
    described = run(["topic", "describe", "orders", "--json", *boot(sync_fake)])
    assert [p["partition"] for p in json.loads(described.output)["partitions"]] == [0, 1, 2]
    assert run(["topic", "delete", "orders", *boot(sync_fake)]).exit_code == 0
    assert "orders" not in sync_fake.topics


def test_error_reply_exits_1_with_code_on_stderr(sync_fake: FakeCluster):
    result = CliRunner().invoke(main, ["topic", "create", "t", *boot(sync_fake)])
    assert result.exit_code == 1
    assert "TOPIC_EXISTS" in result.output  # CliRunner mixes stderr into output


def test_unreachable_cluster_exits_3():
    result = CliRunner().invoke(
        main, ["topic", "list", "--bootstrap", dead_address(), "--timeout", "0.5"]
    )
    assert result.exit_code == 3
    assert "cannot reach the cluster" in result.output


def test_usage_errors_exit_2(tmp_path: Path):
    missing = CliRunner().invoke(main, ["topic", "list", "--config", str(tmp_path / "x.toml")])
    assert missing.exit_code == 2
    bad = CliRunner().invoke(main, ["topic", "list", "--bootstrap", "nohostport"])
    assert bad.exit_code == 2


def test_bootstrap_addresses_from_cluster_toml(tmp_path: Path):
    cfg = tmp_path / "cluster.toml"
    cfg.write_text(
        '[cluster]\nname = "x"\n\n[[node]]\nid = "n1"\naddress = "127.0.0.1:7101"\n'
        'data_dir = "d1"\n\n[[node]]\nid = "n2"\naddress = "127.0.0.1:7102"\ndata_dir = "d2"\n'
    )
    assert bootstrap_addresses(cfg, None) == ["127.0.0.1:7101", "127.0.0.1:7102"]
    assert bootstrap_addresses(cfg, "h:1,h:2") == ["h:1", "h:2"]
    # The nodes `raftlog user --wait` polls: the file's, by id; with --bootstrap
    # the cluster's own list (None here).
    assert config_nodes(cfg, None) == {"n1": "127.0.0.1:7101", "n2": "127.0.0.1:7102"}
    assert config_nodes(cfg, "h:1,h:2") is None


def test_produce_lines_then_consume_them(sync_fake: FakeCluster):
    result = run(
        ["produce", "t", "--partition", "1", "--headers", "src=cli", "--verbose", *boot(sync_fake)],
        stdin="one\ntwo\nthree\n",
    )
    assert result.exit_code == 0, result.output
    assert "partition=1 offset=2" in result.output
    assert sync_fake.values("t", 1) == [b"one", b"two", b"three"]
    consumed = run(["consume", "t", "--partition", "1", "--format", "json", *boot(sync_fake)])
    assert consumed.exit_code == 0
    rows = [json.loads(line) for line in consumed.output.splitlines() if line.startswith("{")]
    assert [(r["offset"], r["value"], r["headers"]) for r in rows] == [
        (0, "one", {"src": "cli"}),
        (1, "two", {"src": "cli"}),
        (2, "three", {"src": "cli"}),
    ]


def test_produce_compressed_lines_consume_back_as_written(sync_fake: FakeCluster):
    lines = [f"order {i} shipped to warehouse 7" for i in range(200)]
    args = ["produce", "t", "--partition", "0", "--compression", "lz4", "--linger", "1"]
    result = run([*args, *boot(sync_fake)], stdin="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    produced = [f for _, op, f in sync_fake.requests if op == "produce"]
    assert produced and all(f["records"][0] == MAGIC for f in produced)
    consumed = run(["consume", "t", "--partition", "0", "--max", "200", *boot(sync_fake)])
    assert consumed.stdout.splitlines() == lines


def test_produce_to_unknown_topic_exits_1(sync_fake: FakeCluster):
    result = CliRunner().invoke(main, ["produce", "nope", *boot(sync_fake)], input="x\n")
    assert result.exit_code == 1
    assert "UNKNOWN_TOPIC" in result.output


def test_consume_with_group_commits_and_resumes(sync_fake: FakeCluster):
    run(["produce", "t", "--partition", "0", *boot(sync_fake)], stdin="a\nb\nc\nd\n")
    first = run(
        ["consume", "t", "--partition", "0", "--group", "g", "--max", "3", *boot(sync_fake)]
    )
    assert first.exit_code == 0
    assert first.output.splitlines()[:3] == ["a", "b", "c"]
    assert sync_fake.committed[("g", "t", 0)][0] == 3
    second = run(["consume", "t", "--partition", "0", "--group", "g", *boot(sync_fake)])
    assert second.output.splitlines()[0] == "d"
    again = run(
        ["consume", "t", "--partition", "0", "--offset", "1", "--max", "1", *boot(sync_fake)]
    )
    assert again.output.splitlines()[0] == "b"


@pytest.mark.parametrize("mode", ["--single", "--batch"])
def test_bench_produce_reports_json(sync_fake: FakeCluster, mode: str):
    result = run(
        [
            "bench",
            "produce",
            "--topic",
            "t",
            "--count",
            "300",
            "--concurrency",
            "4",
            "--record-size",
            "10",
            mode,
            "--json",
            *boot(sync_fake),
        ]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["records"] == 300 and report["errors"] == 0
    assert report["latency_ms"]["samples"] > 0
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    # Figures are only comparable with the interpreter that produced them.
    assert report["python"] == {"version": platform.python_version(), "executable": sys.executable}
    assert report["cpu_latency_limit_us"] == cpu_latency_limit_us()
    stored = sum(len(sync_fake.values("t", p)) for p in (0, 1))
    assert stored >= 300  # plus the warm-up records of single mode


def test_bench_text_payload_with_zstd_sends_compressed_batches(sync_fake: FakeCluster):
    args = ["bench", "produce", "--topic", "t", "--count", "3000", "--concurrency", "2"]
    args += ["--batch", "--payload", "text", "--compression", "zstd", "--record-size", "120"]
    result = run([*args, "--json", *boot(sync_fake)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["records"] == 3000 and report["errors"] == 0
    assert (report["config"]["payload"], report["config"]["compression"]) == ("text", "zstd")
    produced = [f for _, op, f in sync_fake.requests if op == "produce"]
    assert produced and all(f["records"][0] == MAGIC for f in produced)
    values = [v for p in (0, 1) for v in sync_fake.values("t", p)]
    assert len(values) == 3000 and all(len(v) == 120 and v.startswith(b'{"ts":') for v in values)
    assert len(set(values)) > 1000  # events differ, as logs do


def test_bench_compression_needs_batch_mode(sync_fake: FakeCluster):
    result = run(["bench", "produce", "--compression", "lz4", "--count", "10", *boot(sync_fake)])
    assert result.exit_code == 2 and "add --batch" in result.output


def test_bench_reads_the_cpu_latency_limit_and_says_when_one_is_in_force(tmp_path: Path):
    device = tmp_path / "cpu_dma_latency"
    device.write_bytes((0).to_bytes(4, sys.byteorder, signed=True))
    assert cpu_latency_limit_us(str(device)) == 0
    assert cpu_latency_limit_us(str(tmp_path / "missing")) is None
    report = {
        "mode": "produce", "variant": "single", "records": 1, "elapsed_s": 1.0, "procs": 1,
        "records_per_s": 1.0, "mb_per_s": 0.0, "config": {}, "errors": 0,
    }  # fmt: skip
    assert "CPU latency" not in format_report({**report, "cpu_latency_limit_us": None})
    assert "CPU latency" not in format_report({**report, "cpu_latency_limit_us": 2_000_000_000})
    assert "CPU latency QoS limit 0 us" in format_report({**report, "cpu_latency_limit_us": 0})


def test_bench_payload_pools():
    (fixed,) = payloads("fixed", 100)
    assert len(fixed) == 100
    pool = payloads("random", 100)
    # More distinct values than a 256 KiB batch holds: a batch never repeats one.
    assert len(set(pool)) == len(pool) > 256 * 1024 // 100
    assert {len(v) for v in payloads("text", 20)} == {20}
    with pytest.raises(ValueError, match="unknown payload"):
        payloads("zeros", 10)


@pytest.mark.parametrize(
    ("mode", "count", "rate", "at_least_s"),
    [
        # 4 clients at 250/s each: a client's 100th record is due at 99/250 s.
        ("--single", 400, 1000.0, 0.39),
        # 4 producers at 500/s each, paced per 256 sends: the second chunk is due at 0.512 s.
        ("--batch", 2000, 2000.0, 0.5),
    ],
)
def test_bench_rate_paces_the_offered_load(
    sync_fake: FakeCluster, mode: str, count: int, rate: float, at_least_s: float
):
    args = ["bench", "produce", "--topic", "t", "--count", str(count), "--concurrency", "4"]
    result = run([*args, "--rate", str(rate), mode, "--json", *boot(sync_fake)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["records"] == count and report["errors"] == 0
    assert report["config"]["rate"] == rate
    assert report["elapsed_s"] >= at_least_s  # unpaced, the fake takes a few ms


def test_bench_consume_reads_what_it_filled(sync_fake: FakeCluster):
    result = run(
        [
            "bench",
            "consume",
            "--topic",
            "t",
            "--count",
            "1000",
            "--record-size",
            "20",
            "--json",
            *boot(sync_fake),
        ]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["records"] == 1000
    assert report["bytes"] == 20_000


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UnknownTopicError("nope"), 1),
        (ClusterUnreachableError("down"), 3),
        (ConnectionLostError("dropped"), 3),
        (ExceptionGroup("nursery", [UnknownTopicError("nested")]), 1),
    ],
)
def test_run_client_maps_errors_to_exit_codes(error: BaseException, code: int):
    def body() -> None:
        raise error

    with pytest.raises(click.exceptions.Exit) as info:
        run_client(body)
    assert info.value.exit_code == code


def test_run_client_returns_the_async_result():
    async def body() -> int:
        return 42

    assert run_client(body) == 42


def test_consume_follow_waits_for_new_records(sync_fake: FakeCluster):
    def produce_when_polled() -> None:
        # Wait (bounded) until the consumer long-polls, then produce two lines.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(op == "fetch" and f.get("max_wait_ms") for _n, op, f in sync_fake.requests):
                break
            time.sleep(0.01)
        with Client(sync_fake.bootstrap()) as client:
            client.produce("t", b"late-1", partition=0)
            client.produce("t", b"late-2", partition=0)

    producer = threading.Thread(target=produce_when_polled)
    producer.start()
    try:
        result = run(
            ["consume", "t", "--partition", "0", "--follow", "--max", "2", *boot(sync_fake)]
        )
    finally:
        producer.join(15)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["late-1", "late-2"]


def test_bench_consume_reads_count_records_not_everything(sync_fake: FakeCluster):
    with Client(sync_fake.bootstrap()) as client:
        for p in (0, 1):
            client.produce_batch("t", p, [b"r%d" % i for i in range(15)])
    result = run(
        [
            "bench",
            "consume",
            "--topic",
            "t",
            "--count",
            "10",
            "--no-fill",
            "--json",
            *boot(sync_fake),
        ]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["records"] == 10


def test_run_client_treats_a_closed_stdout_as_done():
    def body() -> None:
        raise BrokenPipeError("reader went away")

    with pytest.raises(click.exceptions.Exit) as info:
        run_client(body)
    assert info.value.exit_code == 0


def test_topic_max_message_bytes_is_set_and_removed(sync_fake: FakeCluster):
    args = ["topic", "create", "capped", "--replicas", "2", "--max-message-bytes", "4096"]
    created = run([*args, *boot(sync_fake)])
    assert created.exit_code == 0, created.output
    assert sync_fake.topics["capped"]["config"] == {"max_message_bytes": 4096}
    run(["topic", "alter", "capped", "--max-message-bytes", "0", *boot(sync_fake)])
    asked = [f["config"] for _, op, f in sync_fake.requests if op == "alter_topic"]
    assert asked == [{"max_message_bytes": None}]  # 0 removes the topic's limit
    zero = CliRunner().invoke(
        main, ["topic", "create", "c2", "--max-message-bytes", "0", *boot(sync_fake)]
    )
    assert zero.exit_code == 2 and "max-message-bytes" in zero.output
