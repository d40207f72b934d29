"""Anomalies the membership nemesis found, kept as evidence and reproductions.

``data/membership-rejoin-unknown-topic.jsonl`` is an excerpt (every op that
touches the values involved) of ``raftlog jepsen run --nodes 3 --nemesis
kill,membership --time-limit 40 --seed 1``: node n1 had been removed, wiped
and restarted with ``join = true`` to be added back. Clients still knew its
address (a removed node stays registered), and n1, with no metadata yet,
answered ``UNKNOWN_TOPIC`` for the existing topic. An idempotent produce of
value 1536 whose earlier attempt had reached the real leader was then
reported to the application as ``UNKNOWN_TOPIC`` (a definite failure) at
30.93 s, although another client had already READ it at offset 520 at 29.72 s:
an acknowledged-as-failed write that took effect (aborted read).

Fixed in server/handlers.py (``_meta_sync``): a node that cannot confirm its
metadata is current answers NOT_AVAILABLE (retriable, no effect) instead of
answering from stale local state. The joining-node test below is the
regression test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from raftlog.client.connection import Connection
from raftlog.client.errors import ErrorCode, RaftlogError
from raftlog.jepsen import checker_log
from raftlog.jepsen.cluster import ClusterSettings, JepsenCluster
from raftlog.jepsen.history import load
from raftlog.jepsen.workload import TOPIC

DATA = Path(__file__).parent / "data"


def test_rejoin_history_excerpt_shows_a_failed_send_that_was_read() -> None:
    ops = load(DATA / "membership-rejoin-unknown-topic.jsonl")
    result = checker_log.check(ops)
    assert not result.valid
    assert set(result.to_dict()["anomaly_types"]) == {"aborted-read"}
    (anomaly,) = result.to_dict()["anomalies"]["aborted-read"]
    send, read = anomaly["ops"]
    assert send["error"].startswith("UNKNOWN_TOPIC") and send["invoke"]["value"] == 1536
    # The value was read before the client was told its send failed.
    assert read["complete_ns"] < send["complete_ns"]


@pytest.fixture
async def joining_node(tmp_path: Path) -> AsyncIterator[JepsenCluster]:
    cluster = JepsenCluster(tmp_path, ClusterSettings(nodes=3, spares=1, proxied=False,
                                                      fsync=False))
    try:
        await cluster.prepare()
        await cluster.start_all()
        await cluster.wait_for_topic(TOPIC, partitions=1, replicas=3)
        cluster.start("n4")  # join = true, not added: it has no metadata
        await cluster.wait_started("n4")
        yield cluster
    finally:
        cluster.stop_all()


@pytest.mark.integration
async def test_a_joining_node_does_not_deny_an_existing_topic(
        joining_node: JepsenCluster) -> None:
    async with trio.open_nursery() as nursery:
        conn = await Connection.open(nursery, joining_node.address("n4"), client_id="probe")
        try:
            await conn.request("list_offsets", {"topic": TOPIC, "partition": 0}, budget=10.0)
            code = None
        except RaftlogError as exc:
            code = exc.code
        conn.close()
        nursery.cancel_scope.cancel()
    assert code is not ErrorCode.UNKNOWN_TOPIC
