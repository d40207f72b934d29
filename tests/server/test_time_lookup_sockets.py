"""Lookups by time over real sockets: ``list_offsets`` with ``timestamp_ms`` on a
three-node cluster, linearizable and serializable, and its bad input.

The oracle is the records themselves: every record fetched carries its batch's
append stamp, and the lookup must name the first offset whose stamp is at or
after the time asked for.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import InvalidRequestError, UnknownTopicError
from raftlog.client.models import OffsetAndTimestamp
from raftlog.server.cli_time import now_ms

from .cluster_harness import make_config
from .test_tls_cluster import DEADLINE_S, FAST, running


async def _produce_after_the_last_stamp(client: AsyncClient, last_stamp: int, value: bytes) -> None:
    """Produce once the wall clock has passed ``last_stamp``, so each batch gets a
    stamp of its own (the leader stamps at append, from this machine's clock)."""
    while True:
        if now_ms() > last_stamp:
            break
        await trio.sleep(0.001)
    await client.produce_batch("t", 0, [value, value + b"'"])


def _expected(stamps: list[tuple[int, int]], at: int) -> OffsetAndTimestamp | None:
    found = next(((o, ts) for o, ts in stamps if ts >= at), None)
    return None if found is None else OffsetAndTimestamp(*found)


async def test_lookups_by_time_match_the_stamps_of_the_records(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 3, **FAST)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient([n.address for n in cfg.nodes], request_timeout=3.0) as client:
                await client.create_topic("t", partitions=2, replicas=3)
                last = 0
                for value in (b"a", b"b", b"c", b"d"):
                    await _produce_after_the_last_stamp(client, last, value)
                    records = (await client.fetch("t", 0, 0)).records
                    last = records[-1].timestamp_ms
                stamps = [(r.offset, r.timestamp_ms) for r in records]
                assert len({ts for _o, ts in stamps}) == 4  # four batches, four stamps
                probes = sorted({0, *(ts + d for _o, ts in stamps for d in (-1, 0, 1))})
                for at in probes:
                    assert await client.offset_for_time("t", 0, at) == _expected(stamps, at), at
                assert await client.offsets_for_time("t", stamps[2][1]) == {
                    0: OffsetAndTimestamp(2, stamps[2][1]),
                    1: None,  # empty
                }

                # Serializable: a follower's own copy gives the same answers once it
                # has applied everything (it may lag: wait for that, bounded).
                leader = (await client.describe_topic("t"))["partitions"][0]["leader"]
                client.prefer_replica = next(n.id for n in cfg.nodes if n.id != leader)
                while True:
                    ends = await client.list_offsets("t", 0, consistency="serializable")
                    if ends.end_offset == len(stamps):
                        break
                    await trio.sleep(0.01)
                for at in probes:
                    got = await client.offset_for_time("t", 0, at, consistency="serializable")
                    assert got == _expected(stamps, at), at


async def test_bad_lookups_are_refused_and_the_node_keeps_serving(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 3, **FAST)
    async with running(cfg):
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient([n.address for n in cfg.nodes], request_timeout=3.0) as client:
                await client.create_topic("t", partitions=1, replicas=3)
                await client.produce("t", b"v", partition=0)
                fields = {"topic": "t", "partition": 0}
                with pytest.raises(InvalidRequestError, match=">= 0"):
                    await client.request("list_offsets", idempotent=True, **fields,
                                         timestamp_ms=-5)  # fmt: skip
                with pytest.raises(InvalidRequestError, match="timestamp_ms"):
                    await client.request("list_offsets", idempotent=True, **fields,
                                         timestamp_ms="yesterday")  # fmt: skip
                with pytest.raises(UnknownTopicError):
                    await client.offset_for_time("nope", 0, 0)
                # Still serving, and a plain list_offsets carries no lookup fields.
                reply = await client.request("list_offsets", idempotent=True, **fields)
                assert reply["end_offset"] == 1 and "offset" not in reply
                found = await client.offset_for_time("t", 0, 0)
                assert found is not None and found.offset == 0
