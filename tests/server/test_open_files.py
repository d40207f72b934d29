"""A node's connections fit in its open files limit beside what RocksDB needs
(server/open_files.py): the arithmetic, and a real node process started under
a low limit."""

from __future__ import annotations

import re
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from raftlog.client.protocol import FrameDecoder, encode_frame, hello
from raftlog.server.config import Limits, StorageConfig, load_config
from raftlog.server.open_files import RESERVED_FDS, fit_connection_limits, reserved_fds

from .test_cli_node import RAFTLOG, write_config

WAIT_S = 30.0


def test_limits_that_fit_are_kept() -> None:
    limits = Limits(max_client_connections=100, max_pending_connections=20)
    assert fit_connection_limits(limits, 120 + 50 + RESERVED_FDS, in_use=50) is limits


def test_limits_that_do_not_fit_are_lowered_in_their_ratio() -> None:
    limits = Limits(max_client_connections=4096, max_pending_connections=1024)
    fitted = fit_connection_limits(limits, 1024, in_use=12)
    available = 1024 - 12 - RESERVED_FDS  # 500
    assert fitted.max_client_connections == 400 and fitted.max_pending_connections == 100
    assert fitted.max_client_connections + fitted.max_pending_connections == available
    # An address keeps its share of the lowered bound: a quarter (256 of 1024).
    assert fitted.max_pending_connections_per_address == 25
    assert fitted.max_frame_bytes == limits.max_frame_bytes  # nothing else moves


@given(
    clients=st.integers(1, 100_000),
    pending=st.integers(1, 10_000),
    share=st.integers(0, 10_000),
    soft=st.integers(0, 200_000),
    in_use=st.integers(0, 5_000),
)
def test_fitted_limits_never_exceed_the_budget_nor_the_configuration(
    clients: int, pending: int, share: int, soft: int, in_use: int
) -> None:
    limits = Limits(
        max_client_connections=clients,
        max_pending_connections=pending,
        max_pending_connections_per_address=share,
    )
    fitted = fit_connection_limits(limits, soft, in_use)
    available = soft - in_use - RESERVED_FDS
    assert 1 <= fitted.max_client_connections <= clients
    assert 1 <= fitted.max_pending_connections <= pending
    fitted_share = fitted.max_pending_connections_per_address
    assert (fitted_share == 0) == (share == 0)  # no share stays no share
    assert fitted_share <= share
    if share <= pending:  # a share of the bound stays within the lowered bound
        assert fitted_share <= fitted.max_pending_connections
    if clients + pending <= available:
        assert fitted == limits
    else:  # fills what there is, or keeps one of each when there is nothing
        total = fitted.max_client_connections + fitted.max_pending_connections
        assert total == max(2, available) or (available == 1 and total == 2)


def _lower_open_files_limit(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _exchange(sock: socket.socket, frame: dict[str, object]) -> dict[str, object]:
    """Send ``frame``, return the first frame back (the socket's timeout bounds it)."""
    sock.sendall(encode_frame(frame))
    decoder = FrameDecoder(1 << 20)
    while True:
        data = sock.recv(65536)
        if not data:
            raise EOFError("the node closed the connection without a reply")
        if frames := decoder.feed(data):
            return frames[0]


def _client_hello(port: int, ident: str) -> tuple[socket.socket, dict[str, object]]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    return sock, _exchange(sock, hello("client", ident))


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        assert proc.poll() is None, "the node exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the node never listened"
            time.sleep(0.05)  # polling a port: there is nothing to wait on


@pytest.mark.integration
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>/limits")
@pytest.mark.parametrize("table_cache", [None, 100])
def test_a_node_under_a_low_limit_raises_it_and_refuses_clients_beyond_what_fits(
    tmp_path: Path, table_cache: int | None
) -> None:
    """Soft 256, hard 700: the node lifts its soft limit to 700, lowers
    max_client_connections to what fits beside RocksDB's reserve (its table
    cache, [storage] rocksdb_max_open_files, and 128 more), and answers the
    client one past it NOT_AVAILABLE while serving the others."""
    storage = StorageConfig() if table_cache is None else StorageConfig(rocksdb_max_open_files=100)
    reserve = reserved_fds(storage.rocksdb_max_open_files)
    path = write_config(tmp_path, nodes=1, storage=storage)
    port = load_config(path).nodes[0].port
    log_file = tmp_path / "n1.log"
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            [*RAFTLOG, "node", "start", "--config", str(path), "--node", "n1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _lower_open_files_limit(256, 700),
        )
    held: list[socket.socket] = []
    try:
        _wait_listening(port, proc)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        assert re.search(r"Max open files\s+700\s+700", limits), limits
        lowered = re.search(r"max_client_connections=4096->(\d+)", log_file.read_text())
        assert lowered, log_file.read_text()
        fitted = int(lowered.group(1))
        assert f"reserved={reserve} " in log_file.read_text()
        assert 0 < fitted < 700 - reserve

        for i in range(fitted):
            sock, reply = _client_hello(port, f"c{i}")
            held.append(sock)
            assert reply["type"] == "hello_ok", (i, reply)
        sock, refused = _client_hello(port, "one-too-many")
        sock.close()
        assert refused["error"] == "NOT_AVAILABLE" and "max_client_connections" in str(
            refused["message"]
        ), refused
        # The admitted ones serve on (metadata, once the lone node has elected itself).
        deadline = time.monotonic() + WAIT_S
        while not (served := _exchange(held[0], {"type": "metadata", "id": 1}))["ok"]:
            assert served["error"] == "NOT_AVAILABLE" and time.monotonic() < deadline, served
            time.sleep(0.05)  # the election has no event a client could wait on
        assert "event=open_files_limit_raised node=n1 from=256 to=700" in log_file.read_text()
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        try:
            proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT_S)
