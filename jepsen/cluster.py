"""A cluster of real raftlog node processes for one jepsen run.

Nodes run as ``python -m raftlog.server node start --config F --node ID``
(the CLI is the only way jepsen touches the server), each in its own process
group so SIGKILL/SIGSTOP hit that node and nothing else, with its data dir
under ``<run>/data/<id>`` and its output in ``<run>/logs/<id>.log``. The
generated ``cluster.toml`` points every node's ``dial`` entry for every peer
at that directed link's proxy. ``stop_all`` always leaves no process behind,
paused ones included.

Spare nodes (``ClusterSettings.spares``, for the membership nemesis) are in
cluster.toml and in the proxy mesh from the start, with ``join = true``: they
are not started with the others, and when one is, it waits to be added
(``member add``) instead of bootstrapping. A node the nemesis removed is
killed, its data dir wiped and its entry turned into a ``join = true`` one,
so that it can come back as a new incarnation under the same id.

With ``ClusterSettings.tmpfs_bytes`` (the ``disk-full`` nemesis), every
node's data dir is its own tmpfs mount (jepsen/disks.py), made by
``mount_disks`` before any node starts and removed by ``release_disks``
after the replica check read the dirs. ``fill_disk`` shrinks a node's mount
to just above its usage; a node that then exits with code 1 and its
storage-failure line is an expected stop, not a crash (``unexpected_exits``).

With ``ClusterSettings.lazyfs`` (the ``power`` and ``slow-disk`` nemeses), every node's data
dir is a FUSE mount of jepsen/lazyfs.py over ``<run>/disks/<id>``: a process
that keeps every write in memory until it is fsynced. ``power_fail`` kills the
node and that process (a power cut: the unsynced writes are gone) and mounts a
fresh one over what reached the backing dir. ``release_disks`` unmounts cleanly
(everything is written out) and puts each backing dir where the data dir was.
``set_fsync_delay`` makes a node's disk slow: each fsync waits first.

With ``ClusterSettings.clock_files`` (the ``clock`` nemesis), every node reads
its wall-clock offset from ``<run>/clocks/<id>`` (``RAFTLOG_TEST_WALL_CLOCK_FILE``,
server/clock_skew.py), which ``set_clock`` rewrites: the node's wall clock
jumps while Raft's monotonic clock runs on, like libfaketime.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import RaftlogError
from raftlog.client.tls import TLSConfig

from . import disks
from .ports import free_ports
from .proxy import ProxyMesh

log = logging.getLogger(__name__)

READY_MARK = b"raftlog node ready"  # printed by `node start` once it listens
# The last line of a node that stopped because it could not write its data dir
# (server/cli_node.py), and the errno text that says the disk was full.
STORAGE_STOP_MARK = b"stopped: it cannot write its data dir"
ENOSPC_MARK = b"No space left on device"
STORAGE_STOP_CODE = 1
# The driver's fatal storage error (server/driver.py logs it CRITICAL) comes
# first; the node then hands its leaderships over and closes its store, which
# can take a second, before the stop line and the exit.
FATAL_MARK = b" CRITICAL "


@dataclass(slots=True)
class ClusterSettings:
    nodes: int = 3
    tick_ms: int = 10
    election_ticks: int = 20
    heartbeat_ticks: int = 2
    fsync: bool = True
    unsafe_ack_before_commit: bool = False
    unsafe_follower_reads: bool = False
    lease_reads: bool = False
    proxied: bool = True  # route peer links through proxies (needed for partitions)
    spares: int = 0  # extra nodes, not started, that the membership nemesis may add
    tmpfs_bytes: int = 0  # > 0: every data dir on its own tmpfs of this size (disk-full)
    clock_files: bool = False  # per-node wall-clock offset files (the clock nemesis)
    lazyfs: bool = False  # every data dir on a lazyfs mount (the power nemesis)
    tls: bool = False  # [tls] on every node: a run CA, one certificate for 127.0.0.1
    peer_ports: bool = False  # a peer_address per node: peer links and transfers use it
    retention_ms: int | None = None  # the test topic's retention_ms
    retention_interval_ms: int | None = None  # [retention] interval_ms (also compaction's)
    topic_config: dict[str, Any] = field(default_factory=dict)  # more of the topic's config
    node_env: dict[str, str] = field(default_factory=dict)  # extra environment of every node


@dataclass(slots=True)
class NodeProc:
    id: str
    address: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0
    expected_exit: bool = False  # killed or stopped by the harness
    log_offset: int = 0  # where the current start's output begins
    join: bool = False  # joins a running cluster (spare, or removed and wiped)
    peer_address: str | None = None  # its listener for the other nodes (peer_ports)
    spare: bool = False  # not one of the initial nodes
    mounted: bool = False  # data dir is a tmpfs mount of ours
    disk_full: bool = False  # its tmpfs is shrunk to (about) its usage right now
    # The disk was full at some point of the current start: an exit on ENOSPC
    # is then ours, even one that comes just after the disk was freed again.
    full_since_start: bool = False
    fs: subprocess.Popen[bytes] | None = None  # its lazyfs process (power nemesis)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class JepsenCluster:
    run_dir: Path
    settings: ClusterSettings = field(default_factory=ClusterSettings)
    name: str = "jepsen"

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "data").mkdir(parents=True, exist_ok=True)
        self.config_path = self.run_dir / "cluster.toml"
        count = self.settings.nodes + self.settings.spares
        ports = free_ports(count * (2 if self.settings.peer_ports else 1))
        self.nodes: dict[str, NodeProc] = {}
        for i, port in enumerate(ports[:count]):
            nid = f"n{i + 1}"
            spare = i >= self.settings.nodes
            self.nodes[nid] = NodeProc(
                nid, f"127.0.0.1:{port}", self.run_dir / "data" / nid,
                self.run_dir / "logs" / f"{nid}.log", join=spare, spare=spare,
                peer_address=(
                    f"127.0.0.1:{ports[count + i]}" if self.settings.peer_ports else None
                ),
            )
        # The proxies forward to where peers are dialled: the peer_address if any.
        self.mesh: ProxyMesh | None = (
            ProxyMesh({n.id: n.peer_address or n.address for n in self.nodes.values()})
            if self.settings.proxied else None
        )

    @property
    def node_ids(self) -> list[str]:
        """Every node of the harness, spares included."""
        return list(self.nodes)

    @property
    def initial_ids(self) -> list[str]:
        """The nodes that form the cluster at the start (no spares)."""
        return [n.id for n in self.nodes.values() if not n.spare]

    @property
    def spare_ids(self) -> list[str]:
        return [n.id for n in self.nodes.values() if n.spare]

    @property
    def addresses(self) -> list[str]:
        """Client bootstrap: the initial nodes (clients learn added ones from metadata)."""
        return [n.address for n in self.nodes.values() if not n.spare]

    def address(self, nid: str) -> str:
        return self.nodes[nid].address

    def existing_data_dirs(self) -> list[Path]:
        """Data dirs on disk now: never-started spares and wiped nodes have none
        (or, on tmpfs, an empty mount point)."""
        return [n.data_dir for n in self.nodes.values()
                if n.data_dir.is_dir() and any(n.data_dir.iterdir())]

    # ------------------------------------------------------------ disks (tmpfs)

    @property
    def has_tmpfs(self) -> bool:
        """Are the data dirs tmpfs mounts of ours (can the disk-full nemesis work)?"""
        return any(n.mounted for n in self.nodes.values())

    def mount_disks(self) -> None:
        """Put every node's data dir (spares too) on its own tmpfs of
        ``settings.tmpfs_bytes``, or on its own lazyfs (``settings.lazyfs``). All or
        nothing: on a failure the mounts made so far are removed and the DiskError
        says why."""
        if self.settings.lazyfs:
            if self.settings.tmpfs_bytes:
                raise ValueError("the power and disk-full nemeses need different disks: "
                                 "run them separately")
            try:
                for node in self.nodes.values():
                    self._mount_lazyfs(node)
            except BaseException:
                self._release_lazyfs()
                raise
            return
        size = self.settings.tmpfs_bytes
        if size <= 0:
            return
        try:
            for node in self.nodes.values():
                node.data_dir.mkdir(parents=True, exist_ok=True)
                disks.mount(node.data_dir, size)
                node.mounted = True
                log.info("event=tmpfs_mounted node=%s path=%s size=%d",
                         node.id, node.data_dir, size)
        except BaseException:
            self.release_disks(keep=False)
            raise

    @property
    def has_lazyfs(self) -> bool:
        """Are the data dirs lazyfs mounts of ours (can the power nemesis work)?"""
        return bool(self.nodes) and all(n.fs is not None for n in self.nodes.values())

    def _backing(self, nid: str) -> Path:
        return self.run_dir / "disks" / nid

    def _fsync_delay_file(self, nid: str) -> Path:
        # Beside the backing dir, not in it: the node never sees it.
        return self.run_dir / "disks" / f"{nid}.fsync-delay-ms"

    def set_fsync_delay(self, nid: str, ms: float) -> None:
        """Make every fsync of ``nid``'s disk wait ``ms`` (0: a healthy disk again).
        Needs the lazyfs disks; it lasts across power cuts and restarts until
        changed."""
        if not self.has_lazyfs:
            raise ValueError("a slow disk needs the data dirs on lazyfs (ClusterSettings.lazyfs)")
        disks.set_fsync_delay(self._fsync_delay_file(nid), ms)
        log.info("event=fsync_delay node=%s ms=%g", nid, ms)

    def _mount_lazyfs(self, node: NodeProc) -> None:
        backing = self._backing(node.id)
        backing.mkdir(parents=True, exist_ok=True)
        node.data_dir.mkdir(parents=True, exist_ok=True)
        with node.log_path.open("ab") as out:
            try:
                node.fs = disks.mount_lazyfs(backing, node.data_dir, out,
                                             delay_file=self._fsync_delay_file(node.id))
            except disks.DiskError as exc:
                raise disks.DiskError(f"{exc}; see logs/{node.id}.log") from None
        log.info("event=lazyfs_mounted node=%s path=%s", node.id, node.data_dir)

    def _kill_lazyfs(self, node: NodeProc) -> None:
        """The power cut of a disk: its process dies with every unsynced write."""
        if node.fs is not None:
            with contextlib.suppress(ProcessLookupError):
                node.fs.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.fs.wait(timeout=10)
            node.fs = None
        disks.fuse_unmount(node.data_dir, lazy=True)

    def power_fail(self, nid: str) -> None:
        """Cut ``nid``'s power: kill the node, lose what its disk had not synced,
        and mount the disk again (the node stays down until ``start``)."""
        node = self.nodes[nid]
        self.kill(nid)
        self._kill_lazyfs(node)
        self._mount_lazyfs(node)
        log.info("event=power_fail node=%s", nid)

    def _release_lazyfs(self) -> None:
        for node in self.nodes.values():
            if node.fs is None:
                continue
            disks.fuse_unmount(node.data_dir, lazy=False)  # clean: destroy() writes out
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.fs.wait(timeout=30)
            if node.fs.poll() is None:
                self._kill_lazyfs(node)
            node.fs = None
            # What jepsen check reads later: the disk's contents, where the dir was.
            with contextlib.suppress(OSError):
                node.data_dir.rmdir()
                self._backing(node.id).rename(node.data_dir)
            log.info("event=lazyfs_unmounted node=%s", node.id)

    def fill_disk(self, nid: str, margin: int = disks.DEFAULT_MARGIN) -> int:
        """Shrink ``nid``'s tmpfs to ``margin`` bytes above its usage (its writes
        fail with ENOSPC once they used that); the new size in bytes."""
        node = self.nodes[nid]
        if not node.mounted:
            raise RuntimeError(f"{nid}'s data dir is not a tmpfs of ours")
        size = disks.shrink(node.data_dir, margin)
        node.disk_full = True
        node.full_since_start = True
        log.info("event=disk_filled node=%s size=%d", nid, size)
        return size

    def free_disk(self, nid: str) -> None:
        """Give ``nid``'s tmpfs its generous size again."""
        node = self.nodes[nid]
        if not node.mounted or not node.disk_full:
            return
        if not disks.remount(node.data_dir, self.settings.tmpfs_bytes):
            raise disks.DiskError(f"cannot grow the tmpfs on {node.data_dir} again")
        node.disk_full = False
        log.info("event=disk_freed node=%s", nid)

    def stopped_on_full_disk(self, nid: str) -> bool:
        """Did the current start of ``nid`` end because its disk was full while we
        had filled it: exit code 1, its storage-failure line and ENOSPC in its
        output since that start? Any other exit is a crash."""
        node = self.nodes[nid]
        p = node.proc
        if (p is None or p.poll() is None or p.returncode != STORAGE_STOP_CODE
                or not node.full_since_start):
            return False
        out = self._output_since_start(nid)
        return STORAGE_STOP_MARK in out and ENOSPC_MARK in out

    def failed_on_full_disk(self, nid: str) -> bool:
        """Has the current start of ``nid`` logged a fatal write error with ENOSPC
        (so it is stopping, or stopped)?"""
        out = self._output_since_start(nid)
        return any(FATAL_MARK in line and ENOSPC_MARK in line for line in out.splitlines())

    def _output_since_start(self, nid: str) -> bytes:
        """What ``nid`` printed since its current start (b"" without a log yet)."""
        node = self.nodes[nid]
        try:
            with node.log_path.open("rb") as fh:
                fh.seek(node.log_offset)
                return fh.read()
        except FileNotFoundError:
            return b""

    def full_disk_exits(self) -> dict[str, int]:
        """Nodes down now because their disk was full: id -> which start ended."""
        return {nid: node.starts for nid, node in self.nodes.items()
                if self.stopped_on_full_disk(nid)}

    def release_disks(self, keep: bool = True) -> list[str]:
        """Unmount every tmpfs of ours (the nodes must have stopped). With
        ``keep``, each node's files are first copied to the real disk, to the same
        path, so that ``jepsen check`` can read them later. Never raises for a
        copy; notes say what went wrong. Safe to call more than once."""
        notes: list[str] = []
        failures: list[str] = []
        self._release_lazyfs()
        for node in self.nodes.values():
            if not node.mounted:
                continue
            saved = node.data_dir.with_name(f".{node.id}.saved")
            copied = False
            if keep and any(node.data_dir.iterdir()):
                try:
                    shutil.rmtree(saved, ignore_errors=True)
                    shutil.copytree(node.data_dir, saved, symlinks=True)
                    copied = True
                except OSError as exc:
                    shutil.rmtree(saved, ignore_errors=True)
                    notes.append(f"{node.id}: data dir not kept after unmounting: {exc}")
            try:
                disks.unmount(node.data_dir)
            except disks.DiskError as exc:
                failures.append(str(exc))
                continue
            node.mounted = False
            node.disk_full = False
            log.info("event=tmpfs_unmounted node=%s path=%s", node.id, node.data_dir)
            # The mount point is an empty dir now: put the copy in its place, or
            # remove it, as a run without tmpfs would have no dir for the node.
            with contextlib.suppress(OSError):
                node.data_dir.rmdir()
            if copied:
                saved.rename(node.data_dir)
        if failures:
            raise disks.DiskError("; ".join(failures))
        return notes

    # ------------------------------------------------------------ config

    async def prepare(self) -> None:
        """Bind the proxies (their ports go into the config) and write cluster.toml."""
        if self.mesh is not None:
            await self.mesh.listen()
        if self.settings.clock_files:
            for nid in self.nodes:
                self.set_clock(nid, 0.0)
        if self.settings.tls:
            self._issue_tls_files()
        self.config_path.write_text(self.render_config())

    @property
    def tls_dir(self) -> Path:
        return self.run_dir / "tls"

    @property
    def client_tls(self) -> TLSConfig | None:
        """What every client of the run connects with (None: plaintext)."""
        if not self.settings.tls:
            return None
        return TLSConfig(ca_file=self.tls_dir / "ca.pem", crl_file=self.tls_dir / "crl.pem")

    def _issue_tls_files(self) -> None:
        """A CA of this run, one node certificate for 127.0.0.1 (trustme, a test
        extra) and the CA's CRL, revoking nothing: with ``crl_file`` set, every
        handshake of the run (peer links both ways, clients) checks it."""
        try:
            import trustme
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
        except ImportError:
            raise RuntimeError(
                "--tls needs the trustme package to issue the run's certificates "
                "(pip install -e '.[test]')"
            ) from None
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.tls_dir / "ca.pem"))
        cert = ca.issue_cert("127.0.0.1")
        for i, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(self.tls_dir / "node.pem"), append=i > 0)
        cert.private_key_pem.write_to_path(str(self.tls_dir / "node.key"))
        now = datetime.datetime.now(datetime.UTC)
        key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(x509.load_pem_x509_certificate(ca.cert_pem.bytes()).subject)
            .last_update(now - datetime.timedelta(hours=1))
            .next_update(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256())  # type: ignore[arg-type]
        )
        (self.tls_dir / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))

    def clock_path(self, nid: str) -> Path:
        return self.run_dir / "clocks" / nid

    def set_clock(self, nid: str, offset_s: float) -> None:
        """Move ``nid``'s wall clock to real time + ``offset_s`` (within ~0.1 s)."""
        path = self.clock_path(nid)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(repr(float(offset_s)))
        os.replace(tmp, path)  # the node never reads half a number

    def render_config(self) -> str:
        s = self.settings
        lines = [
            "# generated by raftlog jepsen",
            "[cluster]",
            f"name = {_toml_str(self.name)}",
            f"tick_ms = {s.tick_ms}",
            f"election_ticks = {s.election_ticks}",
            f"heartbeat_ticks = {s.heartbeat_ticks}",
            f"fsync = {str(s.fsync).lower()}",
        ]
        if s.unsafe_ack_before_commit:
            lines.append("unsafe_ack_before_commit = true")
        if s.unsafe_follower_reads:
            lines.append("unsafe_follower_reads = true")
        if s.lease_reads:
            lines.append("lease_reads = true")
        if s.retention_interval_ms is not None:
            lines += ["", "[retention]", f"interval_ms = {s.retention_interval_ms}"]
        if s.tls:  # paths are relative to cluster.toml, like data_dir
            lines += ["", "[tls]", 'ca_file = "tls/ca.pem"', 'cert_file = "tls/node.pem"',
                      'key_file = "tls/node.key"', 'crl_file = "tls/crl.pem"']
        for n in self.nodes.values():
            lines += ["", "[[node]]", f"id = {_toml_str(n.id)}",
                      f"address = {_toml_str(n.address)}",
                      f"data_dir = {_toml_str(str(n.data_dir.relative_to(self.run_dir)))}"]
            if n.join:
                lines.append("join = true")
            if n.peer_address is not None:
                lines.append(f"peer_address = {_toml_str(n.peer_address)}")
            if self.mesh is not None:
                pairs = ", ".join(
                    f"{peer} = {_toml_str(addr)}"
                    for peer, addr in sorted(self.mesh.dial_table(n.id).items())
                )
                lines.append(f"dial = {{ {pairs} }}")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ processes

    def is_running(self, nid: str) -> bool:
        p = self.nodes[nid].proc
        return p is not None and p.poll() is None

    def start(self, nid: str) -> None:
        node = self.nodes[nid]
        if self.is_running(nid):
            return
        with node.log_path.open("ab") as out:
            # Readiness is looked for only after this point of the log: an
            # earlier start's ready line (or a failed start's lack of one) must
            # not count for this one.
            node.log_offset = out.tell()
            out.write(f"=== jepsen: starting {nid} at {time.time():.3f}\n".encode())
            out.flush()
            extra = dict(self.settings.node_env)
            if self.settings.clock_files:
                extra["RAFTLOG_TEST_WALL_CLOCK_FILE"] = str(self.clock_path(nid))
            env = {**os.environ, **extra} if extra else None
            node.proc = subprocess.Popen(
                [sys.executable, "-m", "raftlog.server", "node", "start",
                 "--config", str(self.config_path), "--node", nid],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group
                env=env,
            )  # fmt: skip
        node.paused = False
        node.expected_exit = False
        node.full_since_start = node.disk_full
        node.starts += 1
        log.info("event=node_start node=%s pid=%s", nid, node.proc.pid)

    def _signal(self, nid: str, signum: int) -> None:
        p = self.nodes[nid].proc
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signum)

    def kill(self, nid: str) -> None:
        """SIGKILL (a crash) and reap."""
        self.nodes[nid].expected_exit = True
        self._signal(nid, signal.SIGKILL)
        p = self.nodes[nid].proc
        if p is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        self.nodes[nid].paused = False
        log.info("event=node_kill node=%s", nid)

    def pause(self, nid: str) -> None:
        self._signal(nid, signal.SIGSTOP)
        self.nodes[nid].paused = True

    def resume(self, nid: str) -> None:
        self._signal(nid, signal.SIGCONT)
        self.nodes[nid].paused = False

    def set_join(self, nid: str) -> None:
        """From now on ``nid`` joins (``join = true``) when it starts on an empty disk.

        Nodes read cluster.toml only when they start; for a node that already
        has data the flag changes nothing (it only decides the first start).
        """
        node = self.nodes[nid]
        if not node.join:
            node.join = True
            self.config_path.write_text(self.render_config())

    def wipe(self, nid: str) -> None:
        """Delete the data dir of a stopped node (a removed node's disk is gone)."""
        if self.is_running(nid):
            raise RuntimeError(f"cannot wipe {nid}: it is running")
        node = self.nodes[nid]
        if node.mounted:
            # A new, empty disk: also no longer a full one.
            disks.clear(node.data_dir)
            self.free_disk(nid)
        else:
            shutil.rmtree(node.data_dir, ignore_errors=True)
        log.info("event=node_wiped node=%s", nid)

    def stop_all(self) -> None:
        """SIGCONT + SIGTERM everyone, SIGKILL whoever is still there after 10 s."""
        for nid in self.nodes:
            self.nodes[nid].expected_exit = True
            self._signal(nid, signal.SIGCONT)
            self._signal(nid, signal.SIGTERM)
        end = time.monotonic() + 10
        for node in self.nodes.values():
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(timeout=10)
            node.paused = False

    def unexpected_exits(self) -> dict[str, int]:
        """Nodes whose process ended although nobody killed or stopped it."""
        out = {}
        for nid, node in self.nodes.items():
            if node.proc is not None and node.proc.poll() is not None and not node.expected_exit \
                    and not self.stopped_on_full_disk(nid):
                out[nid] = node.proc.returncode
        return out

    def is_ready(self, nid: str) -> bool:
        """Did the current start of the node print its ready line?"""
        node = self.nodes[nid]
        try:
            with node.log_path.open("rb") as fh:
                fh.seek(node.log_offset)
                return READY_MARK in fh.read()
        except FileNotFoundError:
            return False

    def log_tail(self, nid: str, lines: int = 8) -> str:
        """The last lines this start of the node wrote (why it exited, if it did)."""
        node = self.nodes[nid]
        try:
            with node.log_path.open("rb") as fh:
                fh.seek(node.log_offset)
                text = fh.read().decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def wait_started(self, nid: str, deadline: float = 30.0) -> None:
        """Wait until this start of the node printed its ready line."""
        node = self.nodes[nid]
        with trio.fail_after(deadline):
            while not self.is_ready(nid):
                if not self.is_running(nid):
                    raise RuntimeError(
                        f"{nid} exited before it was ready; see {node.log_path}, which ends:\n"
                        + self.log_tail(nid)
                    )
                await trio.sleep(0.05)

    async def start_all(self, deadline: float = 30.0) -> None:
        """Start the initial nodes (spares wait for the membership nemesis)."""
        for nid in self.initial_ids:
            self.start(nid)
        for nid in self.initial_ids:
            await self.wait_started(nid, deadline)

    async def wait_for_topic(
        self, topic: str, partitions: int, replicas: int, deadline: float = 60.0
    ) -> None:
        """Create the test topic (or find it) once the metadata group has a leader."""
        with trio.fail_after(deadline):
            async with AsyncClient(self.addresses, request_timeout=5.0,
                                   tls=self.client_tls) as client:
                while True:
                    try:
                        config = dict(self.settings.topic_config)
                        if self.settings.retention_ms:
                            config["retention_ms"] = self.settings.retention_ms
                        await client.create_topic(topic, partitions=partitions,
                                                  replicas=replicas, config=config or None)
                        return
                    except RaftlogError as exc:
                        if exc.code.value == "TOPIC_EXISTS":
                            return
                        log.info("event=create_topic_retry error=%s", exc)
                    await trio.sleep(0.2)
