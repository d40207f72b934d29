"""The snapshot metrics of one node, registered in its metrics registry.

server/snapshots.py and server/snapshot_transfer.py update them; the node's
``/metrics`` endpoint (server/metrics.py) serves them with everything else.
Names and what to alert on:

- ``raftlog_snapshots_taken_total{kind}``, ``raftlog_snapshot_take_seconds``
  (snapshot record write + fsync), ``raftlog_snapshots_skipped_total{kind}``
  (captures not written: group deleted, newer snapshot installed, store error);
- ``raftlog_log_compactions_total``;
- ``raftlog_snapshots_sent_total{kind}`` (SNAPSHOT messages sent by leaders
  here, resends after a snapshot timeout included),
  ``raftlog_snapshots_received_total{kind}``,
  ``raftlog_snapshots_installed_total{kind}``;
- ``raftlog_snapshot_transfer_bytes_total{direction="in"|"out"}`` (record
  bytes fetched by / served by this node), ``raftlog_snapshot_transfers_total{result}``
  (``ok`` or ``failed``), ``raftlog_snapshot_transfer_resumes_total``,
  ``raftlog_snapshot_transfers_active``;
- ``raftlog_snapshot_index{group}``: the latest snapshot index of every group
  hosted here, and ``raftlog_snapshot_max_entries_behind``: the largest
  applied index minus snapshot index over those groups. Alert when it stays
  well above ``[snapshots] entries``: snapshots are not being taken, so the
  Raft log (and the next restart) grows without bound.

``kind`` is ``partition`` or ``metadata``. The per-group gauge is one dict
entry per hosted group in this registry (an update is a dict store, the
formatting is paid by the scraper): 1,000 partitions cost ~1,000 lines per
scrape, which is why it holds only one number per group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .metrics import Counter, Gauge, Histogram, Registry

# Snapshot writes: a small record plus one fsync; 1 ms .. 10 s.
TAKE_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                   1.0, 2.5, 10.0)  # fmt: skip


def _get_or_add(registry: Registry, make: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """The registry's metric ``name``, created on first use.

    Idempotent, so that two snapshot managers given one registry (tests
    building several drivers on one Metrics) share the series instead of
    failing on the registry's "registered twice" check.
    """
    try:
        return registry.get(name)
    except KeyError:
        return make(name, *args, **kwargs)


@dataclass(slots=True)
class SnapshotMetrics:
    registry: Registry = field(default_factory=Registry)
    taken: Counter = field(init=False)
    take_seconds: Histogram = field(init=False)
    skipped: Counter = field(init=False)
    compactions: Counter = field(init=False)
    sent: Counter = field(init=False)
    received: Counter = field(init=False)
    installed: Counter = field(init=False)
    transfer_bytes: Counter = field(init=False)
    transfers: Counter = field(init=False)
    resumes: Counter = field(init=False)
    active: Gauge = field(init=False)
    index: Gauge = field(init=False)
    max_behind: Gauge = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.taken = _get_or_add(
            r, r.counter, "raftlog_snapshots_taken_total", "Snapshots written here.", ["kind"]
        )
        self.take_seconds = _get_or_add(
            r,
            r.histogram,
            "raftlog_snapshot_take_seconds",
            "Time to write (and fsync) one snapshot record.",
            buckets=TAKE_BUCKETS,
        )
        self.skipped = _get_or_add(
            r,
            r.counter,
            "raftlog_snapshots_skipped_total",
            "Snapshot captures not written (group gone, newer snapshot, store error).",
            ["kind"],
        )
        self.compactions = _get_or_add(
            r, r.counter, "raftlog_log_compactions_total", "Raft log compactions behind a snapshot."
        )
        self.sent = _get_or_add(
            r,
            r.counter,
            "raftlog_snapshots_sent_total",
            "SNAPSHOT messages sent by leaders here (resends included).",
            ["kind"],
        )
        self.received = _get_or_add(
            r,
            r.counter,
            "raftlog_snapshots_received_total",
            "SNAPSHOT messages received from leaders.",
            ["kind"],
        )
        self.installed = _get_or_add(
            r,
            r.counter,
            "raftlog_snapshots_installed_total",
            "Snapshots restored into a state machine here.",
            ["kind"],
        )
        self.transfer_bytes = _get_or_add(
            r,
            r.counter,
            "raftlog_snapshot_transfer_bytes_total",
            "Snapshot record bytes fetched from peers (in) or served to them (out).",
            ["direction"],
        )
        self.transfers = _get_or_add(
            r,
            r.counter,
            "raftlog_snapshot_transfers_total",
            "Snapshot record transfers received, by result (ok, failed).",
            ["result"],
        )
        self.resumes = _get_or_add(
            r,
            r.counter,
            "raftlog_snapshot_transfer_resumes_total",
            "Transfers started again after a failed one of the same group.",
        )
        self.active = _get_or_add(
            r, r.gauge, "raftlog_snapshot_transfers_active", "Snapshot transfers in progress."
        )
        self.index = _get_or_add(
            r, r.gauge, "raftlog_snapshot_index", "Latest snapshot index per group.", ["group"]
        )
        self.max_behind = _get_or_add(
            r,
            r.gauge,
            "raftlog_snapshot_max_entries_behind",
            "Largest applied index minus snapshot index over the groups hosted here.",
        )
