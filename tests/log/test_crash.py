"""SIGKILL a process mid-save: every acknowledged Ready must survive, atomically."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from raftlog.log.store import NodeStore

from .crash_writer import GROUPS, TERM, payload

WRITER = Path(__file__).with_name("crash_writer.py")
ACKS_BEFORE_KILL = 150
DEADLINE_S = 30.0


def _read_acks(proc: subprocess.Popen[bytes], want: int) -> list[int]:
    """Read printed indexes until ``want`` were seen (bounded by DEADLINE_S)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    acks: list[int] = []
    buf = b""
    deadline = time.monotonic() + DEADLINE_S
    while len(acks) < want:
        left = deadline - time.monotonic()
        assert left > 0, f"writer acknowledged only {len(acks)} saves in {DEADLINE_S}s"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        assert chunk, f"writer exited early (rc={proc.poll()})"
        buf += chunk
        *lines, buf = buf.split(b"\n")
        acks.extend(int(line) for line in lines if line)
    return acks


@pytest.mark.integration
def test_sigkill_mid_stream_keeps_every_acknowledged_entry(tmp_path: Path) -> None:
    data_dir = tmp_path / "crash"
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        acks = _read_acks(proc, ACKS_BEFORE_KILL)
        proc.send_signal(signal.SIGKILL)
        # Anything printed after our last read was also acknowledged: drain it.
        out, _ = proc.communicate(timeout=10)
        acks.extend(int(line) for line in out.split(b"\n") if line.strip())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert acks == list(range(1, len(acks) + 1))
    last_ack = acks[-1]

    with NodeStore.open(data_dir, cluster="crash", node_id="n1") as store:
        assert store.group_ids() == list(GROUPS)
        lasts = set()
        for gid in GROUPS:
            g = store.group(gid)
            last = g.last_index()
            # Everything acknowledged is there; at most the one save in flight more.
            assert last_ack <= last <= last_ack + 1
            entries = g.entries(1, last + 1)
            assert [e.index for e in entries] == list(range(1, last + 1))
            assert all(e.term == TERM and e.data == payload(gid, e.index) for e in entries)
            hs, _ = g.initial_state()
            # The hard state was written in the same batch as the last entry.
            assert (hs.term, hs.vote, hs.commit) == (TERM, "n1", last - 1)
            lasts.add(last)
        # One WriteBatch per save: the groups can never disagree.
        assert len(lasts) == 1
