"""One raftlog node process: store, multi-raft driver, peer transport, listener, metrics."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import trio
from raftlog.log.store import NodeStore

from .config import ClusterConfig
from .driver import MultiRaft
from .handlers import RequestHandlers
from .listener import serve
from .metrics import Metrics, serve_metrics
from .retention import RetentionManager
from .transport import PeerTransport

log = logging.getLogger("raftlog.node")

# Seconds a thread that wants the GIL waits before it asks the holder to drop
# it (CPython's default is 5 ms). The save thread needs the GIL for a moment
# after every fsync to hand its result back; with the event loop busy it would
# wait a full interval each time, which on a loaded node put ~5 ms on every
# Raft round (saves measured at ~9 ms for a 0.5 ms fsync).
GIL_SWITCH_INTERVAL_S = 0.0005


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

    Shutdown order on cancellation: the listener and transport stop with the
    nursery, the driver finishes its in-flight save (a worker thread is never
    abandoned), pending requests are answered NOT_AVAILABLE, then the DB closes.
    """
    _tune_gil_switching()
    node = cfg.node(node_id)
    store = NodeStore.open(node.data_dir, cluster=cfg.name, node_id=node_id, fsync=cfg.fsync)
    try:
        metrics = Metrics()
        # One registry: the peer gauges and drop counters show on /metrics too.
        transport = PeerTransport(cfg, node_id, store.identity.incarnation, metrics=metrics)
        driver = MultiRaft(cfg, node_id, store, transport, metrics=metrics, debug=debug)
        driver.start()
        handlers = RequestHandlers(cfg, node_id, driver, metrics)
        log.info(
            "event=node_starting node=%s address=%s data_dir=%s groups=%d incarnation=%s",
            node_id,
            node.address,
            node.data_dir,
            len(driver.groups),
            store.identity.incarnation,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            # Snapshots/compaction/catch-up and per-topic retention (their modules).
            await nursery.start(driver.snapshots.run)
            await nursery.start(RetentionManager(driver).run)
            await nursery.start(transport.run)
            await nursery.start(
                lambda task_status: serve(
                    cfg,
                    node_id,
                    store_incarnations=store,
                    on_request=handlers.handle,
                    on_peer_msgs=driver.on_peer_msgs,
                    metrics=metrics,
                    task_status=task_status,
                )
            )
            if node.metrics_address:
                await nursery.start(serve_metrics, node.metrics_address, metrics.registry)
            log.info("event=node_ready node=%s address=%s", node_id, node.address)
            task_status.started()
    finally:
        store.close()
        log.info("event=node_stopped node=%s", node_id)
