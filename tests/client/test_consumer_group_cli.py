"""CLI of consumer groups against the fake cluster (whose coordinator is the real
core): ``consume --group`` without ``--partition`` joins and leaves the group;
``group describe`` prints members, generation, assignment and lag."""

from __future__ import annotations

import json

from click.testing import CliRunner
from raftlog.client.sync import Client
from raftlog.server.cli import main

from .fake_server import FakeCluster


def run(args: list[str], stdin: str | None = None):
    return CliRunner().invoke(main, args, input=stdin, catch_exceptions=False)


def boot(fake: FakeCluster) -> list[str]:
    return ["--bootstrap", ",".join(fake.bootstrap())]


def ops(fake: FakeCluster) -> list[str]:
    return [op for _node, op, _fields in fake.requests]


def test_consume_with_a_group_and_no_partition_joins_reads_commits_and_leaves(
    sync_fake: FakeCluster,
):
    run(["produce", "t", "--partition", "0", *boot(sync_fake)], stdin="a\nb\n")
    run(["produce", "t", "--partition", "1", *boot(sync_fake)], stdin="c\n")
    result = run(["consume", "t", "--group", "g", *boot(sync_fake)])
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == ["a", "b", "c"]
    assert "group_join" in ops(sync_fake) and "group_leave" in ops(sync_fake)
    assert sync_fake.committed[("g", "t", 0)][0] == 2
    assert sync_fake.committed[("g", "t", 1)][0] == 1
    # it left: nobody is in the group any more
    described = json.loads(run(["group", "describe", "g", "--json", *boot(sync_fake)]).output)
    assert described["state"] == "empty" and described["members"] == []


def test_consume_with_explicit_partitions_never_joins(sync_fake: FakeCluster):
    run(["produce", "t", "--partition", "0", *boot(sync_fake)], stdin="a\n")
    result = run(["consume", "t", "--group", "g", "--partition", "0", *boot(sync_fake)])
    assert result.stdout.splitlines() == ["a"]
    assert not [op for op in ops(sync_fake) if op.startswith("group_")]


def test_group_describe_shows_members_assignment_and_lag(sync_fake: FakeCluster):
    with Client(sync_fake.bootstrap()) as client:
        client.produce_batch("t", 0, [b"x", b"y", b"z"])
        consumer = client.consumer("g", "t", max_records=1)
        got = consumer.poll(0.0)
        consumer.commit()
        member = consumer.consumer.member_id
        assert member is not None and len(got) >= 1

        described = json.loads(run(["group", "describe", "g", "--json", *boot(sync_fake)]).output)
        assert described["state"] == "stable"
        assert described["generation"] == consumer.generation
        assert [(m["member_id"], m["partitions"]) for m in described["members"]] == [
            (member, [0, 1])
        ]
        by_partition = {p["partition"]: p for p in described["partitions"]}
        committed0 = sync_fake.committed.get(("g", "t", 0), (None,))[0]
        assert by_partition[0]["end_offset"] == 3
        assert by_partition[0]["lag"] == (None if committed0 is None else 3 - committed0)
        assert by_partition[1]["member_id"] == member

        text = run(["group", "describe", "g", *boot(sync_fake)])
        assert text.exit_code == 0
        assert "state stable" in text.output and member in text.output
        consumer.close()
    assert (
        json.loads(run(["group", "describe", "g", "--json", *boot(sync_fake)]).output)["members"]
        == []
    )
