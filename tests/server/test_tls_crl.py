"""[tls] crl_file: certificates a CRL revokes are refused in the handshake,
from clients and peers alike, over real sockets on 127.0.0.1 (server/tls.py)."""

from __future__ import annotations

import datetime
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from raftlog.client.errors import TLSError, UnauthorizedError
from raftlog.client.tls import TLSConfig
from raftlog.server import tls as server_tls
from raftlog.server.config import AuthConfig, ClusterConfig, ConfigError
from raftlog.server.metrics import Metrics
from raftlog.server.snapshot_transfer import PeerConnection, TransferError

from .cluster_harness import make_config
from .rawclient import WAIT_S, wait_until
from .test_tls import (
    NODE_HOST,
    Served,
    TLSFiles,
    dial_is_refused,
    open_conn,
    serve_fake,
    start_transport,
    with_tls,
)

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
WEEK = datetime.timedelta(days=7)


def write_crl(
    files: TLSFiles,
    path: Path,
    revoked: list[Path],
    *,
    this_update: datetime.datetime = NOW - datetime.timedelta(days=1),
    next_update: datetime.datetime = NOW + WEEK,
    append: bool = False,
) -> Path:
    """A CRL of ``files``' CA revoking the certificates in ``revoked`` (PEM files)."""
    key = serialization.load_pem_private_key(files.ca.private_key_pem.bytes(), None)
    issuer = x509.load_pem_x509_certificate(files.ca.cert_pem.bytes())
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
    )
    for cert_file in revoked:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(this_update)
            .build()
        )
    pem = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]
    path.write_bytes(path.read_bytes() + pem if append else pem)
    return path


def with_crl(cfg: ClusterConfig, crl: Path) -> ClusterConfig:
    assert cfg.tls is not None
    return replace(cfg, tls=replace(cfg.tls, crl_file=crl))


async def _served(nursery: trio.Nursery, address: str, tls: TLSConfig, client_id: str) -> bool:
    try:
        conn = await open_conn(nursery, address, tls, client_id)
    except TLSError:
        return False
    reply = await conn.request("metadata", {})
    conn.close()
    return reply["ok"] is True


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return TLSFiles.create(tmp_path / "tls")


async def test_a_revoked_client_certificate_is_refused_and_others_are_served(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    revoked, kept = files.client("revoked"), files.client("kept")
    assert revoked.cert_file is not None
    crl = write_crl(files, tmp_path / "crl.pem", [Path(revoked.cert_file)])
    cfg = with_crl(with_tls(make_config(tmp_path, 1), files, client_auth=True), crl)
    served = await serve_fake(nursery, cfg)
    with pytest.raises(TLSError, match="certificate revoked"):
        await open_conn(nursery, served.address, revoked, "revoked")
    assert served.failures("certificate") == 1
    assert await _served(nursery, served.address, kept, "kept")
    assert [c[0] for c in served.node.calls] == ["kept"]  # the revoked client reached nothing


async def test_a_peer_with_a_revoked_certificate_is_refused_both_ways(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    """n2's certificate is revoked: n1 refuses it when n2 dials (the listener
    checks the CRL), and when n1 dials n2 (the dialler checks it too)."""
    cfg = with_tls(make_config(tmp_path, 2), files)
    n2_cert, n2_key = files.issue("n2", NODE_HOST)
    crl = write_crl(files, tmp_path / "crl.pem", [n2_cert])
    n1_cfg = with_crl(cfg, crl)
    served_n1 = await serve_fake(nursery, n1_cfg, "n1")
    n2_cfg = replace(cfg, tls=replace(cfg.tls, cert_file=n2_cert, key_file=n2_key))
    dialler = await start_transport(nursery, n2_cfg, "n2")
    dialler.send("n1", [(7, b"vote me")])
    await wait_until(lambda: served_n1.failures("certificate") >= 1, "n1 refused n2")
    assert served_n1.node.peer_msgs == [] and not dialler.is_connected("n1")

    await serve_fake(nursery, n2_cfg, "n2")  # n2 presents the revoked certificate
    await dial_is_refused(await start_transport(nursery, n1_cfg, "n1"), "n2")


async def test_a_reload_takes_a_later_crl_and_a_bad_one_changes_nothing(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    client = files.client("tenant")
    assert client.cert_file is not None
    crl = write_crl(files, tmp_path / "crl.pem", [])
    cfg = with_crl(with_tls(make_config(tmp_path, 1), files, client_auth=True), crl)
    served = await serve_fake(nursery, cfg)
    assert await _served(nursery, served.address, client, "before")

    # The operator revokes the certificate: a later CRL of the same CA.
    staged = write_crl(files, tmp_path / "next.pem", [Path(client.cert_file)], this_update=NOW)
    shutil.copy(staged, crl)
    assert await _served(nursery, served.address, client, "not-reloaded")  # nothing read yet
    assert served.metrics.tls_cert_expiry.value(cert="crl") == (NOW + WEEK).timestamp()
    later = NOW + 2 * WEEK
    write_crl(files, staged, [Path(client.cert_file)], this_update=NOW, next_update=later)
    shutil.copy(staged, crl)
    assert server_tls.reload_and_report(cfg, "n1", served.metrics) is None
    assert served.metrics.tls_cert_expiry.value(cert="crl") == later.timestamp()
    assert not await _served(nursery, served.address, client, "after")
    assert await _served(nursery, served.address, files.client("other"), "other")

    # A CRL file with a certificate in it would make that certificate a trust
    # anchor: refused, counted, and the revocation stays in force.
    crl.write_bytes(crl.read_bytes() + files.ca_file.read_bytes())
    problem = server_tls.reload_and_report(cfg, "n1", served.metrics)
    assert problem is not None and "only PEM X509 CRL blocks" in problem
    assert served.metrics.tls_reloads.value(result="failed") == 1
    assert not await _served(nursery, served.address, client, "still-revoked")


async def test_a_ca_without_a_crl_in_the_file_has_its_certificates_refused(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    """VERIFY_CRL_CHECK_LEAF: every trusted CA needs its CRL in crl_file. This
    is the documented failure of forgetting one, pinned so a change shows."""
    second = TLSFiles.create(tmp_path / "second")
    files.ca_file.write_bytes(files.ca_file.read_bytes() + second.ca_file.read_bytes())
    crl = write_crl(files, tmp_path / "crl.pem", [])
    cfg = with_crl(with_tls(make_config(tmp_path, 1), files, client_auth=True), crl)
    served = await serve_fake(nursery, cfg)
    stranger = replace(second.client("second-ca"), ca_file=files.ca_file)
    assert not await _served(nursery, served.address, stranger, "no-crl")
    write_crl(second, crl, [], append=True)
    assert server_tls.reload_and_report(cfg, "n1", served.metrics) is None
    assert await _served(nursery, served.address, stranger, "with-crl")


def test_the_crl_expiry_gauge_reports_the_earliest_next_update(
    tmp_path: Path, files: TLSFiles
) -> None:
    soon = NOW + datetime.timedelta(days=2)
    far = datetime.datetime(2061, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)  # GeneralizedTime
    crl = write_crl(files, tmp_path / "crl.pem", [], next_update=far)
    cfg = with_crl(with_tls(make_config(tmp_path, 1), files), crl)
    assert server_tls.expiries(cfg, "n1")["crl"] == far.timestamp()
    second = TLSFiles.create(tmp_path / "second")
    write_crl(second, crl, [], next_update=soon, append=True)
    server_tls.reload(cfg, "n1")  # the gauge follows the CRLs as loaded
    assert server_tls.expiries(cfg, "n1")["crl"] == soon.timestamp()


def test_a_crl_file_that_holds_no_crl_stops_the_node_from_starting(
    tmp_path: Path, files: TLSFiles
) -> None:
    """node start loads the contexts before its data dir (cli_node): this is
    the error it exits 2 with. The [tls] parsing is in test_tls_config.py."""
    cfg = with_tls(make_config(tmp_path, 1), files)
    crl = tmp_path / "crl.pem"
    crl.write_bytes(b"not a crl\n")
    with pytest.raises(ConfigError, match=r"crl_file .*crl.pem.*no PEM block"):
        server_tls.server_context(with_crl(cfg, crl), "n1")
    write_crl(files, crl, [])
    assert server_tls.server_context(with_crl(cfg, crl), "n1") is not None


def test_a_reload_reads_the_crl_file_once_and_leaves_no_copy_behind(
    tmp_path: Path, files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both contexts and the revoked serials come from one read of the file, so
    an in-place rewrite during a reload cannot give them different versions.
    OpenSSL loads the CRLs from a private copy, removed once loaded."""
    cfg = with_tls(make_config(tmp_path, 1), files)
    crl = write_crl(files, tmp_path / "crl.pem", [])
    cfg = with_crl(cfg, crl)
    server_tls.server_context(cfg, "n1")
    reads: list[Path] = []
    read_bytes = Path.read_bytes

    def counting(path: Path) -> bytes:
        reads.append(path)
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", counting)
    copies = tmp_path / "copies"
    copies.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(copies))
    server_tls.reload(cfg, "n1")
    assert reads.count(crl) == 1
    assert list(copies.iterdir()) == []


async def test_a_client_with_a_crl_refuses_a_node_whose_certificate_is_revoked(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    cfg = with_tls(make_config(tmp_path, 1), files)
    served = await serve_fake(nursery, cfg)
    assert cfg.tls is not None and cfg.tls.cert_file is not None
    good = write_crl(files, tmp_path / "good.pem", [])
    revoked = write_crl(files, tmp_path / "revoked.pem", [cfg.tls.cert_file])
    assert await _served(nursery, served.address, TLSConfig(files.ca_file, crl_file=good), "a")
    with pytest.raises(TLSError, match="certificate revoked"):
        await open_conn(nursery, served.address, TLSConfig(files.ca_file, crl_file=revoked))
    with pytest.raises(TLSError, match=r"crl_file.*found CERTIFICATE"):
        TLSConfig(files.ca_file, crl_file=files.ca_file).context()


# ---------------------------------------------------------------- connections already open


async def test_a_reload_that_revokes_an_open_client_connection_refuses_its_requests(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    """The handshake checked the CRL of its time: a later CRL, once reloaded,
    cuts off the connections already open with a certificate it revokes."""
    tenant, other = files.client("tenant"), files.client("other")
    assert tenant.cert_file is not None
    crl = write_crl(files, tmp_path / "crl.pem", [])
    cfg = with_crl(with_tls(make_config(tmp_path, 1), files, client_auth=True), crl)
    served = await serve_fake(nursery, cfg)
    tenant_conn = await open_conn(nursery, served.address, tenant, "tenant")
    other_conn = await open_conn(nursery, served.address, other, "other")
    assert (await tenant_conn.request("metadata", {}))["ok"] is True

    write_crl(files, crl, [Path(tenant.cert_file)], this_update=NOW)
    assert server_tls.reload_and_report(cfg, "n1", served.metrics) is None
    with pytest.raises(UnauthorizedError, match="this connection presented was revoked"):
        await tenant_conn.request("metadata", {})
    assert (await other_conn.request("metadata", {}))["ok"] is True
    assert [c[0] for c in served.node.calls] == ["tenant", "other"]  # nothing after the revocation
    revoked = served.metrics.tls_connections_revoked
    assert revoked.value(role="client") == 1 and revoked.value(role="peer") == 0
    with pytest.raises(TLSError, match="certificate revoked"):
        await open_conn(nursery, served.address, tenant, "tenant-again")
    tenant_conn.close()
    other_conn.close()


async def serve_swept(
    nursery: trio.Nursery, tmp_path: Path, files: TLSFiles, *, revoked_grace_s: float
) -> tuple[Served, Callable[[TLSConfig], None]]:
    """A TLS node (client_auth, an empty CRL) whose listener sweeps its client
    connections, and a function that revokes a client's certificate and reloads."""
    crl = write_crl(files, tmp_path / "crl.pem", [])
    # [auth] revoked_grace_s covers certificates revoked by a [tls] reload too.
    auth = AuthConfig(revoked_grace_s=revoked_grace_s)
    cfg = with_crl(with_tls(make_config(tmp_path, 1, auth=auth), files, client_auth=True), crl)
    served = await serve_fake(nursery, cfg)
    sweeper = served.listener.sweeper
    assert sweeper is not None
    nursery.start_soon(sweeper.run)

    def revoke(client: TLSConfig) -> None:
        assert client.cert_file is not None
        write_crl(files, crl, [Path(client.cert_file)], this_update=NOW)
        assert server_tls.reload_and_report(cfg, "n1", served.metrics) is None

    return served, revoke


async def test_an_idle_connection_whose_certificate_a_reload_revokes_is_closed(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    """A revoked client that sends nothing does not keep its connection (and its
    slot) until it does: the listener's sweep closes it after a short grace."""
    tenant, other = files.client("tenant"), files.client("other")
    served, revoke = await serve_swept(nursery, tmp_path, files, revoked_grace_s=0.2)
    tenant_conn = await open_conn(nursery, served.address, tenant, "tenant")
    other_conn = await open_conn(nursery, served.address, other, "other")

    revoke(tenant)
    await wait_until(lambda: tenant_conn.closed, "the node to close the revoked connection")
    assert served.metrics.client_connections_closed.value(reason="revoked") == 1
    assert served.metrics.tls_connections_revoked.value(role="client") == 1
    assert (await other_conn.request("metadata", {}))["ok"] is True
    assert served.node.calls == [("other", "metadata", {})]
    other_conn.close()


async def test_a_revoked_connection_is_told_why_at_its_requests_before_it_is_closed(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    """The sweep finds the connection revoked but leaves it open for a grace: a
    client still using it learns at its next request why (its redial would only
    fail the handshake)."""
    tenant = files.client("tenant")
    served, revoke = await serve_swept(nursery, tmp_path, files, revoked_grace_s=60.0)
    tenant_conn = await open_conn(nursery, served.address, tenant, "tenant")

    revoke(tenant)
    revoked = served.metrics.tls_connections_revoked
    await wait_until(lambda: revoked.value(role="client") == 1, "the sweep to find it revoked")
    with pytest.raises(UnauthorizedError, match="this connection presented was revoked"):
        await tenant_conn.request("metadata", {})
    assert served.metrics.client_connections_closed.value(reason="revoked") == 0
    assert revoked.value(role="client") == 1  # counted once, by the sweep
    tenant_conn.close()


def two_nodes_with_a_crl(
    tmp_path: Path, files: TLSFiles
) -> tuple[ClusterConfig, ClusterConfig, Path, Path]:
    """n1 with an empty crl_file, n2 with its own certificate (what n1's CRL
    will revoke): (n1's config, n2's config, the CRL file, n2's certificate)."""
    cfg = with_tls(make_config(tmp_path, 2), files)
    assert cfg.tls is not None
    n2_cert, n2_key = files.issue("n2", NODE_HOST)
    crl = write_crl(files, tmp_path / "crl.pem", [])
    n2_cfg = replace(cfg, tls=replace(cfg.tls, cert_file=n2_cert, key_file=n2_key))
    return with_crl(cfg, crl), n2_cfg, crl, n2_cert


async def test_a_reload_that_revokes_a_peer_closes_its_links_both_ways(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    """n2 is revoked while linked to n1 both ways. After n1's reload, n1 takes
    no more messages on n2's link to it and sends n2 none on its own link; both
    redials meet the CRL in their handshakes."""
    n1_cfg, n2_cfg, crl, n2_cert = two_nodes_with_a_crl(tmp_path, files)
    served_n1 = await serve_fake(nursery, n1_cfg, "n1")
    served_n2 = await serve_fake(nursery, n2_cfg, "n2")
    n1_out = await start_transport(nursery, n1_cfg, "n1", served_n1.metrics)
    n2_out = await start_transport(nursery, n2_cfg, "n2")
    n1_out.send("n2", [(7, b"append 1")])
    n2_out.send("n1", [(7, b"vote 1")])
    await served_n2.node.wait_peer_msgs(1)
    await served_n1.node.wait_peer_msgs(1)

    write_crl(files, crl, [n2_cert], this_update=NOW)
    assert server_tls.reload_and_report(n1_cfg, "n1", served_n1.metrics) is None
    n1_out.send("n2", [(7, b"append 2")])
    n2_out.send("n1", [(7, b"vote 2")])
    revoked = served_n1.metrics.tls_connections_revoked
    await wait_until(
        lambda: revoked.value(role="peer") == 1 and revoked.value(role="dial") == 1,
        "n1 cut both links",
    )
    failures = served_n1.metrics.tls_handshake_failures
    await wait_until(
        lambda: (
            failures.value(side="dial", reason="certificate") >= 1
            and failures.value(side="accept", reason="certificate") >= 1
        ),
        "both redials refused",
    )
    assert served_n1.node.peer_msgs == [("n2", [(7, b"vote 1")])]
    assert served_n2.node.peer_msgs == [("n1", [(7, b"append 1")])]
    assert not n1_out.is_connected("n2") and not n2_out.is_connected("n1")


async def test_a_snapshot_pull_stops_at_the_reload_that_revokes_its_source(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    """n1 pulls a snapshot's records from n2 over a replica connection. Once n1's
    reload revokes n2's certificate, the next chunk request fails the transfer
    instead of taking more records from n2."""
    n1_cfg, n2_cfg, crl, n2_cert = two_nodes_with_a_crl(tmp_path, files)
    served_n2 = await serve_fake(nursery, n2_cfg, "n2")
    conn = await PeerConnection.open(served_n2.address, node_id="n1", cfg=n1_cfg, timeout_s=WAIT_S)
    try:
        assert (await conn.request("metadata", WAIT_S))["ok"] is True
        write_crl(files, crl, [n2_cert], this_update=NOW)
        assert server_tls.reload_and_report(n1_cfg, "n1", Metrics()) is None
        with pytest.raises(TransferError, match="TLS certificate was revoked"):
            await conn.request("metadata", WAIT_S)
    finally:
        await conn.aclose()
    assert [op for _, op, _ in served_n2.node.calls] == ["metadata"]


async def test_a_reload_takes_the_crl_file_as_it_is_now(
    tmp_path: Path, files: TLSFiles, nursery: trio.Nursery
) -> None:
    """Each reload builds fresh contexts, so a CRL taken out of the file is no
    longer used, even one with a later thisUpdate than what replaced it (a
    context loaded in place would go on preferring the later one)."""
    client = files.client("tenant")
    assert client.cert_file is not None
    crl = write_crl(files, tmp_path / "crl.pem", [Path(client.cert_file)], this_update=NOW)
    cfg = with_crl(with_tls(make_config(tmp_path, 1), files, client_auth=True), crl)
    served = await serve_fake(nursery, cfg)
    assert not await _served(nursery, served.address, client, "revoked")
    earlier = NOW - datetime.timedelta(days=2)
    write_crl(files, crl, [], this_update=earlier)
    assert server_tls.reload_and_report(cfg, "n1", served.metrics) is None
    assert await _served(nursery, served.address, client, "reinstated")
