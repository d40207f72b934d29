"""``[limits] tcp_keepalive_s`` in cluster.toml: its default, its values, the
values refused, and its render round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from raftlog.server.config import ClusterConfig, ConfigError, Limits, load_config, render_config

NODES = """
[cluster]
name = "local"

[[node]]
id = "n1"
address = "127.0.0.1:7101"
"""


def load(tmp_path: Path, limits: str = "") -> ClusterConfig:
    path = tmp_path / "cluster.toml"
    path.write_text(NODES + (f"[limits]\n{limits}\n" if limits else ""))
    return load_config(path)


def test_the_default_is_thirty_seconds_and_is_not_rendered(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    assert cfg.limits.tcp_keepalive_s == 30
    assert "tcp_keepalive_s" not in render_config(cfg)


@pytest.mark.parametrize("value", [0, 5, 32767])
def test_a_value_is_read_and_survives_a_render_round_trip(tmp_path: Path, value: int) -> None:
    cfg = load(tmp_path, f"tcp_keepalive_s = {value}")
    assert cfg.limits == Limits(tcp_keepalive_s=value)
    rendered = render_config(cfg)
    assert f"tcp_keepalive_s = {value}\n" in rendered
    (tmp_path / "again.toml").write_text(rendered)
    assert load_config(tmp_path / "again.toml").limits.tcp_keepalive_s == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("-1", "must be >= 0, got -1"),
        ("32768", "must be at most 32767 (the kernel's largest keepalive idle time), got 32768"),
        ("1.5", "must be int, got float 1.5"),
        ('"30"', "must be int, got str '30'"),
        ("true", "must be int, got bool True"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(tmp_path: Path, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"tcp_keepalive_s = {value}")
    assert f"cluster.toml: limits.tcp_keepalive_s {problem}" in str(info.value)
