"""The node's file descriptors: connections must never take the ones RocksDB needs.

Every connection holds a descriptor, and so does every RocksDB table file and
log. When a process runs out, ``accept`` fails (trio's listener waits and
retries, so new clients and redialling peers are refused), and RocksDB fails
to open its next file: a failed flush stops every write of the node. Two
defences, both at start-up:

- ``node start`` lifts the soft ``RLIMIT_NOFILE`` to the hard one, as Go's
  runtime does for every Go server since 1.19 (etcd, NATS). Many systems
  default the soft limit to 1024, fewer than ``max_client_connections``
  alone, while the hard limit is far higher.
- ``fit_connection_limits`` lowers ``max_client_connections`` and
  ``max_pending_connections`` if the soft limit cannot hold them beside the
  descriptors already open and the reserve (``reserved_fds``: RocksDB's
  table cache, ``[storage] rocksdb_max_open_files``, and 128 more), and the
  node logs it. A client beyond the fitted limit is then told NOT_AVAILABLE
  (and tries another node) instead of taking a descriptor RocksDB would need.
  Overrides of an address's pending share are not lowered: the fitted node
  bound still holds every address.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
from pathlib import Path

from raftlog.log.store import ROCKSDB_MAX_OPEN_FILES

from .config import Limits
from .metrics import descriptors_in_use

log = logging.getLogger(__name__)

# Descriptors kept free of connections beside RocksDB's table cache: its logs
# and manifest, peer links (a dialled and an accepted one per peer), snapshot
# transfers and metrics scrapes.
RESERVED_BESIDE_TABLES = 128


def reserved_fds(rocksdb_max_open_files: int) -> int:
    """Descriptors kept free of connections, for a table cache of that size."""
    return rocksdb_max_open_files + RESERVED_BESIDE_TABLES


# The reserve with the default table cache.
RESERVED_FDS = reserved_fds(ROCKSDB_MAX_OPEN_FILES)
_NR_OPEN = Path("/proc/sys/fs/nr_open")  # Linux's ceiling for any process


def raise_soft_limit() -> tuple[int, int]:
    """Lift the soft RLIMIT_NOFILE to the hard limit; return (before, after).

    Only the soft limit moves, which any process may do up to its hard
    limit. An unlimited hard limit is capped at the kernel's ``nr_open``
    (Linux refuses a soft limit above it).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else _nr_open()
    if soft == resource.RLIM_INFINITY or target is None or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("event=open_files_limit_not_raised soft=%d hard=%d error=%r", soft, hard, exc)
        return soft, soft
    return soft, target


def _nr_open() -> int | None:
    try:
        return int(_NR_OPEN.read_text())
    except (OSError, ValueError):
        return None


def fit_connection_limits(
    limits: Limits, soft_limit: int, in_use: int, reserved: int = RESERVED_FDS
) -> Limits:
    """``limits`` with the two connection limits lowered, if need be, so that
    they fit under ``soft_limit`` beside ``in_use`` descriptors and
    ``reserved`` ones. Their ratio is kept; each stays at least 1. An
    address's share of the pending bound shrinks with it, so that one host's
    flood still cannot take the whole of it (server/pending_connections.py)."""
    available = soft_limit - in_use - reserved
    wanted = limits.max_client_connections + limits.max_pending_connections
    if wanted <= available:
        return limits
    clients = max(1, available * limits.max_client_connections // wanted)
    pending = max(1, available - clients)
    share = limits.max_pending_connections_per_address
    if share:  # 0: no share, and none to keep
        share = max(1, share * pending // limits.max_pending_connections)
    return dataclasses.replace(
        limits,
        max_client_connections=clients,
        max_pending_connections=pending,
        max_pending_connections_per_address=share,
    )


def fit_to_open_files_limit(limits: Limits, node_id: str, reserved: int = RESERVED_FDS) -> Limits:
    """The node's connection limits for this process's descriptor limit,
    with a warning naming the fix when they had to be lowered."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return limits
    in_use = descriptors_in_use() or 0  # not Linux: assume few
    fitted = fit_connection_limits(limits, soft, in_use, reserved)
    if fitted != limits:
        log.warning(
            "event=connection_limits_lowered node=%s open_files_limit=%d in_use=%d "
            "reserved=%d max_client_connections=%d->%d max_pending_connections=%d->%d "
            "max_pending_connections_per_address=%d->%d "
            "fix='raise the open files limit (ulimit -n, systemd LimitNOFILE=) or lower "
            "[limits] max_client_connections'",
            node_id, soft, in_use, reserved,
            limits.max_client_connections, fitted.max_client_connections,
            limits.max_pending_connections, fitted.max_pending_connections,
            limits.max_pending_connections_per_address,
            fitted.max_pending_connections_per_address,
        )  # fmt: skip
    return fitted
