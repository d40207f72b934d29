"""Fixtures for the storage tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from raftlog.log.store import NodeStore


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "n1"


@pytest.fixture
def store(data_dir: Path) -> Iterator[NodeStore]:
    s = NodeStore.open(data_dir, cluster="test", node_id="n1")
    try:
        yield s
    finally:
        s.close()
