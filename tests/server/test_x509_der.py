"""server/x509_der.py against CRLs and certificates that ``cryptography`` builds
(the reader is hand-written DER; cryptography is a test-only dependency)."""

from __future__ import annotations

import datetime
import functools
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.client.tls import load_crl_pem
from raftlog.server.x509_der import (
    Revocations,
    canonical_name,
    cert_serial_and_issuer,
    parse_crl,
)

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


# ------------------------------------------------------------------ issuer names

_ANY_STRING = [
    _ASN1Type.UTF8String,
    _ASN1Type.PrintableString,
    _ASN1Type.IA5String,
    _ASN1Type.BMPString,
    _ASN1Type.UniversalString,
]


def _name(*attributes: tuple[x509.ObjectIdentifier, str, _ASN1Type]) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(oid, value, _type=kind) for oid, value, kind in attributes]
    )


def _name_der(*attributes: tuple[x509.ObjectIdentifier, str, _ASN1Type]) -> bytes:
    return _name(*attributes).public_bytes()


@settings(max_examples=150, deadline=None)
@given(
    words=st.lists(st.text("AbcXyz019", min_size=1, max_size=6), min_size=1, max_size=4),
    kinds=st.tuples(st.sampled_from(_ANY_STRING), st.sampled_from(_ANY_STRING)),
    gaps=st.lists(st.sampled_from([" ", "  ", "\t", " \r\n "]), min_size=5, max_size=5),
    upper=st.booleans(),
)
def test_names_that_differ_in_string_type_case_or_spaces_are_one_issuer(
    words: list[str], kinds: tuple[_ASN1Type, _ASN1Type], gaps: list[str], upper: bool
) -> None:
    """What OpenSSL's X509_NAME_cmp treats as the same name: the same words,
    whatever string type, ASCII capitals or white space between them."""
    plain = " ".join(words)
    respaced = gaps[0] + "".join(w + gaps[(i + 1) % 4 + 1] for i, w in enumerate(words))
    respaced = respaced.upper() if upper else respaced.lower()
    org = (NameOID.ORGANIZATION_NAME, "Raftlog", _ASN1Type.PrintableString)
    first = canonical_name(_name_der(org, (NameOID.COMMON_NAME, plain, kinds[0])))
    second = canonical_name(_name_der(org, (NameOID.COMMON_NAME, respaced, kinds[1])))
    assert first == second
    other = canonical_name(_name_der(org, (NameOID.COMMON_NAME, plain + "0", kinds[1])))
    assert other != first


def test_names_differ_in_order_non_ascii_capitals_and_non_string_values() -> None:
    cn = (NameOID.COMMON_NAME, "Issuing CA", _ASN1Type.UTF8String)
    org = (NameOID.ORGANIZATION_NAME, "Raftlog", _ASN1Type.UTF8String)
    assert canonical_name(_name_der(cn, org)) != canonical_name(_name_der(org, cn))
    umlaut = canonical_name(_name_der((NameOID.COMMON_NAME, "ÄB", _ASN1Type.BMPString)))
    assert umlaut == canonical_name(_name_der((NameOID.COMMON_NAME, "Äb", _ASN1Type.UTF8String)))
    assert umlaut != canonical_name(_name_der((NameOID.COMMON_NAME, "äb", _ASN1Type.UTF8String)))
    with pytest.raises(ValueError, match="not a SEQUENCE"):
        canonical_name(b"\x31\x00")


def _issued_by_renamed_crl(
    tmp_path: Path, revoke: bool
) -> tuple[Revocations, bytes, ssl.SSLContext, Path]:
    """A CA whose certificate names it in PrintableStrings and whose CRL names it
    in UTF8Strings, other capitals and spaces; a leaf it issued, revoked or not.
    Returns our Revocations, the leaf's DER, a client context holding the CA and
    the CRL (as a node's would), and the leaf's PEM files' folder."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(
        (NameOID.ORGANIZATION_NAME, "Raftlog Test", _ASN1Type.PrintableString),
        (NameOID.COMMON_NAME, "Issuing CA", _ASN1Type.PrintableString),
    )
    crl_name = _name(
        (NameOID.ORGANIZATION_NAME, "RAFTLOG  test ", _ASN1Type.UTF8String),
        (NameOID.COMMON_NAME, "issuing ca", _ASN1Type.UTF8String),
    )
    assert ca_name.public_bytes() != crl_name.public_bytes()
    day = datetime.timedelta(days=1)
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name((NameOID.COMMON_NAME, "leaf.test", _ASN1Type.UTF8String)))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("leaf.test")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    builder = x509.CertificateRevocationListBuilder().issuer_name(crl_name)
    builder = builder.last_update(now - day).next_update(now + day)
    if revoke:
        entry = x509.RevokedCertificateBuilder().serial_number(leaf.serial_number)
        builder = builder.add_revoked_certificate(entry.revocation_date(now - day).build())
    crl_pem = builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.key").write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    client = ssl.create_default_context(cafile=str(ca_file))
    load_crl_pem(client, crl_pem)
    leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    return Revocations.from_pem(crl_pem), leaf_der, client, tmp_path


def _handshake(client: ssl.SSLContext, folder: Path) -> None:
    """A TLS handshake in memory: the client verifies the leaf the server presents."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(folder / "leaf.pem"), str(folder / "leaf.key"))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="leaf.test")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for side, out, peer_in in ((c, c_out, s_in), (s, s_out, c_in)):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            finally:
                peer_in.write(out.read())
        if done == 2:
            return
    raise AssertionError("the handshake did not finish")


@pytest.mark.parametrize("revoke", [True, False])
def test_a_crl_naming_its_issuer_differently_revokes_as_openssl_does(
    tmp_path: Path, revoke: bool
) -> None:
    """Our check of open connections and OpenSSL's handshake check agree on a CRL
    whose issuer name is encoded unlike the CA's certificate."""
    revocations, leaf, client, folder = _issued_by_renamed_crl(tmp_path, revoke)
    assert revocations.revokes(leaf) is revoke
    if revoke:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate revoked"):
            _handshake(client, folder)
    else:
        _handshake(client, folder)
