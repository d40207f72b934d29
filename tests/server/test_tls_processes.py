"""A real cluster with [tls] (client_auth on, a CRL), started by ``raftlog
cluster up``: the CLI finds TLS in the config, a client produces, the
partition leader is killed with SIGKILL, the client produces again and reads
everything back; then certificates are rotated and one is revoked, each
taken by SIGHUP."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from raftlog.client.errors import TLSError, UnauthorizedError
from raftlog.client.sync import Client
from raftlog.client.tls import TLSConfig
from raftlog.server.cli import main
from raftlog.server.cli_node import ProbeError, request_once
from raftlog.server.config import render_config

from .cluster_harness import make_config
from .test_tls import TLSFiles, with_tls
from .test_tls_crl import NOW, WEEK, with_crl, write_crl

RAFTLOG = [sys.executable, "-m", "raftlog.server"]
WAIT_S = 90.0


def node_pids(parent: int) -> dict[str, int]:
    """The node processes ``cluster up`` (pid ``parent``) runs: {node id: pid}."""
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True, check=False
    )
    pids = {}
    for pid in map(int, out.stdout.split()):
        with contextlib.suppress(FileNotFoundError):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"--node" in args:
                pids[args[args.index(b"--node") + 1].decode()] = pid
    return pids


def rotate(files: TLSFiles, new: TLSFiles, crl: Path) -> None:
    """The node certificate files get one of ``new``'s CA; ca_file trusts both
    CAs, and the CRL file gains ``new``'s (every issuing CA needs one)."""
    cert, key = new.node_cert("rotated")
    shutil.copy(cert, files.root / "node.pem")
    shutil.copy(key, files.root / "node.key")
    files.ca_file.write_bytes(files.ca_file.read_bytes() + new.ca_file.read_bytes())
    write_crl(new, crl, [], append=True)


def served_with(address: str, tls: TLSConfig) -> bool:
    """One TLS request to ``address`` with ``tls`` gets an answer."""
    try:
        request_once(address, "metadata", tls=tls)
    except ProbeError:
        return False
    return True


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.integration
def test_tls_cluster_up_produce_kill_leader_produce_consume(tmp_path: Path) -> None:
    files = TLSFiles.create(tmp_path / "tls")
    cfg = with_tls(make_config(tmp_path, 3, tick_ms=10, election_ticks=10), files, client_auth=True)
    crl = write_crl(files, files.root / "crl.pem", [])  # peers check each other against it too
    cfg = with_crl(cfg, crl)
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(cfg))
    proc = subprocess.Popen(
        [*RAFTLOG, "cluster", "up", "--config", str(path), "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    pids: dict[str, int] = {}
    try:
        assert proc.stdout is not None
        end = time.monotonic() + WAIT_S
        # The readiness probe speaks TLS with [tls]'s certificate, or this never comes.
        while " ready: " not in (line := proc.stdout.readline()):
            assert line and time.monotonic() < end, f"cluster up failed: {proc.stderr}"
        pids = node_pids(proc.pid)
        assert sorted(pids) == ["n1", "n2", "n3"]
        # The CLI takes ca_file, cert_file and key_file from --config's [tls].
        cli("topic", "create", "t", "--partitions", "1", "--replicas", "3", "--config", str(path))
        with pytest.raises(ProbeError, match="requires TLS"):
            request_once(cfg.nodes[0].address, "metadata")  # plaintext

        addresses = [n.address for n in cfg.nodes]
        tenant = files.client()
        with Client(addresses, tls=tenant, request_timeout=30) as client:
            for i in range(10):
                assert client.produce("t", b"before-%d" % i, partition=0).offset == i
            leader = next(
                node
                for node, view in client.cluster_status().items()
                for g in view["groups"]
                if g.get("topic") == "t" and g["role"] == "leader"
            )
            os.kill(pids[leader], signal.SIGKILL)
            for i in range(10):
                assert client.produce("t", b"after-%d" % i, partition=0).offset == 10 + i
            values: list[bytes] = []
            while len(values) < 20:
                values += [r.value for r in client.fetch("t", 0, len(values)).records]
        expected = [b"%s-%d" % (when, i) for when in (b"before", b"after") for i in range(10)]
        assert values == expected
        status = json.loads(cli("cluster", "status", "--config", str(path), "--json"))
        down = [a for a, s in status["nodes"].items() if "error" in s]
        assert down == [cfg.node(leader).address], status["nodes"]

        # Certificate rotation: new files, SIGHUP to `cluster up`, which passes it
        # to every node; each reloads and presents the new CA's certificate.
        new = TLSFiles.create(tmp_path / "tls-new")
        rotate(files, new, crl)
        new_client = new.client()
        live = [n.address for n in cfg.nodes if n.id != leader]
        assert not served_with(live[0], new_client)  # not before the signal
        proc.send_signal(signal.SIGHUP)
        for address in live:
            end = time.monotonic() + WAIT_S
            while not served_with(address, new_client):
                assert time.monotonic() < end, f"{address} never presented the new certificate"
                time.sleep(0.05)
        assert proc.poll() is None  # SIGHUP stopped nothing

        # Revocation: a later CRL of the first CA names the tenant's certificate.
        # The tenant also holds a connection open to the partition's leader across it.
        assert tenant.cert_file is not None and served_with(live[0], tenant)
        with Client(addresses, tls=tenant, request_timeout=30) as held:
            assert held.produce("t", b"held", partition=0).offset == 20
            revoked = [Path(tenant.cert_file)]
            staged = write_crl(files, tmp_path / "next-crl.pem", revoked, this_update=NOW)
            write_crl(new, staged, [], append=True)
            shutil.copy(staged, crl)
            proc.send_signal(signal.SIGHUP)
            for address in live:
                end = time.monotonic() + WAIT_S
                while served_with(address, tenant):
                    assert time.monotonic() < end, f"{address} still serves a revoked certificate"
                    time.sleep(0.05)
                assert served_with(address, new_client)  # peers' and others' certificates pass
            # Every live node has reloaded: the open connection is cut off too. Its
            # request is refused (UNAUTHORIZED); past [auth] revoked_grace_s (a slow
            # machine) the node has closed it, and the client's redial is refused.
            with pytest.raises((UnauthorizedError, TLSError), match="revoked"):
                held.produce("t", b"after revocation", partition=0)
        assert proc.poll() is None
        # Every node reports its CRL's nextUpdate, a week away: status warns of it.
        status = json.loads(cli("cluster", "status", "--config", str(path), "--json"))
        for address in live:
            assert status["nodes"][address]["tls"]["expires"]["crl"] == (NOW + WEEK).timestamp()
        crl_warnings = [w for w in status["warnings"] if "crl_file reaches its nextUpdate" in w]
        assert len(crl_warnings) == len(live), status["warnings"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in pids.values():  # only after a failure: cluster up stops its nodes
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
