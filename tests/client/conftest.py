"""Fixtures: a fake two-node cluster on 127.0.0.1 whose leader is NOT the first node."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
