"""SIGKILL a process mid-save: every acknowledged Ready must survive, atomically.

SIGKILL tests crash atomicity and recovery of a process; the OS page cache
survives it, so these tests do not prove fsync against power loss (RocksDB's
synced WAL write, ``WriteOptions.sync=True``, is what covers that).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from raftlog.client.protocol import decode_batch
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore

from . import crash_producer
from .crash_writer import GROUPS, TERM, payload

WRITER = Path(__file__).with_name("crash_writer.py")
PRODUCER = Path(__file__).with_name("crash_producer.py")
ACKS_BEFORE_KILL = 150
DEADLINE_S = 30.0


def _read_acks(proc: subprocess.Popen[bytes], want: int) -> tuple[list[str], bytes]:
    """Read printed lines until ``want`` were seen (bounded by DEADLINE_S); also
    return the bytes of an incomplete last line."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    acks: list[str] = []
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
        acks.extend(line.decode() for line in lines if line)
    return acks, buf


def _run_and_kill(script: Path, data_dir: Path, *args: str) -> list[str]:
    """Run ``script DATA_DIR ARGS...``, SIGKILL it mid-stream, return every line it printed."""
    proc = subprocess.Popen(
        [sys.executable, str(script), str(data_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        acks, partial = _read_acks(proc, ACKS_BEFORE_KILL)
        proc.send_signal(signal.SIGKILL)
        # Anything printed after our last read was also acknowledged: drain it.
        out, _ = proc.communicate(timeout=10)
        # A line cut by the kill (no newline) is not a complete acknowledgement.
        *lines, _unterminated = (partial + out).decode().split("\n")
        acks.extend(line for line in lines if line.strip())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return acks


@pytest.mark.integration
@pytest.mark.parametrize("roll_every", [0, 20], ids=["one-wal", "recycled-wals"])
def test_sigkill_mid_stream_keeps_every_acknowledged_entry(tmp_path: Path, roll_every: int) -> None:
    """With ``recycled-wals`` the writer switches WAL files every 20 saves, so most
    saves land in recycled files whose stale tails recovery must not replay."""
    data_dir = tmp_path / "crash"
    acks = [int(line) for line in _run_and_kill(WRITER, data_dir, str(roll_every))]
    if roll_every:
        # The case is only meaningful if RocksDB did reuse WAL files.
        assert "reusing log" in (data_dir / "LOG").read_text()
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


@pytest.mark.integration
def test_sigkill_between_unsynced_applies_recovers_by_replaying_the_raft_log(
    tmp_path: Path,
) -> None:
    """The driver writes apply batches unsynced; after a crash the state machine
    resumes from its persisted applied index and re-applies the committed Raft
    entries: every acknowledged produce is readable at its acknowledged offset,
    exactly once (the idempotence window is rebuilt by the same replay)."""
    data_dir = tmp_path / "crash"
    acks = [tuple(map(int, line.split())) for line in _run_and_kill(PRODUCER, data_dir)]
    assert [i for i, _ in acks] == list(range(1, len(acks) + 1))

    with NodeStore.open(data_dir, cluster="crash", node_id="n1") as store:
        gid = crash_producer.GROUP
        g = store.group(gid)
        sm = PartitionStateMachine(store, gid)
        commit = g.hard_state.commit
        assert commit >= len(acks)
        assert sm.applied_index <= commit
        replay = g.entries(sm.applied_index + 1, commit + 1) if sm.applied_index < commit else []
        batch = store.new_batch()
        sm.apply(replay, batch)
        store.write(batch)
        assert (sm.applied_index, sm.next_offset) == (commit, commit)
        stored = [
            r.value
            for base, ts, _, blob in sm.read(0, 1 << 30)
            for r in decode_batch(base, ts, blob)
        ]
        assert stored == [crash_producer.record(i) for i in range(1, commit + 1)]
        for index, offset in acks:
            assert stored[offset] == crash_producer.record(index)
