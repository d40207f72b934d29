"""Serializable reads through the client library and the CLI, over real sockets.

The trade they offer: with two of three nodes gone, a linearizable read has no
leader to ask, while a serializable read still returns every record the
survivor holds, at the same offsets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer
from raftlog.client.errors import NotAvailableError, NotLeaderError, RequestTimeoutError
from raftlog.client.models import PartitionMeta
from raftlog.client.replica_reads import replica_order
from raftlog.server.cli import main as cli_main

from .cluster_harness import make_config
from .test_tls_cluster import DEADLINE_S, FAST, running

VALUES = [f"v{i}".encode() for i in range(5)]


def test_replica_order_prefers_then_sticks_then_spreads_and_tries_suspects_last() -> None:
    pmeta = PartitionMeta(partition=0, replicas=["n3", "n1", "n2"])

    def order(client_id: str = "c", prefer=None, last=None, suspects=()) -> list[str]:
        return replica_order(pmeta, topic="t", client_id=client_id, prefer=prefer, last=last,
                             suspects=set(suspects))  # fmt: skip

    assert sorted(order()) == ["n1", "n2", "n3"]
    # Different clients start at different replicas (a hash of id and partition).
    assert len({order(f"client-{i}")[0] for i in range(30)}) == 3
    assert order(last="n2")[0] == "n2"
    assert order(prefer="n3", last="n2")[:2] == ["n3", "n2"]
    assert order(prefer="n9")[0] != "n9" and "n9" not in order(prefer="n9")
    assert order(prefer="n3", suspects=["n3"])[-1] == "n3"
    assert replica_order(PartitionMeta(partition=0), topic="t", client_id="c", prefer=None,
                         last=None, suspects=set()) == []  # fmt: skip


def test_the_client_refuses_an_unknown_consistency() -> None:
    with pytest.raises(ValueError, match="consistency"):
        Consumer(AsyncClient("127.0.0.1:1"), None, "t", [0], consistency="eventual")


async def test_with_two_of_three_nodes_gone_serializable_reads_still_answer(tmp_path: Path):
    cfg = make_config(tmp_path, 3, **FAST)
    addresses = [n.address for n in cfg.nodes]
    async with running(cfg) as nodes:
        with trio.fail_after(DEADLINE_S):
            async with AsyncClient(addresses, request_timeout=3.0) as client:
                await client.create_topic("t", partitions=1, replicas=3)
                for value in VALUES:
                    await client.produce("t", value, partition=0)
                # A follower preferred: it answers, and the client sticks to it.
                leader = (await client.describe_topic("t"))["partitions"][0]["leader"]
                follower = next(n for n in ("n1", "n2", "n3") if n != leader)
                client.prefer_replica = follower
                # Not read-your-writes: the follower may not know the last record
                # is committed yet, so read on from its end with long polls.
                got: list[bytes] = []
                while len(got) < len(VALUES):
                    res = await client.fetch("t", 0, len(got), consistency="serializable",
                                             max_wait=1.0)  # fmt: skip
                    got.extend(r.value for r in res.records)
                assert got == VALUES
                assert client._read_replicas[("t", 0)] == follower

                survivor = follower
                for node in ("n1", "n2", "n3"):
                    if node != survivor:
                        await nodes.stop(node)
                # No quorum: the linearizable read has no leader to answer it.
                with pytest.raises((NotLeaderError, NotAvailableError, RequestTimeoutError)):
                    await client.fetch("t", 0, 0)
                # The survivor still serves its committed copy.
                res = await client.fetch("t", 0, 0, consistency="serializable")
                assert [(r.offset, r.value) for r in res.records] == list(enumerate(VALUES))
                offsets = await client.list_offsets("t", 0, consistency="serializable")
                assert (offsets.start_offset, offsets.end_offset) == (0, len(VALUES))
                reader = Consumer(client, None, "t", [0], consistency="serializable",
                                  max_wait=0.0)  # fmt: skip
                await reader.start()
                got = [r.value for _, r in await reader.poll()]
                assert got == VALUES and reader.at_end()

                def consume(*args: str) -> object:
                    survivor_address = cfg.node(survivor).address
                    return CliRunner().invoke(cli_main, [
                        "consume", "t", "--bootstrap", survivor_address, "--timeout", "5",
                        *args,
                    ])  # fmt: skip

                out = await trio.to_thread.run_sync(
                    consume, "--consistency", "serializable", "--from-beginning"
                )
                assert out.exit_code == 0, out.output
                assert out.stdout.splitlines() == [v.decode() for v in VALUES]
                misuse = await trio.to_thread.run_sync(consume, "--prefer-replica", "n1")
                assert misuse.exit_code == 2 and "--consistency serializable" in misuse.output
