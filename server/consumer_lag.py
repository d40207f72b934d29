"""Consumer lag as metrics: how far each consumer group's commits trail the log.

The number operators of Kafka alert on most (Burrow, kafka-lag-exporter,
Redpanda's ``consumer_group_lag_sum/max``). A partition's leader knows both
halves: its end offset, and every group's committed offset (commits go through
the partition's own Raft log, log/partition.py). So each node reports the
partitions it leads, and the cluster-wide figure is a sum (or max) over nodes:

    sum by (group, topic) (raftlog_consumer_group_lag_sum)
    max by (group, topic) (raftlog_consumer_group_lag_max)

Computed at scrape time (server/metrics.py ``Collected``): one pass per
scrape over the partitions this node leads and their groups' commits, shared
by the three gauges (``Registry.per_scrape``), nothing on the request path.
Followers report nothing, so a partition is counted once, except for the
moment a deposed leader has not yet learned it lost its role.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from raftlog.log.partition import PartitionStateMachine
from raftlog.raft.types import Role

from .groups import Group, GroupKind
from .metrics import LabelValues, Registry


@dataclass(slots=True)
class GroupLag:
    """One group's lag on one topic, over the partitions this node leads."""

    total: int = 0  # records committed by nobody yet: sum of (end - committed)
    max: int = 0  # the partition furthest behind
    partitions: int = 0  # partitions where the group has a committed offset


def consumer_lag(groups: Iterable[Group]) -> dict[tuple[str, str], GroupLag]:
    """(consumer group, topic) -> its lag on the partitions led here.

    A partition where the group never committed (or whose offset was deleted)
    has no lag to report: Kafka's tools show "-" there too. A commit past the
    end (allowed: a consumer may commit the offset it will read next) counts 0.
    """
    lags: dict[tuple[str, str], GroupLag] = {}
    for group in groups:
        if group.kind is not GroupKind.PARTITION or group.role is not Role.LEADER:
            continue
        sm: PartitionStateMachine = group.sm  # type: ignore[assignment]
        end = sm.next_offset
        for name, (offset, _metadata) in sm.offsets.items():
            lag = lags.setdefault((name, group.topic or ""), GroupLag())
            behind = max(0, end - offset)
            lag.total += behind
            lag.max = max(lag.max, behind)
            lag.partitions += 1
    return lags


def register_consumer_lag(registry: Registry, groups: Callable[[], Iterable[Group]]) -> None:
    """Add the lag gauges to ``registry``, read from ``groups()`` at each scrape."""

    def samples(field: str) -> Callable[[], list[tuple[LabelValues, float]]]:
        def collect() -> list[tuple[LabelValues, float]]:
            lags = registry.per_scrape("consumer_lag", lambda: consumer_lag(groups()))
            return [(key, getattr(lag, field)) for key, lag in sorted(lags.items())]

        return collect

    labels = ("group", "topic")
    registry.collected(
        "raftlog_consumer_group_lag_sum",
        "Records not yet committed by each consumer group, summed over the partitions "
        "this node leads where the group has committed (sum over nodes for the topic).",
        labels,
        samples("total"),
    )
    registry.collected(
        "raftlog_consumer_group_lag_max",
        "The largest lag of each consumer group over the partitions this node leads "
        "(max over nodes for the topic).",
        labels,
        samples("max"),
    )
    registry.collected(
        "raftlog_consumer_group_lag_partitions",
        "Partitions led here where each consumer group has a committed offset.",
        labels,
        samples("partitions"),
    )
