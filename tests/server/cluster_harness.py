"""Test clusters on 127.0.0.1: configs on free ports, and real node processes.

``LocalCluster(root, nodes=3, **config overrides)`` writes ``root/cluster.toml``
on free loopback ports and runs each node as ``python -m raftlog.server node
start --config ... --node nX`` in its own process group (so SIGSTOP/SIGKILL
reach the node and nothing else), output appended to ``root/logs/nX.log``.
Every wait is bounded; ``stop_all`` (called by the ``local_cluster`` fixture
in a ``finally``) always leaves no process behind, paused ones included.

    cluster = LocalCluster(tmp_path, nodes=3, tick_ms=5)
    cluster.start_all()
    cluster.wait_for_leaders(deadline=30)
    cluster.kill("n1"); cluster.start("n1")

Other test folders get the ``local_cluster`` fixture by importing it into
their conftest.py: ``from tests.server.cluster_harness import local_cluster``.
To route peer links (jepsen proxies), edit ``cluster.cfg.nodes[i].dial`` and
call ``cluster.write_config()`` before starting the nodes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from raftlog.jepsen.ports import free_ports
from raftlog.server.cli_common import config_credential
from raftlog.server.cli_node import READY_LINE, gather_status, leaders_ready, request_once
from raftlog.server.config import ClusterConfig, NodeConfig, render_config


def make_config(
    tmp_path: Path, nodes: int = 3, *, name: str = "test", metrics: bool = False, **overrides: Any
) -> ClusterConfig:
    """A ClusterConfig of ``nodes`` nodes on free loopback ports under ``tmp_path``.

    ``overrides`` set ClusterConfig fields (tick_ms=..., limits=Limits(...), ...).
    """
    ports = free_ports(nodes * (2 if metrics else 1))
    node_cfgs = []
    for i in range(nodes):
        port = ports[i]
        node_cfgs.append(
            NodeConfig(
                id=f"n{i + 1}",
                address=f"127.0.0.1:{port}",
                host="127.0.0.1",
                port=port,
                data_dir=tmp_path / f"n{i + 1}",
                metrics_address=f"127.0.0.1:{ports[nodes + i]}" if metrics else None,
            )
        )
    return ClusterConfig(name=name, nodes=node_cfgs, **overrides)




class NodeDiedError(RuntimeError):
    """A node process exited while the harness waited for it."""


class LocalCluster:
    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        *,
        name: str = "test",
        metrics: bool = False,
        env: dict[str, str] | None = None,
        **overrides: Any,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.root / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.cfg = make_config(self.root, nodes, name=name, metrics=metrics, **overrides)
        self.config_path = self.root / "cluster.toml"
        self.env = {**os.environ, **(env or {})}
        # Extra environment of one node (e.g. a fault-injection setting).
        self.node_env: dict[str, dict[str, str]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.paused: set[str] = set()
        self.write_config()
        # Belt and braces: even a harness used without the fixture leaves no orphans.
        atexit.register(self.stop_all)

    # ------------------------------------------------------------ config

    def write_config(self) -> None:
        """(Re)write cluster.toml from ``self.cfg``; nodes read it when they start."""
        self.config_path.write_text(render_config(self.cfg))

    def node_ids(self) -> list[str]:
        return self.cfg.node_ids()

    def address(self, node_id: str) -> str:
        return self.cfg.node(node_id).address

    def addresses(self) -> list[str]:
        return [n.address for n in self.cfg.nodes]

    def log_path(self, node_id: str) -> Path:
        return self.log_dir / f"{node_id}.log"

    def log_text(self, node_id: str) -> str:
        try:
            return self.log_path(node_id).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------ processes

    def start(self, node_id: str, *, wait: bool = True, deadline: float = 30.0) -> None:
        """Start one node; with ``wait``, return once it printed its ready line."""
        if self.is_running(node_id):
            raise RuntimeError(f"{node_id} is already running")
        log_file = self.log_path(node_id)
        offset = log_file.stat().st_size if log_file.exists() else 0
        with log_file.open("ab") as out:
            out.write(f"=== harness: starting {node_id} at {time.time():.3f}\n".encode())
            out.flush()
            self.procs[node_id] = subprocess.Popen(
                [sys.executable, "-m", "raftlog.server", "node", "start",
                 "--config", str(self.config_path), "--node", node_id],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**self.env, **self.node_env.get(node_id, {})},
                start_new_session=True,  # own process group: signals hit this node only
            )  # fmt: skip
        self.paused.discard(node_id)
        if wait:
            self.wait_ready(node_id, offset, deadline)

    def start_all(self, *, deadline: float = 30.0) -> None:
        offsets = {}
        for node_id in self.node_ids():
            path = self.log_path(node_id)
            offsets[node_id] = path.stat().st_size if path.exists() else 0
            self.start(node_id, wait=False)
        for node_id in self.node_ids():
            self.wait_ready(node_id, offsets[node_id], deadline)

    def wait_ready(self, node_id: str, offset: int = 0, deadline: float = 30.0) -> None:
        end = time.monotonic() + deadline
        while True:
            with self.log_path(node_id).open("rb") as fh:
                fh.seek(offset)
                if READY_LINE.encode() in fh.read():
                    return
            proc = self.procs.get(node_id)
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise NodeDiedError(
                    f"{node_id} exited (code {code}) before it was ready:\n{self.tail(node_id)}"
                )
            if time.monotonic() >= end:
                raise TimeoutError(f"{node_id} not ready within {deadline}s:\n{self.tail(node_id)}")
            time.sleep(0.05)

    def tail(self, node_id: str, lines: int = 30) -> str:
        return "\n".join(self.log_text(node_id).splitlines()[-lines:])

    def is_running(self, node_id: str) -> bool:
        proc = self.procs.get(node_id)
        return proc is not None and proc.poll() is None

    def running(self) -> list[str]:
        return [n for n in self.node_ids() if self.is_running(n)]

    def _signal(self, node_id: str, signum: int) -> None:
        proc = self.procs.get(node_id)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    def kill(self, node_id: str) -> int | None:
        """SIGKILL (a crash: no flush, no goodbye) and reap."""
        self._signal(node_id, signal.SIGKILL)
        self.paused.discard(node_id)
        proc = self.procs.get(node_id)
        return None if proc is None else proc.wait(timeout=10)

    def terminate(self, node_id: str, timeout_s: float = 15.0) -> int | None:
        """SIGTERM and wait for a clean exit (SIGKILL after ``timeout_s``); the exit code."""
        proc = self.procs.get(node_id)
        if proc is None:
            return None
        if node_id in self.paused:
            self.resume(node_id)  # a stopped process cannot act on SIGTERM
        self._signal(node_id, signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._signal(node_id, signal.SIGKILL)
            proc.wait(timeout=10)
            raise TimeoutError(f"{node_id} ignored SIGTERM for {timeout_s}s") from None

    def pause(self, node_id: str) -> None:
        self._signal(node_id, signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: str) -> None:
        self._signal(node_id, signal.SIGCONT)
        self.paused.discard(node_id)

    def stop_all(self) -> None:
        """Stop every process this cluster started, whatever state it is in."""
        for node_id in list(self.procs):
            self._signal(node_id, signal.SIGCONT)
            self._signal(node_id, signal.SIGTERM)
        end = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.paused.clear()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # ------------------------------------------------------------ protocol

    def status(self, node_id: str, timeout_s: float = 2.0) -> dict[str, Any]:
        """That node's cluster_status reply (raises cli_node.ProbeError when it cannot)."""
        return request_once(
            self.address(node_id), "cluster_status", timeout_s=timeout_s, credential=self.token
        )

    def request(self, node_id: str, op: str, **fields: Any) -> dict[str, Any]:
        """One request to one node on a fresh connection (ProbeError on error replies)."""
        return request_once(self.address(node_id), op, fields, credential=self.token)

    @property
    def token(self) -> str | None:
        """The operator's credential when the cluster has [auth], as the CLI finds it."""
        return config_credential(self.config_path)

    def wait_for_leaders(
        self, deadline: float = 30.0, nodes: list[str] | None = None
    ) -> dict[str, Any]:
        """Until every group hosted by the running, unpaused nodes (or ``nodes``) has a
        leader; returns their statuses."""
        ids = nodes if nodes is not None else [n for n in self.running() if n not in self.paused]
        addresses = [self.address(n) for n in ids]
        end = time.monotonic() + deadline
        while True:
            statuses = gather_status(addresses, timeout_s=1.0, credential=self.token)
            if leaders_ready(statuses, len(addresses)):
                return statuses
            for node_id in ids:
                if not self.is_running(node_id):
                    raise NodeDiedError(f"{node_id} died:\n{self.tail(node_id)}")
            if time.monotonic() >= end:
                raise TimeoutError(f"no leader for every group within {deadline}s: {statuses}")
            time.sleep(0.1)

    def leader_of(self, group: int, deadline: float = 30.0) -> str:
        """The node id leading ``group`` according to a node that leads it."""
        end = time.monotonic() + deadline
        while True:
            for node_id in self.running():
                if node_id in self.paused:
                    continue
                with contextlib.suppress(Exception):
                    for g in self.status(node_id, timeout_s=1.0)["groups"]:
                        if g["group"] == group and g["role"] == "leader":
                            return node_id
            if time.monotonic() >= end:
                raise TimeoutError(f"no leader of group {group} within {deadline}s")
            time.sleep(0.1)


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Factory: ``local_cluster(nodes=3, **overrides)``; every process is stopped
    when the test ends, whether it passed or failed."""
    clusters: list[LocalCluster] = []

    def factory(nodes: int = 3, **overrides: Any) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"cluster{len(clusters)}", nodes=nodes, **overrides)
        clusters.append(cluster)
        return cluster

    try:
        yield factory
    finally:
        for cluster in clusters:
            cluster.stop_all()
