"""cluster.toml: loading, validation and rendering (DESIGN.md §6).

Every problem is a ``ConfigError`` whose message names the file, the key and
what is wrong (``cluster.toml: node[1].address '127.0.0.1' is missing a
port``), because an operator reading it at 3 a.m. should not need a
traceback. Unknown keys are errors too: a misspelt ``elction_ticks`` silently
falling back to a default is worse than refusing to start.

``[cluster] cpu_latency_qos_us`` (optional, microseconds): every node holds a
Linux CPU latency QoS request of this value while it runs (server/cpu_latency.py).

``[cluster] max_log_format`` (optional, an int >= 1): the highest log format
(log/features.py) the node says it reads, below its build's own. Set during a
rolling upgrade to keep the cluster on the old format, so that any node can
still go back to the old version; lift it once the upgrade is judged good.

Tables beyond DESIGN.md §6: ``[limits]``, ``[auth]`` (with its
``[[auth.user]]`` tenants, server/acl.py), ``[quotas]``,
``[snapshots]``, ``[retention]``, ``[storage]`` and ``[tls]``. Their keys are optional; shown
with defaults::

    [limits]                   # every key an int >= 1 (the other keys: see ``Limits``)
    max_client_connections = 4096  # client connections per node; more -> NOT_AVAILABLE
    connections_max_idle_ms = 600000  # close a client connection idle this long (0: never)
    tcp_keepalive_s = 30       # TCP keepalive idle seconds on every connection (0: off)

    [snapshots]
    entries = 10000            # snapshot a group after this many applied entries ...
    entry_bytes = 2097152      # ... or this many applied entry bytes (2 MiB), whichever first
    trailing = 1000            # entries kept behind a snapshot when the log is compacted (>= 0)
    trailing_bytes = 1048576   # ... but no more than about this many bytes of them (1 MiB, >= 0)
    chunk_bytes = 1048576      # record bytes asked per replica_fetch of a snapshot transfer (1 MiB)
    transfers = 2              # snapshot transfers a node receives at once
    request_timeout_s = 10.0   # one replica_fetch round trip, seconds (int or float)

    [retention]
    interval_ms = 5000         # how often partition leaders apply topics' retention policies
    max_clock_skew_ms = 60000  # no deletion by time while the leader's clock is further
                               # ahead than this of a majority of nodes (server/clock_skew.py)
    producer_expiry_ms = 86400000      # forget an idempotent producer idle this long (1 day)
    max_producers_per_partition = 10000  # ... and the least recently used beyond this many
    offsets_retention_ms = 604800000   # delete a consumer group (and its committed offsets)
                                       # after this long without members (7 days)
    compaction_map_bytes = 134217728   # memory for one compaction sweep's map of keys
                                       # (128 MiB); a sweep with more keys ends early

    [storage]
    rocksdb_compaction = "level"        # or "universal": how RocksDB merges files (log/store.py
                                        # set_compaction_style; either opens the other's data)
    max_space_amplification_percent = 100  # universal: files may hold this much more than
                                           # the live data before a full merge (>= 1)
    rocksdb_max_open_files = 384        # table files RocksDB keeps open (>= 20); the
                                        # connection limits leave these free

    [auth]
    revoked_grace_s = 5.0      # close a client connection this long after the sweep found its
                               # credentials revoked (a number >= 0; re-read by an [auth] reload)

    [tls]                      # absent: plaintext. Present: the node serves and dials ONLY TLS
    ca_file = "tls/ca.pem"     # required: verifies peers (always) and clients (client_auth)
    cert_file = "tls/node.pem" # the node's certificate, as server and as client of its peers
    key_file = "tls/node.key"  # (a [[node]]'s tls_cert_file / tls_key_file override both)
    client_auth = false        # true: clients must present a certificate signed by ca_file
    crl_file = "tls/crl.pem"   # optional: refuse certificates these CRLs revoke (peers and
                               # clients); needs a current CRL of every CA that issues them

Snapshots bound the Raft log (Raft §7): a low ``entries`` costs more snapshot
writes, a high one longer restarts and more disk. ``trailing`` lets a slightly
lagging follower catch up by AppendEntries instead of a snapshot transfer;
``trailing_bytes`` caps it for big entries (a batching producer's are tens to
hundreds of KiB) once every live follower has them, so the log of a busy
partition stays a few MiB: entries deleted that soon cost RocksDB little
compaction (README, Performance).
A ``RAFTLOG_SNAPSHOT_<KEY>`` environment variable (``RAFTLOG_SNAPSHOT_ENTRIES``
...) and ``RAFTLOG_RETENTION_<KEY>`` still override the file, read once
when the node starts: for tests and emergencies. Precedence: environment >
cluster.toml > default. A bad environment value is a ConfigError as well.

TLS file paths, like ``data_dir``, resolve against the file's folder. The CA
and the shared certificate must be readable wherever the file is loaded; a
node's own ``tls_cert_file`` / ``tls_key_file`` are checked when that node
starts (server/tls.py), because on a multi-host cluster each host holds only
its own key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from raftlog.client.keepalive import DEFAULT_TCP_KEEPALIVE_S, MAX_TCP_KEEPALIVE_S
from raftlog.client.protocol import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
)
from raftlog.client.users import QUOTA_KEYS
from raftlog.log.features import BASELINE_LOG_FORMAT, LOG_FORMAT
from raftlog.log.store import (
    DEFAULT_ROCKSDB_COMPACTION,
    DEFAULT_SPACE_AMPLIFICATION_PERCENT,
    MIN_ROCKSDB_MAX_OPEN_FILES,
    ROCKSDB_COMPACTION_STYLES,
    ROCKSDB_MAX_OPEN_FILES,
)

from .acl import DENY_KEYS, PATTERN_KEYS, User, pattern_problem
from .cpu_latency import MAX_US as CPU_LATENCY_MAX_US
from .errors import ConfigError

# Lease reads (thesis §6.4.1): a leader's lease lasts election_ticks minus this
# many of its ticks, counted from when the confirming heartbeat left.
# Followers refuse votes for election_ticks of their ticks after receiving it,
# which is at least election_ticks - 2 intervals of real time (the first tick
# may come at once, and a tick may run up to an interval behind the driver's
# absolute schedule). On the leader, the real time since the heartbeat left
# exceeds its tick count by at most 2.5 intervals: an interval of lateness at
# each end, plus up to 1.5 since the last tick for a read answered between
# turns (driver.LEASE_FAST_PATH_GAP). 6 leaves 2.5 intervals of slack: with
# the repo's 20 ticks, clock rates may differ by ~14 % in the worst alignment.
LEASE_MARGIN_TICKS = 6

# [auth] revoked_grace_s: how long a client connection whose credentials were
# revoked stays open after the sweep found it (server/connection_sweeper.py),
# so that a client still using it is told why at its next request.
DEFAULT_REVOKED_GRACE_S = 5.0

__all__ = [
    "AuthConfig",
    "ClusterConfig",
    "ClusterTLSConfig",
    "ConfigError",
    "Limits",
    "NodeConfig",
    "QuotaConfig",
    "RetentionConfig",
    "SnapshotConfig",
    "load_config",
    "parse_address",
    "render_config",
]

MiB = 1024 * 1024
DEFAULT_SNAPSHOT_CHUNK_BYTES = MiB
SNAPSHOT_ENV_PREFIX = "RAFTLOG_SNAPSHOT_"
RETENTION_ENV_PREFIX = "RAFTLOG_RETENTION_"


@dataclass(slots=True)
class Limits:
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_fetch_bytes: int = 8 * MiB
    max_pending_requests_per_connection: int = 1024
    max_uncommitted_bytes_per_group: int = 64 * MiB
    # Client connections (hello role "client") one node holds at once; the next
    # client hello is answered NOT_AVAILABLE so the client retries another node
    # (Kafka's max.connections). Peer (node-to-node Raft) connections are never
    # counted nor refused: refusing them could cost the cluster its quorum.
    max_client_connections: int = 4096
    # A client connection with no request in flight for this long is closed by
    # the node (Kafka's connections.max.idle.ms), so a client that vanished
    # without a FIN, or holds connections it no longer uses, gives its slot
    # back. Announced in hello_ok: the client library retires its own idle
    # connections a little earlier, so no request meets the node's close.
    # 0: never.
    connections_max_idle_ms: int = 600_000
    # Connections not past their hello yet (TLS handshake included): nothing
    # tells a peer from a client before it, so neither limit above counts
    # them. Beyond this many, the oldest is closed (server/pending_connections.py).
    max_pending_connections: int = 1024
    # How long a new connection has to complete its TLS handshake (with [tls]),
    # and then again its hello, before the node closes it: a dialler that never
    # speaks must not hold a task and a socket for long.
    hello_timeout_ms: int = 10_000
    # Per remote address (server/address_limits.py), each 0 = no limit:
    # - its share of max_pending_connections: beyond it, that address's own
    #   oldest pending connection gives way (one host's flood cannot push out
    #   the other hosts' handshakes);
    max_pending_connections_per_address: int = 256
    # - client connections from one address (Kafka's max.connections.per.ip),
    #   refused at the hello as max_client_connections are; peers never count;
    max_client_connections_per_address: int = 0
    # - new connections a second from one address (Kafka's per-IP
    #   connection.creation.rate), a second's worth as burst; beyond it a
    #   connection is closed at its accept, before any handshake.
    max_connection_rate_per_address: int = 0
    # New connections a second the node accepts at all (Kafka's
    # max.connection.creation.rate), a second's worth as burst: beyond it the
    # node stops accepting and connections wait in the kernel's accept queue
    # (server/accept_loop.py). Peers wait too. 0 = no limit.
    max_connection_rate: int = 0
    # That queue's length (listen(2)'s backlog; Kafka's
    # socket.listen.backlog.size); 0 = the system's largest, net.core.somaxconn.
    listen_backlog: int = 0
    # Address or network -> its own value of the key named (Kafka's
    # max.connections.per.ip.overrides, and its per-IP quota entities), e.g. a
    # NAT gateway's or a proxy subnet's; 0 = no limit. The most specific entry
    # wins, and a network's value applies to each of its addresses
    # (server/address_limits.py AddressOverrides).
    max_client_connections_per_address_overrides: dict[str, int] = field(default_factory=dict)
    max_pending_connections_per_address_overrides: dict[str, int] = field(default_factory=dict)
    max_connection_rate_per_address_overrides: dict[str, int] = field(default_factory=dict)
    # TCP keepalive on every connection the node accepts or dials
    # (client/keepalive.py): idle seconds before the first probe; a far end
    # that vanished without a FIN or RST (power loss, a NAT that dropped the
    # connection) is cut off after about twice this. 0: no keepalive. Read at
    # start: a changed value takes a restart (`cluster reload` leaves it).
    tcp_keepalive_s: int = DEFAULT_TCP_KEEPALIVE_S


# [limits] keys that may be 0 (meaning "never" or "no limit"); the others must be >= 1.
_LIMITS_ZERO_MEANS_OFF = frozenset(
    {
        "connections_max_idle_ms",
        "max_pending_connections_per_address",
        "max_client_connections_per_address",
        "max_connection_rate_per_address",
        "max_connection_rate",
        "listen_backlog",
        "tcp_keepalive_s",
    }
)
_LIMITS_OVERRIDES = frozenset(
    {
        "max_client_connections_per_address_overrides",
        "max_pending_connections_per_address_overrides",
        "max_connection_rate_per_address_overrides",
    }
)


def canonical_address(text: str) -> str:
    """An IP address as the node sees it in a connection (``10.0.0.9``, ``::1``).

    ValueError if ``text`` is not one. An IPv4 address mapped into IPv6 (a
    dual-stack listener's view of an IPv4 client) is its IPv4 form.
    """
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


# A User field added after fingerprints existed, and its default: a user that
# leaves it at the default is fingerprinted without it (``_fingerprint_text``).
_LATER_USER_FIELDS = {key: () for key in DENY_KEYS}


def _fingerprint_text(user: User) -> str:
    """``repr(user)`` without the later fields it leaves at their default: the text
    a build from before them gives such a user. So a rolling upgrade, with nodes of
    both builds holding the same file, does not show them holding different
    ``[auth]`` (cluster status) unless a user uses the new fields."""
    shown = (
        f"{f.name}={getattr(user, f.name)!r}"
        for f in fields(user)
        if _LATER_USER_FIELDS.get(f.name, object()) != getattr(user, f.name)
    )
    return f"{type(user).__qualname__}({', '.join(shown)})"


@dataclass(slots=True)
class AuthConfig:
    # Full-access client tokens (no user: everything allowed). Empty, with no
    # users either, = no client authentication.
    client_tokens: tuple[str, ...] = ()
    peer_token: str | None = None  # required from peers (and sent to them) when set
    # [[auth.user]]: tenants with their own token, grants and quotas (server/acl.py).
    users: tuple[User, ...] = ()
    # Seconds a revoked client connection stays open once found (connection_sweeper.py).
    # Not in ``fingerprint``: nodes that differ here hold the same credentials.
    revoked_grace_s: float = DEFAULT_REVOKED_GRACE_S
    _by_tls_name: dict[str, User] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # The users' names: a user kept in the metadata log under one of them is
    # shadowed by the file's (server/metadata_users.py).
    user_names: frozenset[str] = field(
        default_factory=frozenset, init=False, repr=False, compare=False
    )
    # Bumped by every reload: an open connection whose generation is older
    # checks its token again before its next request (server/listener.py).
    generation: int = field(default=0, init=False, compare=False)
    # A digest of the client tokens and users, shown by `cluster status` so an
    # operator sees which nodes have not taken the same [auth] (derived).
    fingerprint: str = field(default="", init=False, compare=False)

    def __post_init__(self) -> None:
        # Derived from users (and rebuilt by replace_clients).
        self._by_tls_name = {n.lower(): user for user in self.users for n in user.tls_names}
        self.user_names = frozenset(u.name for u in self.users)
        canonical = json.dumps(
            [sorted(self.client_tokens), sorted(_fingerprint_text(u) for u in self.users)]
        ).encode()
        self.fingerprint = hashlib.sha256(canonical).hexdigest()[:12]

    @property
    def authenticates_clients(self) -> bool:
        return bool(self.client_tokens or self.users)

    def user_of_cert(self, identities: list[str]) -> User | None:
        """The user whose ``tls_names`` holds one of a certificate's names
        (tls.cert_identities, in their order), or None."""
        for name in identities:
            user = self._by_tls_name.get(name)
            if user is not None:
                return user
        return None

    def replace_clients(self, client_tokens: tuple[str, ...], users: tuple[User, ...]) -> None:
        """A SIGHUP reload (server/auth_reload.py): new tokens and users, in place,
        so every holder of this config sees them at its next lookup."""
        self.client_tokens, self.users = client_tokens, users
        self.__post_init__()
        self.generation += 1


@dataclass(slots=True, frozen=True)
class ClusterTLSConfig:
    """``[tls]``: present means every connection to and between nodes is TLS."""

    ca_file: Path  # trust anchor: peers' certificates always, clients' with client_auth
    # The node's certificate chain and key (PEM); a [[node]]'s tls_cert_file /
    # tls_key_file take precedence. None: every node must name its own.
    cert_file: Path | None = None
    key_file: Path | None = None
    client_auth: bool = False  # mTLS for clients; peers are always mutually authenticated
    # PEM CRLs: a certificate they revoke is refused in the handshake (server/tls.py).
    crl_file: Path | None = None


@dataclass(slots=True)
class QuotaConfig:
    # Per client id token buckets; None = unlimited.
    produce_bytes_per_sec: float | None = None
    requests_per_sec: float | None = None
    fetch_bytes_per_sec: float | None = None  # records fetched (Kafka's consumer_byte_rate)


@dataclass(slots=True, frozen=True)
class SnapshotConfig:
    """``[snapshots]``: thresholds and limits of server/snapshots.py (keys above)."""

    entries: int = 10_000  # snapshot after this many applied entries ...
    entry_bytes: int = 2 * MiB  # ... or this many applied entry bytes
    trailing: int = 1_000  # entries kept behind the snapshot when compacting ...
    trailing_bytes: int = 1 * MiB  # ... but only about this many bytes of them
    chunk_bytes: int = DEFAULT_SNAPSHOT_CHUNK_BYTES  # per replica_fetch request
    transfers: int = 2  # concurrent snapshot transfers per node
    request_timeout_s: float = 10.0  # one replica_fetch round trip

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, base: SnapshotConfig | None = None
    ) -> SnapshotConfig:
        """``base`` (cluster.toml's values, else the defaults) with each
        ``RAFTLOG_SNAPSHOT_<FIELD>`` set in ``env`` (the process environment) on top."""
        return _env_over(base or cls(), SNAPSHOT_ENV_PREFIX, env, snapshot_value_problem)


@dataclass(slots=True, frozen=True)
class StorageConfig:
    """``[storage]``: how a node's RocksDB compacts (log/store.py set_compaction_style)."""

    rocksdb_compaction: str = DEFAULT_ROCKSDB_COMPACTION
    max_space_amplification_percent: int = DEFAULT_SPACE_AMPLIFICATION_PERCENT
    # Table files RocksDB keeps open (its max_open_files): reads of tables beyond
    # it reopen them. The connection limits are fitted to leave these, and 128
    # more, free of connections (server/open_files.py).
    rocksdb_max_open_files: int = ROCKSDB_MAX_OPEN_FILES


@dataclass(slots=True, frozen=True)
class RetentionConfig:
    """``[retention]``: how often server/retention.py runs, the clock skew it
    tolerates before it stops deleting by time, and how long partitions remember
    idempotent producers (keys above)."""

    interval_ms: int = 5000
    max_clock_skew_ms: int = 60_000
    # Kafka's producer.id.expiration.ms (KIP-854) and Redpanda's
    # max_concurrent_producer_ids: without them every producer id ever used
    # stays in every partition's state, memory and snapshots for good.
    producer_expiry_ms: int = 86_400_000
    max_producers_per_partition: int = 10_000
    # Kafka's offsets.retention.minutes (seven days): a consumer group with no
    # members for this long is deleted with its offsets (server/offsets_retention.py).
    offsets_retention_ms: int = 7 * 86_400_000
    # Kafka's log.cleaner.dedupe.buffer.size: the memory a compaction sweep's
    # map of keys may take (log/compaction.py map_cost per key). A sweep whose
    # records hold more keys stops where the map filled, and the next goes on.
    compaction_map_bytes: int = 128 << 20

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, base: RetentionConfig | None = None
    ) -> RetentionConfig:
        """``base`` with ``RAFTLOG_RETENTION_<FIELD>`` from ``env`` on top."""
        return _env_over(base or cls(), RETENTION_ENV_PREFIX, env, _at_least_one)

    @classmethod
    def of_driver(cls, driver: Any) -> RetentionConfig:
        """What a node's background rounds use: the driver's cluster.toml
        ``[retention]`` (the defaults for a test driver without one), with
        ``RAFTLOG_RETENTION_*`` on top."""
        return cls.from_env(base=getattr(getattr(driver, "cfg", None), "retention", None))


def _at_least_one(name: str, value: float) -> str | None:
    return None if value >= 1 else f"must be >= 1, got {value}"


def _env_over(base: Any, prefix: str, env: Mapping[str, str] | None, problem_of: Any) -> Any:
    """``base`` (a frozen dataclass) with every ``<prefix><FIELD>`` set in ``env`` on top."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(base):
        var = prefix + f.name.upper()
        raw = env.get(var)
        if raw is None:
            continue
        try:
            value: float = float(raw) if _is_seconds(f.name) else int(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not a number") from None
        problem = problem_of(f.name, value)
        if problem is not None:
            raise ConfigError(f"{var}={raw!r} {problem}")
        values[f.name] = value
    return replace(base, **values)


def _is_seconds(name: str) -> bool:
    return name.endswith("_s")


# The smallest sensible value of each integer [snapshots] key. trailing and
# trailing_bytes may be 0 (compact right up to the snapshot); a 0 anywhere else
# would snapshot on every apply, never fetch a record or never run a transfer.
_SNAPSHOT_MINIMUM = {"entries": 1, "entry_bytes": 1, "trailing": 0, "trailing_bytes": 0,
                     "chunk_bytes": 1, "transfers": 1}  # fmt: skip


def snapshot_value_problem(name: str, value: float) -> str | None:
    """Why ``value`` is refused for ``[snapshots] name``, or None when it is fine."""
    if _is_seconds(name):
        # TOML and float() both accept inf and nan; neither is a timeout.
        if not (math.isfinite(value) and value > 0):
            return f"must be a finite number of seconds > 0, got {value!r}"
        return None
    minimum = _SNAPSHOT_MINIMUM[name]
    if value < minimum:
        return f"must be >= {minimum}, got {value}"
    return None


@dataclass(slots=True)
class NodeConfig:
    id: str
    address: str
    host: str
    port: int
    data_dir: Path
    metrics_address: str | None = None
    # peer id -> address this node dials to reach it. Defaults to the peer's
    # peer_address, else its address; jepsen points each directed link at a
    # proxy it controls.
    dial: dict[str, str] = field(default_factory=dict)
    # A node added to a running cluster (``raftlog member add``): on its first
    # start it bootstraps no group as a voter and waits to be sent the log
    # (server/membership.py); the other nodes leave it out of group 0's voters.
    join: bool = False
    # This node's own TLS certificate and key, over [tls] cert_file / key_file.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # A second listener for the other nodes only (Kafka's inter-broker
    # listener): peer links and snapshot transfers dial it, clients are
    # refused there, and a client flood on ``address`` (its connection rates
    # and pending bounds) does not delay a peer redialling. None: peers dial
    # ``address``, which always accepts them too (a node whose file has no
    # peer_address for this one still reaches it).
    peer_address: str | None = None


@dataclass(slots=True)
class ClusterConfig:
    name: str
    nodes: list[NodeConfig]
    tick_ms: int = 10
    election_ticks: int = 20
    heartbeat_ticks: int = 2
    fsync: bool = True
    # Microseconds: each node holds a Linux CPU latency QoS request of this
    # value while it runs (server/cpu_latency.py); None: no request.
    cpu_latency_qos_us: int | None = None
    # The highest log format this node says it reads (log/features.py); None:
    # its build's own, LOG_FORMAT. Holding it lower holds the cluster's format.
    max_log_format: int | None = None
    # DELIBERATELY UNSAFE test modes: only jepsen turns them on, to prove that
    # its checkers catch the anomalies they cause.
    unsafe_ack_before_commit: bool = False
    unsafe_follower_reads: bool = False
    # Linearizable reads from the leader's lease instead of a ReadIndex round
    # (thesis §6.4.1): assumes the nodes' clocks run at nearly the same rate.
    lease_reads: bool = False
    limits: Limits = field(default_factory=Limits)
    auth: AuthConfig = field(default_factory=AuthConfig)
    quotas: QuotaConfig = field(default_factory=QuotaConfig)
    snapshots: SnapshotConfig = field(default_factory=SnapshotConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tls: ClusterTLSConfig | None = None  # None: plaintext everywhere
    path: Path | None = None

    @property
    def log_format(self) -> int:
        """The highest log format a node of this config says it reads."""
        if self.max_log_format is None:
            return LOG_FORMAT
        return min(LOG_FORMAT, self.max_log_format)

    def node(self, node_id: str) -> NodeConfig:
        for node in self.nodes:
            if node.id == node_id:
                return node
        known = ", ".join(n.id for n in self.nodes)
        raise ConfigError(f"{self._where()}: node {node_id!r} is not in the file (known: {known})")

    def node_ids(self) -> list[str]:
        return [n.id for n in self.nodes]

    def dial_address(self, from_node: str, to_node: str) -> str:
        """The address ``from_node`` connects to in order to reach ``to_node``."""
        peer = self.node(to_node)
        return self.node(from_node).dial.get(to_node) or peer.peer_address or peer.address

    def tls_cert_and_key(self, node_id: str) -> tuple[Path, Path]:
        """The certificate and key ``node_id`` presents (its own, else [tls]'s).

        Only meaningful with [tls]; load_config guarantees every node has both.
        """
        if self.tls is None:
            raise ConfigError(f"{self._where()}: no [tls] table")
        node = self.node(node_id)
        cert = node.tls_cert_file or self.tls.cert_file
        key = node.tls_key_file or self.tls.key_file
        if cert is None or key is None:
            raise ConfigError(f"{self._where()}: node {node_id!r} has no TLS certificate and key")
        return cert, key

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "<config>"


# ---------------------------------------------------------------- helpers


def parse_address(address: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """Split ``host:port``; raise ValueError with the reason.

    Port 0 (pick a free port) makes sense for a test listener, never in
    cluster.toml where peers must be able to dial the address.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ValueError("is missing a port")
    if not host:
        raise ValueError("is missing a host")
    if not port_text.isdigit():
        raise ValueError(f"has a port {port_text!r} that is not a number")
    port = int(port_text)
    if not (0 if allow_zero else 1) <= port < 65536:
        raise ValueError(f"has port {port} outside 1..65535")
    return host.strip("[]"), port


class _Reader:
    """Typed access to one TOML table, with error messages that name the key."""

    def __init__(self, where: str, prefix: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {prefix} must be a table")
        self.where = where
        self.prefix = prefix
        self.table = table
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: {self.key(name)} {problem}")

    def get(self, name: str, typ: type | tuple[type, ...], default: Any, *, required: bool = False):
        self.used.add(name)
        if name not in self.table:
            if required:
                raise ConfigError(f"{self.where}: {self.key(name)} is required")
            return default
        value = self.table[name]
        # bool is an int subclass; `fsync = 1` or `tick_ms = true` are both mistakes.
        bad_bool = isinstance(value, bool) and typ in (int, float, (int, float))
        if not isinstance(value, typ) or bad_bool:
            want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise self.fail(name, f"must be {want}, got {type(value).__name__} {value!r}")
        return value

    def positive_int(self, name: str, default: int) -> int:
        value = self.get(name, int, default)
        if value <= 0:
            raise self.fail(name, f"must be > 0, got {value}")
        return value

    def non_negative_int(self, name: str, default: int) -> int:
        value = self.get(name, int, default)
        if value < 0:
            raise self.fail(name, f"must be >= 0, got {value}")
        return value

    def optional_positive_int(self, name: str) -> int | None:
        value = self.get(name, int, None)
        if value is not None and value <= 0:
            raise self.fail(name, f"must be > 0, got {value}")
        return value

    def optional_rate(self, name: str) -> float | None:
        value = self.get(name, (int, float), None)
        if value is not None and value <= 0:
            raise self.fail(name, f"must be > 0, got {value}")
        return None if value is None else float(value)

    def check_unknown(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], "is not a known key (typo?)")


def _address(reader: _Reader, name: str, *, required: bool) -> str | None:
    value = reader.get(name, str, None, required=required)
    if value is None:
        return None
    try:
        parse_address(value)
    except ValueError as exc:
        raise reader.fail(name, f"{value!r} {exc}") from None
    return value


# ---------------------------------------------------------------- load


def load_config(path: str | Path) -> ClusterConfig:
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    return parse_config(doc, path=path)


def parse_config(doc: dict[str, Any], *, path: Path | None = None) -> ClusterConfig:
    where = str(path) if path is not None else "<config>"
    base = path.resolve().parent if path is not None else Path.cwd()
    top = _Reader(where, "", doc)

    cluster = _Reader(where, "cluster", top.get("cluster", dict, None, required=True))
    name = cluster.get("name", str, None, required=True)
    if not name:
        raise cluster.fail("name", "must not be empty")
    tick_ms = cluster.positive_int("tick_ms", 10)
    election_ticks = cluster.positive_int("election_ticks", 20)
    heartbeat_ticks = cluster.positive_int("heartbeat_ticks", 2)
    # Raft §5.6 timing: heartbeats must arrive well within an election timeout,
    # or followers keep starting elections against a healthy leader.
    if election_ticks <= heartbeat_ticks:
        raise cluster.fail(
            "election_ticks",
            f"({election_ticks}) must be greater than heartbeat_ticks ({heartbeat_ticks})",
        )
    fsync = cluster.get("fsync", bool, True)
    lease_reads = cluster.get("lease_reads", bool, False)
    if lease_reads and election_ticks - LEASE_MARGIN_TICKS <= heartbeat_ticks:
        # The lease must outlast the heartbeat interval that renews it.
        raise cluster.fail(
            "lease_reads",
            f"needs election_ticks ({election_ticks}) > heartbeat_ticks ({heartbeat_ticks}) "
            f"+ {LEASE_MARGIN_TICKS}",
        )
    cpu_latency_qos_us = cluster.get("cpu_latency_qos_us", int, None)
    if cpu_latency_qos_us is not None and not 0 <= cpu_latency_qos_us <= CPU_LATENCY_MAX_US:
        raise cluster.fail(
            "cpu_latency_qos_us",
            f"must be in [0, {CPU_LATENCY_MAX_US}] microseconds, got {cpu_latency_qos_us}",
        )
    max_log_format = cluster.get("max_log_format", int, None)
    if max_log_format is not None and max_log_format < BASELINE_LOG_FORMAT:
        raise cluster.fail(
            "max_log_format", f"must be >= {BASELINE_LOG_FORMAT}, got {max_log_format}"
        )
    unsafe_ack = cluster.get("unsafe_ack_before_commit", bool, False)
    unsafe_reads = cluster.get("unsafe_follower_reads", bool, False)
    cluster.check_unknown()

    raw_nodes = top.get("node", list, None, required=True)
    if not raw_nodes:
        raise top.fail("node", "must list at least one [[node]]")
    nodes = [_parse_node(where, i, raw, base) for i, raw in enumerate(raw_nodes)]
    _check_unique(where, nodes)

    limits = _parse_limits(_Reader(where, "limits", top.get("limits", dict, {})))
    auth = _parse_auth(_Reader(where, "auth", top.get("auth", dict, {})))
    quotas_r = _Reader(where, "quotas", top.get("quotas", dict, {}))
    quotas = QuotaConfig(
        produce_bytes_per_sec=quotas_r.optional_rate("produce_bytes_per_sec"),
        requests_per_sec=quotas_r.optional_rate("requests_per_sec"),
        fetch_bytes_per_sec=quotas_r.optional_rate("fetch_bytes_per_sec"),
    )
    quotas_r.check_unknown()
    snapshots = _parse_snapshots(_Reader(where, "snapshots", top.get("snapshots", dict, {})))
    retention_r = _Reader(where, "retention", top.get("retention", dict, {}))
    retention_defaults = RetentionConfig()
    retention = RetentionConfig(
        **{
            f.name: retention_r.positive_int(f.name, getattr(retention_defaults, f.name))
            for f in fields(RetentionConfig)
        }
    )
    retention_r.check_unknown()
    storage = _parse_storage(_Reader(where, "storage", top.get("storage", dict, {})))
    tls = _parse_tls(where, top, base, nodes)
    top.check_unknown()
    if any(u.tls_names for u in auth.users) and (tls is None or not tls.client_auth):
        # Without client_auth no certificate is asked for, let alone verified.
        raise ConfigError(
            f"{where}: [[auth.user]] tls_names needs [tls] client_auth = true "
            "(only a verified client certificate can name a user)"
        )

    return ClusterConfig(
        name=name,
        nodes=nodes,
        tick_ms=tick_ms,
        election_ticks=election_ticks,
        heartbeat_ticks=heartbeat_ticks,
        fsync=fsync,
        lease_reads=lease_reads,
        cpu_latency_qos_us=cpu_latency_qos_us,
        max_log_format=max_log_format,
        unsafe_ack_before_commit=unsafe_ack,
        unsafe_follower_reads=unsafe_reads,
        limits=limits,
        auth=auth,
        quotas=quotas,
        snapshots=snapshots,
        retention=retention,
        storage=storage,
        tls=tls,
        path=path,
    )


def _parse_node(where: str, index: int, raw: Any, base: Path) -> NodeConfig:
    node = _Reader(where, f"node[{index}]", raw)
    node_id = node.get("id", str, None, required=True)
    if not node_id or any(c.isspace() for c in node_id):
        raise node.fail("id", f"{node_id!r} must be a non-empty word without spaces")
    address = _address(node, "address", required=True)
    assert address is not None
    host, port = parse_address(address)
    data_dir_text = node.get("data_dir", str, f"data/{node_id}")
    data_dir = Path(data_dir_text)
    if not data_dir.is_absolute():
        data_dir = base / data_dir
    metrics_address = _address(node, "metrics_address", required=False)
    peer_address = _address(node, "peer_address", required=False)
    dial_raw = node.get("dial", dict, {})
    dial: dict[str, str] = {}
    dial_reader = _Reader(where, f"node[{index}].dial", dial_raw)
    for peer in dial_raw:
        value = _address(dial_reader, peer, required=True)
        assert value is not None
        dial[peer] = value
    join = node.get("join", bool, False)
    tls_cert_file = _path(node, "tls_cert_file", base)
    tls_key_file = _path(node, "tls_key_file", base)
    if (tls_cert_file is None) != (tls_key_file is None):
        raise node.fail("tls_cert_file", "and tls_key_file must be set together")
    node.check_unknown()
    return NodeConfig(
        id=node_id,
        address=address,
        host=host,
        port=port,
        data_dir=data_dir,
        metrics_address=metrics_address,
        peer_address=peer_address,
        dial=dial,
        join=join,
        tls_cert_file=tls_cert_file,
        tls_key_file=tls_key_file,
    )


def _check_unique(where: str, nodes: list[NodeConfig]) -> None:
    seen_ids: dict[str, int] = {}
    seen_addrs: dict[str, str] = {}  # address -> the key that has it
    seen_dirs: dict[Path, int] = {}
    for i, node in enumerate(nodes):
        if node.id in seen_ids:
            raise ConfigError(
                f"{where}: node[{i}].id {node.id!r} duplicates node[{seen_ids[node.id]}].id"
            )
        for key in ("address", "peer_address"):
            value = getattr(node, key)
            if value is None:
                continue
            if value in seen_addrs:
                raise ConfigError(
                    f"{where}: node[{i}].{key} {value!r} duplicates {seen_addrs[value]}"
                )
            seen_addrs[value] = f"node[{i}].{key}"
        if node.data_dir in seen_dirs:
            raise ConfigError(
                f"{where}: node[{i}].data_dir {str(node.data_dir)!r} duplicates "
                f"node[{seen_dirs[node.data_dir]}].data_dir"
            )
        seen_ids[node.id] = i
        seen_dirs[node.data_dir] = i
    ids = set(seen_ids)
    for i, node in enumerate(nodes):
        for peer in node.dial:
            if peer not in ids:
                raise ConfigError(f"{where}: node[{i}].dial.{peer} names an unknown node")
            if peer == node.id:
                raise ConfigError(f"{where}: node[{i}].dial.{peer} is the node itself")


def _parse_limits(reader: _Reader) -> Limits:
    defaults = Limits()
    values: dict[str, Any] = {
        f.name: (
            reader.non_negative_int(f.name, getattr(defaults, f.name))
            if f.name in _LIMITS_ZERO_MEANS_OFF
            else reader.positive_int(f.name, getattr(defaults, f.name))
        )
        for f in fields(Limits)
        if f.name not in _LIMITS_OVERRIDES
    }
    for name in sorted(_LIMITS_OVERRIDES):
        values[name] = _parse_address_overrides(reader, name)
    reader.check_unknown()
    limits = Limits(**values)
    # A produce batch travels in a client frame and then, inside a Raft entry,
    # in a peer frame with other messages; half a frame leaves room for both.
    if limits.max_batch_bytes * 2 > limits.max_frame_bytes:
        raise reader.fail(
            "max_batch_bytes",
            f"({limits.max_batch_bytes}) must be at most half of max_frame_bytes "
            f"({limits.max_frame_bytes})",
        )
    if limits.tcp_keepalive_s > MAX_TCP_KEEPALIVE_S:
        raise reader.fail(
            "tcp_keepalive_s",
            f"must be at most {MAX_TCP_KEEPALIVE_S} (the kernel's largest keepalive idle time), "
            f"got {limits.tcp_keepalive_s}",
        )
    return limits


def _parse_address_overrides(reader: _Reader, name: str) -> dict[str, int]:
    table = reader.get(name, dict, {})
    overrides: dict[str, int] = {}
    for text, value in table.items():
        try:
            address = (
                str(ipaddress.ip_network(text, strict=True))
                if "/" in text
                else canonical_address(text)
            )
        except ValueError as exc:
            raise reader.fail(
                name,
                f"key {text!r} is not an IP address or network (host names are not "
                f"resolved)" + (f": {exc}" if "/" in text else ""),
            ) from None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise reader.fail(name, f"[{text!r}] must be an int >= 0, got {value!r}")
        if address in overrides:
            raise reader.fail(name, f"names {address} twice")
        overrides[address] = value
    return overrides


def _parse_storage(reader: _Reader) -> StorageConfig:
    style = reader.get("rocksdb_compaction", str, DEFAULT_ROCKSDB_COMPACTION)
    if style not in ROCKSDB_COMPACTION_STYLES:
        choices = " or ".join(repr(s) for s in ROCKSDB_COMPACTION_STYLES)
        raise reader.fail("rocksdb_compaction", f"must be {choices}, got {style!r}")
    amplification = reader.positive_int(
        "max_space_amplification_percent", DEFAULT_SPACE_AMPLIFICATION_PERCENT
    )
    max_open_files = reader.positive_int("rocksdb_max_open_files", ROCKSDB_MAX_OPEN_FILES)
    if max_open_files < MIN_ROCKSDB_MAX_OPEN_FILES:
        raise reader.fail(
            "rocksdb_max_open_files",
            f"must be >= {MIN_ROCKSDB_MAX_OPEN_FILES} (RocksDB's least), got {max_open_files}",
        )
    reader.check_unknown()
    return StorageConfig(style, amplification, max_open_files)


def _parse_snapshots(reader: _Reader) -> SnapshotConfig:
    values: dict[str, Any] = {}
    for f in fields(SnapshotConfig):
        if f.name not in reader.table:
            reader.used.add(f.name)
            continue
        # A whole number of seconds is fine (`request_timeout_s = 10`); a
        # fractional count of entries or bytes is a mistake.
        typ: type | tuple[type, ...] = (int, float) if _is_seconds(f.name) else int
        value = reader.get(f.name, typ, None)
        problem = snapshot_value_problem(f.name, value)
        if problem is not None:
            raise reader.fail(f.name, problem)
        values[f.name] = float(value) if _is_seconds(f.name) else value
    reader.check_unknown()
    return SnapshotConfig(**values)


def _path(reader: _Reader, name: str, base: Path) -> Path | None:
    """An optional file path, relative to the config file's folder."""
    text = reader.get(name, str, None)
    if text is None:
        return None
    if not text:
        raise reader.fail(name, "must not be empty")
    path = Path(text)
    return path if path.is_absolute() else base / path


def _check_readable(reader: _Reader, name: str, path: Path | None) -> None:
    """A clear error now rather than an ssl error when the node starts."""
    if path is None:
        return
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except FileNotFoundError:
        raise reader.fail(name, f"{str(path)!r}: no such file") from None
    except OSError as exc:
        raise reader.fail(name, f"{str(path)!r}: cannot read: {exc.strerror}") from None


def _parse_tls(
    where: str, top: _Reader, base: Path, nodes: list[NodeConfig]
) -> ClusterTLSConfig | None:
    raw = top.get("tls", dict, None)
    if raw is None:
        for i, node in enumerate(nodes):
            if node.tls_cert_file is not None:
                raise ConfigError(
                    f"{where}: node[{i}].tls_cert_file needs a [tls] table (at least ca_file)"
                )
        return None
    reader = _Reader(where, "tls", raw)
    ca_file = _path(reader, "ca_file", base)
    if ca_file is None:
        # Peers always verify each other: without a trust anchor there is no TLS.
        raise reader.fail("ca_file", "is required (the CA that signed the nodes' certificates)")
    cert_file = _path(reader, "cert_file", base)
    key_file = _path(reader, "key_file", base)
    if (cert_file is None) != (key_file is None):
        raise reader.fail("cert_file", "and key_file must be set together")
    client_auth = reader.get("client_auth", bool, False)
    crl_file = _path(reader, "crl_file", base)
    reader.check_unknown()
    for name, path in (
        ("ca_file", ca_file),
        ("cert_file", cert_file),
        ("key_file", key_file),
        ("crl_file", crl_file),
    ):
        _check_readable(reader, name, path)
    if cert_file is None:
        for i, node in enumerate(nodes):
            if node.tls_cert_file is None:
                raise ConfigError(
                    f"{where}: node[{i}] ({node.id}) has no TLS certificate: set [tls] "
                    f"cert_file and key_file, or node[{i}].tls_cert_file and tls_key_file"
                )
    return ClusterTLSConfig(
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        client_auth=client_auth,
        crl_file=crl_file,
    )


def _parse_auth(reader: _Reader) -> AuthConfig:
    tokens = reader.get("client_tokens", list, [])
    for i, token in enumerate(tokens):
        if not isinstance(token, str) or not token:
            raise reader.fail(f"client_tokens[{i}]", "must be a non-empty string")
    peer_token = reader.get("peer_token", str, None)
    if peer_token == "":
        raise reader.fail("peer_token", "must not be empty")
    tables = reader.get("user", list, [])
    users = tuple(
        _parse_user(_Reader(reader.where, f"auth.user[{i}]", table))
        for i, table in enumerate(tables)
    )
    revoked_grace_s = _revoked_grace_s(reader)
    reader.check_unknown()
    if users and peer_token is None:
        # Without it any client could say hello as a peer and speak Raft, and
        # nodes' snapshot transfers could not prove themselves without a user.
        raise reader.fail(
            "user",
            "needs [auth] peer_token (users do not make a cluster "
            "multi-tenant while any client can speak the peer role)",
        )
    seen_names: set[str] = set()
    seen_tokens = set(tokens)
    seen_tls: set[str] = set()
    if len(seen_tokens) != len(tokens):
        raise reader.fail("client_tokens", "lists a token twice")
    for i, user in enumerate(users):
        if user.name in seen_names:
            raise reader.fail(f"user[{i}].name", f"{user.name!r} is a second user of that name")
        if user.token is not None and (user.token in seen_tokens or user.token == peer_token):
            raise reader.fail(
                f"user[{i}].token", "is already in use (each token names exactly one principal)"
            )
        for tls_name in user.tls_names:
            if tls_name.lower() in seen_tls:
                raise reader.fail(
                    f"user[{i}].tls_names", f"{tls_name!r} already names another user"
                )
            seen_tls.add(tls_name.lower())
        seen_names.add(user.name)
        if user.token is not None:
            seen_tokens.add(user.token)
    return AuthConfig(
        client_tokens=tuple(tokens),
        peer_token=peer_token,
        users=users,
        revoked_grace_s=revoked_grace_s,
    )


def _revoked_grace_s(reader: _Reader) -> float:
    """``revoked_grace_s``: a finite number of seconds >= 0 (0: close at the first sweep)."""
    value = reader.get("revoked_grace_s", (int, float), DEFAULT_REVOKED_GRACE_S)
    if not (math.isfinite(value) and value >= 0):
        raise reader.fail("revoked_grace_s", f"must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _parse_user(reader: _Reader) -> User:
    name = reader.get("name", str, None, required=True)
    if not name:
        raise reader.fail("name", "must not be empty")
    token = reader.get("token", str, None)
    if token == "":
        raise reader.fail("token", "must not be empty")
    tls_names = reader.get("tls_names", list, [])
    for j, tls_name in enumerate(tls_names):
        if not isinstance(tls_name, str) or not tls_name:
            raise reader.fail(f"tls_names[{j}]", "must be a non-empty string")
    if token is None and not tls_names:
        raise reader.fail("token", "is required (or tls_names: the user's certificate names)")
    grants: dict[str, tuple[str, ...]] = {}
    for key in PATTERN_KEYS:  # the grant lists and the deny lists (deny_read ...)
        patterns = reader.get(key, list, [])
        for j, pattern in enumerate(patterns):
            problem = pattern_problem(pattern)
            if problem is not None:
                raise reader.fail(f"{key}[{j}]", problem)
        grants[key] = tuple(patterns)
    user = User(
        name=name,
        token=token,
        cluster=reader.get("cluster", bool, False),
        requests_per_sec=reader.optional_rate("requests_per_sec"),
        produce_bytes_per_sec=reader.optional_rate("produce_bytes_per_sec"),
        fetch_bytes_per_sec=reader.optional_rate("fetch_bytes_per_sec"),
        max_connections=reader.optional_positive_int("max_connections"),
        tls_names=tuple(tls_names),
        expires_at_ms=_expires_at_ms(reader),
        **grants,
    )
    reader.check_unknown()
    return user


def _expires_at_ms(reader: _Reader) -> int | None:
    """``expires_at = 2027-01-01T00:00:00Z``: a TOML date-time with its UTC offset
    (a local one would mean a different instant on each node's time zone)."""
    value = reader.get("expires_at", datetime, None)
    if value is None:
        return None
    if value.tzinfo is None:
        raise reader.fail("expires_at", f"needs a UTC offset, e.g. {value.isoformat()}Z")
    return round(value.timestamp() * 1000)


# ---------------------------------------------------------------- render


def _q(value: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(value)


def _toml_value(value: int | dict[str, int]) -> str:
    if isinstance(value, dict):  # an inline table
        return "{ " + ", ".join(f"{_q(k)} = {v}" for k, v in value.items()) + " }"
    return str(value)


def render_config(cfg: ClusterConfig) -> str:
    """A cluster.toml that ``load_config`` reads back to an equal config."""
    lines = [
        "[cluster]",
        f"name = {_q(cfg.name)}",
        f"tick_ms = {cfg.tick_ms}",
        f"election_ticks = {cfg.election_ticks}",
        f"heartbeat_ticks = {cfg.heartbeat_ticks}",
        f"fsync = {str(cfg.fsync).lower()}",
    ]
    if cfg.lease_reads:
        lines.append("lease_reads = true")
    if cfg.cpu_latency_qos_us is not None:
        lines.append(f"cpu_latency_qos_us = {cfg.cpu_latency_qos_us}")
    if cfg.max_log_format is not None:
        lines.append(f"max_log_format = {cfg.max_log_format}")
    if cfg.unsafe_ack_before_commit:
        lines.append("unsafe_ack_before_commit = true")
    if cfg.unsafe_follower_reads:
        lines.append("unsafe_follower_reads = true")
    for node in cfg.nodes:
        lines += ["", "[[node]]", f"id = {_q(node.id)}", f"address = {_q(node.address)}"]
        lines.append(f"data_dir = {_q(str(node.data_dir))}")
        if node.metrics_address:
            lines.append(f"metrics_address = {_q(node.metrics_address)}")
        if node.peer_address:
            lines.append(f"peer_address = {_q(node.peer_address)}")
        if node.dial:
            pairs = ", ".join(f"{_q(k)} = {_q(v)}" for k, v in sorted(node.dial.items()))
            lines.append(f"dial = {{ {pairs} }}")
        if node.join:
            lines.append("join = true")
        if node.tls_cert_file is not None and node.tls_key_file is not None:
            lines.append(f"tls_cert_file = {_q(str(node.tls_cert_file))}")
            lines.append(f"tls_key_file = {_q(str(node.tls_key_file))}")
    defaults = Limits()
    changed = [
        f.name for f in fields(Limits) if getattr(cfg.limits, f.name) != getattr(defaults, f.name)
    ]
    if changed:
        lines += ["", "[limits]"]
        lines += [f"{n} = {_toml_value(getattr(cfg.limits, n))}" for n in changed]
    grace = cfg.auth.revoked_grace_s
    if cfg.auth.client_tokens or cfg.auth.peer_token or grace != DEFAULT_REVOKED_GRACE_S:
        lines += ["", "[auth]"]
        if cfg.auth.client_tokens:
            lines.append(f"client_tokens = [{', '.join(_q(t) for t in cfg.auth.client_tokens)}]")
        if cfg.auth.peer_token:
            lines.append(f"peer_token = {_q(cfg.auth.peer_token)}")
        if grace != DEFAULT_REVOKED_GRACE_S:
            lines.append(f"revoked_grace_s = {grace!r}")
    for user in cfg.auth.users:
        lines += ["", "[[auth.user]]", f"name = {_q(user.name)}"]
        if user.token is not None:
            lines.append(f"token = {_q(user.token)}")
        if user.tls_names:
            lines.append(f"tls_names = [{', '.join(_q(n) for n in user.tls_names)}]")
        for key in PATTERN_KEYS:
            patterns = getattr(user, key)
            if patterns:
                lines.append(f"{key} = [{', '.join(_q(p) for p in patterns)}]")
        if user.cluster:
            lines.append("cluster = true")
        for key in QUOTA_KEYS:
            if getattr(user, key) is not None:
                lines.append(f"{key} = {getattr(user, key)!r}")
        if user.expires_at_ms is not None:
            lines.append(f"expires_at = {user.expiry_text()}")  # a TOML date-time
    quota_lines = [
        f"{name} = {value!r}"
        for name, value in (
            ("produce_bytes_per_sec", cfg.quotas.produce_bytes_per_sec),
            ("requests_per_sec", cfg.quotas.requests_per_sec),
            ("fetch_bytes_per_sec", cfg.quotas.fetch_bytes_per_sec),
        )
        if value is not None
    ]
    if quota_lines:
        lines += ["", "[quotas]", *quota_lines]
    snap_defaults = SnapshotConfig()
    snap_lines = [
        f"{f.name} = {getattr(cfg.snapshots, f.name)!r}"
        for f in fields(SnapshotConfig)
        if getattr(cfg.snapshots, f.name) != getattr(snap_defaults, f.name)
    ]
    if snap_lines:
        lines += ["", "[snapshots]", *snap_lines]
    if cfg.retention != RetentionConfig():
        lines += ["", "[retention]"]
        lines += [f"{f.name} = {getattr(cfg.retention, f.name)}" for f in fields(RetentionConfig)]
    if cfg.storage != StorageConfig():
        lines += [
            "",
            "[storage]",
            f"rocksdb_compaction = {_q(cfg.storage.rocksdb_compaction)}",
            f"max_space_amplification_percent = {cfg.storage.max_space_amplification_percent}",
            f"rocksdb_max_open_files = {cfg.storage.rocksdb_max_open_files}",
        ]
    if cfg.tls is not None:
        lines += ["", "[tls]", f"ca_file = {_q(str(cfg.tls.ca_file))}"]
        if cfg.tls.cert_file is not None and cfg.tls.key_file is not None:
            lines.append(f"cert_file = {_q(str(cfg.tls.cert_file))}")
            lines.append(f"key_file = {_q(str(cfg.tls.key_file))}")
        lines.append(f"client_auth = {str(cfg.tls.client_auth).lower()}")
        if cfg.tls.crl_file is not None:
            lines.append(f"crl_file = {_q(str(cfg.tls.crl_file))}")
    return "\n".join(lines) + "\n"
