"""cluster.toml ``[snapshots]``: parsing, refusals that name the key, precedence with the
RAFTLOG_SNAPSHOT_* environment, and what a node actually runs with."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from raftlog.server import config as config_module
from raftlog.server.cli import main
from raftlog.server.cli_node import EXIT_CONFIG
from raftlog.server.config import (
    ConfigError,
    SnapshotConfig,
    load_config,
    render_config,
)
from raftlog.server.snapshots import SnapshotManager

from .cluster_harness import free_ports

BASE = """
[cluster]
name = "snap"

[[node]]
id = "n1"
address = "127.0.0.1:{port}"
data_dir = "data/n1"
"""

ALL_KEYS = """
[snapshots]
entries = 500
entry_bytes = 4096
trailing = 0
trailing_bytes = 0
chunk_bytes = 2048
transfers = 3
request_timeout_s = 4
"""


def write(tmp_path: Path, extra: str = "", port: int = 7101) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(BASE.format(port=port) + extra)
    return path


def load_error(tmp_path: Path, extra: str) -> str:
    path = write(tmp_path, extra)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


def test_without_the_table_every_value_is_the_default(tmp_path: Path) -> None:
    assert load_config(write(tmp_path)).snapshots == SnapshotConfig()
    assert load_config(write(tmp_path, "[snapshots]\n")).snapshots == SnapshotConfig()


def test_every_key_is_read(tmp_path: Path) -> None:
    snaps = load_config(write(tmp_path, ALL_KEYS)).snapshots
    assert snaps == SnapshotConfig(
        entries=500, entry_bytes=4096, trailing=0, trailing_bytes=0, chunk_bytes=2048,
        transfers=3, request_timeout_s=4.0,
    )  # fmt: skip
    # A whole number of seconds is read as a float, like the default.
    assert isinstance(snaps.request_timeout_s, float)


def test_the_config_module_documents_every_key_with_its_default() -> None:
    doc = config_module.__doc__ or ""
    defaults = SnapshotConfig()
    for f in dataclasses.fields(SnapshotConfig):
        assert f"    {f.name} = {getattr(defaults, f.name)!r} " in doc, f.name


def test_a_partial_table_keeps_the_other_defaults(tmp_path: Path) -> None:
    snaps = load_config(write(tmp_path, "[snapshots]\nentries = 50\n")).snapshots
    assert snaps == dataclasses.replace(SnapshotConfig(), entries=50)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("entrys = 5", "snapshots.entrys is not a known key (typo?)"),
        ('entries = "5"', "snapshots.entries must be int, got str '5'"),
        ("entries = 5.0", "snapshots.entries must be int, got float 5.0"),
        ("transfers = true", "snapshots.transfers must be int, got bool True"),
        ("request_timeout_s = false", "snapshots.request_timeout_s must be int or float"),
        ('request_timeout_s = "10s"', "snapshots.request_timeout_s must be int or float"),
        ("entries = 0", "snapshots.entries must be >= 1, got 0"),
        ("entry_bytes = -1", "snapshots.entry_bytes must be >= 1, got -1"),
        ("trailing = -1", "snapshots.trailing must be >= 0, got -1"),
        ("trailing_bytes = -1", "snapshots.trailing_bytes must be >= 0, got -1"),
        ("chunk_bytes = 0", "snapshots.chunk_bytes must be >= 1, got 0"),
        ("transfers = 0", "snapshots.transfers must be >= 1, got 0"),
        ("request_timeout_s = 0", "snapshots.request_timeout_s must be a finite number of"),
        ("request_timeout_s = nan", "snapshots.request_timeout_s must be a finite number of"),
        ("request_timeout_s = inf", "snapshots.request_timeout_s must be a finite number of"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in load_error(tmp_path, f"[snapshots]\n{body}\n")


def test_snapshots_must_be_a_table(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text("snapshots = 5\n" + BASE.format(port=7101))  # top level, not in [[node]]
    with pytest.raises(ConfigError, match=r": snapshots must be dict, got int 5$"):
        load_config(path)


def test_environment_beats_the_file_which_beats_the_default(tmp_path: Path) -> None:
    from_file = load_config(write(tmp_path, "[snapshots]\nentries = 500\ntrailing = 7\n"))
    env = {"RAFTLOG_SNAPSHOT_ENTRIES": "42", "RAFTLOG_SNAPSHOT_REQUEST_TIMEOUT_S": "0.5"}
    snaps = SnapshotConfig.from_env(env, base=from_file.snapshots)
    assert snaps.entries == 42  # environment over file
    assert snaps.request_timeout_s == 0.5  # environment over default
    assert snaps.trailing == 7  # file over default
    assert snaps.chunk_bytes == SnapshotConfig().chunk_bytes  # default
    assert SnapshotConfig.from_env({}, base=from_file.snapshots) == from_file.snapshots


def test_the_snapshot_manager_runs_with_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(write(tmp_path, "[snapshots]\nentries = 500\ntrailing = 7\n"))
    monkeypatch.delenv("RAFTLOG_SNAPSHOT_ENTRIES", raising=False)
    monkeypatch.setenv("RAFTLOG_SNAPSHOT_TRAILING", "3")
    manager = SnapshotManager(SimpleNamespace(cfg=cfg, metrics=None))
    assert (manager.config.entries, manager.config.trailing) == (500, 3)
    monkeypatch.setenv("RAFTLOG_SNAPSHOT_TRAILING", "-3")
    with pytest.raises(ConfigError, match="RAFTLOG_SNAPSHOT_TRAILING='-3' must be >= 0"):
        SnapshotManager(SimpleNamespace(cfg=cfg, metrics=None))


def test_node_start_reports_a_bad_environment_value_as_a_config_error(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    path = write(tmp_path, port=port)
    result = CliRunner().invoke(
        main,
        ["node", "start", "--config", str(path), "--node", "n1"],
        env={"RAFTLOG_SNAPSHOT_CHUNK_BYTES": "lots"},
    )
    assert result.exit_code == EXIT_CONFIG, result.output
    assert "RAFTLOG_SNAPSHOT_CHUNK_BYTES='lots' is not a number" in result.output


def test_render_writes_only_changed_keys_and_reads_back(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[snapshots]\nentries = 500\nrequest_timeout_s = 2.5\n"))
    text = render_config(cfg)
    assert "[snapshots]\nentries = 500\nrequest_timeout_s = 2.5\n" in text
    assert "trailing" not in text
    again = tmp_path / "again.toml"
    again.write_text(text)
    assert load_config(again).snapshots == cfg.snapshots
    assert "[snapshots]" not in render_config(load_config(write(tmp_path)))
