"""Fixtures: a fake two-node cluster on 127.0.0.1 whose leader is NOT the first node."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator

import pytest
import trio

from .fake_server import FakeCluster, FakeNode


async def start_fake(nursery: trio.Nursery, nodes: int = 2, leader: str = "n2") -> FakeCluster:
    cluster = FakeCluster(leader=leader)
    for i in range(1, nodes + 1):
        await nursery.start(FakeNode(cluster, f"n{i}").serve)
    return cluster


@pytest.fixture
async def fake(nursery: trio.Nursery) -> AsyncIterator[FakeCluster]:
    # The leader is n2 while clients bootstrap from n1 first: every first
    # request is redirected. The pytest-trio nursery cancels the servers.
    cluster = await start_fake(nursery)
    cluster.add_topic("t", partitions=2)
    yield cluster


@pytest.fixture
def sync_fake() -> Iterator[FakeCluster]:
    """A fake cluster on its own trio loop in a thread (the test itself is blocking)."""
    box: dict[str, object] = {}
    ready = threading.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            box["cluster"] = await start_fake(nursery)
            box["cluster"].add_topic("t", partitions=2)
            box["token"] = trio.lowlevel.current_trio_token()
            box["stop"] = trio.Event()
            ready.set()
            await box["stop"].wait()
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield box["cluster"]  # type: ignore[misc]
    finally:
        trio.from_thread.run_sync(box["stop"].set, trio_token=box["token"])
        thread.join(10)
