"""server/x509_der.py against CRLs and certificates that ``cryptography`` builds
(the reader is hand-written DER; cryptography is a test-only dependency)."""

from __future__ import annotations

import datetime
import functools

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.server.x509_der import Revocations, cert_serial_and_issuer, parse_crl

NOW = datetime.datetime(2026, 11, 24, 12, 0, 0, tzinfo=datetime.UTC)
# RFC 5280 §4.1.2.2: positive, at most 20 octets.
SERIALS = st.integers(min_value=1, max_value=2**159 - 1)


@functools.cache
def _ca(name: str) -> trustme.CA:
    return trustme.CA(organization_name=name)


def _crl(
    ca: trustme.CA,
    serials: set[int],
    *,
    this_update: datetime.datetime = NOW,
    next_update: datetime.datetime = NOW + datetime.timedelta(days=7),
    number: int | None = None,
) -> bytes:
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes()).subject
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(this_update)
        .next_update(next_update)  # cryptography requires one
    )
    if number is not None:  # crlExtensions ([0]): must not read as revoked entries
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    for serial in serials:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this_update)
        builder = builder.add_revoked_certificate(entry.build())
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    crl = builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return crl.public_bytes(serialization.Encoding.DER)


def _cert_der(ca: trustme.CA, name: str) -> bytes:
    pem = ca.issue_cert(f"{name}.test").cert_chain_pems[0].bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _pem(*crls: bytes) -> bytes:
    return b"".join(
        x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM) for der in crls
    )


@settings(max_examples=60, deadline=None)
@given(
    serials=st.sets(SERIALS, max_size=12),
    number=st.none() | st.integers(min_value=0, max_value=2**64),
    valid_days=st.integers(min_value=1, max_value=60 * 365),  # from 2050 on: GeneralizedTime
)
def test_parse_crl_reads_what_cryptography_wrote(
    serials: set[int], number: int | None, valid_days: int
) -> None:
    ca = _ca("parse")
    next_update = NOW + datetime.timedelta(days=valid_days)
    crl = parse_crl(_crl(ca, serials, next_update=next_update, number=number))
    assert crl.revoked == serials
    assert crl.this_update == NOW.timestamp()
    assert crl.next_update == next_update.timestamp()
    assert crl.issuer == cert_serial_and_issuer(_cert_der(ca, "leaf"))[1]


def test_a_certificate_is_revoked_by_the_newest_crl_of_its_own_issuer() -> None:
    ca, other = _ca("issuer"), _ca("other")
    kept, dropped = _cert_der(ca, "kept"), _cert_der(ca, "dropped")
    stranger = _cert_der(other, "stranger")
    kept_serial = cert_serial_and_issuer(kept)[0]
    dropped_serial = cert_serial_and_issuer(dropped)[0]
    stranger_serial = cert_serial_and_issuer(stranger)[0]
    older = _crl(ca, {kept_serial}, this_update=NOW - datetime.timedelta(hours=1))
    newer = _crl(ca, {dropped_serial, stranger_serial})  # another CA's serial: not its to revoke
    for order in ((older, newer), (newer, older)):
        revocations = Revocations.from_pem(_pem(*order))
        assert revocations.revokes(dropped)
        assert not revocations.revokes(kept)
        assert not revocations.revokes(stranger)


def test_unreadable_input_revokes_nothing() -> None:
    ca = _ca("garbage")
    cert = _cert_der(ca, "leaf")
    serial = cert_serial_and_issuer(cert)[0]
    good = _pem(_crl(ca, {serial}))
    broken = b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"
    assert Revocations.from_pem(broken + good).revokes(cert)  # the broken block is skipped
    assert not Revocations.from_pem(good).revokes(b"\x30\x03\x02\x01")  # not a certificate
    with pytest.raises(ValueError):
        parse_crl(_crl(ca, {serial})[:40])
