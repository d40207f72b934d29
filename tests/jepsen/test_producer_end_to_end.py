"""The batching Producer under real faults: node processes on 127.0.0.1.

Batches of several records, several in flight per partition, retried across
kills and partitions, and split when the limit nemesis lowers the topic's
max_message_bytes under them, some compressed, some keyed, one producer
without idempotence: every checker stage must pass, including
producer-reorder (one idempotent producer's records in its sending order) and
wrong-partition (keyed records where the key partitioner says).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from raftlog.jepsen.runner import RunOptions, run

from .test_end_to_end import assert_replicas_agree, ok_count

pytestmark = pytest.mark.integration


def nemesis_values(run_dir: Path, f: str) -> list[dict]:
    out = []
    for line in (run_dir / "history.jsonl").read_text().splitlines():
        op = json.loads(line)
        if op["process"] == "nemesis" and op["f"] == f:
            out.append(op["value"])
    return out


async def test_batching_producers_under_kill_partition_and_lowered_limits_are_valid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="raftlog.client.aio")
    opts = RunOptions(
        out=tmp_path / "run",
        nodes=3,
        workload="producer",
        nemesis=["limit", "kill", "partition"],
        time_limit=20,
        nemesis_interval=2.5,
        concurrency=6,
        seed=1,
        recovery=3,
        quiet=1,
    )
    results = await run(opts)
    assert results["valid"], {k: results[k] for k in ("log", "notes", "liveness")}
    assert results["log"]["counts"] == {}  # not even an informational anomaly
    assert results["linearizability"]["verdict"] == "linearizable"
    assert ok_count(results, "send") > 1000 and ok_count(results, "drain") == opts.partitions
    # The producers batched: more than one record per produce request on average.
    assert results["producer"]["records_per_batch"] > 1.5
    # Three producers: plain; zstd batches of keyed records (their partitions
    # checked by wrong-partition); lz4 batches from a client without idempotence.
    assert results["producer"]["profiles"] == {
        "p0": "none/partition/idempotent",
        "p1": "zstd/keyed/idempotent",
        "p2": "lz4/partition/not-idempotent",
    }
    # A limit was lowered under them (seed 1 starts with it), and batches sealed
    # under the old one were refused and split in place.
    lowered = [v for v in nemesis_values(tmp_path / "run", "start-limit") if "error" not in v]
    assert lowered, nemesis_values(tmp_path / "run", "start-limit")
    assert "event=batch_resplit" in caplog.text
    assert_replicas_agree(results, opts)
