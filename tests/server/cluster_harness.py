"""Test clusters on 127.0.0.1: configs on free ports and (below) real node processes."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from raftlog.server.config import ClusterConfig, NodeConfig


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel just handed out (bind 0, then release).

    All sockets stay open until every port is chosen, so the list has no
    duplicates; another process could still take one before we bind it, which
    on a test machine is rare enough to accept.
    """
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


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


class LocalCluster:  # filled in below
    def __init__(self, root: Path, nodes: int = 3, **overrides: Any) -> None:
        raise NotImplementedError

    def stop_all(self) -> None:
        pass
