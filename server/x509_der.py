"""The few X.509 facts a node reads from DER itself (RFC 5280).

The ssl module decodes certificates only through a private helper and never
decodes a CRL, and the ``cryptography`` package is not a dependency of the
server, so this walks the DER by hand. It reads:

* a certificate's notAfter (the expiry gauge) and its serial and issuer;
* a CRL's nextUpdate (the expiry gauge), thisUpdate, issuer and revoked serials
  (``Revocations``: which open connections a reloaded CRL cuts off);
* a Name in the canonical form OpenSSL compares names by (``canonical_name``),
  to match a CRL's issuer with a certificate's.

Nothing here verifies a signature: OpenSSL does that in every handshake.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
import time
from dataclasses import dataclass

_TIME_TAGS = (0x17, 0x18)  # UTCTime, GeneralizedTime
_INTEGER, _SEQUENCE, _SET, _VERSION_TAG = 0x02, 0x30, 0x31, 0xA0
# The string types OpenSSL canonicalises in a Name (ASN1_MASK_CANON), with the
# codec of each: UTF8String, PrintableString, T61String (read as Latin-1, as
# OpenSSL does), IA5String, VisibleString, UniversalString, BMPString.
_NAME_STRINGS = {
    0x0C: "utf-8",
    0x13: "latin-1",
    0x14: "latin-1",
    0x16: "latin-1",
    0x1A: "latin-1",
    0x1C: "utf-32-be",
    0x1E: "utf-16-be",
}
_SPACES = " \t\n\v\f\r"  # OpenSSL's ossl_isspace
_TO_SPACE = str.maketrans({c: " " for c in _SPACES})


def pem_blocks(pem: bytes, label: bytes) -> list[bytes]:
    """The DER bodies of the PEM blocks ``label`` (e.g. b"X509 CRL") in ``pem``;
    a block that is not valid base64 is skipped."""
    out = []
    block = re.escape(label)
    for body in re.findall(rb"-----BEGIN " + block + rb"-----(.+?)-----END " + block, pem, re.S):
        try:
            out.append(base64.b64decode(body))
        except (ValueError, binascii.Error):
            continue
    return out


def der_item(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER item at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:  # long form: the next (length & 0x7f) bytes hold the length
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def der_time(tag: int, value: bytes, what: str) -> float:
    """A DER UTCTime or GeneralizedTime (RFC 5280 §4.1.2.5) as Unix seconds."""
    text = value.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ (RFC 5280 §4.1.2.5.1: YY >= 50 is 19YY)
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError(f"{what} has DER tag {tag:#x}, not a time")
    if not text.endswith("Z") or len(text) != 15:
        raise ValueError(f"{what} {text!r} is not YYYYMMDDHHMMSSZ")
    return float(calendar.timegm(time.strptime(text[:-1], "%Y%m%d%H%M%S")))


def _integer(der: bytes, pos: int, what: str) -> tuple[int, int]:
    """(value, end) of the DER INTEGER at ``pos``."""
    tag, start, end = der_item(der, pos)
    if tag != _INTEGER:
        raise ValueError(f"{what} has DER tag {tag:#x}, not an INTEGER")
    return int.from_bytes(der[start:end], "big", signed=True), end


# ---------------------------------------------------------------- names

# A Name's canonical form: per RDN, its (attribute type, value) pairs sorted.
NameKey = tuple[tuple[tuple[bytes, bytes], ...], ...]


def canonical_name(name: bytes) -> NameKey:
    """An X.509 Name (its whole DER item) as OpenSSL compares names
    (X509_NAME_cmp over x509_name_canon): each string value re-read as text,
    stripped of leading and trailing white space, inner runs of it made one
    space, ASCII letters lower-cased; other values kept as DER. So a CA that
    writes its name as a PrintableString in its certificates and as a
    UTF8String (or in other capitals) in its CRL is still one issuer.

    Name ::= SEQUENCE OF RelativeDistinguishedName; RDN ::= SET OF
    AttributeTypeAndValue ::= SEQUENCE { type OID, value ANY } (RFC 5280
    §4.1.2.4). ValueError if ``name`` is not one.
    """
    tag, pos, end = der_item(name, 0)
    if tag != _SEQUENCE:
        raise ValueError(f"a Name has DER tag {tag:#x}, not a SEQUENCE")
    rdns = []
    while pos < end:
        tag, at, rdn_end = der_item(name, pos)
        if tag != _SET:
            raise ValueError(f"an RDN has DER tag {tag:#x}, not a SET")
        pairs = []
        while at < rdn_end:
            _, inner, at = der_item(name, at)  # AttributeTypeAndValue
            _, _, oid_end = der_item(name, inner)
            value_tag, value_start, value_end = der_item(name, oid_end)
            value = _canonical_value(value_tag, name[value_start:value_end])
            if value is None:
                value = b"=" + name[oid_end:value_end]  # the whole DER item, tag and all
            pairs.append((name[inner:oid_end], value))
        rdns.append(tuple(sorted(pairs)))
        pos = rdn_end
    return tuple(rdns)


def _canonical_value(tag: int, value: bytes) -> bytes | None:
    """A string value in canonical form (prefixed, so it never equals a DER
    value), or None for a type OpenSSL keeps as it is."""
    codec = _NAME_STRINGS.get(tag)
    if codec is None:
        return None
    try:
        text = value.decode(codec)
    except UnicodeDecodeError as exc:
        raise ValueError(f"a Name string is not valid {codec}") from exc
    # Not str.split(): OpenSSL's white space is ASCII only (no-break space is a letter).
    folded = " ".join(w for w in text.translate(_TO_SPACE).split(" ") if w)
    lowered = "".join(c.lower() if "A" <= c <= "Z" else c for c in folded)
    return b"s" + lowered.encode("utf-8")


# ---------------------------------------------------------------- certificates


def _tbs_certificate(der: bytes) -> int:
    """Where a certificate's serialNumber starts. Certificate ::= SEQUENCE {
    tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature,
    issuer, validity, ... }, ... } (RFC 5280 §4.1)."""
    _, pos, _ = der_item(der, 0)  # Certificate
    _, pos, _ = der_item(der, pos)  # tbsCertificate
    tag, _, end = der_item(der, pos)
    return end if tag == _VERSION_TAG else pos


def cert_not_after(der: bytes) -> float:
    """notAfter of an X.509 certificate, as Unix seconds."""
    pos = _tbs_certificate(der)
    for _ in range(3):  # serialNumber, signature, issuer
        _, _, pos = der_item(der, pos)
    _, pos, _ = der_item(der, pos)  # validity
    _, _, pos = der_item(der, pos)  # notBefore
    tag, start, end = der_item(der, pos)  # notAfter
    return der_time(tag, der[start:end], "notAfter")


def cert_serial_and_issuer(der: bytes) -> tuple[int, bytes]:
    """A certificate's serialNumber and its issuer Name (the whole DER item,
    as a CRL's issuer is compared with it)."""
    serial, pos = _integer(der, _tbs_certificate(der), "serialNumber")
    _, _, pos = der_item(der, pos)  # signature
    _, _, end = der_item(der, pos)  # issuer
    return serial, der[pos:end]


# ---------------------------------------------------------------- CRLs


@dataclass(frozen=True, slots=True)
class CRL:
    issuer: bytes  # the issuer Name's whole DER item
    this_update: float
    next_update: float | None  # None: the CRL does not expire
    revoked: frozenset[int]  # serial numbers


def parse_crl(der: bytes) -> CRL:
    """CertificateList ::= SEQUENCE { tbsCertList, ... }; TBSCertList ::=
    SEQUENCE { version INTEGER OPTIONAL, signature, issuer, thisUpdate,
    nextUpdate Time OPTIONAL, revokedCertificates SEQUENCE OF SEQUENCE {
    userCertificate INTEGER, revocationDate, crlEntryExtensions OPTIONAL }
    OPTIONAL, [0] crlExtensions OPTIONAL } (RFC 5280 §5.1)."""
    _, pos, _ = der_item(der, 0)  # CertificateList
    _, pos, tbs_end = der_item(der, pos)  # tbsCertList
    tag, _, end = der_item(der, pos)
    if tag == _INTEGER:  # version
        pos = end
    _, _, pos = der_item(der, pos)  # signature
    _, _, end = der_item(der, pos)  # issuer
    issuer, pos = der[pos:end], end
    tag, start, pos = der_item(der, pos)
    this_update = der_time(tag, der[start:pos], "thisUpdate")
    next_update = None
    if pos < tbs_end and der[pos] in _TIME_TAGS:
        tag, start, pos = der_item(der, pos)
        next_update = der_time(tag, der[start:pos], "nextUpdate")
    revoked: set[int] = set()
    if pos < tbs_end and der[pos] == _SEQUENCE:
        _, entry, entries_end = der_item(der, pos)
        while entry < entries_end:
            _, first, entry = der_item(der, entry)  # one revoked certificate
            revoked.add(_integer(der, first, "userCertificate")[0])
    return CRL(issuer, this_update, next_update, frozenset(revoked))


def crl_next_update(der: bytes) -> float | None:
    """nextUpdate of an X.509 CRL as Unix seconds; None if absent."""
    return parse_crl(der).next_update


@dataclass(frozen=True, slots=True)
class Revocations:
    """The serials each CA's CRL in a crl_file revokes: what a reload checks
    the connections already open against (new ones meet OpenSSL's check).

    Like OpenSSL, only the CRL with the latest thisUpdate of each issuer
    counts, and issuers are the same when their names are in canonical form
    (``canonical_name``).
    """

    by_issuer: dict[NameKey, frozenset[int]]

    @classmethod
    def from_pem(cls, pem: bytes) -> Revocations:
        newest: dict[NameKey, CRL] = {}
        for der in pem_blocks(pem, b"X509 CRL"):
            try:
                crl = parse_crl(der)
                issuer = canonical_name(crl.issuer)
            except ValueError:
                continue  # OpenSSL refused the file already if it matters
            held = newest.get(issuer)
            if held is None or crl.this_update > held.this_update:
                newest[issuer] = crl
        return cls({issuer: crl.revoked for issuer, crl in newest.items()})

    def revokes(self, cert_der: bytes) -> bool:
        """Does a CRL of this certificate's issuer list its serial?"""
        try:
            serial, issuer = cert_serial_and_issuer(cert_der)
            key = canonical_name(issuer)
        except ValueError:
            return False
        return serial in self.by_issuer.get(key, frozenset())
