"""Property: under random faults the idempotent Producer appends every record at
most once, acknowledged records exactly once at their acknowledged offsets,
and a partition's stored records in send order (hypothesis drives the faults).
A fault may also lower the topic's max_message_bytes behind the producer's back:
refused batches are split and sent again in place, and only a record too large
by itself may fail for it.
"""

from __future__ import annotations

import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import ErrorCode
from raftlog.client.producer import Producer
from raftlog.client.protocol import encode_record_rows

from .fake_server import FakeCluster, FakeNode

RETRIABLE = [ErrorCode.NOT_LEADER, ErrorCode.NOT_AVAILABLE, ErrorCode.THROTTLED]
DEFINITE = [ErrorCode.CORRUPT_BATCH, ErrorCode.UNKNOWN_PARTITION]

fault = st.one_of(
    st.tuples(st.just("error"), st.sampled_from(RETRIABLE + DEFINITE + [ErrorCode.TIMEOUT])),
    st.tuples(st.just("drop"), st.just(None)),
    st.tuples(st.just("spurious_ooo"), st.integers(min_value=1, max_value=60)),
)
# (produce request number, new limit): a record of one digit encodes to 8 bytes
# alone and one of two digits to 9, so 8 refuses the two-digit records alone and
# the larger limits refuse batches of a few.
lowered_limit = st.tuples(
    st.just("limit"),
    st.tuples(st.integers(min_value=1, max_value=8), st.sampled_from([8, 12, 30, 60])),
)


def _alone(value: bytes) -> int:
    """Bytes of ``value`` as a batch of its own (as the producer encodes it)."""
    return len(encode_record_rows([(None, None, value, None)])[0])


async def scenario(
    faults: list[tuple[str, object]], records: int, batch: int, linger: float = 0.0
) -> None:
    cluster = FakeCluster(leader="n2")
    async with trio.open_nursery() as nursery:
        for i in (1, 2):
            await nursery.start(FakeNode(cluster, f"n{i}").serve)
        cluster.add_topic("p", partitions=1)
        for kind, arg in faults:
            if kind == "error":
                details = (
                    {"leader": "n2", "leader_address": cluster.address("n2")}
                    if arg == ErrorCode.NOT_LEADER
                    else {}
                )
                cluster.errors.setdefault("produce", []).append((arg, details))
            elif kind == "drop":
                cluster.drop_after_apply += 1
            elif kind == "limit":
                at, limit = arg  # type: ignore[misc]
                cluster.limit_at_produce[at] = min(limit, cluster.limit_at_produce.get(at, limit))
            else:
                cluster.produce_errors_by_seq.setdefault(arg, []).append(
                    (ErrorCode.OUT_OF_ORDER_SEQUENCE, {})
                )
        async with (
            AsyncClient(cluster.bootstrap(), request_timeout=3.0) as client,
            Producer(client, batch_size=batch, linger=linger, delivery_timeout=3.0) as producer,
        ):
            with trio.fail_after(30):
                deliveries = [
                    await producer.send("p", b"%d" % i, partition=0) for i in range(records)
                ]
                await producer.flush()
        nursery.cancel_scope.cancel()

    stored = [int(v) for v in cluster.values("p", 0)]
    assert len(stored) == len(set(stored)), f"duplicates: {stored}"
    assert stored == sorted(stored), f"out of send order: {stored}"
    for i, d in enumerate(deliveries):
        assert d.done()
        if d.exception() is None:
            assert stored[d.result().offset] == i
        elif d.exception().code in DEFINITE:
            assert i not in stored, f"record {i} failed definitely but was appended"
        elif d.exception().code == ErrorCode.RECORD_TOO_LARGE:
            assert i not in stored, f"record {i} was refused but appended"
            final = cluster.topics["p"]["config"].get("max_message_bytes")
            assert final is not None and _alone(b"%d" % i) > final, (
                f"record {i} fits the limit alone but failed with its batch"
            )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# A batch applied but its reply lost, and its retry refused under a lowered
# limit: split, its pieces would be appended a second time.
@example(faults=[("drop", None), ("limit", (2, 30))], records=60, batch=200, linger=0.005)
# A two-digit record refused alone at limit 8 (a later, larger limit leaves it at 8).
@example(faults=[("limit", (2, 8)), ("limit", (4, 12))], records=13, batch=200, linger=0.005)
@given(
    faults=st.lists(st.one_of(fault, lowered_limit), max_size=6),
    records=st.integers(min_value=1, max_value=60),
    batch=st.sampled_from([1, 40, 200]),
    linger=st.sampled_from([0.0, 0.005]),  # 0: a batch per record; else up to ``batch``
)
def test_idempotent_producer_under_random_faults(faults, records, batch, linger):
    trio.run(scenario, faults, records, batch, linger)


async def concurrent_scenario(faults: list[tuple[str, object]], tasks: int, each: int) -> None:
    cluster = FakeCluster(leader="n2")
    acked: dict[tuple[int, int], int] = {}
    async with trio.open_nursery() as nursery:
        for i in (1, 2):
            await nursery.start(FakeNode(cluster, f"n{i}").serve)
        cluster.add_topic("p", partitions=1)
        for kind, arg in faults:
            if kind == "error":
                details = (
                    {"leader": "n2", "leader_address": cluster.address("n2")}
                    if arg == ErrorCode.NOT_LEADER
                    else {}
                )
                cluster.errors.setdefault("produce", []).append((arg, details))
            elif kind == "drop":
                cluster.drop_after_apply += 1
            else:
                cluster.produce_errors_by_seq.setdefault(arg, []).append(
                    (ErrorCode.OUT_OF_ORDER_SEQUENCE, {})
                )
        async with AsyncClient(cluster.bootstrap(), request_timeout=3.0) as client:

            async def worker(t: int) -> None:
                for j in range(each):
                    try:
                        md = await client.produce("p", b"%d:%d" % (t, j), partition=0)
                    except Exception:  # RaftlogError: outcome unknown or rejected
                        continue
                    acked[(t, j)] = md.offset

            with trio.fail_after(60):
                async with trio.open_nursery() as workers:
                    for t in range(tasks):
                        workers.start_soon(worker, t)
        nursery.cancel_scope.cancel()

    stored = cluster.values("p", 0)
    assert len(stored) == len(set(stored)), "a record was appended twice"
    for (t, j), offset in acked.items():
        assert stored[offset] == b"%d:%d" % (t, j)
    for t in range(tasks):  # each task waited for every ack: its records stay in order
        mine = [int(v.split(b":")[1]) for v in stored if v.startswith(b"%d:" % t)]
        assert mine == sorted(mine)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    faults=st.lists(fault, max_size=6),
    tasks=st.integers(min_value=1, max_value=12),
    each=st.integers(min_value=1, max_value=8),
)
def test_concurrent_single_record_produces_under_random_faults(faults, tasks, each):
    trio.run(concurrent_scenario, faults, tasks, each)
