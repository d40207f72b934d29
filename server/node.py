"""One raftlog node process: store, multi-raft driver, peer transport, listener, metrics."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from contextlib import ExitStack
from typing import Any

import trio
from raftlog.log.features import LOG_FORMAT
from raftlog.log.store import NodeStore, staggered_write_buffer_bytes

from .auth_reload import reload_on_sighup
from .clock_skew import WALL_CLOCK_FILE_ENV, follow_offset_file
from .compaction import CompactionManager
from .config import ClusterConfig
from .consumer_lag import register_consumer_lag
from .cpu_latency import cpu_latency_request
from .driver import MultiRaft
from .handlers import RequestHandlers
from .listener import serve
from .log_format import LogFormats, LogFormatUpgrade
from .metadata_users import register_user_expiry
from .metrics import Metrics, serve_metrics
from .offsets_retention import OffsetsRetention
from .open_files import fit_to_open_files_limit, reserved_fds
from .retention import RetentionManager
from .transport import PeerTransport

log = logging.getLogger("raftlog.node")

# Seconds a thread that wants the GIL waits before it asks the holder to drop
# it (CPython's default is 5 ms). The save thread needs the GIL for a moment
# after every fsync to hand its result back; with the event loop busy it would
# wait a full interval each time, which on a loaded node put ~5 ms on every
# Raft round (saves measured at ~9 ms for a 0.5 ms fsync).
GIL_SWITCH_INTERVAL_S = 0.0005
# Upper bound of the controlled shutdown's leadership hand-over (see handover_bound_s).
MAX_HANDOVER_S = 2.0
BACKSTOP_S = 0.25


def _tune_gil_switching() -> None:
    interval = float(os.environ.get("RAFTLOG_GIL_SWITCH_S", GIL_SWITCH_INTERVAL_S))
    sys.setswitchinterval(interval)


async def run_node(
    cfg: ClusterConfig,
    node_id: str,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    debug: bool | None = None,
) -> None:
    """Run the node until cancelled; ``task_status.started()`` once it is listening.

    Shutdown order on cancellation: first the controlled shutdown (every group
    this node leads is handed to another voter, bounded by
    ``handover_bound_s``) while everything still runs; then the listener and
    transport stop with the services nursery, the driver finishes its
    in-flight save (a worker thread is never abandoned), pending requests are
    answered NOT_AVAILABLE, then the DB closes. The cancellation is re-raised.
    """
    _tune_gil_switching()
    node = cfg.node(node_id)
    position = cfg.node_ids().index(node_id)
    store = NodeStore.open(
        node.data_dir,
        cluster=cfg.name,
        node_id=node_id,
        fsync=cfg.fsync,
        write_buffer_bytes=staggered_write_buffer_bytes(position, len(cfg.nodes)),
        rocksdb_compaction=cfg.storage.rocksdb_compaction,
        space_amplification_percent=cfg.storage.max_space_amplification_percent,
        max_open_files=cfg.storage.rocksdb_max_open_files,
    )
    # After the store opened, so its descriptors are counted (server/open_files.py).
    # A copy: the caller's config keeps the limits its file gave (the [auth] it
    # shares is still the one a reload updates in place).
    reserved = reserved_fds(cfg.storage.rocksdb_max_open_files)
    cfg = dataclasses.replace(cfg, limits=fit_to_open_files_limit(cfg.limits, node_id, reserved))
    driver: MultiRaft | None = None
    held = ExitStack()  # the CPU latency request, released after the store closes
    try:
        cpu_latency_us = held.enter_context(cpu_latency_request(cfg.cpu_latency_qos_us))
        metrics = Metrics()
        metrics.cpu_latency_qos_us.set(-1 if cpu_latency_us is None else cpu_latency_us)
        # One registry: the peer gauges and drop counters show on /metrics too.
        transport = PeerTransport(cfg, node_id, store.identity.incarnation, metrics=metrics)
        driver = MultiRaft(cfg, node_id, store, transport, metrics=metrics, debug=debug)
        driver.start()
        register_consumer_lag(metrics.registry, driver.groups.values)
        # cfg.auth is the one an [auth] reload updates in place.
        register_user_expiry(metrics.registry, lambda: cfg.auth.users, driver.metadata_users)
        compaction = CompactionManager(driver)
        compaction.register_metrics(metrics.registry)
        handlers = RequestHandlers(cfg, node_id, driver, metrics)
        # Read through the driver each time: the metadata state is replaced on
        # a snapshot install.
        log_formats = LogFormats(cfg.log_format, lambda: driver.metadata.log_format)
        driver.said_peer_address = log_formats.peer_address_of
        _warn_if_log_format_unreadable(cfg, driver)
        log.info(
            "event=node_starting node=%s address=%s data_dir=%s groups=%d incarnation=%s",
            node_id,
            node.address,
            node.data_dir,
            len(driver.groups),
            store.identity.incarnation,
        )

        async def services(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            # Shielded: the caller's cancellation must not stop the loop, the
            # listener or the transport before the hand-over is done (it needs
            # all three); ``scope.cancel()`` below stops them afterwards.
            with trio.CancelScope(shield=True) as scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(driver.run)
                    # Snapshots/catch-up, per-topic retention and log compaction of
                    # compacted topics (their modules).
                    await nursery.start(driver.snapshots.run)
                    await nursery.start(RetentionManager(driver).run)
                    await nursery.start(compaction.run)
                    retention = OffsetsRetention.from_config(driver, handlers.group_ops)
                    await nursery.start(retention.run)
                    await nursery.start(LogFormatUpgrade.for_node(driver, log_formats).run)
                    clock_file = os.environ.get(WALL_CLOCK_FILE_ENV)
                    if clock_file:  # fault injection only (server/clock_skew.py)
                        nursery.start_soon(follow_offset_file, clock_file)
                    await nursery.start(transport.run)
                    await nursery.start(
                        lambda task_status: serve(
                            cfg,
                            node_id,
                            store_incarnations=store,
                            on_request=handlers.handle,
                            start_request=handlers.handle_nowait,
                            on_peer_msgs=driver.on_peer_msgs,
                            on_peer_connected=transport.redial,
                            log_formats=log_formats,
                            metadata_users=driver.metadata_users,
                            metrics=metrics,
                            task_status=task_status,
                        )
                    )
                    if node.metrics_address:
                        await nursery.start(serve_metrics, node.metrics_address, metrics.registry)
                    # [tls] files and [auth] users (server/auth_reload.py)
                    await nursery.start(reload_on_sighup, cfg, node_id, metrics)
                    task_status.started(scope)

        async with trio.open_nursery() as outer:
            services_scope: trio.CancelScope = await outer.start(services)
            log.info("event=node_ready node=%s address=%s", node_id, node.address)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                try:
                    await _controlled_shutdown(driver, node_id, handover_bound_s(cfg))
                finally:
                    services_scope.cancel()
    finally:
        try:
            if driver is not None and driver.storage_failed:
                store.abandon()
            else:
                store.close()
        except Exception as exc:  # e.g. a full disk: RocksDB cannot flush what it holds
            # Logged, not raised: it would hide why the node stopped (the WAL
            # already holds everything the node ever acknowledged).
            log.error("event=store_close_failed node=%s error=%r", node_id, exc)
        held.close()
        log.info("event=node_stopped node=%s", node_id)


def _warn_if_log_format_unreadable(cfg: ClusterConfig, driver: MultiRaft) -> None:
    """Say loudly at start when this node says it reads less than the cluster writes:
    its peers will refuse it (server/listener.py) until it is upgraded, or its
    ``max_log_format`` is lifted."""
    cluster_format = driver.metadata.log_format
    if cfg.log_format < cluster_format:
        log.error(
            "event=log_format_behind node_reads=%d cluster=%d build_reads=%d "
            "hint='peers refuse this node; lift [cluster] max_log_format or upgrade it'",
            cfg.log_format, cluster_format, LOG_FORMAT,
        )  # fmt: skip


def handover_bound_s(cfg: ClusterConfig) -> float:
    """How long a stopping node waits for its groups to get other leaders.

    Two election timeouts: a transfer the core aborts after one (thesis
    §3.10) can be retried once; never over 2 s, so a stop stays prompt.
    """
    return min(MAX_HANDOVER_S, 2 * cfg.election_ticks * cfg.tick_ms / 1000.0)


async def _controlled_shutdown(driver: MultiRaft, node_id: str, bound_s: float) -> None:
    """Hand leadership over before stopping (etcd does on a graceful stop, Kafka's
    controlled shutdown likewise): without it every group this node leads waits
    a full election timeout, or more with PreVote/CheckQuorum, for a new leader.

    Shielded from the cancellation that started the shutdown (that is what
    triggers it) but bounded by ``bound_s``; a second signal does not wait
    longer than that. A failure here is logged, never blocks the stop.
    """
    started = time.monotonic()
    deadline = trio.current_time() + bound_s
    groups = moved = 0
    # The driver stops waiting at ``deadline`` by itself; the scope's own
    # deadline is only a backstop against a hang (it would end the wait early).
    with trio.CancelScope(shield=True, deadline=deadline + BACKSTOP_S) as scope:
        try:
            groups, moved = await driver.hand_over_leadership(deadline)
        except Exception:
            log.exception("event=shutdown_handover_failed node=%s", node_id)
            return
    log.info(
        "event=shutdown_leadership_handed_over node=%s groups=%d moved=%d elapsed_ms=%.0f%s",
        node_id,
        groups,
        moved,
        (time.monotonic() - started) * 1000,
        " cut_short=true" if scope.cancelled_caught else "",
    )
