"""Log compaction's scheduler: the partition leader sweeps compacted topics.

A topic whose config has ``cleanup_policy = "compact"`` keeps the latest
record of each key (log/compaction.py has the rules and the stored form).
Every ``interval_s`` the leader of each such partition checks whether a sweep
is due; if so it plans one in a worker thread (reads only) and proposes its
chunks through the partition's Raft log, one at a time, each only after the
previous one applied. Every replica applies the same chunks at the same log
positions, so all of them remove the same records.

A sweep is due when the records appended since the last sweep's end are at
least ``dirty_ratio`` (0.5, Kafka's ``min.cleanable.dirty.ratio``;
``RAFTLOG_COMPACTION_DIRTY_RATIO`` overrides it) of those records plus the
ones the last sweep kept. Amortized, each record is read by a few sweeps: the
partition's live records double between two of them. A sweep is also due
when a tombstone it kept passes ``delete_retention_ms``, so a partition that
stopped receiving writes still loses its deletes in time. A new leader does
not know what the last sweep kept: it sweeps once when anything is new.

Two topic config keys change when a sweep is due: ``min_cleanable_dirty_ratio``
replaces the node-wide ratio for one topic, and ``max_compaction_lag_ms``
(Kafka's ``max.compaction.lag.ms``) makes a sweep due once the oldest record
not yet swept is that old, whatever the ratio.

Times come from the leader's wall clock, checked against the cluster's like
retention's (server/retention.py): with a clock too far ahead no tombstone
goes and a topic with ``min_compaction_lag_ms`` is not swept.

Topic config keys (log/metadata.py):
- ``delete_retention_ms`` (default 86400000, a day: Kafka's
  ``delete.retention.ms``): how long a tombstone stays readable, from its
  append stamp;
- ``min_compaction_lag_ms`` (default none: Kafka's ``min.compaction.lag.ms``):
  records appended more recently than this are never compacted;
- ``max_compaction_lag_ms`` (default none) and ``min_cleanable_dirty_ratio``
  (default the node's ratio), above.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from raftlog.log.compaction import DEFAULT_CHUNK_BYTES, SweepPlan, plan_sweep
from raftlog.raft.types import Role

from .clock_skew import wall_time
from .config import RetentionConfig
from .groups import Group, GroupKind
from .metrics import LabelValues, Registry
from .periodic import run_rounds

log = logging.getLogger("raftlog.compaction")

DEFAULT_DIRTY_RATIO = 0.5
DEFAULT_DELETE_RETENTION_MS = 24 * 3600 * 1000
# How long one chunk may take to commit and apply before the sweep gives up
# (a leader change, a stalled majority); the next round starts over.
CHUNK_TIMEOUT_S = 30.0


def is_compacted(config: dict[str, Any] | None) -> bool:
    return (config or {}).get("cleanup_policy") == "compact"


def sweep_end(sm: Any, config: dict[str, Any], now_ms: int) -> int:
    """Where a sweep may stop: the high watermark, or the first batch appended
    within ``min_compaction_lag_ms`` (a batch boundary either way)."""
    lag = config.get("min_compaction_lag_ms")
    if not lag:
        return sm.next_offset
    found = sm.offset_for_time(now_ms - lag + 1)  # first batch stamped after now - lag
    if found is None:
        return sm.next_offset
    offset, _ = found
    holding = next(sm.batch_headers(lo=offset, hi=offset + 1), None)
    return holding[0] if holding is not None else offset


@dataclass(slots=True, frozen=True)
class LastSweep:
    """What this leader's last sweep of a partition left (leader memory only)."""

    end: int
    live: int  # records it kept in [start, end)
    tombstone_due_ms: int | None  # when the oldest tombstone it kept expires
    # Its offset map filled before the end it was given: the next sweep goes on
    # at once from ``end``, whatever the ratio says.
    map_full: bool = False


def sweep_due(
    sm: Any,
    end: int,
    dirty_ratio: float,
    last: LastSweep | None,
    now_ms: int,
    max_lag_ms: int | None = None,
) -> str | None:
    """Why a sweep of ``[start, end)`` is due now (None: it is not).

    - ``new_leader``: no sweep by this leader yet, and anything not swept;
    - ``tombstone_expiry``: a tombstone the last sweep kept is past its retention;
    - ``map_full``: the last sweep stopped where its offset map filled up, and
      records are left above it;
    - ``dirty_ratio``: enough new records since the last sweep, relative to the
      live ones;
    - ``max_lag``: the oldest record not yet swept was appended at least
      ``max_lag_ms`` ago (Kafka's ``max.compaction.lag.ms``), however few new
      records there are: a key's old values (a user's deleted data) are gone
      within that bound plus one check interval.
    """
    dirty_from = max(sm.compacted_below, sm.start_offset)
    dirty = end - dirty_from
    if last is None:
        return "new_leader" if dirty > 0 else None
    if last.tombstone_due_ms is not None and now_ms >= last.tombstone_due_ms:
        return "tombstone_expiry"
    if dirty <= 0:
        return None
    if last.map_full:
        return "map_full"
    if dirty >= dirty_ratio * (dirty + last.live):
        return "dirty_ratio"
    if max_lag_ms is not None:
        oldest = next(sm.batch_headers(lo=dirty_from, hi=dirty_from + 1), None)
        if oldest is not None and oldest[1] <= now_ms - max_lag_ms:
            return "max_lag"
    return None


def unswept_age_s(sm: Any, now_ms: int) -> float:
    """Seconds since the oldest record that no sweep has covered yet was appended
    (0: every record was swept). Kafka's ``max-compaction-delay-secs`` watches the
    same delay: above ``max_compaction_lag_ms`` for long, sweeps fall behind."""
    dirty_from = max(sm.compacted_below, sm.start_offset)
    if dirty_from >= sm.next_offset:
        return 0.0
    oldest = next(sm.batch_headers(lo=dirty_from, hi=dirty_from + 1), None)
    if oldest is None:
        return 0.0
    return max(0, now_ms - oldest[1]) / 1000.0


@dataclass
class CompactionManager:
    driver: Any  # server.driver.MultiRaft
    interval_s: float = None  # type: ignore[assignment]  # set in __post_init__
    max_clock_skew_s: float = None  # type: ignore[assignment]  # set in __post_init__
    dirty_ratio: float = None  # type: ignore[assignment]  # set in __post_init__
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    map_bytes: int = None  # type: ignore[assignment]  # set in __post_init__
    clock_ms: Callable[[], int] = field(default=lambda: int(wall_time() * 1000))
    sweeps: int = 0  # sweeps finished here (tests and logs)
    _last: dict[int, LastSweep] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dirty_ratio is None:
            self.dirty_ratio = float(
                os.environ.get("RAFTLOG_COMPACTION_DIRTY_RATIO", DEFAULT_DIRTY_RATIO)
            )
        cfg = RetentionConfig.of_driver(self.driver)
        if self.interval_s is None:
            self.interval_s = cfg.interval_ms / 1000.0
        if self.max_clock_skew_s is None:
            self.max_clock_skew_s = cfg.max_clock_skew_ms / 1000.0
        if self.map_bytes is None:
            self.map_bytes = cfg.compaction_map_bytes

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await run_rounds(self.interval_s, self.check_all, log, "compaction", task_status)

    def _compacted_partitions(self) -> list[tuple[Group, dict[str, Any]]]:
        topics = getattr(self.driver.metadata, "topics", {})
        out = []
        for group in list(self.driver.groups.values()):
            if group.kind is not GroupKind.PARTITION or group.role is not Role.LEADER:
                continue
            topic = topics.get(group.topic) if group.topic is not None else None
            if topic is not None and is_compacted(topic.config):
                out.append((group, topic.config))
        return out

    def register_metrics(self, registry: Registry) -> None:
        """Add the unswept-age gauge, read at each scrape, to ``registry``."""

        def collect() -> list[tuple[LabelValues, float]]:
            now_ms = self.clock_ms()
            return [
                ((group.topic or "", str(group.partition)), unswept_age_s(group.sm, now_ms))
                for group, _config in self._compacted_partitions()
            ]

        registry.collected(
            "raftlog_compaction_unswept_age_seconds",
            "Age of the oldest record of a compacted partition led here that no sweep has "
            "covered yet (0: all swept), like Kafka's max-compaction-delay-secs.",
            ("topic", "partition"),
            collect,
        )

    async def check_all(self) -> int:
        """One round over the compacted partitions led here; returns sweeps finished."""
        done = 0
        led = self._compacted_partitions()
        for gid in self._last.keys() - {g.gid for g, _ in led}:
            del self._last[gid]  # led elsewhere now: its next sweep there is not ours
        for group, config in led:
            if await self.sweep(group, config):
                done += 1
        return done

    async def sweep(self, group: Group, config: dict[str, Any], *, force: bool = False) -> bool:
        """Plan and apply one sweep of ``group`` if due (or ``force``); True if it
        ran to its end."""
        sm = group.sm
        now_ms = self.clock_ms()
        trusted = self.driver.clock_not_ahead(self.max_clock_skew_s)
        if config.get("min_compaction_lag_ms") and not trusted:
            return False
        end = sweep_end(sm, config, now_ms)
        last = self._last.get(group.gid)
        if last is not None and last.end > sm.next_offset:
            last = None  # a different log since (the partition was recreated)
        reason = "forced" if force else sweep_due(
            sm,
            end,
            config.get("min_cleanable_dirty_ratio", self.dirty_ratio),
            last,
            now_ms,
            config.get("max_compaction_lag_ms"),
        )
        if reason is None:
            return False
        retention = config.get("delete_retention_ms") or DEFAULT_DELETE_RETENTION_MS
        tombstones_before = now_ms - retention if trusted else None
        start = sm.start_offset
        plan: SweepPlan = await trio.to_thread.run_sync(
            lambda: plan_sweep(
                sm,
                start=start,
                end=end,
                tombstones_before_ms=tombstones_before,
                chunk_bytes=self.chunk_bytes,
                map_bytes=self.map_bytes,
            )
        )
        removed = 0
        for chunk in plan.chunks:
            if self.driver.groups.get(group.gid) is not group or group.role is not Role.LEADER:
                log.info("event=compaction_abandoned group=%d reason=not_leader", group.gid)
                return False
            waiter = self.driver.submit(group.gid, chunk)
            outcome = await waiter.wait(trio.current_time() + CHUNK_TIMEOUT_S)
            result = outcome.value
            if outcome.error is not None or result is None or not result.ok:
                why = outcome.message or (result.message if result is not None else "")
                log.info("event=compaction_abandoned group=%d reason=%s", group.gid, why)
                return False
            removed += result.compacted or 0
        self.sweeps += 1
        due = plan.oldest_tombstone_ms
        self._last[group.gid] = LastSweep(
            plan.end,
            plan.live,
            None if due is None or not trusted else due + retention,
            plan.map_full,
        )
        log.info(
            "event=compaction_sweep group=%d topic=%s partition=%s reason=%s start=%d end=%d "
            "records=%d removed=%d tombstones=%d chunks=%d mapped_keys=%d map_bytes=%d "
            "map_full=%d",
            group.gid, group.topic, group.partition, reason, start, plan.end,
            plan.records, removed, plan.tombstones, len(plan.chunks), plan.mapped_keys,
            plan.map_bytes, plan.map_full,
        )  # fmt: skip
        metrics = getattr(self.driver, "metrics", None)
        if metrics is not None:
            metrics.compaction_sweeps.inc()
            metrics.compaction_removed.inc(removed)
            if plan.map_full:
                metrics.compaction_map_full.inc()
        return True
