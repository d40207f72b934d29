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
deletion's. Offsets committed by hand under a name that never formed a group
(manual assignment with no membership) have no metadata record and never
expire here (a known gap).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import trio
from raftlog.log.commands import DeleteOffset
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

    @classmethod
    def from_config(cls, driver: Any, group_ops: Any) -> OffsetsRetention:
        retention = RetentionConfig.of_driver(driver)
        return cls(
            driver,
            group_ops,
            interval_s=retention.interval_ms / 1000.0,
            retention_s=retention.offsets_retention_ms / 1000.0,
        )

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await run_rounds(self.interval_s, self.check, log, "offsets_retention", task_status)

    async def check(self) -> tuple[list[str], int]:
        """One round: the groups deleted here as controller, and the offsets of
        deleted groups removed from the partitions led here."""
        expired = await self.group_ops.delete_idle_groups(self.retention_s)
        return expired, await self.delete_offsets_of_deleted_groups()

    async def delete_offsets_of_deleted_groups(self) -> int:
        tombstones = {
            name: info
            for name, info in self.driver.metadata.consumer_groups.items()
            if info.deleted
        }
        if not tombstones:
            return 0
        deleted = 0
        for group in list(self.driver.groups.values()):
            if group.kind is not GroupKind.PARTITION or group.role is not Role.LEADER:
                continue
            sm = group.sm
            for name in [n for n in sm.offsets if n in tombstones]:
                info = tombstones[name]
                # An offset fenced at or above the tombstone's number was committed
                # by a group formed again since (this node's metadata lags).
                if info.topic != group.topic or sm.fences.get(name, -1) >= info.generation:
                    continue
                command = DeleteOffset(name, info.generation)
                waiter = self.driver.submit(group.gid, command)
                outcome = await waiter.wait(trio.current_time() + DELETE_TIMEOUT_S)
                result = outcome.value
                if outcome.error is not None or result is None or not result.ok:
                    why = outcome.message or (result.message if result is not None else "")
                    log.info(
                        "event=offset_delete_skipped group=%s topic=%s partition=%s reason=%s",
                        name, group.topic, group.partition, why,
                    )  # fmt: skip
                    continue
                deleted += 1
                log.info(
                    "event=offset_deleted group=%s topic=%s partition=%s generation=%d",
                    name, group.topic, group.partition, info.generation,
                )  # fmt: skip
                metrics = getattr(self.driver, "metrics", None)
                if metrics is not None:
                    metrics.offsets_deleted.inc()
        return deleted
