"""Consumer groups on real node processes: a member that dies by SIGKILL, and
a controller node that dies by SIGKILL.

The in-process tests cover a clean close and a controller transfer; these
cover the paths only a real death takes: a member that stops heartbeating
without leaving is expired after its session timeout, and its partitions go
to the survivor, which reads them from the committed offsets (nothing lost);
and a controller killed under consuming members is replaced by one that
restores the group's persisted generation, so the members keep it and read
every acknowledged record (no rebalance).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from click.testing import CliRunner
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer
from raftlog.client.errors import RaftlogError
from raftlog.client.sync import Client
from raftlog.server.cli import main

from tests.client.test_consumer_group import start_reading

from .cluster_harness import LocalCluster
from .test_group_failover import count_heartbeats
from .test_node_processes import WAIT_S, wait_until

pytestmark = pytest.mark.integration

SESSION_S = 1.0
PARTITIONS = 4
RECORDS_PER_PARTITION = 10

# A member in its own process: joins group "g" and keeps polling (so it
# heartbeats and takes part in rebalances) until it is killed.
MEMBER = """
import sys
from raftlog.client import Client
with Client(sys.argv[1].split(","), request_timeout=30.0) as client:
    consumer = client.consumer("g", "t", session_timeout=float(sys.argv[2]), auto_commit=False)
    print("joined", flush=True)
    while True:
        consumer.poll(0.2)
"""


@pytest.fixture
def cluster(local_cluster: Callable[..., LocalCluster]) -> Iterator[LocalCluster]:
    c = local_cluster(3)
    c.start_all()
    c.wait_for_leaders(deadline=WAIT_S)
    yield c


def topic_with_records(client: Client, per_partition: int) -> None:
    """Topic "t" with ``per_partition`` records "<partition>-<i>" in each partition."""
    client.create_topic("t", partitions=PARTITIONS, replicas=3)
    for p in range(PARTITIONS):
        for i in range(per_partition):
            client.produce("t", f"{p}-{i}".encode(), partition=p)


def assignment(client: Client) -> dict[str, list[int]]:
    view: dict[str, Any] = client.request("group_describe", idempotent=True, group="g")
    return {m["member_id"]: sorted(m["partitions"]) for m in view["members"]}


def test_the_first_group_on_a_fresh_cluster_is_assigned_without_waiting_a_session(
    cluster: LocalCluster,
) -> None:
    # The controller has no record of "fresh", so nobody can own its partitions:
    # the first member must not wait out a session timeout (it used to: ~11 s
    # for the README's first `raftlog consume --group`). A 60 s session makes
    # any such wait overrun the deadline below several times over.
    with Client(cluster.addresses(), request_timeout=30.0) as client:
        topic_with_records(client, 1)
        started = time.monotonic()
        consumer = client.consumer("fresh", "t", session_timeout=60.0, auto_commit=False)
        got: list[bytes] = []
        wait_until(
            lambda: got.extend(r.value for _p, r in consumer.poll(0.2)) or len(got) == PARTITIONS,
            "the first member of a new group to read every partition",
        )
        # A poll blocks in its join until the generation forms, so the bound is
        # checked on the clock, not only by wait_until's deadline.
        assert time.monotonic() - started < 15.0
        assert sorted(got) == [f"{p}-0".encode() for p in range(PARTITIONS)]
        assert consumer.generation == 1
        consumer.close()


def test_a_killed_member_is_expired_and_the_survivor_reads_everything(
    cluster: LocalCluster,
) -> None:
    with Client(cluster.addresses(), request_timeout=30.0) as client:
        topic_with_records(client, RECORDS_PER_PARTITION)
        member = subprocess.Popen(
            [sys.executable, "-c", MEMBER, ",".join(cluster.addresses()), str(SESSION_S)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env,
        )  # fmt: skip
        try:
            assert member.stdout is not None and member.stdout.readline() == "joined\n"
            wait_until(lambda: len(assignment(client)) == 1, "the member process to join")
            seen: list[tuple[int, int]] = []
            with client.consumer("g", "t", session_timeout=SESSION_S) as survivor:

                def split_in_two() -> bool:
                    seen.extend((p, r.offset) for p, r in survivor.poll(0.1))
                    owned = assignment(client)
                    return len(owned) == 2 and all(
                        len(ps) == PARTITIONS // 2 for ps in owned.values()
                    )

                wait_until(split_in_two, "two members with two partitions each")
                member.kill()  # no leave: only the session timeout can free its partitions
                member.wait(timeout=10)

                def owns_all_and_read_all() -> bool:
                    seen.extend((p, r.offset) for p, r in survivor.poll(0.1))
                    owned = list(assignment(client).values())
                    return owned == [list(range(PARTITIONS))] and len(set(seen)) == (
                        PARTITIONS * RECORDS_PER_PARTITION
                    )

                wait_until(owns_all_and_read_all, "the survivor to own and read every partition")
                assert survivor.partitions == list(range(PARTITIONS))
            expected = {(p, i) for p in range(PARTITIONS) for i in range(RECORDS_PER_PARTITION)}
            assert set(seen) == expected  # nothing lost (a re-read after the rebalance is allowed)
        finally:
            member.kill()
            member.wait(timeout=10)


CONTROLLER_SESSION_S = 4.0
TOPIC_PARTITIONS = 3


async def test_a_killed_controller_costs_no_rebalance_and_no_record(
    cluster: LocalCluster,
) -> None:
    bootstrap = cluster.addresses()
    acked: set[tuple[int, int]] = set()
    stop_producing = trio.Event()

    async def produce(client: AsyncClient) -> None:
        i = 0
        while not stop_producing.is_set():
            p = i % TOPIC_PARTITIONS
            try:
                meta = await client.produce("t", b"v%d" % i, partition=p)
                acked.add((p, meta.offset))
            except RaftlogError:
                pass  # outcome unknown: consumed or not, it is not in ``acked``
            i += 1
            await trio.sleep(0.01)

    async with (
        AsyncClient(bootstrap, client_id="p", request_timeout=10.0) as cp,
        AsyncClient(bootstrap, client_id="a", request_timeout=10.0) as ca,
        AsyncClient(bootstrap, client_id="b", request_timeout=10.0) as cb,
        trio.open_nursery() as nursery,
    ):
        await cp.create_topic("t", partitions=TOPIC_PARTITIONS, replicas=3)
        a = Consumer(ca, "g", "t", session_timeout=CONTROLLER_SESSION_S)
        b = Consumer(cb, "g", "t", session_timeout=CONTROLLER_SESSION_S)
        ra, rb = await start_reading(nursery, [a, b], WAIT_S)
        nursery.start_soon(produce, cp)

        def consumed() -> set[tuple[int, int]]:
            return set(ra.got) | set(rb.got)

        await ra.until(
            lambda: a.generation is not None and a.generation == b.generation
            and sorted(a.partitions + b.partitions) == list(range(TOPIC_PARTITIONS))
            and len(acked) >= 30,
            "one generation over both members, records flowing",
        )  # fmt: skip
        before = {m: (c.generation, list(c.partitions), c._epoch) for m, c in (("a", a), ("b", b))}
        controller = (await cp.request("group_describe", group="g"))["coordinator"]
        beats = count_heartbeats(a, b)
        cluster.kill(controller)
        beats.update(a=0, b=0)
        acked_at_kill = len(acked)
        with trio.fail_after(WAIT_S):
            # records keep being produced, and both members heartbeat a new
            # controller twice (each within the session, or they would rejoin)
            while len(acked) < acked_at_kill + 30 or min(beats.values()) < 2:
                await ra.changed.wait()
        stop_producing.set()
        await ra.until(lambda: consumed() >= acked, "every acknowledged record consumed")
        after = {m: (c.generation, list(c.partitions), c._epoch) for m, c in (("a", a), ("b", b))}
        assert after == before  # same generation and partitions, never revoked
        described = await cp.request("group_describe", group="g")
        assert described["coordinator"] != controller
        assert described["generation"] == before["a"][0]
        ra.scope.cancel()
        rb.scope.cancel()
        await a.close()
        await b.close()
        nursery.cancel_scope.cancel()


def test_reset_offsets_commits_through_the_generation_fence(cluster: LocalCluster) -> None:
    # Real partitions refuse commits older than the last generation that
    # committed there: the reset must win them with a newer one.
    with Client(cluster.addresses(), request_timeout=30.0) as client:
        client.create_topic("t", partitions=2, replicas=3)
        for p in range(2):
            client.produce_batch("t", p, [b"x", b"y", b"z"])
        with client.consumer("g", "t") as consumer:

            def drained() -> bool:
                consumer.poll(0.2)
                return consumer.at_end()

            wait_until(drained, "the member to read every record")
        assert [client.committed("g", "t", p) for p in range(2)] == [3, 3]
        args = ["group", "reset-offsets", "g", "--shift-by", "-2", "--execute"]
        result = CliRunner().invoke(main, [*args, "--bootstrap", ",".join(cluster.addresses())])
        assert result.exit_code == 0, result.output
        assert [client.committed("g", "t", p) for p in range(2)] == [1, 1]
        described = client.request("group_describe", idempotent=True, group="g")
        assert described["members"] == [] and described["generation"] == 2
