"""The core is pure: importing it loads no I/O library and nothing else of ours."""

from __future__ import annotations

import json
import subprocess
import sys


def test_import_loads_no_io_modules_or_other_layers() -> None:
    code = (
        "import json, sys\n"
        "import raftlog.raft, raftlog.raft.node, raftlog.raft.codec, raftlog.raft.memory_storage\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(out.stdout)
    assert "raftlog.raft.node" in loaded  # the probe really imported the core
    bad = [
        m
        for m in loaded
        if m.split(".")[0] in {"trio", "rocksdict", "socket", "asyncio", "selectors"}
        or m.startswith(("raftlog.server", "raftlog.log", "raftlog.client", "raftlog.jepsen"))
    ]
    assert bad == []
