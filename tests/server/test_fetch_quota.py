"""``fetch_bytes_per_sec`` (Kafka's consumer_byte_rate) on one in-process node
over real sockets on 127.0.0.1: a fetch is cut to the user's byte balance, the
next one is refused THROTTLED (retry_after_ms) while the balance is in debt,
and a client that honours the wait reads everything at about the rate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from raftlog.client.users import generate_token
from raftlog.server.acl import User
from raftlog.server.config import AuthConfig, ClusterConfig

from .cluster_harness import make_config
from .rawclient import RawConn
from .test_acl_cluster import client
from .test_tls_cluster import DEADLINE_S, FAST, Nodes

OPS = User("ops", "tok-ops", read=("*",), write=("*",), admin=("*",), groups=("*",), cluster=True)
RECORD = b"r" * 1000
RECORDS = 12
RATE = 3000.0


@asynccontextmanager
async def reader_of_events(tmp_path: Path) -> AsyncIterator[tuple[ClusterConfig, str]]:
    """One node holding RECORDS one-record batches in ``events``, and the token
    of a user who may read them at RATE bytes a second; within DEADLINE_S, and
    the node stops on exit."""
    cfg = make_config(tmp_path, 1, **FAST, auth=AuthConfig(peer_token="p", users=(OPS,)))
    token = generate_token()
    async with trio.open_nursery() as nursery:
        await Nodes(cfg, nursery).start("n1")
        with trio.fail_after(DEADLINE_S):
            async with client(cfg, OPS.token) as ops:
                await ops.create_topic("events", partitions=1, replicas=1)
                for _ in range(RECORDS):  # one batch each
                    await ops.produce("events", RECORD, partition=0)
                await ops.create_user(
                    "reader", token=token, read=["events"], fetch_bytes_per_sec=RATE
                )
            yield cfg, token
        nursery.cancel_scope.cancel()


async def test_a_users_fetches_are_cut_to_its_balance_and_throttled_in_debt(
    tmp_path: Path,
) -> None:
    async with reader_of_events(tmp_path) as (cfg, token):
        raw = await RawConn.open(cfg.nodes[0].port)
        assert (await raw.hello("client", "r1", credential=token))["type"] == "hello_ok"
        fetch = {"topic": "events", "partition": 0, "offset": 0, "max_bytes": 1 << 20}
        first = await raw.request(1, "fetch", **fetch)
        assert first["ok"] is True, first
        fetched = sum(len(batch[3]) for batch in first["batches"])
        # Asked for 1 MiB, served about one second's worth (whole batches).
        assert 0 < fetched <= RATE + len(RECORD) + 200
        assert len(first["batches"]) < RECORDS
        second = await raw.request(2, "fetch", **{**fetch, "offset": len(first["batches"])})
        if second["ok"]:  # the first reply left the bucket exactly empty, not in debt
            second = await raw.request(3, "fetch", **fetch)
        assert second["error"] == "THROTTLED", second
        assert "fetch_bytes_per_sec" in second["message"] and second["retry_after_ms"] > 0
        await raw.aclose()

        # The client library waits as told and reads on: everything, in order,
        # and no faster than the rate allows after a full bucket (a lower
        # bound: a slow machine only makes it longer).
        values: list[bytes] = []
        started = trio.current_time()
        async with client(cfg, token) as reader:
            while len(values) < RECORDS:
                got = await reader.fetch("events", 0, len(values), max_wait=0)
                values += [r.value for r in got.records]
        assert values == [RECORD] * RECORDS
        allowed_at_once = RATE + 2 * len(RECORD)  # a burst, and a batch over it
        least_s = (RECORDS * len(RECORD) - allowed_at_once) / RATE
        assert trio.current_time() - started >= least_s * 0.95


async def test_pipelined_fetches_share_the_balance_and_a_failed_one_gives_it_back(
    tmp_path: Path,
) -> None:
    """Two fetches sent back to back are in flight together: the second may read
    only what the first did not reserve (its first batch), where each used to be
    given the whole balance. A fetch that fails reads nothing and is charged
    nothing: the next one gets the whole balance."""
    async with reader_of_events(tmp_path) as (cfg, token):
        raw = await RawConn.open(cfg.nodes[0].port)
        assert (await raw.hello("client", "r1", credential=token))["type"] == "hello_ok"
        # Fails after its admission (the partition does not exist).
        missing = await raw.request(
            1, "fetch", topic="events", partition=7, offset=0, max_bytes=1 << 20
        )
        assert missing["ok"] is False and missing["error"] != "THROTTLED", missing
        fetch = {"topic": "events", "partition": 0, "offset": 0, "max_bytes": 1 << 20}
        await raw.send({"type": "fetch", "id": 2, **fetch})
        await raw.send({"type": "fetch", "id": 3, **fetch})
        replies = {reply["id"]: reply for reply in [await raw.recv(), await raw.recv()]}
        first, second = replies[2], replies[3]
        assert first["ok"] is True and second["ok"] is True, replies
        # The failed fetch left the balance whole: the first got a second's worth.
        assert len(first["batches"]) >= RATE // (len(RECORD) + 200)
        assert len(second["batches"]) == 1  # its first batch, nothing more
        await raw.aclose()
