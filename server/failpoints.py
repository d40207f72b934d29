"""Crash failpoints for tests: ``RAFTLOG_FAILPOINTS="name,..."`` kills the process there.

The variable is read once, on first use; ``failpoint(name)`` is a set lookup
when it is unset, so failpoints may sit on hot-ish paths. A hit logs one line
(so a test can tell the node died where it wanted) and sends SIGKILL to its
own process: no cleanup, no flush, exactly like a power cut for everything
that was not yet handed to the kernel.

Known points (server/snapshots.py, server/snapshot_transfer.py):

- ``snapshot_before_compact``: a snapshot record is durable, the log not yet compacted;
- ``snapshot_mid_transfer``: a follower wrote the first fetched chunk of records;
- ``snapshot_after_restore``: a follower wrote the restored state machine (unsynced),
  before the Raft snapshot itself is persisted.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

log = logging.getLogger("raftlog.failpoints")

ENV = "RAFTLOG_FAILPOINTS"
_active: frozenset[str] | None = None


def active() -> frozenset[str]:
    global _active
    if _active is None:
        raw = os.environ.get(ENV, "")
        _active = frozenset(p.strip() for p in raw.split(",") if p.strip())
        if _active:
            log.warning("event=failpoints_armed points=%s", ",".join(sorted(_active)))
    return _active


def failpoint(name: str) -> None:
    """SIGKILL this process if ``name`` is armed."""
    if name not in active():
        return
    log.critical("event=failpoint_hit name=%s pid=%d", name, os.getpid())
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
