"""Per-topic retention: the partition leader moves the start offset through the log.

A topic's config (``create_topic``'s ``config``) may set

- ``retention_ms``: delete whole batches whose (leader-assigned, monotonic)
  timestamp is older than now - retention_ms;
- ``retention_bytes``: keep at most this many stored bytes per partition,
  counted from the newest batch; older whole batches go.

Absent, None or a value <= 0 means "keep forever" (Kafka's -1). Every
``interval_s`` the leader of each partition decides a new start offset with
the rule that deletes more, and proposes ``TruncatePrefix(new_start)``
through the partition's Raft log: every replica applies it at the same log
position, so all of them delete the same batches and agree on
``start_offset`` (deterministic apply, no clock read on followers).

Time is the leader's wall clock, so a leader whose clock runs ahead would
delete too early, on every replica. Before deleting by time the leader checks
that its clock is not ahead of a majority of the nodes by more than
``[retention] max_clock_skew_ms`` (server/clock_skew.py); if it is, that round
deletes nothing by time (size-based retention goes on) and counts
``raftlog_retention_clock_refusals_total``.

A fetch below ``start_offset`` answers OUT_OF_RANGE with the current start
offset (handlers.py ``_check_range``); a consumer whose committed offset fell
below it resets by its ``auto_offset_reset`` ("earliest": the new start).

The same rounds bound what partitions remember of idempotent producers
(Kafka's producer.id.expiration.ms, KIP-854). Every producer id a client ever
used would otherwise stay in the partition's state, memory and snapshots for
good, and clients get a fresh id on every start and every sequence reset. A
leader proposes ``ExpireProducers``, again through the log, for a partition
with a producer idle longer than ``producer_expiry_ms`` (by the same
skew-checked clock) or with more than ``max_producers_per_partition``
producers (least recently used go first).

cluster.toml's ``[retention] interval_ms`` (default 5000) sets the check
interval, ``max_clock_skew_ms`` (default 60000) the tolerated skew, and
``producer_expiry_ms`` / ``max_producers_per_partition`` the producer bounds;
``RAFTLOG_RETENTION_<KEY>`` overrides them (server/config.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import trio
from raftlog.log.commands import ExpireProducers, TruncatePrefix
from raftlog.raft.types import Role

from .clock_skew import wall_time
from .config import RetentionConfig
from .groups import Group, GroupKind
from .periodic import run_rounds
from .waiters import Waiter

log = logging.getLogger("raftlog.retention")

DEFAULT_INTERVAL_MS = RetentionConfig().interval_ms
# Batch headers read per partition per check: bounds the work of one round on a
# huge partition (the next round continues from the new start).
MAX_SCAN_BATCHES = 100_000


@dataclass(slots=True, frozen=True)
class RetentionPolicy:
    retention_ms: int | None = None
    retention_bytes: int | None = None

    @classmethod
    def of(cls, config: dict[str, Any] | None) -> RetentionPolicy:
        config = config or {}

        def positive(name: str) -> int | None:
            value = config.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                return None
            return int(value)

        return cls(positive("retention_ms"), positive("retention_bytes"))

    @property
    def unlimited(self) -> bool:
        return self.retention_ms is None and self.retention_bytes is None


def decide_start_offset(
    sm: Any, policy: RetentionPolicy, now_ms: int, max_scan: int = MAX_SCAN_BATCHES
) -> int:
    """The start offset ``policy`` asks for; ``sm.start_offset`` if nothing is due.

    Only whole batches are ever dropped: the new start is a batch boundary.
    """
    start = sm.start_offset
    new_start = start
    if policy.retention_ms is not None:
        cutoff = now_ms - policy.retention_ms
        for n, (base, ts, count, _) in enumerate(sm.batch_headers()):
            if ts >= cutoff or n >= max_scan:
                break  # timestamps never go backwards: the rest is younger
            new_start = max(new_start, base + count)
    if policy.retention_bytes is not None:
        # Segment totals (log/sizes.py): reads at most the segment holding the cut.
        sizes = sm.sizes if sm.sizes is not None else sm.install_sizes(sm.measure_sizes())
        cut = sizes.cut_for(policy.retention_bytes, sm.headers_from)
        if cut is not None:
            new_start = max(new_start, cut)
    return new_start


@dataclass
class RetentionManager:
    driver: Any  # server.driver.MultiRaft
    # None: the driver's cluster.toml [retention] with RAFTLOG_RETENTION_* on top.
    interval_s: float = None  # type: ignore[assignment]  # set in __post_init__
    max_clock_skew_s: float = None  # type: ignore[assignment]  # set in __post_init__
    producer_expiry_ms: int = None  # type: ignore[assignment]  # set in __post_init__
    max_producers: int = None  # type: ignore[assignment]  # set in __post_init__
    clock_ms: Any = field(default=lambda: int(wall_time() * 1000))
    _pending: dict[int, Waiter] = field(default_factory=dict)
    _expiring: dict[int, Waiter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cfg = RetentionConfig.of_driver(self.driver)
        if self.interval_s is None:
            self.interval_s = cfg.interval_ms / 1000.0
        if self.max_clock_skew_s is None:
            self.max_clock_skew_s = cfg.max_clock_skew_ms / 1000.0
        if self.producer_expiry_ms is None:
            self.producer_expiry_ms = cfg.producer_expiry_ms
        if self.max_producers is None:
            self.max_producers = cfg.max_producers_per_partition

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await run_rounds(self.interval_s, self._round, log, "retention", task_status)

    async def _round(self) -> None:
        for group in self.unmeasured():
            await self._measure(group)
        self.check_all()

    def _led_partitions(self) -> list[Group]:
        return [
            g
            for g in list(self.driver.groups.values())
            if g.kind is GroupKind.PARTITION and g.role is Role.LEADER
        ]

    def _policies(self) -> list[tuple[Group, RetentionPolicy]]:
        """Partitions led here whose topic has a retention policy."""
        topics = getattr(self.driver.metadata, "topics", {})
        out = []
        for group in self._led_partitions():
            topic = topics.get(group.topic) if group.topic is not None else None
            if topic is None:
                continue
            policy = RetentionPolicy.of(topic.config)
            if not policy.unlimited:
                out.append((group, policy))
        return out

    def unmeasured(self) -> list[Group]:
        return [
            g for g, p in self._policies() if p.retention_bytes is not None and g.sm.sizes is None
        ]

    def check_all(self) -> int:
        """One round over the partitions this node leads; returns commands proposed."""
        now_ms = self.clock_ms()
        # Asked at most once a round, and only when something would go by time.
        clock_trusted = functools.cache(self._clock_trusted)
        return self._truncate_all(now_ms, clock_trusted) + self._expire_producers_all(
            now_ms, clock_trusted
        )

    def _truncate_all(self, now_ms: int, clock_trusted: Callable[[], bool]) -> int:
        proposed = 0
        policies = self._policies()
        if any(p.retention_ms is not None for _, p in policies) and not clock_trusted():
            # Our "now" may be ahead of the cluster's: delete nothing by time.
            policies = [(g, replace(p, retention_ms=None)) for g, p in policies]
        for group, policy in policies:
            waiter = self._pending.get(group.gid)
            if waiter is not None and not waiter.done:
                continue  # one truncation in flight per partition
            self._pending.pop(group.gid, None)
            if self._maybe_truncate(group, policy, now_ms):
                proposed += 1
        return proposed

    def _expire_producers_all(self, now_ms: int, clock_trusted: Callable[[], bool]) -> int:
        proposed = 0
        cap = self.max_producers
        for group in self._led_partitions():
            waiter = self._expiring.get(group.gid)
            if waiter is not None and not waiter.done:
                continue  # one expiry in flight per partition
            self._expiring.pop(group.gid, None)
            idle_before = now_ms - self.producer_expiry_ms
            if group.sm.producers_due(idle_before, cap) and not clock_trusted():
                idle_before = -1  # our "now" may be ahead: expire by the cap only
            if not group.sm.producers_due(idle_before, cap):
                continue
            waiter = self.driver.submit(group.gid, ExpireProducers(idle_before, cap))
            waiter.on_done(functools.partial(self._expired, group))
            self._expiring[group.gid] = waiter
            proposed += 1
        return proposed

    def _expired(self, group: Group, outcome: Any) -> None:
        counts = getattr(outcome.value, "expired", None)
        if not counts or not any(counts.values()):
            return  # failed (leadership lost, say) or nothing left to do: the next round asks
        log.info(
            "event=producers_expired group=%d topic=%s partition=%s idle=%d limit=%d left=%d",
            group.gid,
            group.topic,
            group.partition,
            counts["idle"],
            counts["limit"],
            len(group.sm.producers),
        )
        metrics = getattr(self.driver, "metrics", None)
        if metrics is not None:
            for reason, n in counts.items():
                metrics.producers_expired.inc(n, reason=reason)

    def _clock_trusted(self) -> bool:
        if self.driver.clock_not_ahead(self.max_clock_skew_s):
            return True
        metrics = getattr(self.driver, "metrics", None)
        if metrics is not None:
            metrics.retention_clock_refusals.inc()
        log.warning(
            "event=retention_clock_refused max_skew_s=%.1f offsets=%s",
            self.max_clock_skew_s,
            {p: round(o, 3) for p, o in self.driver.clock.offsets(self.driver.peers).items()},
        )  # fmt: skip
        return False

    async def _measure(self, group: Group) -> None:
        """First size-based check of a partition here: read its batches once, off-loop."""
        sm = group.sm
        index = await trio.to_thread.run_sync(sm.measure_sizes)
        if self.driver.groups.get(group.gid) is group and group.sm.sizes is None:
            sm.install_sizes(index)

    def _maybe_truncate(self, group: Group, policy: RetentionPolicy, now_ms: int) -> bool:
        sm = group.sm
        new_start = decide_start_offset(sm, policy, now_ms)
        if new_start <= sm.start_offset:
            return False
        log.info(
            "event=retention_truncate group=%d topic=%s partition=%s start=%d new_start=%d",
            group.gid,
            group.topic,
            group.partition,
            sm.start_offset,
            new_start,
        )
        self._pending[group.gid] = self.driver.submit(group.gid, TruncatePrefix(new_start))
        return True
