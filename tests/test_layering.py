"""DESIGN.md §2: the layers point one way. Checked in a fresh interpreter so that
nothing imported by other tests hides a forbidden import."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules_of(folder: str) -> list[str]:
    return [
        f"raftlog.{folder}.{info.name}"
        for info in pkgutil.iter_modules([str(ROOT / folder)])
        if not info.name.startswith("_")
    ]


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(out.stdout))


def _forbidden(loaded: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if m.startswith(prefixes))


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        # The core is pure: no I/O libraries, nothing of ours.
        ("raft", ("trio", "rocksdict", "raftlog.log", "raftlog.server", "raftlog.client")),
        # Storage stores raft's types; it knows nothing of the network.
        ("log", ("trio", "raftlog.server", "raftlog.client.aio", "raftlog.jepsen")),
        # The client knows only the wire protocol.
        ("client", ("raftlog.raft", "raftlog.log", "raftlog.server", "rocksdict")),
        # Testers drive real processes through the client and the CLI only.
        ("jepsen", ("raftlog.raft", "raftlog.log")),
    ],
)
def test_layer_imports_point_one_way(folder: str, forbidden: tuple[str, ...]) -> None:
    modules = _modules_of(folder)
    if not modules:
        pytest.skip(f"{folder}/ has no modules yet")
    loaded = _loaded_after_import(modules)
    assert _forbidden(loaded, forbidden) == [], f"{folder}/ imports a layer it must not"
