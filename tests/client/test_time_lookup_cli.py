"""Reading from a point in time: ``offset_for_time``, ``Consumer.seek_to_time``,
``consume --since / --from-time`` and ``group reset-offsets --to-datetime /
--by-duration``, against the fake cluster, which stamps batches with
``stamp_ms`` when a test sets it (never going backwards, as a leader does)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from raftlog.client.models import OffsetAndTimestamp
from raftlog.client.sync import Client
from raftlog.server.cli import main
from raftlog.server.cli_time import now_ms

from .fake_server import FakeCluster

HOUR_MS = 3_600_000


def run(args: list[str], stdin: str | None = None):
    return CliRunner().invoke(main, args, input=stdin, catch_exceptions=False)


def boot(fake: FakeCluster) -> list[str]:
    return ["--bootstrap", ",".join(fake.bootstrap())]


def produce_at(fake: FakeCluster, stamp_ms: int, partition: int, *values: str) -> None:
    """One batch of ``values`` on ``partition``, stamped ``stamp_ms``."""
    fake.stamp_ms = stamp_ms
    with Client(fake.bootstrap()) as client:
        client.produce_batch("t", partition, [v.encode() for v in values])


@pytest.fixture
def timeline(sync_fake: FakeCluster) -> FakeCluster:
    """Partition 0: a, b at 1.000 s; c, d at 2.000 s; e at 3.000 s (ms since the
    epoch). Partition 1: x at 1.000 s only."""
    produce_at(sync_fake, 1000, 0, "a", "b")
    produce_at(sync_fake, 2000, 0, "c", "d")
    produce_at(sync_fake, 3000, 0, "e")
    produce_at(sync_fake, 1000, 1, "x")
    return sync_fake


def test_offset_for_time_is_the_first_record_stamped_at_or_after(timeline: FakeCluster):
    with Client(timeline.bootstrap()) as client:
        assert client.offset_for_time("t", 0, 0) == OffsetAndTimestamp(0, 1000)
        assert client.offset_for_time("t", 0, 1001) == OffsetAndTimestamp(2, 2000)
        assert client.offset_for_time("t", 0, 3000) == OffsetAndTimestamp(4, 3000)
        assert client.offset_for_time("t", 0, 3001) is None
        assert client.offsets_for_time("t", 1500) == {0: OffsetAndTimestamp(2, 2000), 1: None}
        with pytest.raises(ValueError, match="timestamp_ms"):
            client.offset_for_time("t", 0, -1)
        with pytest.raises(ValueError, match="timestamp_ms"):
            client.offset_for_time("t", 0, True)  # type: ignore[arg-type]


def test_seek_to_time_moves_every_partition_and_the_end_when_all_is_older(
    timeline: FakeCluster,
):
    with Client(timeline.bootstrap()) as client:
        consumer = client.consumer(None, "t")
        assert consumer.seek_to_time(1500) == {0: 2, 1: 1}  # partition 1: its end
        got = [(p, r.value) for p, r in consumer.poll(0.0)]
        assert got == [(0, b"c"), (0, b"d"), (0, b"e")]
        consumer.close()


def test_consume_from_time_prints_only_the_later_records(timeline: FakeCluster):
    result = run(["consume", "t", "--from-time", "1970-01-01T00:00:01.500Z", *boot(timeline)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["c", "d", "e"]


def test_consume_since_counts_back_from_now(sync_fake: FakeCluster):
    produce_at(sync_fake, now_ms() - 2 * HOUR_MS, 0, "old")
    produce_at(sync_fake, now_ms(), 0, "new")
    result = run(["consume", "t", "--partition", "0", "--since", "1h", *boot(sync_fake)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["new"]
    everything = run(["consume", "t", "--partition", "0", "--since", "3h", *boot(sync_fake)])
    assert everything.stdout.splitlines() == ["old", "new"]


def test_consume_start_options_are_exclusive_and_checked(sync_fake: FakeCluster):
    both = run(["consume", "t", "--since", "1h", "--offset", "3", *boot(sync_fake)])
    assert both.exit_code == 2 and "exclusive" in both.output
    bad = run(["consume", "t", "--since", "an hour", *boot(sync_fake)])
    assert bad.exit_code == 2 and "is not a duration" in bad.output
    bad_time = run(["consume", "t", "--from-time", "yesterday", *boot(sync_fake)])
    assert bad_time.exit_code == 2 and "ISO 8601" in bad_time.output


def _commit_everything(fake: FakeCluster) -> None:
    result = run(["consume", "t", "--group", "g", *boot(fake)])
    assert result.exit_code == 0, result.output


def test_reset_to_datetime_plans_then_commits_and_sends_empty_partitions_to_the_end(
    timeline: FakeCluster,
):
    _commit_everything(timeline)
    args = ["group", "reset-offsets", "g", "--to-datetime", "1970-01-01T00:00:01.500Z"]
    plan = json.loads(run([*args, "--json", *boot(timeline)]).output)
    assert plan["timestamp_ms"] == 1500 and plan["executed"] is False
    assert [(p["partition"], p["committed"], p["new"]) for p in plan["partitions"]] == [
        (0, 5, 2),
        (1, 1, 1),  # only older records: its end, as Kafka's --to-datetime does
    ]
    text = run([*args, *boot(timeline)])
    assert "records appended at or after 1970-01-01T00:00:01.500Z" in text.output
    assert timeline.committed[("g", "t", 0)][0] == 5  # a dry run changes nothing

    result = run([*args, "--execute", *boot(timeline)])
    assert result.exit_code == 0, result.output
    assert timeline.committed[("g", "t", 0)][0] == 2
    again = run(["consume", "t", "--group", "g", *boot(timeline)])
    assert again.stdout.splitlines() == ["c", "d", "e"]


def test_reset_by_duration_counts_back_from_now(sync_fake: FakeCluster):
    produce_at(sync_fake, now_ms() - 2 * HOUR_MS, 0, "old")
    produce_at(sync_fake, now_ms(), 0, "new")
    _commit_everything(sync_fake)
    args = ["group", "reset-offsets", "g", "--by-duration", "PT1H", "--execute", "--json"]
    plan = json.loads(run([*args, *boot(sync_fake)]).output)
    assert [(p["partition"], p["new"]) for p in plan["partitions"]] == [(0, 1), (1, 0)]
    assert sync_fake.committed[("g", "t", 0)][0] == 1


def test_reset_to_datetime_is_one_target_among_the_others(sync_fake: FakeCluster):
    two = run(["group", "reset-offsets", "g", "--to-latest", "--by-duration", "1h",
               *boot(sync_fake)])  # fmt: skip
    assert two.exit_code == 2 and "--to-datetime, --by-duration" in two.output


def test_a_reset_marks_its_commits_and_a_consumers_commits_stay_unmarked(
    timeline: FakeCluster,
):
    """The nodes audit a marked commit (server/audit.py ``is_audited``): only the
    operator's reset is marked, not a consumer recording its progress."""
    _commit_everything(timeline)
    consumer_commits = [f for _, op, f in timeline.requests if op == "commit_offset"]
    assert consumer_commits and not any(f.get("reset") for f in consumer_commits)
    timeline.requests.clear()
    args = ["group", "reset-offsets", "g", "--to-earliest", "--execute"]
    assert run([*args, *boot(timeline)]).exit_code == 0
    commits = [f for _, op, f in timeline.requests if op == "commit_offset"]
    marked = sorted((f["partition"], f["offset"]) for f in commits if f.get("reset"))
    assert marked == [(0, 0), (1, 0)]
    # Unmarked: only the join's claims, which re-commit what was committed (5, 1).
    claims = sorted((f["partition"], f["offset"]) for f in commits if not f.get("reset"))
    assert claims == [(0, 5), (1, 1)]
