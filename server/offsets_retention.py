"""Offsets retention: consumer groups that stay empty go, with their offsets.

Kafka deletes a group's committed offsets once the group has had no members
for ``offsets.retention.minutes`` (seven days; KIP-211). Without it, every
group that ever committed (a console consumer's ad-hoc group, a test's, a
service renamed long ago) stays in the metadata log and in every partition's
state, memory and snapshots for good, and shows up in lag alerts forever.

Two halves, each done by the node that owns the state it changes:

- **The controller** (the metadata group's leader) deletes a group that has
  had no members for ``[retention] offsets_retention_ms`` exactly as
  ``raftlog group delete`` does: it commits the group's tombstone, which takes
  the group's next generation number (server/group_ops.py
  ``delete_idle_groups``). A live group keeps its offsets however rarely it
  commits.
- **Each partition leader** removes the committed offset of every group whose
  metadata record is a tombstone, fenced at the tombstone's number
  (``DeleteOffset``, log/partition.py), so no member of the deleted group can
  commit its old position back. This also finishes a ``raftlog group delete``
  whose client stopped half way.

A group joined again under the name afterwards is a new group: its members
start from ``auto_offset_reset`` and its generations count on from the
deletion's.

Offsets committed by hand under a name that never formed a group (manual
assignment, no membership) have no metadata record to expire. Like Kafka's
"standalone" offsets (KIP-211), they expire by commit time instead: each
partition leader deletes one not committed again for the retention. The
delete names the cut-off (``DeleteOffset.committed_before_ms``), so a commit
that lands meanwhile stays. This needs commit times, so log format
COMMIT_STAMPS (log/features.py); an offset committed before the cluster
reached it has no time and stays until it is committed again. The leader's
clock decides, so, like retention by time, nothing expires while that clock
runs further ahead of a majority of the nodes than ``max_clock_skew_ms``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import trio
from raftlog.log.commands import DeleteOffset
from raftlog.log.features import COMMIT_STAMPS
from raftlog.raft.types import Role

from .config import RetentionConfig
from .groups import GroupKind
from .periodic import run_rounds

log = logging.getLogger("raftlog.offsets_retention")

# How long one offset deletion may take to commit before this round moves on.
DELETE_TIMEOUT_S = 10.0


@dataclass
class OffsetsRetention:
    driver: Any  # server.driver.MultiRaft
    group_ops: Any  # server.group_ops.GroupOps
    interval_s: float
    retention_s: float
    max_clock_skew_s: float = 60.0

    @classmethod
    def from_config(cls, driver: Any, group_ops: Any) -> OffsetsRetention:
        retention = RetentionConfig.of_driver(driver)
        return cls(
            driver,
            group_ops,
            interval_s=retention.interval_ms / 1000.0,
            retention_s=retention.offsets_retention_ms / 1000.0,
            max_clock_skew_s=retention.max_clock_skew_ms / 1000.0,
        )

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await run_rounds(self.interval_s, self.check, log, "offsets_retention", task_status)

    async def check(self) -> tuple[list[str], int, int]:
        """One round: the groups deleted here as controller, the offsets of deleted
        groups removed from the partitions led here, and the standalone offsets
        that expired there."""
        expired = await self.group_ops.delete_idle_groups(self.retention_s)
        of_deleted = await self.delete_offsets_of_deleted_groups()
        return expired, of_deleted, await self.expire_standalone_offsets()

    def _led_partitions(self) -> list[Any]:
        return [
            group
            for group in list(self.driver.groups.values())
            if group.kind is GroupKind.PARTITION and group.role is Role.LEADER
        ]

    async def delete_offsets_of_deleted_groups(self) -> int:
        tombstones = {
            name: info
            for name, info in self.driver.metadata.consumer_groups.items()
            if info.deleted
        }
        if not tombstones:
            return 0
        deleted = 0
        for group in self._led_partitions():
            sm = group.sm
            for name in [n for n in sm.offsets if n in tombstones]:
                info = tombstones[name]
                # An offset fenced at or above the tombstone's number was committed
                # by a group formed again since (this node's metadata lags).
                if info.topic != group.topic or sm.fences.get(name, -1) >= info.generation:
                    continue
                command = DeleteOffset(name, info.generation)
                why = f"generation={info.generation}"
                deleted += await self._delete(group, command, "group_deleted", why)
        return deleted

    async def expire_standalone_offsets(self) -> int:
        """Delete the offsets, in the partitions led here, committed by hand under a
        name that never formed a group and not committed again for the retention."""
        meta = self.driver.metadata
        if meta.log_format < COMMIT_STAMPS:
            return 0  # no commit times yet
        led = self._led_partitions()
        if not led:
            return 0
        cutoff_ms = self.driver.stamp_ms() - int(self.retention_s * 1000)
        candidates = [
            (group, name)
            for group in led
            for name, stamp in list(group.sm.commit_stamps.items())
            # A name with a metadata record (a group, or its tombstone) expires
            # with its group instead; one with a fence once committed as a group.
            if stamp < cutoff_ms and name not in meta.consumer_groups
            and name not in group.sm.fences
        ]  # fmt: skip
        if not candidates or not self._clock_trusted():
            return 0
        expired = 0
        for group, name in candidates:
            command = DeleteOffset(name, None, committed_before_ms=cutoff_ms)
            expired += await self._delete(group, command, "expired", f"before_ms={cutoff_ms}")
        return expired

    def _clock_trusted(self) -> bool:
        if self.driver.clock_not_ahead(self.max_clock_skew_s):
            return True
        log.warning(
            "event=offsets_expiry_clock_refused max_skew_s=%.1f", self.max_clock_skew_s
        )  # fmt: skip
        return False

    async def _delete(self, group: Any, command: DeleteOffset, reason: str, why: str) -> int:
        """Commit one offset deletion in ``group``; 1 if it was deleted, else 0 (logged)."""
        waiter = self.driver.submit(group.gid, command)
        outcome = await waiter.wait(trio.current_time() + DELETE_TIMEOUT_S)
        result = outcome.value
        name = command.group
        if outcome.error is not None or result is None or not result.ok:
            refusal = outcome.message or (result.message if result is not None else "")
            log.info(
                "event=offset_delete_skipped group=%s topic=%s partition=%s reason=%s",
                name, group.topic, group.partition, refusal,
            )  # fmt: skip
            return 0
        log.info(
            "event=offset_deleted group=%s topic=%s partition=%s reason=%s %s",
            name, group.topic, group.partition, reason, why,
        )  # fmt: skip
        metrics = getattr(self.driver, "metrics", None)
        if metrics is not None:
            metrics.offsets_deleted.inc(reason=reason)
        return 1
