"""TLS on the listener and the peer transport, over real sockets on 127.0.0.1.

The handlers are FakeNode's (tests/server/conftest.py): what is under test is
who gets through to them. ``TLSFiles`` (trustme) is shared with the other TLS
test modules.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from raftlog.client import connection as client_connection
from raftlog.client.connection import Connection
from raftlog.client.errors import ErrorCode, TLSError, UnauthorizedError
from raftlog.client.tls import TLSConfig, start_tls
from raftlog.server import listener as listener_module
from raftlog.server.config import ClusterConfig, ClusterTLSConfig, Limits
from raftlog.server.errors import HandlerError
from raftlog.server.listener import Listener, RequestContext
from raftlog.server.metrics import Metrics
from raftlog.server.snapshot_transfer import PeerConnection, serve_replica_fetch
from raftlog.server.transport import PeerTransport, TransportOptions

from .cluster_harness import make_config
from .conftest import FakeNode
from .rawclient import WAIT_S, RawConn, wait_until

NODE_HOST = "127.0.0.1"


@dataclass
class TLSFiles:
    """A test CA and the PEM files it issues, under ``root``."""

    root: Path
    ca: trustme.CA

    @classmethod
    def create(cls, root: Path) -> TLSFiles:
        root.mkdir(parents=True, exist_ok=True)
        files = cls(root, trustme.CA())
        files.ca.cert_pem.write_to_path(str(files.ca_file))
        return files

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    def issue(self, name: str, *identities: str, **kw: Any) -> tuple[Path, Path]:
        """A certificate for ``identities`` (IPs or DNS names): (cert file, key file)."""
        cert = self.ca.issue_cert(*identities, **kw)
        cert_file, key_file = self.root / f"{name}.pem", self.root / f"{name}.key"
        for i, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(cert_file), append=i > 0)
        cert.private_key_pem.write_to_path(str(key_file))
        return cert_file, key_file

    def node_cert(self, name: str = "node") -> tuple[Path, Path]:
        return self.issue(name, NODE_HOST)

    def client(self, name: str = "client", **kw: Any) -> TLSConfig:
        """Client settings trusting this CA, with a certificate for a non-IP name
        (so it cannot pass for a node on 127.0.0.1)."""
        cert, key = self.issue(name, f"{name}.clients.test", **kw)
        return TLSConfig(ca_file=self.ca_file, cert_file=cert, key_file=key)

    def expired_client(self) -> TLSConfig:
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        return self.client("expired", not_before=past - datetime.timedelta(days=30), not_after=past)


def with_tls(cfg: ClusterConfig, files: TLSFiles, *, client_auth: bool = False) -> ClusterConfig:
    """``cfg`` with a [tls] table: one certificate (127.0.0.1) for every node."""
    cert, key = files.node_cert()
    return replace(
        cfg,
        tls=ClusterTLSConfig(
            ca_file=files.ca_file, cert_file=cert, key_file=key, client_auth=client_auth
        ),
    )


@dataclass
class Served:
    """A listener of FakeNode handlers on a real port."""

    node: FakeNode
    listener: Listener
    address: str

    @property
    def metrics(self) -> Metrics:
        return self.node.metrics

    def failures(self, reason: str, side: str = "accept") -> float:
        return self.metrics.tls_handshake_failures.value(side=side, reason=reason)


async def serve_fake(nursery: trio.Nursery, cfg: ClusterConfig, node_id: str = "n1") -> Served:
    """Like conftest.start_fake_node, keeping the Listener (its TLS acceptor) at hand."""
    node = FakeNode(cfg, node_id)
    listener = Listener.create(
        cfg,
        node_id,
        store_incarnations=node.book,
        on_request=node.on_request,
        on_peer_msgs=node.on_peer,
        metrics=node.metrics,
    )
    ncfg = cfg.node(node_id)
    await nursery.start(partial(trio.serve_tcp, host=NODE_HOST), listener.handle_stream, ncfg.port)
    node.port = ncfg.port
    return Served(node, listener, ncfg.address)


async def open_conn(
    nursery: trio.Nursery, address: str, tls: TLSConfig | None, client_id: str = "c1"
) -> Connection:
    return await Connection.open(
        nursery,
        address,
        client_id=client_id,
        connect_timeout=WAIT_S,
        ssl_context=tls.context() if tls is not None else None,
    )


async def start_transport(
    nursery: trio.Nursery, cfg: ClusterConfig, node_id: str, metrics: Metrics | None = None
) -> PeerTransport:
    """``node_id``'s running PeerTransport, redialling fast (a refused dial
    shows again within 50 ms)."""
    transport = PeerTransport(
        cfg, node_id, f"i-{node_id}", metrics=metrics,
        options=TransportOptions(backoff_max_s=0.05),
    )  # fmt: skip
    await nursery.start(transport.run)
    return transport


async def dial_is_refused(transport: PeerTransport, peer: str, times: int = 1) -> None:
    """``transport`` sends ``peer`` a message and its dial fails on a certificate
    (``times`` over), never connecting."""
    transport.send(peer, [(7, b"append")])
    failures = transport.metrics.tls_handshake_failures
    await wait_until(
        lambda: failures.value(side="dial", reason="certificate") >= times, "dial refused"
    )
    assert not transport.is_connected(peer)


async def tls_raw(address: str, tls: TLSConfig) -> RawConn:
    """A RawConn over TLS: to send hellos of any role."""
    host, _, port = address.rpartition(":")
    with trio.fail_after(WAIT_S):
        stream = await trio.open_tcp_stream(host, int(port))
        return RawConn(await start_tls(stream, tls.context(), address))


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return TLSFiles.create(tmp_path / "tls")


# ---------------------------------------------------------------- clients


async def test_tls_client_is_served(tmp_path: Path, files: TLSFiles, nursery: trio.Nursery) -> None:
    served = await serve_fake(nursery, with_tls(make_config(tmp_path, 1), files))
    conn = await open_conn(nursery, served.address, TLSConfig(ca_file=files.ca_file))
    reply = await conn.request("metadata", {})
    assert reply["ok"] is True and reply["client"] == "c1"
    assert served.node.calls == [("c1", "metadata", {})]
    conn.close()


async def test_plaintext_client_is_told_to_use_tls_and_the_node_serves_on(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    served = await serve_fake(nursery, with_tls(make_config(tmp_path, 1), files))
    with pytest.raises(UnauthorizedError, match="requires TLS") as info:
        await open_conn(nursery, served.address, None, "plain")
    assert not isinstance(info.value, TLSError)  # the node's own answer, in plaintext
    assert served.failures("plaintext") == 1
    conn = await open_conn(nursery, served.address, TLSConfig(ca_file=files.ca_file))
    assert (await conn.request("metadata", {}))["client"] == "c1"
    assert [c[0] for c in served.node.calls] == ["c1"]  # the plaintext client reached nothing
    conn.close()


async def test_client_that_distrusts_the_node_gets_a_clear_error(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    served = await serve_fake(nursery, with_tls(make_config(tmp_path, 1), files))
    other_ca = TLSFiles.create(tmp_path / "other")
    with pytest.raises(TLSError, match=f"certificate verify failed for {served.address}"):
        await open_conn(nursery, served.address, TLSConfig(ca_file=other_ca.ca_file))
    # The client's alert reaches the node, which counts it as a certificate failure.
    await wait_until(lambda: served.failures("certificate") == 1, "failure counted")
    assert served.node.calls == []


async def test_client_auth_refuses_missing_untrusted_and_expired_certificates(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    served = await serve_fake(nursery, with_tls(make_config(tmp_path, 1), files, client_auth=True))
    other_ca = TLSFiles.create(tmp_path / "other")
    untrusted = replace(other_ca.client("stranger"), ca_file=files.ca_file)
    refused = {
        "no certificate": (TLSConfig(ca_file=files.ca_file), "requires a client certificate"),
        "untrusted": (untrusted, "refused our TLS client certificate"),
        "expired": (files.expired_client(), "certificate expired"),
    }
    for what, (tls, message) in refused.items():
        with pytest.raises(TLSError, match=message):
            await open_conn(nursery, served.address, tls, what)
    assert served.failures("certificate") == 3
    conn = await open_conn(nursery, served.address, files.client("good"), "good")
    assert (await conn.request("metadata", {}))["client"] == "good"
    assert served.node.calls == [("good", "metadata", {})]
    conn.close()


async def test_handshake_that_never_finishes_is_cut_off(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    cfg = with_tls(make_config(tmp_path, 1), files)
    served = await serve_fake(nursery, replace(cfg, limits=Limits(hello_timeout_ms=200)))
    raw = await RawConn.open(served.node.port)
    await raw.stream.send_all(b"\x16\x03\x01")  # a TLS record header, then silence
    with trio.fail_after(5):  # well under the default of 10 s: the setting applies
        assert await raw.closed()
    assert served.failures("timeout") == 1


async def test_a_stalled_handshake_is_pending_and_gives_way_to_a_new_client(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    """A connection counts against max_pending_connections from its accept,
    before and during its handshake: a TLS stall is pushed out like a silent
    plaintext connection (server/pending_connections.py)."""
    cfg = with_tls(make_config(tmp_path, 1), files)
    served = await serve_fake(nursery, replace(cfg, limits=Limits(max_pending_connections=1)))
    stalled = await RawConn.open(served.node.port)
    await stalled.stream.send_all(b"\x16\x03\x01")  # a TLS record header, then silence
    await wait_until(lambda: served.metrics.pending_connections.value() == 1, "stall pending")

    conn = await open_conn(nursery, served.address, TLSConfig(ca_file=files.ca_file))
    assert (await conn.request("metadata", {}))["client"] == "c1"
    assert await stalled.closed()
    evicted = served.metrics.pending_connections_evicted
    await wait_until(lambda: evicted.value(limit="max_pending_connections") == 1, "counted")
    assert served.failures("timeout") == 0  # pushed out, not timed out
    conn.close()


# ---------------------------------------------------------------- peers


async def test_peer_hello_needs_a_certificate_for_that_nodes_host(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    cfg = with_tls(make_config(tmp_path, 2), files)
    served = await serve_fake(nursery, cfg)
    peer_hello = {"cluster": cfg.name, "incarnation": "i-n2"}
    ca_only = TLSConfig(ca_file=files.ca_file)
    for tls, problem in (
        (ca_only, "presented no TLS certificate"),
        (files.client("tenant"), "not valid for its host '127.0.0.1'"),
    ):
        raw = await tls_raw(served.address, tls)
        reply = await raw.hello("peer", "n2", **peer_hello)
        assert (reply["error"], problem in reply["message"]) == ("UNAUTHORIZED", True), reply
        assert await raw.closed()
    cert, key = cfg.tls_cert_and_key("n2")
    raw = await tls_raw(served.address, TLSConfig(files.ca_file, cert, key))
    assert (await raw.hello("peer", "n2", **peer_hello))["type"] == "hello_ok"
    await raw.send({"type": "raft", "msgs": [[1, b"m"]]})
    await served.node.wait_peer_msgs(1)
    assert served.node.peer_msgs == [("n2", [(1, b"m")])]


async def test_transport_dials_peers_over_tls(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    cfg = with_tls(make_config(tmp_path, 2), files)
    served = await serve_fake(nursery, cfg, "n2")
    transport = PeerTransport(cfg, "n1", "i-n1", options=TransportOptions(backoff_max_s=0.1))
    await nursery.start(transport.run)
    transport.send("n2", [(7, b"append")])
    transport.flush()  # no descriptor over TLS: the writer task sends it
    await served.node.wait_peer_msgs(1)
    assert served.node.peer_msgs == [("n1", [(7, b"append")])]
    assert transport.metrics.tls_handshake_failures.value(side="dial", reason="certificate") == 0


async def test_deliver_waits_for_the_tls_writer_to_hand_frames_to_the_kernel(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    """The driver awaits deliver() before an inline fsync: over TLS, flush cannot
    write, and without the wait the appends would leave after the fsync."""
    cfg = with_tls(make_config(tmp_path, 2), files)
    transport = await start_transport(nursery, cfg, "n1")
    transport.send("n2", [(7, b"early")])
    assert not transport.undelivered()  # n2 is not up: nothing a wait could deliver
    served = await serve_fake(nursery, cfg, "n2")
    await wait_until(lambda: transport.is_connected("n2"), "connected")
    await served.node.wait_peer_msgs(1)  # the queued frame went out on connect
    transport.send("n2", [(7, b"append")])
    transport.flush()
    assert transport.undelivered()  # no descriptor: only the writer task can send it
    with trio.fail_after(5):
        await transport.deliver()
    assert not transport.undelivered()
    await served.node.wait_peer_msgs(2)
    assert served.node.peer_msgs == [("n1", [(7, b"early")]), ("n1", [(7, b"append")])]


async def test_transport_refuses_a_peer_signed_by_another_ca(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    cfg = with_tls(make_config(tmp_path, 2), files)
    impostor_files = TLSFiles.create(tmp_path / "impostor")
    await serve_fake(nursery, with_tls(cfg, impostor_files), "n2")  # n2 with a foreign CA
    transport = await start_transport(nursery, cfg, "n1")
    await dial_is_refused(transport, "n2", times=2)  # and again when it retries


async def test_snapshot_transfer_connects_as_its_node(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    cfg = with_tls(make_config(tmp_path, 2), files)
    served = await serve_fake(nursery, cfg)
    conn = await PeerConnection.open(served.address, node_id="n2", cfg=cfg, timeout_s=WAIT_S)
    try:
        # Its certificate names n2's host: a replica connection, not a counted client.
        assert served.listener.client_connections == 0
        reply = await conn.request("metadata", WAIT_S)
        assert reply["ok"] is True and reply["client"] == "replica:n2"
    finally:
        await conn.aclose()
    # The same name with a client's certificate is an ordinary, counted client.
    raw = await tls_raw(served.address, files.client("tenant"))
    assert (await raw.hello("client", "replica:n2"))["type"] == "hello_ok"
    assert served.listener.client_connections == 1


async def test_replica_fetch_over_tls_is_served_only_to_that_nodes_certificate(
    tmp_path: Path, files: TLSFiles
) -> None:
    plain = make_config(tmp_path, 2)
    cfg = with_tls(plain, files)
    driver = SimpleNamespace(metadata=SimpleNamespace(nodes={}), groups={})
    fields = {"node": "n2", "group": 5, "offset": 0}

    async def code(cfg: ClusterConfig, client_id: str, replica: bool) -> ErrorCode:
        ctx = RequestContext(client_id, "127.0.0.1:1", 1, "n1", replica=replica)
        with pytest.raises(HandlerError) as info:
            await serve_replica_fetch(cfg, driver, ctx, fields)
        return info.value.code

    # The listener marks a connection replica only with the named node's certificate.
    assert await code(cfg, "tenant", False) is ErrorCode.UNAUTHORIZED
    assert await code(cfg, "replica:n2", False) is ErrorCode.UNAUTHORIZED
    assert await code(cfg, "replica:n1", True) is ErrorCode.UNAUTHORIZED  # another node's
    # Past the check, the (stub) node hosts no such group.
    assert await code(cfg, "replica:n2", True) is ErrorCode.UNKNOWN_PARTITION
    assert await code(plain, "tenant", False) is ErrorCode.UNKNOWN_PARTITION  # no TLS: as before


# ---------------------------------------------------------------- the fast path


class _Counting:
    """Counts the calls of a sockio helper, which it then calls."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.fn(*args)


@pytest.mark.parametrize("tls_on", [False, True], ids=["plaintext", "tls"])
async def test_raw_socket_fast_path_only_without_tls(
    tls_on: bool,
    tmp_path: Path,
    files: TLSFiles,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Plaintext keeps the direct os.read/os.write path on both ends; TLS never
    reaches it (its bytes must go through the SSL object)."""
    cfg = make_config(tmp_path, 1)
    if tls_on:
        cfg = with_tls(cfg, files)
    counters = {}
    for module, name in (
        (listener_module, "read_chunk"),
        (listener_module, "write_now"),
        (client_connection, "write_now"),
        (client_connection, "read_chunk"),
    ):
        counters[f"{module.__name__}.{name}"] = counter = _Counting(getattr(module, name))
        monkeypatch.setattr(module, name, counter)
    served = await serve_fake(nursery, cfg)
    tls = TLSConfig(ca_file=files.ca_file) if tls_on else None
    conn = await open_conn(nursery, served.address, tls)
    for _ in range(3):
        assert (await conn.request("metadata", {}))["op"] == "metadata"
    assert len(served.node.calls) == 3
    assert (conn._fd is None) == tls_on
    calls = {name: c.calls for name, c in counters.items()}
    if tls_on:
        assert set(calls.values()) == {0}, calls
    else:
        assert all(n > 0 for n in calls.values()), calls
    conn.close()


def test_a_tls_stream_offers_no_descriptor(files: TLSFiles) -> None:
    """sockio.socket_fd looks for ``.socket``; trio.SSLStream must not forward one."""
    from raftlog.client.sockio import socket_fd

    a, _b = trio.testing.memory_stream_pair()
    stream = trio.SSLStream(a, ssl.create_default_context(), server_hostname="x")
    assert socket_fd(stream) is None
