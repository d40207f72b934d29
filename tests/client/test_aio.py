"""AsyncClient against the fake cluster: routing, retries, errors, idempotence."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from raftlog.client.aio import AsyncClient, partition_for_key
from raftlog.client.errors import (
    ClusterUnreachableError,
    ConnectionLostError,
    ErrorCode,
    InvalidRequestError,
    OutOfRangeError,
    RequestTimeoutError,
    TopicExistsError,
    UnauthorizedError,
    UnknownTopicError,
)
from raftlog.client.protocol import encode_records

from .fake_server import FakeCluster


def first_bootstrap(fake: FakeCluster) -> list[str]:
    return [fake.address("n1"), fake.address("n2")]


async def test_produce_is_redirected_to_the_leader_and_fetch_returns_it(fake: FakeCluster):
    async with AsyncClient(first_bootstrap(fake)) as client:
        md = await client.produce("t", b"hello", partition=0)
        assert (md.topic, md.partition, md.offset) == ("t", 0, 0)
        md2 = await client.produce("t", b"world", partition=0)
        assert md2.offset == 1
        result = await client.fetch("t", 0, 0)
    assert [r.value for r in result.records] == [b"hello", b"world"]
    assert [r.offset for r in result.records] == [0, 1]
    assert result.end_offset == 2
    produce_nodes = {node for node, op, _ in fake.requests if op == "produce"}
    assert "n2" in produce_nodes


async def test_not_leader_redirect_follows_leader_address(fake: FakeCluster):
    async with AsyncClient([fake.address("n1")]) as client:
        await client.create_topic("new", partitions=3, replicas=2)
        create_nodes = [node for node, op, _ in fake.requests if op == "create_topic"]
    assert create_nodes[-1] == "n2"
    assert "new" in fake.topics


async def test_fetch_drops_records_before_the_requested_offset(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        await client.produce_batch("t", 1, [b"a", b"b", b"c", b"d"])
        result = await client.fetch("t", 1, 2)
        limited = await client.fetch("t", 1, 0, max_records=3)
    assert [(r.offset, r.value) for r in result.records] == [(2, b"c"), (3, b"d")]
    assert [r.value for r in limited.records] == [b"a", b"b", b"c"]


async def test_retry_after_dropped_connection_yields_one_record(fake: FakeCluster):
    fake.drop_after_apply = 1  # applied, then the reply is lost
    async with AsyncClient(fake.bootstrap()) as client:
        md = await client.produce("t", b"once", partition=0)
    assert fake.values("t", 0) == [b"once"]
    assert md.offset == 0
    sequences = [f["sequence"] for _n, op, f in fake.requests if op == "produce"]
    assert len(sequences) >= 2 and len(set(sequences)) == 1


async def test_non_idempotent_produce_surfaces_connection_loss(fake: FakeCluster):
    fake.drop_after_apply = 1
    async with AsyncClient(fake.bootstrap(), idempotent=False) as client:
        with pytest.raises(ConnectionLostError):
            await client.produce("t", b"x", partition=0)
    assert fake.values("t", 0) == [b"x"]  # it did land: outcome was unknown


async def test_timeout_raises_request_timeout_error(fake: FakeCluster):
    fake.blackhole.add("produce")
    async with AsyncClient(fake.bootstrap(), request_timeout=0.3) as client:
        with trio.fail_after(5):
            with pytest.raises(RequestTimeoutError):
                await client.produce("t", b"x", partition=0)


async def test_create_topic_timeout_is_not_retried(fake: FakeCluster):
    fake.blackhole.add("create_topic")
    async with AsyncClient(fake.bootstrap(), request_timeout=0.3) as client:
        with pytest.raises(RequestTimeoutError):
            await client.create_topic("slow")
    assert sum(1 for _n, op, _f in fake.requests if op == "create_topic") == 1


@pytest.mark.parametrize(
    ("code", "exc_type"),
    [
        (ErrorCode.INVALID_REQUEST, InvalidRequestError),
        (ErrorCode.OUT_OF_RANGE, OutOfRangeError),
        (ErrorCode.TOPIC_EXISTS, TopicExistsError),
    ],
)
async def test_error_codes_become_exceptions(fake: FakeCluster, code, exc_type):
    fake.errors["list_offsets"] = [(code, {"start_offset": 0, "end_offset": 0})]
    async with AsyncClient(fake.bootstrap()) as client:
        with pytest.raises(exc_type) as info:
            await client.list_offsets("t", 0)
    assert info.value.code == code


async def test_unknown_topic_raises_after_metadata_refresh(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        with pytest.raises(UnknownTopicError):
            await client.produce("nope", b"x")
        with pytest.raises(UnknownTopicError):
            await client.fetch("nope", 0, 0)


async def test_topic_exists_and_out_of_range_from_server(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        with pytest.raises(TopicExistsError):
            await client.create_topic("t")
        with pytest.raises(OutOfRangeError) as info:
            await client.fetch("t", 0, 5)
    assert info.value.details["end_offset"] == 0


async def test_throttled_and_not_available_are_retried(fake: FakeCluster):
    fake.errors["produce"] = [
        (ErrorCode.THROTTLED, {"retry_after_ms": 5}),
        (ErrorCode.NOT_AVAILABLE, {}),
    ]
    async with AsyncClient(fake.bootstrap()) as client:
        md = await client.produce("t", b"v", partition=1)
    assert md.offset == 0
    assert fake.values("t", 1) == [b"v"]


async def test_unreachable_cluster_raises_cluster_unreachable():
    # A port that was free a moment ago: nothing listens there.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    async with AsyncClient(f"127.0.0.1:{port}", request_timeout=0.5) as client:
        with pytest.raises(ClusterUnreachableError):
            await client.list_topics()


async def test_bad_credential_is_refused(fake: FakeCluster):
    fake.credential = "secret"
    async with AsyncClient(fake.bootstrap(), credential="wrong") as client:
        with pytest.raises(UnauthorizedError):
            await client.list_topics()
    async with AsyncClient(fake.bootstrap(), credential="secret") as client:
        assert await client.list_topics() == ["t"]


async def test_pipelined_replies_out_of_order_reach_their_callers(fake: FakeCluster):
    fake.reply_delay["list_offsets"] = 0.2  # slow op first, fast ops overtake it
    async with AsyncClient(fake.bootstrap()) as client:
        await client.produce_batch("t", 0, [b"a", b"b"])
        results: dict[str, object] = {}
        order: list[str] = []

        async def slow():
            results["offsets"] = await client.list_offsets("t", 0)
            order.append("offsets")

        async def fast(i: int):
            results[f"fetch{i}"] = await client.fetch("t", 0, i)
            order.append(f"fetch{i}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            await trio.lowlevel.checkpoint()
            for i in range(2):
                nursery.start_soon(fast, i)
        conns = {n: node.connections for n, node in fake.nodes.items()}
    assert results["offsets"].end_offset == 2
    assert [r.value for r in results["fetch0"].records] == [b"a", b"b"]
    assert [r.value for r in results["fetch1"].records] == [b"b"]
    assert conns["n2"] == 1  # all of it over one pipelined connection
    assert order[-1] == "offsets"  # sent first, answered last


async def test_long_poll_fetch_returns_when_a_record_arrives(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        got: list[bytes] = []

        async def poll():
            result = await client.fetch("t", 0, 0, max_wait=5.0)
            got.extend(r.value for r in result.records)

        with trio.fail_after(4):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(poll)
                await fake.fetch_parked.wait()  # the fetch waits on the server
                await client.produce("t", b"late", partition=0)
    assert got == [b"late"]


async def test_key_partitioning_is_crc32_mod_n(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        mds = [await client.produce("t", b"v", key=k) for k in (b"alpha", b"beta", b"gamma")]
    assert [m.partition for m in mds] == [
        partition_for_key(k, 2) for k in (b"alpha", b"beta", b"gamma")
    ]


async def test_out_of_order_gap_resets_to_a_fresh_producer_id(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        await client.produce("t", b"a", partition=0)
        # Make the next batch fail definitively with an unknown outcome (timeout),
        # leaving a sequence gap on the server's side.
        fake.blackhole.add("produce")
        client.request_timeout = 0.2
        with pytest.raises(RequestTimeoutError):
            await client.produce("t", b"lost", partition=0)
        fake.blackhole.clear()
        client.request_timeout = 5.0
        md = await client.produce("t", b"b", partition=0)
    assert fake.values("t", 0) == [b"a", b"b"]
    assert md.offset == 1
    pids = [f["producer_id"] for _n, op, f in fake.requests if op == "produce"]
    assert pids[0] != pids[-1]


async def test_sequences_advance_by_batch_count(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        await client.produce_batch("t", 0, [b"a", b"b", b"c"])
        await client.produce_batch("t", 0, [b"d"])
        blob, count, crc = encode_records([(None, b"e", None, None)])
        meta = await client.send_encoded("t", 0, blob, count, crc)
    # n1 redirects the first attempt; the leader n2 sees each batch once.
    seqs = [f["sequence"] for n, op, f in fake.requests if op == "produce" and n == "n2"]
    assert seqs == [0, 3, 4]
    assert meta.base_offset == 4


async def test_commit_and_committed_roundtrip(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        assert await client.committed("g", "t", 0) is None
        await client.commit_offset("g", "t", 0, 42)
        assert await client.committed("g", "t", 0) == 42


async def test_cluster_status_of_all_nodes_and_member_list(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap()) as client:
        views = await client.cluster_status()
        one = await client.cluster_status("n1")
        members = await client.member_list()
        described = await client.describe_topic("t")
    assert set(views) == {"n1", "n2"}
    assert views["n2"]["node"] == "n2" and one["node"] == "n1"
    assert {m["id"] for m in members} == {"n1", "n2"}
    assert [p["partition"] for p in described["partitions"]] == [0, 1]


async def test_a_silent_old_leader_does_not_eat_the_whole_deadline(fake: FakeCluster):
    async with AsyncClient(fake.bootstrap(), request_timeout=4.0) as client:
        await client.produce("t", b"before", partition=0)  # caches n2 as the leader
        fake.blackhole_nodes.add("n2")  # n2 is cut off and silent...
        fake.leader = "n1"  # ...and n1 took over
        with trio.fail_after(4.0):
            md = await client.produce("t", b"after", partition=0)
    assert md.offset == 1
    assert fake.values("t", 0) == [b"before", b"after"]



@pytest.mark.parametrize("call", ["list_topics", "produce_not_idempotent"])
async def test_a_dial_that_uses_up_the_budget_gives_up_with_a_client_error(
    fake: FakeCluster, monkeypatch: pytest.MonkeyPatch, call: str
):
    """The connection came only at the call's deadline (a slow dial, or another
    task's dial waited for): the call must end with the client's own error, not
    with trio refusing a negative timeout (found by a jepsen run, where the
    ValueError escaped into the application)."""
    idempotent = call != "produce_not_idempotent"
    async with AsyncClient(fake.bootstrap(), request_timeout=0.5, idempotent=idempotent) as client:
        dial = client._connection

        async def slow_connection(address: str, budget: float):
            conn = await dial(address, budget)
            await trio.sleep(budget + 0.01)  # the dial took all the time there was
            return conn

        monkeypatch.setattr(client, "_connection", slow_connection)
        with trio.fail_after(5):
            with pytest.raises(RequestTimeoutError):
                if call == "list_topics":
                    await client.list_topics()
                else:
                    await client.produce("t", b"x", partition=0)
    assert fake.values("t", 0) == []  # nothing was sent


async def test_a_refresh_that_waits_for_another_keeps_its_own_deadline(fake: FakeCluster):
    """A quiet refresh (the one a stale topic or a replica read does) that waits
    for another task's refresh must end by its own deadline: the wait for the
    lock counts, and its request gets only what is left. It used to take its
    budget before the wait and spend all of it again after (1.3 s for 0.3 s)."""
    async with AsyncClient(fake.bootstrap(), request_timeout=1.0) as client:
        fake.blackhole.add("metadata")  # no node answers: each refresh times out
        own_budget = 0.3
        ended: list[float] = []

        async def quiet_refresh(task_status=trio.TASK_STATUS_IGNORED) -> None:
            start = trio.current_time()
            task_status.started()
            await client._refresh_quietly(start + own_budget)
            ended.append(trio.current_time() - start)

        async def full_refresh() -> None:
            with pytest.raises(RequestTimeoutError):
                await client.metadata()

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(full_refresh)
                await trio.testing.wait_all_tasks_blocked()  # it holds the lock now
                assert client._meta_lock.locked()
                await nursery.start(quiet_refresh)
    assert len(ended) == 1
    assert ended[0] < 1.4 * own_budget, f"took {ended[0]:.2f}s of a {own_budget}s budget"


async def test_a_serializable_read_whose_dial_used_its_budget_keeps_its_deadline(
    fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
):
    """A replica read must not restart its clock after a slow dial: the read's
    wait is what is left of the budget, not the whole of it again."""
    budget = 1.0
    async with AsyncClient(fake.bootstrap(), request_timeout=budget) as client:
        await client.partitions_for("t")  # metadata, at full speed
        fake.blackhole.add("fetch")  # no replica answers: the read ends at its deadline
        dial = client._connection

        async def slow_connection(address: str, dial_budget: float):
            conn = await dial(address, dial_budget)
            await trio.sleep(0.8 * dial_budget)  # most of what was left
            return conn

        monkeypatch.setattr(client, "_connection", slow_connection)
        start = trio.current_time()
        with pytest.raises(RequestTimeoutError):
            await client.fetch("t", 0, 0, consistency="serializable", max_wait=0)
        elapsed = trio.current_time() - start
    # Before the fix each replica's request waited its full share again after the
    # dial: about 1.8 budgets. The bound leaves room for a slow machine.
    assert elapsed < 1.4 * budget, elapsed
