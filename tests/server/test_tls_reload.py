"""Certificate rotation without a restart (server/tls.py ``reload``) and the
expiry gauge, over real sockets on 127.0.0.1 (the real-process SIGHUP path is
in test_tls_processes.py)."""

from __future__ import annotations

import base64
import calendar
import datetime
import shutil
from pathlib import Path

import pytest
import trio
from raftlog.client.errors import TLSError
from raftlog.client.tls import TLSConfig
from raftlog.server import tls as server_tls
from raftlog.server import x509_der
from raftlog.server.config import ConfigError

from .cluster_harness import make_config
from .test_tls import NODE_HOST, TLSFiles, open_conn, serve_fake, with_tls


def _ts(when: datetime.datetime) -> float:
    return float(calendar.timegm(when.utctimetuple()))


def _der(pem: bytes) -> bytes:
    body = pem.split(b"-----BEGIN CERTIFICATE-----")[1].split(b"-----END CERTIFICATE-----")[0]
    return base64.b64decode(body)


@pytest.mark.parametrize(
    "not_after",
    [
        datetime.datetime(2031, 3, 4, 5, 6, 7, tzinfo=datetime.UTC),  # encoded as UTCTime
        datetime.datetime(2061, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),  # GeneralizedTime
    ],
)
def test_cert_not_after_reads_both_time_encodings(tmp_path: Path, not_after) -> None:
    files = TLSFiles.create(tmp_path)
    cert, _ = files.issue("x", NODE_HOST, not_after=not_after)
    assert x509_der.cert_not_after(_der(cert.read_bytes())) == _ts(not_after)


def test_earliest_expiry_of_a_chain_and_of_files_without_certificates(tmp_path: Path) -> None:
    files = TLSFiles.create(tmp_path)
    soon = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    later, _ = files.issue("later", NODE_HOST)
    sooner, _ = files.issue("sooner", NODE_HOST, not_after=soon)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(later.read_bytes() + sooner.read_bytes())
    assert server_tls.earliest_expiry(bundle) == _ts(soon)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert server_tls.earliest_expiry(garbage) is None
    assert server_tls.earliest_expiry(tmp_path / "missing.pem") is None


def _rotate(files: TLSFiles, new: TLSFiles, cert: Path, key: Path) -> None:
    """Rotation as an operator does it: the node's files get a certificate of a
    new CA, and the CA file trusts both CAs while clients move over."""
    new_cert, new_key = new.node_cert("rotated")
    shutil.copy(new_cert, cert)
    shutil.copy(new_key, key)
    files.ca_file.write_bytes(files.ca_file.read_bytes() + new.ca_file.read_bytes())


async def _served_by(nursery: trio.Nursery, address: str, tls: TLSConfig) -> bool:
    try:
        conn = await open_conn(nursery, address, tls)
    except TLSError:
        return False
    reply = await conn.request("metadata", {})
    conn.close()
    return reply["ok"] is True


async def test_reload_rotates_the_listeners_certificate_and_a_bad_file_changes_nothing(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    files = TLSFiles.create(tmp_path / "old")
    new = TLSFiles.create(tmp_path / "new")
    cfg = with_tls(make_config(tmp_path, 1), files)
    served = await serve_fake(nursery, cfg)
    assert cfg.tls is not None and cfg.tls.cert_file is not None and cfg.tls.key_file is not None
    old_client, new_client = TLSConfig(ca_file=files.ca_file), TLSConfig(ca_file=new.ca_file)
    assert await _served_by(nursery, served.address, old_client)
    assert not await _served_by(nursery, served.address, new_client)
    expiry = served.metrics.tls_cert_expiry.value(cert="node")
    assert expiry == server_tls.earliest_expiry(cfg.tls.cert_file) and expiry > 0

    rotated_not_after = datetime.datetime(2040, 6, 1, tzinfo=datetime.UTC)
    new_cert, new_key = new.issue("rotated", NODE_HOST, not_after=rotated_not_after)
    shutil.copy(new_cert, cfg.tls.cert_file)
    shutil.copy(new_key, cfg.tls.key_file)
    # Nothing reads the files until the reload: the node still presents the old one.
    assert await _served_by(nursery, served.address, old_client)
    assert server_tls.reload_and_report(cfg, "n1", served.metrics) is None
    assert await _served_by(nursery, served.address, new_client)
    assert not await _served_by(nursery, served.address, old_client)
    assert served.metrics.tls_reloads.value(result="ok") == 1
    assert served.metrics.tls_cert_expiry.value(cert="node") == _ts(rotated_not_after)

    # A key that does not match the certificate: refused, counted, and the node
    # goes on presenting the certificate it had.
    _, other_key = new.issue("other", NODE_HOST)
    shutil.copy(other_key, cfg.tls.key_file)
    with pytest.raises(ConfigError, match="certificate"):
        server_tls.reload(cfg, "n1")
    refused = server_tls.reload_and_report(cfg, "n1", served.metrics)
    assert refused is not None and "certificate" in refused
    assert served.metrics.tls_reloads.value(result="failed") == 1
    assert await _served_by(nursery, served.address, new_client)
    assert served.metrics.tls_cert_expiry.value(cert="node") == _ts(rotated_not_after)


async def test_reload_makes_a_newly_trusted_ca_verify_client_certificates(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """client_auth: after the CA file gains the new CA and the node reloads, a
    client certificate of the new CA is accepted (and an old one still is)."""
    files = TLSFiles.create(tmp_path / "old")
    new = TLSFiles.create(tmp_path / "new")
    cfg = with_tls(make_config(tmp_path, 1), files, client_auth=True)
    served = await serve_fake(nursery, cfg)
    assert cfg.tls is not None and cfg.tls.cert_file is not None and cfg.tls.key_file is not None
    issued = new.client()
    # The client trusts both CAs, so only the node's verdict on its certificate matters.
    both = tmp_path / "both.pem"
    both.write_bytes(files.ca_file.read_bytes() + new.ca_file.read_bytes())
    new_client = TLSConfig(ca_file=both, cert_file=issued.cert_file, key_file=issued.key_file)
    assert not await _served_by(nursery, served.address, new_client)
    _rotate(files, new, cfg.tls.cert_file, cfg.tls.key_file)
    assert server_tls.reload_and_report(cfg, "n1", served.metrics) is None
    assert await _served_by(nursery, served.address, new_client)
    assert await _served_by(nursery, served.address, files.client("still-old"))


async def test_reload_stops_trusting_a_ca_taken_out_of_the_ca_file(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A reload builds its contexts from the files alone: retiring a CA after a
    rotation takes no restart. Connections already open stay (only a CRL cuts
    those off, test_tls_crl.py)."""
    files = TLSFiles.create(tmp_path / "old")
    retired = TLSFiles.create(tmp_path / "retired")
    files.ca_file.write_bytes(files.ca_file.read_bytes() + retired.ca_file.read_bytes())
    cfg = with_tls(make_config(tmp_path, 1), files, client_auth=True)
    served = await serve_fake(nursery, cfg)
    leaving = TLSConfig(  # trusts the node's CA; presents a certificate of the retired one
        files.ca_file, *retired.issue("leaving", "leaving.clients.test")
    )
    open_before = await open_conn(nursery, served.address, leaving, "open-before")
    assert await _served_by(nursery, served.address, leaving)

    files.ca_file.write_bytes(files.ca.cert_pem.bytes())  # the retired CA taken out
    assert server_tls.reload_and_report(cfg, "n1", served.metrics) is None
    assert not await _served_by(nursery, served.address, leaving)
    assert await _served_by(nursery, served.address, files.client("staying"))
    assert (await open_before.request("metadata", {}))["ok"] is True
    open_before.close()
