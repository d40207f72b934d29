"""Controlled shutdown: a node stopped with SIGTERM first hands the groups it
leads to other voters (thesis §3.10 leadership transfer), so the cluster does
not wait an election timeout for new leaders. Real `raftlog node start`
processes on 127.0.0.1 (tests/server/cluster_harness.py)."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from raftlog.client.sync import Client

from .cluster_harness import LocalCluster

pytestmark = pytest.mark.integration

WAIT_S = 20.0
TOPIC = "cs"


@pytest.fixture
def cluster(local_cluster: Callable[..., LocalCluster]) -> Iterator[LocalCluster]:
    c = local_cluster(3, env={"RAFTLOG_DEBUG": "1"})
    c.start_all()
    c.wait_for_leaders(deadline=WAIT_S)
    yield c  # the local_cluster fixture stops every process, also on failure


def group_view(cluster: LocalCluster, node_id: str, gid: int) -> dict[str, Any]:
    for group in cluster.status(node_id)["groups"]:
        if group["group"] == gid:
            return group
    raise AssertionError(f"{node_id} does not host group {gid}")


def wait_for_leader(cluster: LocalCluster, gid: int, exclude: str = "") -> tuple[str, int]:
    """(leader, term) of ``gid`` per a running node that leads it, not ``exclude``."""
    end = time.monotonic() + WAIT_S
    while True:
        for node_id in cluster.running():
            if node_id == exclude:
                continue
            view = group_view(cluster, node_id, gid)
            if view["role"] == "leader":
                return node_id, view["term"]
        if time.monotonic() >= end:
            raise AssertionError(f"no leader of group {gid} within {WAIT_S}s")
        time.sleep(0.02)


def read_all(client: Client, topic: str) -> list[bytes]:
    out: list[bytes] = []
    offset = 0
    for _ in range(1_000):
        result = client.fetch(topic, 0, offset)
        if not result.records:
            break
        out += [r.value for r in result.records]
        offset = result.next_offset(offset)
    return out


def test_sigterm_hands_leadership_over_before_stopping(cluster: LocalCluster) -> None:
    with Client(cluster.addresses(), request_timeout=WAIT_S) as client:
        client.create_topic(TOPIC, partitions=1, replicas=3)
        gid = int(client.describe_topic(TOPIC)["partitions"][0]["group"])
        acked = [b"before"]
        client.produce(TOPIC, acked[0], partition=0)
        leader, term = wait_for_leader(cluster, gid)

        assert cluster.terminate(leader) == 0
        old_log = cluster.log_text(leader)
        assert "Traceback" not in old_log
        summary = re.search(
            r"event=shutdown_leadership_handed_over node=(\w+) groups=(\d+) moved=(\d+)", old_log
        )
        assert summary, f"no hand-over line in {leader}'s log:\n{cluster.tail(leader)}"
        assert summary.group(1) == leader
        groups, moved = int(summary.group(2)), int(summary.group(3))
        assert groups >= 1 and moved == groups, summary.group(0)
        transfer = re.search(
            rf"event=shutdown_transfer group={gid} to=(\w+) term={term}\b", old_log
        )
        assert transfer, f"{leader} did not transfer group {gid}:\n{cluster.tail(leader)}"
        target = transfer.group(1)

        # The target took office through TimeoutNow (no election timeout ran
        # out), in the very next term.
        new_leader, new_term = wait_for_leader(cluster, gid, exclude=leader)
        assert (new_leader, new_term) == (target, term + 1)
        target_log = cluster.log_text(target)
        assert re.search(rf"event=timeout_now id={target} from={leader} term={term}\b", target_log)
        assert re.search(
            rf"event=role_change group={gid} .*role=LEADER leader={target} term={term + 1}\b",
            target_log,
        )

        for i in range(20):
            value = f"after{i}".encode()
            client.produce(TOPIC, value, partition=0)
            acked.append(value)
        assert read_all(client, TOPIC) == acked


def test_a_hand_over_that_cannot_finish_does_not_hold_the_stop(cluster: LocalCluster) -> None:
    """Both followers paused: no transfer can complete. The stopping leader gives
    up once they stop looking alive (or at its bound), a second SIGTERM during
    the hand-over is not swallowed, and the node still closes its store."""
    leader, _ = wait_for_leader(cluster, 0)
    for node_id in cluster.node_ids():
        if node_id != leader:
            cluster.pause(node_id)
    proc = cluster.procs[leader]
    offset = len(cluster.log_text(leader))
    proc.send_signal(signal.SIGTERM)
    # The second signal goes out once the hand-over is known to be under way.
    deadline = time.monotonic() + WAIT_S
    while "event=shutdown_transfer" not in cluster.log_text(leader)[offset:]:
        assert time.monotonic() < deadline, f"no hand-over started:\n{cluster.tail(leader)}"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    # Exit 0, or killed by the redelivered second SIGTERM after the clean stop.
    assert proc.wait(timeout=WAIT_S) in (0, -signal.SIGTERM)
    stopped = cluster.log_text(leader)[offset:]
    assert re.search(
        rf"event=shutdown_leadership_handed_over node={leader} groups=\d+ moved=0", stopped
    )
    assert f"event=node_stopped node={leader}" in stopped  # the store was closed
    assert "Traceback" not in stopped
