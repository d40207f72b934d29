"""Same inputs => same outputs, whatever the interpreter's hash seed.

A scenario with elections, membership changes, partitions and restarts runs
in two fresh interpreters with different PYTHONHASHSEED values; the full
message traces must be identical (set or hash order leaking into behaviour
would show up here).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = """
import hashlib, random, logging
logging.disable(logging.CRITICAL)
from tests.raft.harness import Net
from raftlog.raft.memory_storage import MemoryStorage
from raftlog.raft.types import ConfChange, ConfChangeItem, ConfChangeType, ConfState

net = Net(["n1", "n2", "n3"], seed=7)
net.add("n4", MemoryStorage(conf_state=ConfState(voters=("n1", "n2", "n3"))))
rng = random.Random(3)
net.filter = lambda m: rng.random() > 0.1
net.tick_until(lambda: net.leader() is not None)
for step in range(300):
    leader = net.leader()
    r = rng.random()
    if leader is not None and r < 0.3:
        try:
            leader.propose(b"v%d" % step)
        except Exception:
            pass
    elif leader is not None and r < 0.33:
        cc = ConfChange((ConfChangeItem(ConfChangeType.ADD_VOTER, "n4"),
                         ConfChangeItem(ConfChangeType.ADD_LEARNER, "n1")))
        try:
            leader.propose_conf_change(cc)
        except Exception:
            pass
    elif r < 0.36:
        net.isolate(rng.choice(["n1", "n2", "n3", "n4"]))
    elif r < 0.4:
        net.heal()
    elif r < 0.42:
        net.restart(rng.choice(["n1", "n2", "n3", "n4"]))
    net.tick()
h = hashlib.sha256(repr(net.delivered).encode()).hexdigest()
print(len(net.delivered), h)
"""


def _trace(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", SCENARIO],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
        env=env,
    )
    return out.stdout.strip()


def test_trace_is_identical_across_hash_seeds() -> None:
    first = _trace("1")
    count, digest = first.split()
    assert int(count) > 500  # the scenario really exchanged messages
    assert len(digest) == len(hashlib.sha256().hexdigest())
    assert _trace("2") == first
