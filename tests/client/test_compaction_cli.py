"""The CLI of compacted topics: their topic options, keyed lines and tombstones
in ``produce``, and keys in ``consume``'s text output."""

from __future__ import annotations

import msgpack
from click.testing import CliRunner
from raftlog.server.cli import main

from .fake_server import FakeCluster
from .test_cli_data import boot, run


def stored_rows(fake: FakeCluster, topic: str, partition: int) -> list[tuple]:
    """(key, value) of every stored record (the batches are not compressed here)."""
    out = []
    for _base, _ts, _count, blob in fake.partitions[(topic, partition)].batches:
        out += [(row[1], row[2]) for row in msgpack.unpackb(blob, raw=False)]
    return out


def test_topic_create_and_alter_take_the_compaction_settings(sync_fake: FakeCluster):
    args = ["topic", "create", "kv", "--replicas", "2", "--cleanup-policy", "compact"]
    result = run([*args, "--delete-retention-ms", "60000", *boot(sync_fake)])
    assert result.exit_code == 0, result.output
    assert sync_fake.topics["kv"]["config"] == {
        "cleanup_policy": "compact",
        "delete_retention_ms": 60000,
    }
    bad = CliRunner().invoke(
        main, ["topic", "create", "kv2", "--cleanup-policy", "shred", *boot(sync_fake)]
    )
    assert bad.exit_code == 2 and "shred" in bad.output
    # The fake cluster refuses alter_topic; what matters is what the CLI asked for.
    run(["topic", "alter", "kv", "--min-compaction-lag-ms", "5000", *boot(sync_fake)])
    alters = ["--max-compaction-lag-ms", "60000", "--min-cleanable-dirty-ratio", "0.1"]
    run(["topic", "alter", "kv", *alters, *boot(sync_fake)])
    # In topic alter, 0 removes a setting: the node default applies again.
    run(["topic", "alter", "kv", "--min-cleanable-dirty-ratio", "0", *boot(sync_fake)])
    asked = [f["config"] for _, op, f in sync_fake.requests if op == "alter_topic"]
    assert asked == [
        {"min_compaction_lag_ms": 5000},
        {"max_compaction_lag_ms": 60000, "min_cleanable_dirty_ratio": 0.1},
        {"min_cleanable_dirty_ratio": None},
    ]
    for ratio in ("0", "1.5"):  # create takes (0, 1]
        refused = CliRunner().invoke(
            main, [*args[:3], "--min-cleanable-dirty-ratio", ratio, *boot(sync_fake)]
        )
        assert refused.exit_code == 2 and "min-cleanable-dirty-ratio" in refused.output


def test_produce_keyed_lines_and_tombstones_then_consume_with_keys(sync_fake: FakeCluster):
    lines = "user-1:alice\nuser-2:bob\nuser-1:NULL\nuser-3:a:b\n"
    args = ["produce", "t", "--partition", "0", "--key-separator", ":", "--null-value", "NULL"]
    result = run([*args, *boot(sync_fake)], stdin=lines)
    assert result.exit_code == 0, result.output
    assert stored_rows(sync_fake, "t", 0) == [
        (b"user-1", b"alice"),
        (b"user-2", b"bob"),
        (b"user-1", None),  # the tombstone
        (b"user-3", b"a:b"),  # only the first separator splits
    ]
    consumed = run(["consume", "t", "--partition", "0", "--key-separator", "=", *boot(sync_fake)])
    assert consumed.stdout.splitlines() == [
        "user-1=alice",
        "user-2=bob",
        "user-1=null",
        "user-3=a:b",
    ]


def test_a_line_without_the_separator_is_a_usage_error(sync_fake: FakeCluster):
    args = ["produce", "t", "--partition", "0", "--key-separator", "\t", *boot(sync_fake)]
    result = CliRunner().invoke(main, args, input="k\tv\nno separator here\n")
    assert result.exit_code == 2
    assert "line 2 has no key separator" in result.output
    both = CliRunner().invoke(main, [*args, "--key", "k"], input="k\tv\n")
    assert both.exit_code == 2
