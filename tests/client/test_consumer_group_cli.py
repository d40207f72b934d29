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


# ---------------------------------------------------------------- group list / reset-offsets


def consume_and_commit(fake: FakeCluster, group: str = "g") -> None:
    """p0 holds a, b and p1 holds c; the group reads and commits everything, then leaves."""
    run(["produce", "t", "--partition", "0", *boot(fake)], stdin="a\nb\n")
    run(["produce", "t", "--partition", "1", *boot(fake)], stdin="c\n")
    assert run(["consume", "t", "--group", group, *boot(fake)]).exit_code == 0
    assert fake.committed[(group, "t", 0)][0] == 2 and fake.committed[(group, "t", 1)][0] == 1


def test_group_list_shows_every_group_with_its_members(sync_fake: FakeCluster):
    consume_and_commit(sync_fake, "done")
    with Client(sync_fake.bootstrap()) as client:
        consumer = client.consumer("live", "t")
        consumer.poll(0.0)
        listed = json.loads(run(["group", "list", "--json", *boot(sync_fake)]).output)
        rows = {g["group"]: g for g in listed["groups"]}
        assert rows["done"]["topic"] == "t" and rows["done"]["members"] == []
        assert rows["done"]["state"] == "empty"
        assert [m["member_id"] for m in rows["live"]["members"]] == [consumer.consumer.member_id]
        table = run(["group", "list", *boot(sync_fake)])
        assert table.exit_code == 0
        assert any(
            line.split()[:3] == ["live", "t", "stable"] for line in table.output.splitlines()
        )
        consumer.close()


def test_reset_offsets_without_execute_changes_nothing(sync_fake: FakeCluster):
    consume_and_commit(sync_fake)
    result = run(["group", "reset-offsets", "g", "--to-earliest", "--json", *boot(sync_fake)])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["executed"] is False
    assert [(p["partition"], p["committed"], p["new"]) for p in plan["partitions"]] == [
        (0, 2, 0),
        (1, 1, 0),
    ]
    assert sync_fake.committed[("g", "t", 0)][0] == 2 and sync_fake.committed[("g", "t", 1)][0] == 1
    text = run(["group", "reset-offsets", "g", "--to-earliest", *boot(sync_fake)])
    assert "dry run" in text.output


def test_reset_to_earliest_makes_the_group_read_everything_again(sync_fake: FakeCluster):
    consume_and_commit(sync_fake)
    result = run(["group", "reset-offsets", "g", "--to-earliest", "--execute", *boot(sync_fake)])
    assert result.exit_code == 0, result.output
    assert sync_fake.committed[("g", "t", 0)][0] == 0 and sync_fake.committed[("g", "t", 1)][0] == 0
    # The reset left the group, and the next member resumes from the new offsets.
    again = run(["consume", "t", "--group", "g", *boot(sync_fake)])
    assert sorted(again.stdout.splitlines()) == ["a", "b", "c"]


def test_shift_by_one_partition_moves_only_that_partition_and_clamps(sync_fake: FakeCluster):
    consume_and_commit(sync_fake)
    args = ["group", "reset-offsets", "g", "--shift-by", "-5", "--partition", "0", "--execute"]
    assert run([*args, *boot(sync_fake)]).exit_code == 0
    assert sync_fake.committed[("g", "t", 0)][0] == 0  # 2 - 5, clamped to the start
    assert sync_fake.committed[("g", "t", 1)][0] == 1  # untouched
    latest = ["group", "reset-offsets", "g", "--to-offset", "99", "--execute", "--json"]
    plan = json.loads(run([*latest, *boot(sync_fake)]).output)
    assert [p["new"] for p in plan["partitions"]] == [2, 1]  # clamped to the end offsets
    assert sync_fake.committed[("g", "t", 0)][0] == 2


def test_reset_of_one_partition_gives_no_other_partition_a_committed_offset(
    sync_fake: FakeCluster,
):
    run(["produce", "t", "--partition", "0", *boot(sync_fake)], stdin="a\nb\n")
    run(["produce", "t", "--partition", "1", *boot(sync_fake)], stdin="c\n")
    with Client(sync_fake.bootstrap()) as client:  # the group commits on partition 0 only
        client.commit_offset("g", "t", 0, 2)
    args = ["group", "reset-offsets", "g", "--topic", "t", "--to-earliest", "--partition", "0"]
    result = run([*args, "--execute", *boot(sync_fake)])
    assert result.exit_code == 0, result.output
    assert sync_fake.committed[("g", "t", 0)][0] == 0
    # Partition 1 was neither named nor committed: a later member with
    # auto_offset_reset="latest" must still start it at its end.
    assert ("g", "t", 1) not in sync_fake.committed


def test_reset_of_a_group_with_a_live_member_is_refused(sync_fake: FakeCluster):
    consume_and_commit(sync_fake)
    with Client(sync_fake.bootstrap()) as client:
        consumer = client.consumer("g", "t", auto_commit=False)
        consumer.poll(0.0)
        result = run(
            ["group", "reset-offsets", "g", "--to-earliest", "--execute", *boot(sync_fake)]
        )
        assert result.exit_code == 1
        assert "active member" in result.output
        assert sync_fake.committed[("g", "t", 0)][0] == 2
        consumer.close()


def test_reset_needs_exactly_one_target(sync_fake: FakeCluster):
    none = run(["group", "reset-offsets", "g", *boot(sync_fake)])
    assert none.exit_code == 2 and "exactly one" in none.output
    two = run(["group", "reset-offsets", "g", "--to-latest", "--shift-by", "1", *boot(sync_fake)])
    assert two.exit_code == 2
    unknown = run(["group", "reset-offsets", "nobody", "--to-latest", *boot(sync_fake)])
    assert unknown.exit_code == 2 and "--topic" in unknown.output


def test_consume_with_an_instance_id_commits_and_stays_in_the_group(sync_fake: FakeCluster):
    run(["produce", "t", "--partition", "0", *boot(sync_fake)], stdin="a\nb\n")
    first = run(["consume", "t", "--group", "g", "--instance-id", "host-1", *boot(sync_fake)])
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == ["a", "b"]
    assert "group_leave" not in ops(sync_fake)  # a static member does not leave
    assert sync_fake.committed[("g", "t", 0)][0] == 2
    described = json.loads(run(["group", "describe", "g", "--json", *boot(sync_fake)]).output)
    assert [m["instance_id"] for m in described["members"]] == ["host-1"]
    generation = described["generation"]
    # Run again with the same instance id: the same place, no new generation.
    run(["produce", "t", "--partition", "0", *boot(sync_fake)], stdin="c\n")
    second = run(["consume", "t", "--group", "g", "--instance-id", "host-1", *boot(sync_fake)])
    assert second.exit_code == 0, second.output
    assert second.stdout.splitlines() == ["c"]
    again = json.loads(run(["group", "describe", "g", "--json", *boot(sync_fake)]).output)
    assert again["generation"] == generation
    assert [m["instance_id"] for m in again["members"]] == ["host-1"]
    assert again["members"][0]["member_id"] != described["members"][0]["member_id"]


def test_instance_id_without_a_group_is_a_usage_error(sync_fake: FakeCluster):
    result = CliRunner().invoke(main, ["consume", "t", "--instance-id", "x", *boot(sync_fake)])
    assert result.exit_code == 2
    assert "--instance-id needs --group" in result.output


def test_consume_with_cooperative_rebalancing_says_so_when_it_joins(sync_fake: FakeCluster):
    run(["produce", "t", "--partition", "1", *boot(sync_fake)], stdin="a\n")
    result = run(["consume", "t", "--group", "g", "--rebalance", "cooperative", *boot(sync_fake)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["a"]
    joins = [f for _node, op, f in sync_fake.requests if op == "group_join"]
    assert joins and all(f.get("rebalance") == "cooperative" for f in joins)
    alone = CliRunner().invoke(
        main, ["consume", "t", "--rebalance", "cooperative", *boot(sync_fake)]
    )
    assert alone.exit_code == 2 and "--rebalance needs --group" in alone.output


def test_group_describe_shows_each_members_rebalance_protocol(sync_fake: FakeCluster):
    with Client(sync_fake.bootstrap()) as client:
        consumer = client.consumer("g", "t", rebalance="cooperative")
        consumer.poll(0.0)
        described = run(["group", "describe", "g", *boot(sync_fake)])
        consumer.close()
    assert described.exit_code == 0, described.output
    header, row = described.output.splitlines()[1:3]
    assert header.split()[:4] == ["MEMBER", "CLIENT", "REBALANCE", "PARTITIONS"]
    assert row.split()[-2:] == ["cooperative", "0,1"]
