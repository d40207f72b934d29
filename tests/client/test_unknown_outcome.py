"""Once an attempt's outcome is unknown, no later error may claim "no effect".

jepsen's membership nemesis found the anomaly this guards against: a produce
whose first attempt had committed was retried, a node with stale metadata
answered UNKNOWN_TOPIC, and the application was told the write failed.
"""

from __future__ import annotations

import pytest
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import ErrorCode, RequestTimeoutError, UnknownTopicError

from .fake_server import FakeCluster


async def test_definite_error_after_an_unknown_attempt_is_reported_as_unknown(
    fake: FakeCluster,
) -> None:
    # First attempt: applied, then the connection drops (outcome unknown).
    # Every retry: UNKNOWN_TOPIC (a node that has not caught up with the metadata).
    fake.drop_after_apply = 1
    fake.errors_after_drop = [(ErrorCode.UNKNOWN_TOPIC, {}), (ErrorCode.UNKNOWN_TOPIC, {})]
    async with AsyncClient(fake.bootstrap(), request_timeout=5) as client:
        with pytest.raises(RequestTimeoutError) as caught:
            await client.produce("t", b"landed", partition=0)
    assert isinstance(caught.value.__cause__, UnknownTopicError)
    assert fake.values("t", 0) == [b"landed"]  # it did take effect


async def test_definite_error_without_an_unknown_attempt_stays_definite(
    fake: FakeCluster,
) -> None:
    fake.errors["produce"] = [(ErrorCode.UNKNOWN_TOPIC, {}), (ErrorCode.UNKNOWN_TOPIC, {})]
    async with AsyncClient(fake.bootstrap(), request_timeout=5) as client:
        with pytest.raises(UnknownTopicError):
            await client.produce("t", b"never", partition=0)
    assert fake.values("t", 0) == []


async def test_a_leader_slower_than_one_attempt_still_gets_its_retry_answered(
    fake: FakeCluster,
) -> None:
    """Commits that take longer than an attempt's cap (say, fsyncs of seconds
    on a majority of disks) must not time out every retry: each timeout doubles
    the next attempt's cap, so the retry waits long enough and is answered with
    the first attempt's offset (the jepsen slow-disk runs acked nothing before).
    With an 8 s budget the cap is 2.67 s: the retry is answered at about 5.5 s;
    with caps that never grow, the third attempt has 2.67 s left, too little."""
    fake.leader_reply_delay["produce"] = 2.8
    async with AsyncClient(fake.bootstrap(), request_timeout=8) as client:
        meta = await client.produce("t", b"slow", partition=0)
    assert meta.offset == 0
    assert fake.values("t", 0) == [b"slow"]  # the retry was a duplicate, appended once
    # The leader got the batch twice: the attempt cut off at the cap, then the retry
    # (the other nodes only redirected).
    at_leader = [op for node, op, _ in fake.requests if node == fake.leader]
    assert at_leader.count("produce") == 2
