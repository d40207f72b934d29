"""A tiny Prometheus registry (text format 0.0.4) and its ``/metrics`` endpoint.

Small on purpose: counters, gauges and histograms with labels, rendered on
demand. Updating a metric is a dict lookup and an add, cheap enough for the
request path; all the formatting cost is paid by the scraper.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import os
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import trio

from .config import parse_address

log = logging.getLogger(__name__)

LabelValues = tuple[str, ...]

# Latency buckets in seconds: 100 us .. 10 s, dense where fsync and produce live.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
)  # fmt: skip


class MetricType(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class _Metric:
    kind: MetricType

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names: tuple[str, ...] = tuple(labels)

    def _key(self, labels: dict[str, object]) -> LabelValues:
        # Hot path (every request): no generator, no sorting.
        names = self.label_names
        if len(labels) != len(names):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {list(names)}")
        try:
            if len(names) == 1:
                return (str(labels[names[0]]),)
            return tuple([str(labels[n]) for n in names])
        except KeyError as exc:
            raise ValueError(f"{self.name}: missing label {exc}") from None

    def _label_text(self, values: LabelValues, extra: str = "") -> str:
        parts = [f'{n}="{_escape(v)}"' for n, v in zip(self.label_names, values)]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}" if parts else ""

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind.value}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = MetricType.COUNTER

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up")
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: object) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        return [f"{self.name}{self._label_text(k)} {_fmt(v)}" for k, v in self._values.items()]


class Gauge(_Metric):
    kind = MetricType.GAUGE

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {}

    def set(self, value: float, **labels: object) -> None:
        self._values[self._key(labels)] = float(value)

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: object) -> None:
        self.inc(-amount, **labels)

    def value(self, **labels: object) -> float:
        return self._values.get(self._key(labels), 0.0)

    def remove(self, **labels: object) -> None:
        self._values.pop(self._key(labels), None)

    def samples(self) -> list[str]:
        return [f"{self.name}{self._label_text(k)} {_fmt(v)}" for k, v in self._values.items()]


class Sampled(_Metric):
    """A metric without labels read from ``sample()`` at scrape time (the
    ``process_*`` family): the value lives elsewhere (the kernel), so there is
    nothing to update on any hot path. ``sample()`` returning None (no /proc on
    this platform) leaves the metric without a sample rather than a made-up 0."""

    def __init__(
        self, name: str, help_text: str, kind: MetricType, sample: Callable[[], float | None]
    ) -> None:
        super().__init__(name, help_text)
        self.kind = kind
        self._sample = sample

    def samples(self) -> list[str]:
        value = self._sample()
        return [] if value is None else [f"{self.name} {_fmt(value)}"]


class Collected(_Metric):
    """A labelled gauge computed at scrape time by ``collect`` (label values, value):
    for values derived from state another layer owns (consumer lag from the
    partitions' committed offsets), which would cost work on every change if
    kept up to date and costs one pass per scrape this way."""

    kind = MetricType.GAUGE

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str],
        collect: Callable[[], Iterable[tuple[LabelValues, float]]],
    ) -> None:
        super().__init__(name, help_text, labels)
        self._collect = collect

    def samples(self) -> list[str]:
        return [f"{self.name}{self._label_text(k)} {_fmt(v)}" for k, v in self._collect()]


@dataclass(slots=True)
class _HistogramState:
    buckets: list[int]
    total: float = 0.0
    count: int = 0


class Histogram(_Metric):
    kind = MetricType.HISTOGRAM

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Iterable[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labels)
        self.bounds = tuple(sorted(buckets))
        self._states: dict[LabelValues, _HistogramState] = {}

    def observe(self, value: float, **labels: object) -> None:
        key = self._key(labels)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _HistogramState([0] * len(self.bounds))
        # Non-cumulative per bucket here; render() accumulates (cheaper per observe).
        i = bisect.bisect_left(self.bounds, value)  # first bound >= value
        if i < len(self.bounds):
            state.buckets[i] += 1
        state.total += value
        state.count += 1

    def count(self, **labels: object) -> int:
        state = self._states.get(self._key(labels))
        return state.count if state else 0

    def samples(self) -> list[str]:
        out: list[str] = []
        for key, state in self._states.items():
            running = 0
            for bound, n in zip(self.bounds, state.buckets):
                running += n
                le = f'le="{_fmt(bound)}"'
                out.append(f"{self.name}_bucket{self._label_text(key, le)} {running}")
            inf = self._label_text(key, 'le="+Inf"')
            out.append(f"{self.name}_bucket{inf} {state.count}")
            out.append(f"{self.name}_sum{self._label_text(key)} {_fmt(state.total)}")
            out.append(f"{self.name}_count{self._label_text(key)} {state.count}")
        return out


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        # Values several collected metrics derive from one pass, for one render.
        self._scrape_memo: dict[str, Any] | None = None

    def per_scrape(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per render for all the collectors that ask for ``key``
        (the consumer lag's sum, max and partitions come from one pass); each call
        outside a render computes afresh."""
        if self._scrape_memo is None:
            return compute()
        if key not in self._scrape_memo:
            self._scrape_memo[key] = compute()
        return self._scrape_memo[key]

    def _add(self, metric: _Metric) -> _Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help_text, labels))  # type: ignore[return-value]

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help_text, labels))  # type: ignore[return-value]

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Iterable[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return self._add(Histogram(name, help_text, labels, buckets))  # type: ignore[return-value]

    def sampled(
        self, name: str, help_text: str, kind: MetricType, sample: Callable[[], float | None]
    ) -> Sampled:
        return self._add(Sampled(name, help_text, kind, sample))  # type: ignore[return-value]

    def collected(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str],
        collect: Callable[[], Iterable[tuple[LabelValues, float]]],
    ) -> Collected:
        return self._add(Collected(name, help_text, labels, collect))  # type: ignore[return-value]

    def get(self, name: str) -> _Metric:
        return self._metrics[name]

    def render(self) -> str:
        lines: list[str] = []
        self._scrape_memo = {}
        try:
            for metric in self._metrics.values():
                lines += metric.header()
                lines += metric.samples()
        finally:
            self._scrape_memo = None
        return "\n".join(lines) + "\n"


# The RocksDB properties a node exports (NodeStore.rocksdb_stats) -> (metric name, help).
ROCKSDB_GAUGES = {
    "total-sst-files-size": (
        "raftlog_rocksdb_sst_bytes",
        "Bytes of the node's RocksDB table (SST) files.",
    ),
    "estimate-live-data-size": (
        "raftlog_rocksdb_live_data_bytes",
        "RocksDB's estimate of the live data in those files (the rest awaits a merge).",
    ),
    "estimate-pending-compaction-bytes": (
        "raftlog_rocksdb_pending_compaction_bytes",
        "Bytes RocksDB estimates its compactions must rewrite to catch up; growing for "
        "long means writes will be slowed, then stopped.",
    ),
    "num-running-compactions": (
        "raftlog_rocksdb_running_compactions",
        "RocksDB compactions running now.",
    ),
    "is-write-stopped": (
        "raftlog_rocksdb_write_stopped",
        "1 while RocksDB stops writes (too many level-0 files or pending compaction).",
    ),
    "actual-delayed-write-rate": (
        "raftlog_rocksdb_delayed_write_rate_bytes",
        "The write rate RocksDB throttles to while compaction falls behind; 0: none.",
    ),
}


@dataclass(slots=True)
class Metrics:
    """The node's metrics, declared once so every layer updates the same names."""

    registry: Registry = field(default_factory=Registry)
    # listener / transport (S-NET)
    connections: Gauge = field(init=False)
    client_connections: Gauge = field(init=False)
    client_connections_refused: Counter = field(init=False)
    requests: Counter = field(init=False)
    request_latency: Histogram = field(init=False)
    frame_errors: Counter = field(init=False)
    hello_rejected: Counter = field(init=False)
    throttled: Counter = field(init=False)
    user_throttled: Counter = field(init=False)
    forbidden: Counter = field(init=False)
    peer_frames_in: Counter = field(init=False)
    peer_msgs_out: Counter = field(init=False)
    peer_queue_drops: Counter = field(init=False)
    peer_connected: Gauge = field(init=False)
    peer_reconnects: Counter = field(init=False)
    tls_handshake_failures: Counter = field(init=False)
    tls_reloads: Counter = field(init=False)
    tls_connections_revoked: Counter = field(init=False)
    client_connections_closed: Counter = field(init=False)
    pending_connections: Gauge = field(init=False)
    peer_pending_connections: Gauge = field(init=False)
    connections_accepted: Counter = field(init=False)
    pending_connections_evicted: Counter = field(init=False)
    connections_rate_limited: Counter = field(init=False)
    accept_throttled_seconds: Counter = field(init=False)
    auth_reloads: Counter = field(init=False)
    tls_cert_expiry: Gauge = field(init=False)
    # driver / handlers (S-CORE)
    produce_requests: Counter = field(init=False)
    records_in: Counter = field(init=False)
    bytes_in: Counter = field(init=False)
    records_out: Counter = field(init=False)
    reads: Counter = field(init=False)
    bytes_out: Counter = field(init=False)
    fsync_latency: Histogram = field(init=False)
    leader_changes: Counter = field(init=False)
    groups: Gauge = field(init=False)
    cpu_latency_qos_us: Gauge = field(init=False)
    log_format: Gauge = field(init=False)
    max_follower_lag: Gauge = field(init=False)
    under_replicated_groups: Gauge = field(init=False)
    leaderless_groups: Gauge = field(init=False)
    peer_clock_offset: Gauge = field(init=False)
    retention_clock_refusals: Counter = field(init=False)
    producer_ids: Gauge = field(init=False)
    producers_expired: Counter = field(init=False)
    produce_batches_held: Counter = field(init=False)
    produce_batches_overdue: Counter = field(init=False)
    compaction_sweeps: Counter = field(init=False)
    compaction_removed: Counter = field(init=False)
    compaction_map_full: Counter = field(init=False)
    data_dir_free: Gauge = field(init=False)
    data_dir_size: Gauge = field(init=False)
    rocksdb: dict[str, Gauge] = field(init=False)  # by RocksDB property (ROCKSDB_GAUGES)
    pending_proposals: Gauge = field(init=False)
    apply_lag: Gauge = field(init=False)
    # consumer group coordinator (server/group_ops.py)
    consumer_groups: Gauge = field(init=False)
    group_rebalances: Counter = field(init=False)
    # offsets retention (server/offsets_retention.py)
    groups_expired: Counter = field(init=False)
    offsets_deleted: Counter = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.connections = r.gauge("raftlog_connections", "Open connections by role.", ["role"])
        self.client_connections = r.gauge(
            "raftlog_client_connections",
            "Client connections held against [limits] max_client_connections.",
        )
        self.client_connections_refused = r.counter(
            "raftlog_client_connections_refused_total",
            "Client hellos refused because max_client_connections were open.",
        )
        self.client_connections_closed = r.counter(
            "raftlog_client_connections_closed_total",
            "Client connections the node closed: idle (nothing sent or in flight for "
            "[limits] connections_max_idle_ms) or revoked (an [auth] or [tls] reload "
            "revoked their credentials; closed once nothing was in flight).",
            ["reason"],
        )
        self.pending_connections = r.gauge(
            "raftlog_pending_connections",
            "Connections not past their hello yet (TLS handshake included), held against "
            "[limits] max_pending_connections.",
        )
        self.peer_pending_connections = r.gauge(
            "raftlog_peer_pending_connections",
            "Connections to the node's peer_address not past their hello yet, held against "
            "[limits] max_pending_connections apart from the node address's.",
        )
        self.connections_accepted = r.counter(
            "raftlog_connections_accepted_total",
            "Connections accepted, by listener: address (clients, and peers without a "
            "peer_address) or peer_address (the other nodes only).",
            ["listener"],
        )
        self.pending_connections_evicted = r.counter(
            "raftlog_pending_connections_evicted_total",
            "Connections closed before their hello because newer ones arrived, by the limit "
            "that pushed them out: max_pending_connections (the node's) or "
            "max_pending_connections_per_address (their address's share). A flood of "
            "connections that never speak, or a limit too low.",
            ["limit"],
        )
        self.connections_rate_limited = r.counter(
            "raftlog_connections_rate_limited_total",
            "Connections closed at their accept because their address opened more than "
            "[limits] max_connection_rate_per_address a second.",
        )
        self.accept_throttled_seconds = r.counter(
            "raftlog_accept_throttled_seconds_total",
            "Seconds the node stopped accepting connections to stay within [limits] "
            "max_connection_rate; new connections waited in the kernel's accept queue.",
        )
        # Rendered as 0 from the start: an alert on the refusal rate or a
        # dashboard of the gauge should not see "no data" on a healthy node.
        self.client_connections.set(0)
        self.client_connections_refused.inc(0)
        self.pending_connections.set(0)
        self.peer_pending_connections.set(0)
        for listener in ("address", "peer_address"):
            self.connections_accepted.inc(0, listener=listener)
        for limit in ("max_pending_connections", "max_pending_connections_per_address"):
            self.pending_connections_evicted.inc(0, limit=limit)
        self.connections_rate_limited.inc(0)
        self.accept_throttled_seconds.inc(0)
        self.requests = r.counter(
            "raftlog_requests_total", "Client requests by op and result code.", ["op", "code"]
        )
        self.request_latency = r.histogram(
            "raftlog_request_seconds", "Client request latency by op.", ["op"]
        )
        self.frame_errors = r.counter(
            "raftlog_frame_errors_total", "Connections closed for a bad frame.", ["reason"]
        )
        self.hello_rejected = r.counter(
            "raftlog_hello_rejected_total", "Hellos refused by error code.", ["code"]
        )
        self.throttled = r.counter(
            "raftlog_throttled_total", "Requests refused by a quota.", ["quota"]
        )
        # Per [[auth.user]] (a bounded set: the users of cluster.toml).
        self.user_throttled = r.counter(
            "raftlog_user_throttled_total", "Requests of a user refused by a quota.",
            ["user", "quota"],
        )  # fmt: skip
        self.forbidden = r.counter(
            "raftlog_forbidden_total", "Requests refused to a user (FORBIDDEN).", ["user", "op"]
        )
        self.peer_frames_in = r.counter(
            "raftlog_peer_frames_in_total", "Raft frames received from peers.", ["peer"]
        )
        self.peer_msgs_out = r.counter(
            "raftlog_peer_msgs_out_total", "Raft messages written to peers.", ["peer"]
        )
        self.peer_queue_drops = r.counter(
            "raftlog_peer_queue_drops_total",
            "Raft frames dropped because a peer's send queue was full.",
            ["peer"],
        )
        self.peer_connected = r.gauge(
            "raftlog_peer_connected", "1 when the outbound peer stream is up.", ["peer"]
        )
        self.peer_reconnects = r.counter(
            "raftlog_peer_dials_total", "Outbound peer connection attempts.", ["peer", "result"]
        )
        self.tls_handshake_failures = r.counter(
            "raftlog_tls_handshake_failures_total",
            "Failed TLS handshakes ([tls]): side accept (listener) or dial (to a peer), "
            "reason plaintext, certificate, closed, timeout or protocol.",
            ["side", "reason"],
        )
        self.tls_reloads = r.counter(
            "raftlog_tls_reloads_total",
            "TLS certificate reloads on SIGHUP ([tls]), by result ok or failed "
            "(failed: the node goes on with the files it had).",
            ["result"],
        )
        self.tls_connections_revoked = r.counter(
            "raftlog_tls_connections_revoked_total",
            "Open connections cut off because a reloaded crl_file revokes the other "
            "side's certificate: role client (its requests refused), peer (dialled in, "
            "closed) or dial (our link to a peer, closed).",
            ["role"],
        )
        self.auth_reloads = r.counter(
            "raftlog_auth_reloads_total", "SIGHUP reloads of [auth] users and tokens.", ["result"]
        )
        self.tls_cert_expiry = r.gauge(
            "raftlog_tls_cert_expiry_timestamp_seconds",
            "Earliest notAfter (Unix seconds) in the node's certificate file (cert=node) "
            "and in ca_file (cert=ca), and the earliest nextUpdate in crl_file (cert=crl); "
            "alert well before time() reaches it.",
            ["cert"],
        )
        self.produce_requests = r.counter(
            "raftlog_produce_requests_total", "Produce requests by result code.", ["code"]
        )
        self.records_in = r.counter("raftlog_records_in_total", "Records appended.")
        self.bytes_in = r.counter("raftlog_bytes_in_total", "Record bytes appended.")
        self.records_out = r.counter("raftlog_records_out_total", "Records fetched.")
        self.reads = r.counter(
            "raftlog_reads_total",
            "Reads by how they were made safe. Linearizable reads (fetch, list_offsets, "
            "metadata, committed offsets) on the leader: lease (its lease, no round) or "
            "read_index (a heartbeat round). serializable: a fetch or list_offsets from "
            "this replica's own applied state.",
            ["path"],
        )
        self.bytes_out = r.counter("raftlog_bytes_out_total", "Record bytes fetched.")
        self.fsync_latency = r.histogram(
            "raftlog_fsync_seconds", "Duration of one store save (WriteBatch + fsync)."
        )
        self.leader_changes = r.counter(
            "raftlog_leader_changes_total", "Leader changes observed, all groups."
        )
        self.groups = r.gauge("raftlog_groups", "Raft groups hosted by role.", ["role"])
        self.data_dir_free = r.gauge(
            "raftlog_data_dir_free_bytes",
            "Bytes free for this node (not root) on its data dir's filesystem; at 0 the "
            "node stops rather than run on without durability.",
        )
        self.data_dir_size = r.gauge(
            "raftlog_data_dir_filesystem_bytes", "Size of the data dir's filesystem."
        )
        # RocksDB's own view ([storage] in cluster.toml): disk held against live data
        # shows the space amplification universal compaction trades for CPU.
        self.rocksdb = {
            prop: r.gauge(name, help_text) for prop, (name, help_text) in ROCKSDB_GAUGES.items()
        }
        self.log_format = r.gauge(
            "raftlog_log_format",
            "Log formats (log/features.py): what the cluster writes as this node's metadata "
            "has it (of=cluster), and the highest this node says it reads (of=node). "
            "node > cluster on every node for long: an upgrade waits for a node.",
            ["of"],
        )
        self.cpu_latency_qos_us = r.gauge(
            "raftlog_cpu_latency_qos_us",
            "The CPU latency QoS request this node holds ([cluster] cpu_latency_qos_us); "
            "-1: none (not asked for, or the device refused it).",
        )
        self.max_follower_lag = r.gauge(
            "raftlog_max_follower_lag", "Largest follower lag (entries) over led groups."
        )
        self.under_replicated_groups = r.gauge(
            "raftlog_under_replicated_groups",
            "Groups this node leads with a replica out of sync: not in steady replication, "
            "more than 100 entries behind, or on a node it has no live link to.",
        )
        self.leaderless_groups = r.gauge(
            "raftlog_leaderless_groups",
            "Groups this node hosts that know no leader (an election under way, or no quorum).",
        )
        self.peer_clock_offset = r.gauge(
            "raftlog_peer_clock_offset_seconds",
            "A peer's wall clock minus this node's, from its latest clock frame.",
            ("peer",),
        )
        self.retention_clock_refusals = r.counter(
            "raftlog_retention_clock_refusals_total",
            "Retention rounds that deleted nothing by time: this node's wall clock was "
            "ahead of a majority of nodes by more than [retention] max_clock_skew_ms.",
        )
        self.producer_ids = r.gauge(
            "raftlog_producer_ids",
            "Idempotent producers remembered, summed over the partitions this node hosts.",
        )
        self.producers_expired = r.counter(
            "raftlog_producers_expired_total",
            "Producers forgotten by partitions this node leads: idle longer than "
            "[retention] producer_expiry_ms, or beyond max_producers_per_partition (limit).",
            ("reason",),
        )
        for reason in ("idle", "limit"):
            self.producers_expired.inc(0, reason=reason)
        self.produce_batches_held = r.counter(
            "raftlog_produce_batches_held_total",
            "Idempotent produce batches a partition leader held back because they came "
            "ahead of the producer's previous batch (a pipeline's retries out of order).",
        )
        self.produce_batches_overdue = r.counter(
            "raftlog_produce_batches_overdue_total",
            "Batches proposed while still ahead of their predecessor, after a hold of "
            "0.5 s (or the per-partition cap): each is refused OUT_OF_ORDER_SEQUENCE.",
        )
        self.compaction_sweeps = r.counter(
            "raftlog_compaction_sweeps_total",
            "Log compaction sweeps finished by partitions this node leads (compacted topics).",
        )
        self.compaction_removed = r.counter(
            "raftlog_compaction_records_removed_total",
            "Records removed by log compaction in partitions this node leads: superseded "
            "by a later record of the same key, or tombstones past delete_retention_ms.",
        )
        self.compaction_map_full = r.counter(
            "raftlog_compaction_map_full_total",
            "Compaction sweeps cut short because their offset map reached [retention] "
            "compaction_map_bytes; the next sweep goes on from there.",
        )
        self.pending_proposals = r.gauge(
            "raftlog_pending_proposals", "Proposals waiting to be committed and applied."
        )
        self.apply_lag = r.gauge(
            "raftlog_apply_lag", "Sum over groups of commit index minus applied index."
        )
        self.consumer_groups = r.gauge(
            "raftlog_consumer_groups",
            "Consumer groups with members at this node's coordinator (0 unless it "
            "leads the metadata group).",
        )
        self.group_rebalances = r.counter(
            "raftlog_group_rebalances_total",
            "Consumer group generations formed (rebalances completed) at this node.",
        )
        self.groups_expired = r.counter(
            "raftlog_consumer_groups_expired_total",
            "Consumer groups this node deleted as controller after offsets_retention_ms "
            "without members.",
        )
        self.offsets_deleted = r.counter(
            "raftlog_consumer_offsets_deleted_total",
            "Committed offsets removed by offsets retention from partitions this node "
            "leads: of deleted consumer groups (reason=group_deleted; also finishes a "
            "`group delete`), or committed by hand under a name that never formed a "
            "group and not committed again for offsets_retention_ms (reason=expired).",
            ["reason"],
        )
        self.consumer_groups.set(0)
        self.group_rebalances.inc(0)
        self.groups_expired.inc(0)
        for reason in ("group_deleted", "expired"):
            self.offsets_deleted.inc(0, reason=reason)
        add_process_metrics(r)


# ---------------------------------------------------------------- process_* metrics


def _cpu_seconds() -> float:
    # User + system time of every thread: the event loop, the fsync worker
    # threads and RocksDB's flush and compaction threads.
    t = os.times()
    return t.user + t.system


def _resident_bytes() -> float | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return float(int(f.read().split()[1]) * _PAGE_BYTES)
    except (OSError, ValueError, IndexError):
        return None


def descriptors_in_use() -> int | None:
    """Open descriptors of this process (None where /proc cannot tell); also
    read by server/open_files.py for the node's descriptor budget."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _open_fds() -> float | None:
    in_use = descriptors_in_use()
    return None if in_use is None else float(in_use)


def _max_fds() -> float | None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else float(soft)


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def add_process_metrics(r: Registry) -> None:
    """The standard ``process_*`` metrics of Prometheus client libraries, so the
    usual dashboards and alerts (CPU saturation, memory growth, descriptors
    running out under many connections) work on a node unchanged. ``raftlog
    bench --config`` reads ``process_cpu_seconds_total`` to report the nodes'
    CPU per record (client/bench.py)."""
    started = time.time()
    r.sampled(
        "process_cpu_seconds_total",
        "User and system CPU time of the node process, all threads, in seconds.",
        MetricType.COUNTER,
        _cpu_seconds,
    )
    r.sampled(
        "process_resident_memory_bytes",
        "Resident memory of the node process in bytes.",
        MetricType.GAUGE,
        _resident_bytes,
    )
    r.sampled(
        "process_open_fds",
        "Open file descriptors (connections, RocksDB files).",
        MetricType.GAUGE,
        _open_fds,
    )
    r.sampled(
        "process_max_fds",
        "The open file descriptor limit (RLIMIT_NOFILE, soft).",
        MetricType.GAUGE,
        _max_fds,
    )
    r.sampled(
        "process_start_time_seconds",
        "When the node's metrics were set up, in Unix seconds (restarts reset it).",
        MetricType.GAUGE,
        lambda: started,
    )


# ---------------------------------------------------------------- HTTP endpoint

_MAX_REQUEST_HEAD = 8192
_READ_TIMEOUT_S = 5.0
# And one that stops reading the reply must not hold a task and the body forever
# either. Each connection is thus bounded in time, which is why the endpoint needs
# no TCP keepalive (its probes would start after [limits] tcp_keepalive_s idle).
_SEND_TIMEOUT_S = 10.0


def _http_response(status: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _handle_http(stream: trio.SocketStream, registry: Registry) -> None:
    async with stream:
        head = bytearray()
        # A scraper that never finishes its request must not hold a task forever.
        with trio.move_on_after(_READ_TIMEOUT_S):
            while b"\r\n\r\n" not in head and len(head) < _MAX_REQUEST_HEAD:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                head += chunk
        request_line = bytes(head).split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
            reply = _http_response("405 Method Not Allowed", b"GET /metrics\n", "text/plain")
        elif parts[1].split("?", 1)[0] != "/metrics":
            reply = _http_response("404 Not Found", b"try /metrics\n", "text/plain")
        else:
            body = registry.render().encode("utf-8")
            reply = _http_response("200 OK", body, "text/plain; version=0.0.4; charset=utf-8")
            if parts[0] == "HEAD":
                reply = reply[: reply.index(b"\r\n\r\n") + 4]
        with (
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            trio.move_on_after(_SEND_TIMEOUT_S),
        ):
            await stream.send_all(reply)


async def serve_metrics(
    address: str, registry: Registry, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``GET /metrics`` on ``address`` until cancelled."""
    host, port = parse_address(address, allow_zero=True)
    listeners = await trio.open_tcp_listeners(port, host=host)
    log.info("event=metrics_listening address=%s", address)
    task_status.started(listeners)
    await trio.serve_listeners(lambda s: _handle_http(s, registry), listeners)
