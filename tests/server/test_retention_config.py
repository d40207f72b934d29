"""cluster.toml ``[retention] interval_ms`` and its RAFTLOG_RETENTION_INTERVAL_MS override."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from raftlog.server.config import (
    ConfigError,
    RetentionConfig,
    load_config,
    render_config,
)
from raftlog.server.retention import RetentionManager

BASE = """
[cluster]
name = "ret"

[[node]]
id = "n1"
address = "127.0.0.1:7101"
"""


def write(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(BASE + extra)
    return path


def test_interval_from_file_and_default(tmp_path: Path) -> None:
    assert load_config(write(tmp_path)).retention == RetentionConfig(interval_ms=5000)
    cfg = load_config(write(tmp_path, "[retention]\ninterval_ms = 250\n"))
    assert cfg.retention.interval_ms == 250
    again = tmp_path / "again.toml"
    again.write_text(render_config(cfg))
    assert load_config(again).retention == cfg.retention


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("interval_ms = 0", "retention.interval_ms must be > 0, got 0"),
        ("interval_ms = 1.5", "retention.interval_ms must be int, got float 1.5"),
        ("interval = 100", "retention.interval is not a known key (typo?)"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, f"[retention]\n{body}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {expected}"


def test_environment_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write(tmp_path, "[retention]\ninterval_ms = 250\n"))
    driver = SimpleNamespace(cfg=cfg)
    monkeypatch.delenv("RAFTLOG_RETENTION_INTERVAL_MS", raising=False)
    assert RetentionManager(driver).interval_s == 0.25
    monkeypatch.setenv("RAFTLOG_RETENTION_INTERVAL_MS", "100")
    assert RetentionManager(driver).interval_s == 0.1
    assert RetentionManager(driver, interval_s=3.0).interval_s == 3.0  # explicit wins (tests)
    for bad in ("0", "soon"):
        monkeypatch.setenv("RAFTLOG_RETENTION_INTERVAL_MS", bad)
        with pytest.raises(ConfigError, match=f"RAFTLOG_RETENTION_INTERVAL_MS='{bad}'"):
            RetentionManager(driver)


def test_the_config_module_documents_the_key_with_its_default() -> None:
    from raftlog.server import config as config_module

    assert f"    interval_ms = {RetentionConfig().interval_ms} " in (config_module.__doc__ or "")


def test_the_compaction_map_bound_reaches_the_sweeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``compaction_map_bytes``: 128 MiB by default (Kafka's dedupe buffer), set by the
    file or RAFTLOG_RETENTION_COMPACTION_MAP_BYTES, and handed to every sweep's plan."""
    from raftlog.server import config as config_module
    from raftlog.server.compaction import CompactionManager

    monkeypatch.delenv("RAFTLOG_RETENTION_COMPACTION_MAP_BYTES", raising=False)
    default = load_config(write(tmp_path))
    assert default.retention.compaction_map_bytes == 128 << 20
    assert "    compaction_map_bytes = 134217728 " in (config_module.__doc__ or "")
    cfg = load_config(write(tmp_path, "[retention]\ncompaction_map_bytes = 65536\n"))
    assert CompactionManager(SimpleNamespace(cfg=cfg)).map_bytes == 65536
    again = tmp_path / "again.toml"
    again.write_text(render_config(cfg))
    assert load_config(again).retention.compaction_map_bytes == 65536
    monkeypatch.setenv("RAFTLOG_RETENTION_COMPACTION_MAP_BYTES", "4096")
    assert CompactionManager(SimpleNamespace(cfg=cfg)).map_bytes == 4096
    with pytest.raises(ConfigError, match="compaction_map_bytes must be > 0"):
        load_config(write(tmp_path, "[retention]\ncompaction_map_bytes = 0\n"))
