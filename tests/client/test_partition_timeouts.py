"""What a timed-out request changes in the client's routing (client/aio.py).

A node that answered other requests while one timed out is alive: only that
request's partition is routed elsewhere (its leader may be cut off from that
group's quorum). A node that answered nothing is forgotten whole, for every
partition it leads (paused or dead). Three fake nodes; n2 leads everything.
"""

from __future__ import annotations

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import RequestTimeoutError

from .conftest import start_fake
from .fake_server import FakeCluster


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeCluster:
    cluster = await start_fake(nursery, nodes=3)
    cluster.add_topic("t", partitions=2)
    return cluster


def produces_since(fake: FakeCluster, mark: int) -> list[tuple[str, int]]:
    """(node, partition) of every produce request the nodes got after ``mark``."""
    return [(node, f["partition"]) for node, op, f in fake.requests[mark:] if op == "produce"]


async def test_a_partition_timing_out_at_a_node_that_answers_others_keeps_their_routes(
    fake: FakeCluster,
) -> None:
    # Time for two attempts: an idempotent attempt lasts at least ATTEMPT_MIN (2 s).
    async with AsyncClient(fake.bootstrap(), request_timeout=4.5) as client:
        await client.metadata()  # every partition's leader known: n2
        for partition in (0, 1):
            await client.produce("t", b"warm", partition=partition)
        mark = len(fake.requests)
        fake.blackhole_partitions.add(("t", 0))
        stuck_done = trio.Event()

        async def stuck() -> None:
            with pytest.raises(RequestTimeoutError):
                await client.produce("t", b"stuck", partition=0)
            stuck_done.set()

        flowing = 0
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stuck)
                while not stuck_done.is_set():  # partition 1 keeps producing meanwhile
                    await client.produce("t", b"flowing", partition=1)
                    flowing += 1
                    with trio.move_on_after(0.02):
                        await stuck_done.wait()

    sent = produces_since(fake, mark)
    assert flowing >= 5
    # Partition 1 never left its leader: no detour through n1 or n3.
    assert [node for node, p in sent if p == 1] == ["n2"] * flowing
    # Partition 0 was tried elsewhere after its first timeout (and redirected back).
    assert {node for node, p in sent if p == 0} > {"n2"}
    assert fake.values("t", 1)[-flowing:] == [b"flowing"] * flowing


async def test_a_timeout_at_a_node_that_answers_nothing_forgets_its_other_partitions(
    fake: FakeCluster,
) -> None:
    async with AsyncClient(fake.bootstrap(), request_timeout=0.6) as client:
        await client.metadata()
        for partition in (0, 1):
            await client.produce("t", b"warm", partition=partition)
        fake.blackhole_nodes.add("n2")  # paused: nothing comes back from it at all
        with trio.fail_after(10), pytest.raises(RequestTimeoutError):
            await client.produce("t", b"stuck", partition=0)
        fake.blackhole_nodes.clear()
        mark = len(fake.requests)
        await client.produce("t", b"after", partition=1)

    sent = produces_since(fake, mark)
    assert sent[0][0] != "n2"  # its route was forgotten with the node's
    assert sent[-1] == ("n2", 1)  # and found again by a redirect


@pytest.mark.parametrize("request_timeout", [4.5, 2.0])  # several attempts, or a single one
async def test_a_sequential_client_probes_a_node_before_forgetting_it(
    fake: FakeCluster, request_timeout: float
) -> None:
    # Nothing else is in flight when partition 0's produce times out, so only
    # the probe can tell that n2 is alive: partition 1 keeps its route. Even
    # the call's last attempt leaves the probe its time.
    async with AsyncClient(fake.bootstrap(), request_timeout=request_timeout) as client:
        await client.metadata()
        for partition in (0, 1):
            await client.produce("t", b"warm", partition=partition)
        fake.blackhole_partitions.add(("t", 0))
        with trio.fail_after(10), pytest.raises(RequestTimeoutError):
            await client.produce("t", b"stuck", partition=0)
        probes = [f for node, op, f in fake.requests if op == "metadata" and node == "n2"]
        assert probes[-1].get("consistency") == "serializable"
        mark = len(fake.requests)
        await client.produce("t", b"after", partition=1)

    assert produces_since(fake, mark) == [("n2", 1)]  # straight to its leader
