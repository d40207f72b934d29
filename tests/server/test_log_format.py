"""The cluster's log format (log/features.py, server/log_format.py) on three real
nodes over sockets: it rises only once every node reads the new format, what
was committed before it rose stays in the old form, and a node that reads
less than the cluster writes is refused by its peers, with a reason."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.log.features import BASELINE_LOG_FORMAT, LOG_FORMAT
from raftlog.server.cli_node import gather_status, log_format_line
from raftlog.server.config import ClusterConfig, RetentionConfig
from raftlog.server.log_format import LogFormats

from .cluster_harness import make_config
from .test_tls_cluster import DEADLINE_S, FAST, running

RETENTION_MS = 500
pytestmark = pytest.mark.skipif(LOG_FORMAT < 2, reason="one log format only")


async def statuses(cfg: ClusterConfig, credential: str | None = None) -> dict[str, Any]:
    addresses = [n.address for n in cfg.nodes]
    return await trio.to_thread.run_sync(
        lambda: gather_status(addresses, timeout_s=2.0, credential=credential)
    )


async def wait_cluster_format(
    cfg: ClusterConfig, want: int, credential: str | None = None
) -> dict[str, Any]:
    """Until every node's metadata has the cluster at format ``want``; the statuses.
    ``credential``: an operator's token, for a cluster with ``[auth]``."""
    while True:
        got = await statuses(cfg, credential)
        formats = [s.get("log_format", {}).get("cluster") for s in got.values()]
        if formats == [want] * len(cfg.nodes):
            return got
        await trio.sleep(0.05)


async def wait_logged(caplog: pytest.LogCaptureFixture, *parts: str) -> None:
    while True:
        if any(all(p in r.getMessage() for p in parts) for r in caplog.records):
            return
        await trio.sleep(0.02)


async def test_the_format_waits_for_every_node_and_then_stamps_commits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    retention = RetentionConfig(interval_ms=50, offsets_retention_ms=RETENTION_MS)
    cfg = make_config(tmp_path, 3, retention=retention, **FAST)
    held = replace(cfg, max_log_format=BASELINE_LOG_FORMAT)  # n3 mid rolling upgrade
    caplog.set_level(logging.INFO, logger="raftlog.log_format")
    async with running(cfg, {"n3": held}) as nodes:
        with trio.fail_after(DEADLINE_S):
            # The controller (whichever node it is) sees the upgrade under way,
            # every node linked, and waits for n3.
            await wait_logged(
                caplog, "event=log_format_upgrade_waits", "cluster=1", "no_link_from=-",
                f"n1:{LOG_FORMAT}", f"n2:{LOG_FORMAT}", "n3:1",
            )  # fmt: skip
            got = await wait_cluster_format(cfg, BASELINE_LOG_FORMAT)
            line = log_format_line(got)
            assert line == f"log format 1 (nodes read: n1 {LOG_FORMAT}, n2 {LOG_FORMAT}, n3 1)"
            async with AsyncClient([n.address for n in cfg.nodes]) as client:
                await client.create_topic("events", partitions=1, replicas=3)
                # Committed by hand under the old format: no commit time.
                await client.commit_offset("before", "events", 0, 1)

                # n3 upgraded: the format rises on every node.
                await nodes.stop("n3")
                await nodes.start("n3")
                await wait_cluster_format(cfg, LOG_FORMAT)
                await client.commit_offset("after", "events", 0, 2)
                committed_at = time.monotonic()
                # A stamped hand-committed offset expires by its commit time; the
                # unstamped one, older, was in every round's view and stays.
                while True:
                    if await client.committed("after", "events", 0) is None:
                        break
                    await trio.sleep(0.02)
                assert time.monotonic() - committed_at >= RETENTION_MS / 1000
                assert await client.committed("before", "events", 0) == 1


async def test_a_node_that_reads_less_than_the_cluster_writes_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_path, 3, **FAST)
    caplog.set_level(logging.INFO)
    async with running(cfg) as nodes:
        with trio.fail_after(DEADLINE_S):
            await wait_cluster_format(cfg, LOG_FORMAT)
            async with AsyncClient([n.address for n in cfg.nodes]) as client:
                await client.create_topic("t", partitions=1, replicas=3)
            # n3 rolled back to a version (here: a config) that reads only format 1.
            await nodes.stop("n3")
            await nodes.start("n3", replace(cfg, max_log_format=BASELINE_LOG_FORMAT))
            await wait_logged(caplog, "event=peer_refused", "peer=n3", "reason=log_format")
            await wait_logged(caplog, "event=log_format_behind", "node_reads=1")
            got = await statuses(cfg)
            line = log_format_line(got)
            assert line is not None
            assert f"WARNING: n3 cannot read log format {LOG_FORMAT}" in line
            # The others, a majority, go on without it.
            async with AsyncClient([n.address for n in cfg.nodes[:2]]) as client:
                assert (await client.produce("t", b"x", partition=0)).offset == 0


def test_a_peer_link_replaced_by_a_reconnect_keeps_the_new_links_format() -> None:
    formats = LogFormats(own=2)
    formats.peer_connected("n2", 1, 2)
    formats.peer_connected("n2", 2, 1)  # n2 restarted on an older version
    formats.peer_gone("n2", 1)  # the old link ends after the new one began
    assert formats.of_peer("n2") == 1
    formats.peer_gone("n2", 2)
    assert formats.of_peer("n2") is None


def test_a_node_without_a_live_link_holds_the_format_at_the_baseline() -> None:
    formats = LogFormats(own=3)
    formats.peer_connected("n2", 7, 2)
    assert formats.readable_by_all(["n1", "n2", "n3"], "n1") == (BASELINE_LOG_FORMAT, ["n3"])
    formats.peer_connected("n3", 8, 3)
    assert formats.readable_by_all(["n1", "n2", "n3"], "n1") == (2, [])
    assert LogFormats(own=2).readable_by_all(["n1"], "n1") == (2, [])


def test_the_status_line_says_what_waits_and_who_is_refused() -> None:
    def status(node: str, cluster: int, reads: int) -> dict[str, Any]:
        return {"node": node, "log_format": {"cluster": cluster, "node": reads, "build": 2}}

    pending = {"a1": status("n1", 1, 2), "a2": status("n2", 1, 2)}
    assert log_format_line(pending) == (
        "log format 1 (nodes read: n1 2, n2 2); rises to 2 once every registered node is "
        "connected"
    )
    behind = {"a1": status("n1", 2, 2), "a2": status("n2", 2, 1), "a3": {"error": "down"}}
    line = log_format_line(behind)
    assert line is not None and line.startswith("log format 2 (nodes read: n1 2, n2 1)")
    assert "WARNING: n2 cannot read log format 2" in line
    assert log_format_line({"a1": {"node": "n1"}}) is None  # a node older than formats
