"""The cluster's log format in the metadata state (log/features.py): it only
rises, and it survives restarts and snapshots."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from raftlog.client.errors import ErrorCode
from raftlog.log.commands import SetLogFormat
from raftlog.log.features import (
    BASELINE_LOG_FORMAT,
    FORMAT_CHANGES,
    LOG_FORMAT,
    TOPIC_CONFIG_FORMATS,
    TOPIC_MESSAGE_LIMIT,
    USER_KEY_FORMATS,
    log_format_problem,
)
from raftlog.log.metadata import AlterTopic, CreateTopic, MetadataStateMachine
from raftlog.log.store import NodeStore

from .test_metadata import Meta


@pytest.fixture
def meta(store: NodeStore) -> Iterator[Meta]:
    yield Meta(store)


def test_the_format_starts_at_the_baseline_and_only_rises(meta: Meta) -> None:
    assert meta.sm.log_format == BASELINE_LOG_FORMAT
    (raised,) = meta.run(SetLogFormat(2))
    assert raised.ok and meta.sm.log_format == 2
    # Lower or equal: nothing changes (something may be written in 2 already).
    (lower,) = meta.run(SetLogFormat(1))
    assert lower.ok and meta.sm.log_format == 2
    (bad,) = meta.run(SetLogFormat(0))
    assert bad.error is ErrorCode.INVALID_REQUEST
    assert meta.sm.log_format == 2


def test_a_format_beyond_this_build_is_applied_and_logged(
    meta: Meta, caplog: pytest.LogCaptureFixture
) -> None:
    # Every replica must reach the same state, even one that cannot read it.
    with caplog.at_level(logging.ERROR):
        (result,) = meta.run(SetLogFormat(LOG_FORMAT + 1))
    assert result.ok and meta.sm.log_format == LOG_FORMAT + 1
    assert "event=log_format_unreadable" in caplog.text


def test_the_format_survives_a_restart_and_a_snapshot(
    store: NodeStore, data_dir: Path, meta: Meta, tmp_path: Path
) -> None:
    meta.run(SetLogFormat(2))
    data = meta.sm.snapshot_state()
    store.close()
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as reopened:
        assert MetadataStateMachine(reopened).log_format == 2
    with NodeStore.open(tmp_path / "n2", cluster="test", node_id="n2") as other:
        sm = MetadataStateMachine(other)
        batch = other.new_batch()
        sm.restore_state(data, batch)
        other.write(batch)
        assert sm.log_format == 2
        assert MetadataStateMachine(other).log_format == 2


def test_a_state_from_before_log_formats_is_the_baseline(meta: Meta, tmp_path: Path) -> None:
    meta.run(SetLogFormat(2))
    old = msgpack.unpackb(meta.sm.snapshot_state(), raw=False, strict_map_key=False)
    del old["log_format"]
    with NodeStore.open(tmp_path / "n2", cluster="test", node_id="n2") as other:
        sm = MetadataStateMachine(other)
        sm.restore_state(msgpack.packb(old, use_bin_type=True), other.new_batch())
        assert sm.log_format == BASELINE_LOG_FORMAT


@pytest.mark.parametrize("value", [0, -1, True, "2", 1.0, None])
def test_log_format_problem_names_what_is_not_a_format(value: object) -> None:
    assert log_format_problem(value) is not None


def test_log_format_problem_accepts_formats() -> None:
    assert log_format_problem(1) is None
    assert log_format_problem(LOG_FORMAT) is None


def test_every_format_this_build_writes_is_described_and_no_key_needs_a_later_one() -> None:
    # A format added without its FORMAT_CHANGES line (which the README's "Upgrades"
    # table mirrors), or a key gated on a format this build cannot reach (so never
    # writable), is a slip.
    assert sorted(FORMAT_CHANGES) == list(range(BASELINE_LOG_FORMAT, LOG_FORMAT + 1))
    for needed in (*TOPIC_CONFIG_FORMATS.values(), *USER_KEY_FORMATS.values()):
        assert BASELINE_LOG_FORMAT < needed <= LOG_FORMAT


def test_a_topic_key_newer_than_the_cluster_format_is_refused_by_every_replica(
    meta: Meta,
) -> None:
    # An older node refuses a key it does not know when it applies an AlterTopic,
    # and ignores it in a CreateTopic: so no replica may take it either, until
    # the cluster's format says every node knows it (TOPIC_CONFIG_FORMATS).
    meta.register("n1", "n2", "n3")
    meta.run(SetLogFormat(TOPIC_MESSAGE_LIMIT - 1))
    limited = {"max_message_bytes": 4096}
    (created,) = meta.run(CreateTopic("early", 1, 3, limited))
    assert created.error is ErrorCode.UNSUPPORTED_VERSION
    assert f"needs log format {TOPIC_MESSAGE_LIMIT}" in created.message
    assert "early" not in meta.sm.topics
    (plain,) = meta.run(CreateTopic("t", 1, 3, {"retention_ms": 1000}))
    assert plain.ok
    for change in (limited, {"max_message_bytes": None}):  # removing it too
        (altered,) = meta.run(AlterTopic("t", 0, change))
        assert altered.error is ErrorCode.UNSUPPORTED_VERSION, change
    assert meta.sm.topics["t"].config == {"retention_ms": 1000}

    meta.run(SetLogFormat(TOPIC_MESSAGE_LIMIT))
    (altered,) = meta.run(AlterTopic("t", 0, limited))
    assert altered.ok and meta.sm.topics["t"].config == {"retention_ms": 1000, **limited}
    (created,) = meta.run(CreateTopic("later", 1, 3, limited))
    assert created.ok and meta.sm.topics["later"].config == limited
    (removed,) = meta.run(AlterTopic("t", 0, {"max_message_bytes": None}))
    assert removed.ok and meta.sm.topics["t"].config == {"retention_ms": 1000}
    (bad,) = meta.run(AlterTopic("t", 0, {"max_message_bytes": 0}))
    assert bad.error is ErrorCode.INVALID_REQUEST and "positive integer" in bad.message
