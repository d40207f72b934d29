"""Consumer groups on real node processes, with a member that dies by SIGKILL.

The in-process tests cover a clean close and a controller change; this one
covers the path only a real death takes: a member that stops heartbeating
without leaving is expired after its session timeout, and its partitions go
to the survivor, which reads them from the committed offsets (nothing lost).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from raftlog.client.sync import Client

from .cluster_harness import LocalCluster
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


def assignment(client: Client) -> dict[str, list[int]]:
    view: dict[str, Any] = client.request("group_describe", idempotent=True, group="g")
    return {m["member_id"]: sorted(m["partitions"]) for m in view["members"]}


def test_a_killed_member_is_expired_and_the_survivor_reads_everything(
    cluster: LocalCluster,
) -> None:
    with Client(cluster.addresses(), request_timeout=30.0) as client:
        client.create_topic("t", partitions=PARTITIONS, replicas=3)
        for p in range(PARTITIONS):
            for i in range(RECORDS_PER_PARTITION):
                client.produce("t", f"{p}-{i}".encode(), partition=p)
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
