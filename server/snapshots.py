"""Snapshots and log compaction per Raft group, and follower catch-up by snapshot.

The driver (server/driver.py) calls three hooks, all on its loop:

- ``after_apply(readies)`` after each apply batch is written: when a group
  applied ``entries`` entries or ``bytes`` bytes since its last snapshot, the
  state machine's small state (``snapshot_state()``: producers, consumer
  offsets, start/next offset; never the records, which stay in the batch
  keys) and the conf state are captured at once, consistent with the applied
  index, and handed to the background task. That task writes the snapshot
  record with an fsync in a worker thread, then compacts the Raft log up to
  ``index - trailing`` (Raft §7; hashicorp's TrailingLogs keeps a slightly
  behind follower on the cheap AppendEntries path), with ``trailing`` capped
  at about ``trailing_bytes`` of entries (``trailing_entries``) unless a live
  follower still needs more (``compaction_point``).
- ``intercept(group, msg)`` before a SNAPSHOT message is stepped: the records
  the snapshot promises are first pulled from the sender
  (server/snapshot_transfer.py), off the loop, one transfer per group and at
  most ``transfers`` per node (a CapacityLimiter); then the message is
  re-queued and stepped. A failed transfer drops the message: the leader's
  snapshot timeout (raft/node.py ``_tick_snapshots``) sends it again and the
  transfer resumes from what is present.
- ``restore(group, snapshot, batch)`` when a Ready carries a snapshot: the
  state machine takes the snapshot's state into the apply batch, before
  ``store.save`` persists the Raft snapshot.

Configuration: cluster.toml's ``[snapshots]`` table, each key overridable by a
``RAFTLOG_SNAPSHOT_<KEY>`` environment variable read once at start (see
``SnapshotConfig`` in server/config.py). Metrics: server/snapshot_metrics.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from raftlog.raft import codec
from raftlog.raft.config import Status
from raftlog.raft.progress import ProgressState
from raftlog.raft.types import ConfState, Message, MessageType, Ready, Snapshot

from .config import SnapshotConfig
from .failpoints import failpoint
from .groups import Group, GroupKind
from .metrics import Registry
from .snapshot_metrics import SnapshotMetrics
from .snapshot_transfer import (
    PeerConnection,
    SnapshotRange,
    TransferError,
    fetch_missing_batches,
)

log = logging.getLogger("raftlog.snapshots")

__all__ = ["SnapshotConfig", "SnapshotManager"]

# How often the per-group snapshot index and the "entries behind" gauges are
# refreshed; they move slowly and a pass costs one lock per hosted group.
GAUGES_EVERY_S = 5.0


def trailing_entries(trailing: int, trailing_bytes: int, mean_entry_bytes: float) -> int:
    """How many entries to keep behind a snapshot: ``trailing``, but only as
    many as fit in ``trailing_bytes`` at the group's mean entry size.

    Why a byte cap: ``trailing`` alone keeps 1,000 entries whatever their size,
    and a batching producer's entries are tens to hundreds of KiB, so a busy
    partition kept ~100 MiB of Raft log that RocksDB flushed and compacted
    before deleting it. Deleted within a few MiB, the entries cost little
    compaction: incompressible batches went from 231-280k to 276-307k
    records/s (README, Performance). An unknown size (nothing applied yet)
    keeps ``trailing``.
    """
    if mean_entry_bytes <= 0:
        return trailing
    return min(trailing, int(trailing_bytes // mean_entry_bytes))


def compaction_point(
    snapshot_index: int, keep: int, trailing: int, needed_by_followers: Sequence[int]
) -> int:
    """The last index to delete: ``keep`` entries behind the snapshot, or more
    for a live follower that still needs them, up to ``trailing`` entries.

    ``needed_by_followers`` are the match indexes of the followers a leader has
    heard from recently (not those already on the snapshot path): a follower at
    match ``m`` needs entries from ``m + 1`` on. Holding compaction back for it
    keeps a slightly slow follower on the append path; the ``trailing`` bound
    keeps a follower that is far behind, or stuck, from growing the log without
    limit. It then gets a snapshot, as before.
    """
    upto = snapshot_index - keep
    if needed_by_followers:
        upto = max(min(upto, min(needed_by_followers)), snapshot_index - trailing)
    return upto


def needed_by_followers(status: Status) -> list[int]:
    """On a leader, the match indexes of recently active followers and learners
    that are not being sent a snapshot; elsewhere, none."""
    return [
        pr.match
        for node, pr in status.progress.items()
        if node != status.id and pr.recent_active and pr.state is not ProgressState.SNAPSHOT
    ]


@dataclass(slots=True)
class _GroupState:
    applied_bytes: int = 0  # entry bytes applied since the last snapshot
    mean_entry_bytes: float = 0.0  # over the entries the last snapshot covered (0: unknown)
    snap_index: int = -1  # index of the group's latest snapshot here (-1: ask the store)
    taking: bool = False  # a capture is being written
    transferring: bool = False
    latest: Message | None = None  # newest SNAPSHOT message waiting for its records
    prepared: tuple[int, int] | None = None  # (index, term) whose records are present
    failed: bool = False  # the last transfer failed: the next one resumes it


@dataclass(slots=True, frozen=True)
class _Capture:
    gid: int
    kind: str  # GroupKind value, the metrics label
    index: int
    conf_state: ConfState
    data: bytes


@dataclass
class SnapshotManager:
    driver: Any  # server.driver.MultiRaft
    # None: the driver's cluster.toml [snapshots] with RAFTLOG_SNAPSHOT_* on top.
    config: SnapshotConfig = None  # type: ignore[assignment]  # set in __post_init__
    # Only with the background task running are snapshots taken and
    # transfers made: without it (a driver in a unit test) nothing changes.
    enabled: bool = False
    stats: dict[str, int] = field(default_factory=dict)
    # None: in the driver's registry (served on /metrics), or a private one.
    metrics: SnapshotMetrics = None  # type: ignore[assignment]  # set in __post_init__
    _groups: dict[int, _GroupState] = field(default_factory=dict)
    _nursery: trio.Nursery | None = None
    _limiter: trio.CapacityLimiter | None = None
    _indexed: set[int] = field(default_factory=set)  # groups with a raftlog_snapshot_index

    def __post_init__(self) -> None:
        if self.config is None:
            cluster_cfg = getattr(self.driver, "cfg", None)
            base = getattr(cluster_cfg, "snapshots", None)
            self.config = SnapshotConfig.from_env(base=base)
        if self.metrics is None:
            node_metrics = getattr(self.driver, "metrics", None)
            registry = getattr(node_metrics, "registry", None)
            self.metrics = SnapshotMetrics(registry if registry is not None else Registry())

    # ------------------------------------------------------------ background task

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._limiter = trio.CapacityLimiter(self.config.transfers)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.enabled = True
                log.info(
                    "event=snapshots_enabled entries=%d entry_bytes=%d trailing=%d "
                    "trailing_bytes=%d chunk_bytes=%d transfers=%d",
                    self.config.entries,
                    self.config.entry_bytes,
                    self.config.trailing,
                    self.config.trailing_bytes,
                    self.config.chunk_bytes,
                    self.config.transfers,
                )
                # A crash between snapshot and compaction left the log long.
                for gid in list(self.driver.groups):
                    nursery.start_soon(self._compact, gid)
                nursery.start_soon(self._refresh_gauges_forever)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self.enabled = False
            self._nursery = None

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    # ------------------------------------------------------------ metrics

    async def _refresh_gauges_forever(self) -> None:
        while True:
            await trio.sleep(GAUGES_EVERY_S)
            self.refresh_gauges()

    def refresh_gauges(self) -> None:
        """Per-group snapshot index and the largest applied-minus-snapshot gap.

        Reads only in-memory state (the store caches each group's snapshot
        metadata): a pass costs a few microseconds per hosted group.
        """
        store = self.driver.store
        behind = 0
        hosted: set[int] = set()
        for gid, group in list(self.driver.groups.items()):
            if not store.has_group(gid):
                continue
            index = store.group(gid).snapshot_meta().index
            hosted.add(gid)
            self.metrics.index.set(index, group=gid)
            behind = max(behind, group.applied - index)
        for gid in self._indexed - hosted:  # deleted or moved away: no stale series
            self.metrics.index.remove(group=gid)
        self._indexed = hosted
        self.metrics.max_behind.set(behind)

    def _set_index(self, gid: int, index: int) -> None:
        self.metrics.index.set(index, group=gid)
        self._indexed.add(gid)

    def note_sent(self, gid: int, msg: Message) -> None:
        """Driver hook: a leader here sends ``msg``, a SNAPSHOT message."""
        group = self.driver.groups.get(gid)
        kind = group.kind.value if group is not None else GroupKind.PARTITION.value
        self.metrics.sent.inc(kind=kind)

    def note_served(self, nbytes: int) -> None:
        """snapshot_transfer.serve_replica_fetch: record bytes sent to a catching-up peer."""
        self.metrics.transfer_bytes.inc(nbytes, direction="out")

    def _state(self, gid: int) -> _GroupState:
        st = self._groups.get(gid)
        if st is None:
            st = self._groups[gid] = _GroupState()
        return st

    def group_status(self, gid: int) -> dict[str, int]:
        """For cluster_status: the group's snapshot index and first stored log index."""
        store = self.driver.store
        if not store.has_group(gid):
            return {}
        storage = store.group(gid)
        return {
            "snapshot_index": storage.snapshot_meta().index,
            "first_index": storage.first_index(),
        }

    # ------------------------------------------------------------ taking snapshots

    def after_apply(self, readies: Sequence[tuple[int, Ready]]) -> None:
        """Driver hook, right after the turn's apply batch was written."""
        if any(rd.snapshot is not None for _, rd in readies):
            failpoint("snapshot_after_restore")
        if not self.enabled or self._nursery is None:
            return
        for gid, rd in readies:
            if not rd.committed_entries:
                continue
            group = self.driver.groups.get(gid)
            if group is None:
                continue
            st = self._state(gid)
            st.applied_bytes += sum(len(e.data) for e in rd.committed_entries)
            self._maybe_take(gid, group, st)

    def _maybe_take(self, gid: int, group: Any, st: _GroupState) -> None:
        """Start taking a snapshot of ``group`` if one is due and none is under way."""
        cfg = self.config
        if st.taking or self._nursery is None:
            return
        applied = group.applied
        if st.snap_index < 0:
            st.snap_index = self.driver.store.group(gid).snapshot_meta().index
        snap_index = st.snap_index
        if applied - snap_index < cfg.entries and st.applied_bytes < cfg.entry_bytes:
            return
        if applied <= snap_index:
            return
        # Captured now, on the loop, so data, index and membership agree:
        # the state is small (no records), this costs microseconds.
        capture = _Capture(
            gid, group.kind.value, applied, group.raft.conf_state, group.sm.snapshot_state()
        )
        st.taking = True
        st.mean_entry_bytes = st.applied_bytes / (applied - snap_index)
        st.applied_bytes = 0
        self._nursery.start_soon(self._take, capture)

    async def _take(self, cap: _Capture) -> None:
        store = self.driver.store
        st = self._state(cap.gid)
        started = time.perf_counter()
        try:
            # Durability order (the reason compaction below may be unsynced):
            # the apply batches up to cap.index were written (sync=False) to
            # RocksDB BEFORE this synced write. RocksDB appends every write to
            # one WAL in order, and a synced write fsyncs the WAL up to itself,
            # so once create_snapshot returns, the state machine at cap.index
            # (records included) is durable too. Only then may the Raft entries
            # that could rebuild it be deleted.
            await trio.to_thread.run_sync(
                store.create_snapshot, cap.gid, cap.index, cap.conf_state, cap.data
            )
        except Exception as exc:  # group deleted, or a newer snapshot installed meanwhile
            log.info("event=snapshot_skipped group=%d index=%d reason=%r", cap.gid, cap.index, exc)
            self.metrics.skipped.inc(kind=cap.kind)
            # Try again only after another threshold's worth of applies.
            st.snap_index = max(st.snap_index, cap.index)
            return
        finally:
            st.taking = False
        self.metrics.take_seconds.observe(time.perf_counter() - started)
        st.snap_index = max(st.snap_index, cap.index)
        self._count("snapshots_taken")
        self.metrics.taken.inc(kind=cap.kind)
        self._set_index(cap.gid, cap.index)
        # Debug: a busy partition snapshots several times a second (entry_bytes);
        # raftlog_snapshots_taken_total counts them.
        log.debug("event=snapshot_taken group=%d index=%d bytes=%d",
                  cap.gid, cap.index, len(cap.data))  # fmt: skip
        failpoint("snapshot_before_compact")
        await self._compact(cap.gid)
        # Applies that crossed the threshold while this one was being taken
        # started nothing (one take at a time): check again, or a group that
        # then goes idle would keep its whole log until its next write.
        group = self.driver.groups.get(cap.gid)
        if group is not None and self.driver.store.has_group(cap.gid):
            self._maybe_take(cap.gid, group, st)

    async def _compact(self, gid: int) -> None:
        """Compact behind the group's snapshot, keeping ``trailing_entries``, or
        more for a live follower that still needs them (``compaction_point``)."""
        store = self.driver.store
        cfg = self.config
        for _ in range(1000):
            if gid not in self.driver.groups or not store.has_group(gid):
                return
            storage = store.group(gid)
            keep = trailing_entries(
                cfg.trailing, cfg.trailing_bytes, self._state(gid).mean_entry_bytes
            )
            needed = needed_by_followers(self.driver.groups[gid].raft.status())
            upto = compaction_point(storage.snapshot_meta().index, keep, cfg.trailing, needed)
            if upto < storage.first_index():
                return
            # On the loop thread, so the Raft core never sees the log shrink in
            # the middle of a step; non-blocking, so it never waits for another
            # thread's fsync (it retries after the save in flight).
            try:
                done = store.compact_log(gid, upto, sync=False, blocking=False)
            except Exception as exc:
                log.warning("event=compaction_failed group=%d upto=%d error=%r", gid, upto, exc)
                return
            if done:
                self._count("compactions")
                self.metrics.compactions.inc()
                return
            await trio.sleep(0.002)

    # ------------------------------------------------------------ installing snapshots

    def restore(self, group: Group, snap: Snapshot, batch: Any) -> bool:
        """Driver hook: the state machine takes the snapshot's state into ``batch``.

        Returns True when the metadata state changed (the driver reconciles its
        groups). Its records were fetched before the message was stepped.
        """
        sm = group.sm
        st = self._state(group.gid)
        st.snap_index = max(st.snap_index, snap.meta.index)
        st.applied_bytes = 0
        if snap.meta.index <= sm.applied_index:
            # Already there (e.g. restored before a crash that lost the Raft
            # snapshot): the state machine is at or past it; nothing to do.
            return False
        sm.restore_state(snap.data, batch)
        self._count("snapshots_installed")
        self.metrics.installed.inc(kind=group.kind.value)
        self._set_index(group.gid, snap.meta.index)
        log.info(
            "event=snapshot_installed group=%d index=%d term=%d start=%s next=%s",
            group.gid,
            snap.meta.index,
            snap.meta.term,
            getattr(sm, "start_offset", "-"),
            getattr(sm, "next_offset", "-"),
        )
        return group.kind is GroupKind.METADATA

    def intercept(self, group: Group, msg: Message) -> bool:
        """Driver hook before stepping: True means "not now" (records are on their way)."""
        if msg.type is not MessageType.SNAPSHOT:
            return False
        snap = msg.snapshot
        st = self._groups.get(group.gid)
        key = (snap.meta.index, snap.meta.term) if snap is not None else None
        if st is not None and key is not None and st.prepared == key:
            # Our own re-queued message, its records now present (_transfer).
            st.prepared = None
            return False
        self.metrics.received.inc(kind=group.kind.value)
        if not self.enabled or self._nursery is None:
            return False
        if group.kind is not GroupKind.PARTITION or snap is None or snap.is_empty():
            return False
        if snap.meta.index <= group.raft.commit_index or group.raft.raft_log.match_term(
            snap.meta.index, snap.meta.term
        ):
            return False  # the core answers it without restoring anything (Raft §7)
        st = self._state(group.gid)
        st.latest = msg
        if not st.transferring:
            st.transferring = True
            self._nursery.start_soon(self._transfer, group.gid)
        return True

    async def _transfer(self, gid: int) -> None:
        st = self._state(gid)
        msg: Message | None = None
        m = self.metrics
        try:
            assert self._limiter is not None
            async with self._limiter:
                m.active.inc()
                try:
                    if st.failed:
                        # Continues from the records the failed one wrote
                        # (fetch_missing_batches starts at contiguous_end).
                        m.resumes.inc()
                        st.failed = False
                    while st.latest is not None and st.latest is not msg:
                        msg = st.latest
                        await self._fetch_for(gid, msg)
                finally:
                    m.active.dec()
        except Exception as exc:  # network, peer or data trouble: drop, the leader retries
            self._count("transfers_failed")
            m.transfers.inc(result="failed")
            st.failed = True
            log.warning("event=snapshot_transfer_failed group=%d from=%s error=%r",
                        gid, msg.frm if msg else None, exc)  # fmt: skip
            st.latest = None
            return
        finally:
            st.transferring = False
        m.transfers.inc(result="ok")
        if msg is None or msg.snapshot is None:
            return
        st.latest = None
        st.prepared = (msg.snapshot.meta.index, msg.snapshot.meta.term)
        # Re-queue the message as if it had just arrived; intercept() lets it through.
        self.driver.on_peer_msgs(msg.frm, [(gid, codec.encode_message(msg))])

    async def _fetch_for(self, gid: int, msg: Message) -> None:
        assert msg.snapshot is not None
        group = self.driver.groups.get(gid)
        if group is None:
            raise TransferError("group no longer hosted")
        wanted = SnapshotRange.of(msg.snapshot.data)
        sm = group.sm
        if wanted.fetch_from(sm) >= wanted.next_offset:
            return
        address = self._address_of(msg.frm)
        if address is None:
            raise TransferError(f"no address for {msg.frm}")
        cfg = self.driver.cfg
        me = self.driver.node_id
        log.info(
            "event=snapshot_transfer_start group=%d from=%s index=%d start=%d next=%d",
            gid, msg.frm, msg.snapshot.meta.index, wanted.start_offset, wanted.next_offset,
        )  # fmt: skip
        timeout = self.config.request_timeout_s
        conn = await PeerConnection.open(address, node_id=me, cfg=cfg, timeout_s=timeout)
        try:
            chunks = await fetch_missing_batches(
                sm=sm,
                conn=conn,
                gid=gid,
                wanted=wanted,
                node_id=me,
                cfg=cfg,
                chunk_bytes=self.config.chunk_bytes,
                timeout_s=timeout,
                still_wanted=lambda: self.driver.groups.get(gid) is group,
                on_chunk=lambda nbytes: self.metrics.transfer_bytes.inc(nbytes, direction="in"),
            )
        finally:
            with trio.CancelScope(shield=True):
                await conn.aclose()
        self._count("transfer_chunks", chunks)
        log.info("event=snapshot_transfer_done group=%d from=%s chunks=%d", gid, msg.frm, chunks)

    def _address_of(self, node: str) -> str | None:
        cfg = self.driver.cfg
        if node in cfg.node_ids():
            return cfg.dial_address(self.driver.node_id, node)
        return self.driver.leader_address(node)
