"""TLS for a node: its listener (clients and peers) and its outbound peer links.

With ``[tls]`` in cluster.toml (server/config.py) a node serves ONLY TLS and
dials its peers with TLS; without it nothing here runs and the plaintext
paths are exactly as before.

* Peers always authenticate each other: the dialling node verifies the
  listener's certificate against ``ca_file`` and the host it dials, and
  presents its own certificate; the listener requires a certificate from a
  hello of role ``peer`` that is valid for the host of that node's address in
  cluster.toml (``peer_cert_problem``). Without the host check, any client
  holding a certificate of the same CA could speak as a peer, and a peer can
  vote and append entries.
* Clients present a certificate only with ``client_auth = true``. Otherwise
  the listener still asks for one (CERT_OPTIONAL), since clients and peers
  share the port and only the hello tells them apart.

Every accepted connection does its handshake before the hello, bounded by
HANDSHAKE_TIMEOUT_S; a failed one is counted in
``raftlog_tls_handshake_failures_total{side, reason}`` and logged at most once
per LOG_INTERVAL_S (a misconfigured client reconnecting in a loop must not
flood the log). A plaintext client gets one plaintext UNAUTHORIZED reply that
says the node requires TLS, instead of a bare close.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import contextlib
import functools
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import FrameDecoder, FrameError, encode_frame, error_reply
from raftlog.client.tls import (
    TLS_HANDSHAKE_BYTE,
    load_crl_file,
    load_error_text,
    reason_text,
    send_alert,
)

from .config import ClusterConfig, ConfigError
from .log_throttle import LogThrottle
from .metrics import Metrics

log = logging.getLogger(__name__)

# Like listener.HELLO_TIMEOUT_S: a dialler that never completes a handshake
# must not hold a task and a socket for long.
HANDSHAKE_TIMEOUT_S = 10.0
LOG_INTERVAL_S = 1.0
_PLAINTEXT_READ = 64 * 1024
# The reason label of raftlog_tls_handshake_failures_total (see _failure).
ACCEPT_FAILURE_REASONS = ("plaintext", "certificate", "closed", "timeout", "protocol")


# ---------------------------------------------------------------- contexts


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path, what: str) -> None:
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS {what}: {exc.filename!r}: no such file") from None
    except (OSError, ssl.SSLError) as exc:
        why = load_error_text(exc)
        raise ConfigError(
            f"cannot load the TLS {what} {str(cert)!r} with key {str(key)!r}: {why}"
        ) from None


def _load_ca(ctx: ssl.SSLContext, ca: Path) -> None:
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        why = load_error_text(exc)
        raise ConfigError(f"[tls] ca_file {str(ca)!r}: cannot load: {why}") from None


def _load_crl(ctx: ssl.SSLContext, crl: Path | None) -> None:
    """[tls] crl_file: refuse the certificates it revokes, peers' and clients'
    (client.tls.load_crl_file says what the file must hold)."""
    if crl is None:
        return
    try:
        load_crl_file(ctx, crl)
    except ValueError as exc:
        raise ConfigError(f"[tls] crl_file {str(crl)!r}: {exc}") from None


# Cached by file paths: one context per node and role, shared by every
# connection (snapshot transfers open connections again and again). Files
# changed on disk are read again by ``reload`` (SIGHUP) or a restart.
@functools.lru_cache(maxsize=16)
def _server_context(
    ca: Path, cert: Path, key: Path, client_auth: bool, crl: Path | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS >= 1.2
    _load_chain(ctx, cert, key, "certificate")
    _load_ca(ctx, ca)
    _load_crl(ctx, crl)
    ctx.verify_mode = ssl.CERT_REQUIRED if client_auth else ssl.CERT_OPTIONAL
    return ctx


@functools.lru_cache(maxsize=16)
def _peer_context(ca: Path, cert: Path, key: Path, crl: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # CERT_REQUIRED, check_hostname
    _load_ca(ctx, ca)
    _load_crl(ctx, crl)
    _load_chain(ctx, cert, key, "certificate")
    return ctx


def server_context(cfg: ClusterConfig, node_id: str) -> ssl.SSLContext | None:
    """The listener's context (None without [tls]); ConfigError if a file cannot be loaded."""
    if cfg.tls is None:
        return None
    cert, key = cfg.tls_cert_and_key(node_id)
    return _server_context(cfg.tls.ca_file, cert, key, cfg.tls.client_auth, cfg.tls.crl_file)


def peer_context(cfg: ClusterConfig, node_id: str) -> ssl.SSLContext | None:
    """The context ``node_id`` dials other nodes with (None without [tls]):
    verifies them against ca_file (and crl_file), presents ``node_id``'s certificate."""
    if cfg.tls is None:
        return None
    cert, key = cfg.tls_cert_and_key(node_id)
    return _peer_context(cfg.tls.ca_file, cert, key, cfg.tls.crl_file)


# ---------------------------------------------------------------- reload and expiry


def reload(cfg: ClusterConfig, node_id: str) -> None:
    """Re-read the node's certificate, key and ca_file into its live contexts.

    Certificates are rotated without a restart (like nginx's or etcd's
    reload): every handshake after this, accepted or dialled, uses the new
    files; connections already open keep the certificate they agreed on.
    The files are first loaded into throwaway contexts, so a file that does
    not load (half-written, a key that does not match) raises ConfigError and
    changes nothing. CAs are added to the trust store, never removed: dropping
    a CA needs a restart (rotation adds the new CA first anyway).
    """
    if cfg.tls is None:
        return
    cert, key = cfg.tls_cert_and_key(node_id)
    ca, client_auth, crl = cfg.tls.ca_file, cfg.tls.client_auth, cfg.tls.crl_file
    _server_context.__wrapped__(ca, cert, key, client_auth, crl)  # raises, nothing changed
    _peer_context.__wrapped__(ca, cert, key, crl)
    for ctx in (
        _server_context(ca, cert, key, client_auth, crl),
        _peer_context(ca, cert, key, crl),
    ):
        _load_ca(ctx, ca)
        _load_crl(ctx, crl)
        _load_chain(ctx, cert, key, "certificate")


def record_expiry(cfg: ClusterConfig, node_id: str, metrics: Metrics) -> None:
    """Set raftlog_tls_cert_expiry_timestamp_seconds for the node's certificate
    and the CA file (the earliest notAfter in each): the alert that prevents the
    most common TLS outage is "expires within 14 days"."""
    if cfg.tls is None:
        return
    cert, _ = cfg.tls_cert_and_key(node_id)
    for which, path in (("node", cert), ("ca", cfg.tls.ca_file)):
        expiry = earliest_expiry(path)
        if expiry is not None:
            metrics.tls_cert_expiry.set(expiry, cert=which)
    if cfg.tls.crl_file is not None:
        # Past a CRL's nextUpdate OpenSSL refuses every certificate of its CA.
        next_update = earliest_crl_next_update(cfg.tls.crl_file)
        if next_update is not None:
            metrics.tls_cert_expiry.set(next_update, cert="crl")


def reload_and_report(cfg: ClusterConfig, node_id: str, metrics: Metrics) -> str | None:
    """``reload``, logged and counted in raftlog_tls_reloads_total{result}: None if it
    worked, else why not (the node goes on with the files it had)."""
    try:
        reload(cfg, node_id)
    except ConfigError as exc:
        metrics.tls_reloads.inc(result="failed")
        log.error("event=tls_reload_failed node=%s error=%s (still using the old files)",
                  node_id, exc)  # fmt: skip
        return str(exc)
    metrics.tls_reloads.inc(result="ok")
    record_expiry(cfg, node_id, metrics)
    log.info("event=tls_reloaded node=%s", node_id)
    return None


def earliest_expiry(path: Path) -> float | None:
    """The earliest notAfter (Unix seconds) of the PEM certificates in ``path``;
    None if the file holds none or cannot be read (the node then fails to load
    it anyway, with a clearer error)."""
    return _earliest(path, b"CERTIFICATE", cert_not_after)


def earliest_crl_next_update(path: Path) -> float | None:
    """The earliest nextUpdate (Unix seconds) of the PEM CRLs in ``path``; None
    if none has one or the file cannot be read."""
    return _earliest(path, b"X509 CRL", crl_next_update)


def _earliest(path: Path, label: bytes, read: Callable[[bytes], float | None]) -> float | None:
    """The least ``read(DER)`` over the PEM blocks ``label`` in ``path``,
    skipping blocks it cannot read or has no time for."""
    try:
        pem = path.read_bytes()
    except OSError:
        return None
    times = []
    block = re.escape(label)
    for body in re.findall(rb"-----BEGIN " + block + rb"-----(.+?)-----END " + block, pem, re.S):
        with contextlib.suppress(ValueError, binascii.Error):
            if (when := read(base64.b64decode(body))) is not None:
                times.append(when)
    return min(times, default=None)


def _der_item(data: bytes, pos: int) -> tuple[int, int, int]:
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


def cert_not_after(der: bytes) -> float:
    """notAfter of an X.509 certificate (RFC 5280 §4.1), as Unix seconds.

    Certificate ::= SEQUENCE { tbsCertificate, ... }; tbsCertificate ::=
    SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
    validity SEQUENCE { notBefore, notAfter }, ... }. Read by hand: the ssl
    module decodes certificates only through a private helper, and the
    ``cryptography`` package is not a dependency of the server.
    """
    _, pos, _ = _der_item(der, 0)  # Certificate
    _, pos, _ = _der_item(der, pos)  # tbsCertificate
    tag, start, end = _der_item(der, pos)
    if tag == 0xA0:  # explicit [0] version
        pos = end
    for _ in range(3):  # serialNumber, signature, issuer
        _, _, pos = _der_item(der, pos)
    _, pos, _ = _der_item(der, pos)  # validity
    _, _, pos = _der_item(der, pos)  # notBefore
    tag, start, end = _der_item(der, pos)  # notAfter
    return _der_time(tag, der[start:end], "notAfter")


def crl_next_update(der: bytes) -> float | None:
    """nextUpdate of an X.509 CRL (RFC 5280 §5.1) as Unix seconds; None if absent.

    CertificateList ::= SEQUENCE { tbsCertList, ... }; TBSCertList ::=
    SEQUENCE { version INTEGER OPTIONAL, signature, issuer, thisUpdate,
    nextUpdate Time OPTIONAL, ... }.
    """
    _, pos, _ = _der_item(der, 0)  # CertificateList
    _, pos, _ = _der_item(der, pos)  # tbsCertList
    tag, _, end = _der_item(der, pos)
    if tag == 0x02:  # version
        pos = end
    for _ in range(3):  # signature, issuer, thisUpdate
        _, _, pos = _der_item(der, pos)
    if pos >= len(der):
        return None
    tag, start, end = _der_item(der, pos)
    if tag not in (0x17, 0x18):
        return None  # no nextUpdate: the CRL does not expire
    return _der_time(tag, der[start:end], "nextUpdate")


def _der_time(tag: int, value: bytes, what: str) -> float:
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


# ---------------------------------------------------------------- peer identity


def cert_names_host(cert: dict[str, Any] | None, host: str) -> bool:
    """``cert`` (``SSLSocket.getpeercert()``) is valid for ``host``: an IP
    address SAN equal to it, or a DNS SAN matching it (a ``*.`` wildcard stands
    for one leftmost label, RFC 6125 §6.4.3). The subject CN is not consulted,
    as browsers and Python's own hostname check no longer do."""
    if not cert:
        return False
    sans = cert.get("subjectAltName") or ()
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    name = host.lower().rstrip(".")
    for kind, value in sans:
        if kind == "IP Address" and ip is not None:
            try:
                if ipaddress.ip_address(value.strip()) == ip:
                    return True
            except ValueError:
                continue
        elif kind == "DNS" and ip is None and _dns_matches(value.lower().rstrip("."), name):
            return True
    return False


def cert_identities(cert: dict[str, Any] | None) -> list[str]:
    """The names a verified client certificate carries, lower-cased: its DNS and
    email SANs, then its subject CN (what ``[[auth.user]] tls_names`` match)."""
    if not cert:
        return []
    names = [
        value.lower().rstrip(".")
        for kind, value in cert.get("subjectAltName") or ()
        if kind in ("DNS", "email")
    ]
    for rdn in cert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                names.append(value.lower())
    return names


def _dns_matches(pattern: str, name: str) -> bool:
    if not pattern.startswith("*."):
        return pattern == name
    first, dot, rest = name.partition(".")
    return bool(first) and bool(dot) and rest == pattern[2:]


def peer_cert_problem(cfg: ClusterConfig, cert: dict[str, Any] | None, node_id: str) -> str | None:
    """Why ``cert`` does not prove the connection comes from node ``node_id``, or None."""
    host = cfg.node(node_id).host
    if not cert:
        return f"peer {node_id!r} presented no TLS certificate (peers must, signed by ca_file)"
    if not cert_names_host(cert, host):
        return f"peer {node_id!r}'s TLS certificate is not valid for its host {host!r}"
    return None


# ---------------------------------------------------------------- accepting


@dataclass(slots=True)
class TLSAcceptor:
    """The listener's side of TLS: handshake, failures counted and logged."""

    context: ssl.SSLContext
    node_id: str
    metrics: Metrics
    max_frame_bytes: int
    timeout_s: float = HANDSHAKE_TIMEOUT_S
    log_throttle: LogThrottle = field(default_factory=lambda: LogThrottle(LOG_INTERVAL_S))

    @classmethod
    def create(cls, cfg: ClusterConfig, node_id: str, metrics: Metrics) -> TLSAcceptor | None:
        context = server_context(cfg, node_id)
        if context is None:
            return None
        # Rendered as 0 from the start, so a rate alert sees a series, not "no data".
        for reason in ACCEPT_FAILURE_REASONS:
            metrics.tls_handshake_failures.inc(0, side="accept", reason=reason)
        for result in ("ok", "failed"):
            metrics.tls_reloads.inc(0, result=result)
        record_expiry(cfg, node_id, metrics)
        return cls(context, node_id, metrics, cfg.limits.max_frame_bytes)

    async def accept(
        self, stream: trio.abc.Stream, remote: str
    ) -> trio.SSLStream[trio.abc.Stream] | None:
        """``stream`` after a server handshake; None when it failed (counted,
        logged, the stream closed)."""
        tls = trio.SSLStream(stream, self.context, server_side=True, https_compatible=True)
        reason = "timeout"
        detail = f"no TLS handshake within {self.timeout_s}s"
        try:
            with trio.move_on_after(self.timeout_s):
                if not await _looks_like_tls(stream):
                    reason, detail = "plaintext", "a plaintext client (this node requires TLS)"
                    await self._refuse_plaintext(stream)
                else:
                    try:
                        await tls.do_handshake()
                        return tls
                    except trio.BrokenResourceError as exc:
                        await send_alert(tls)
                        reason, detail = _failure(exc)
        except BaseException:  # the node stopping: close, and let the cancellation through
            await trio.aclose_forcefully(stream)
            raise
        self._failed(reason, remote, detail)
        await trio.aclose_forcefully(stream)
        return None

    async def _refuse_plaintext(self, stream: trio.abc.Stream) -> None:
        """Answer a plaintext hello with a plaintext UNAUTHORIZED that says why.

        The hello is read first: closing a socket with unread data makes the
        kernel send a reset, which could reach the client before our reply.
        """
        decoder = FrameDecoder(self.max_frame_bytes)
        try:
            while True:
                data = await stream.receive_some(_PLAINTEXT_READ)
                if not data or decoder.feed(data):
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, FrameError):
            return
        message = (
            f"node {self.node_id} requires TLS ([tls] in its cluster.toml): connect with TLS "
            "(client: tls=TLSConfig(ca_file=...); CLI: --tls-ca, or --config with [tls])"
        )
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(encode_frame(error_reply(0, ErrorCode.UNAUTHORIZED, message)))

    def _failed(self, reason: str, remote: str, detail: str) -> None:
        self.metrics.tls_handshake_failures.inc(side="accept", reason=reason)
        failures = self.log_throttle.count()
        if failures:
            log.warning(
                "event=tls_handshake_failed node=%s remote=%s reason=%s detail=%r "
                "failures_since_last_log=%d",
                self.node_id, remote, reason, detail, failures,
            )  # fmt: skip


async def _looks_like_tls(stream: trio.abc.Stream) -> bool:
    """Whether the first byte the client sent opens a TLS handshake record.

    Peeked (MSG_PEEK), so the handshake still reads it. Streams without a
    socket (tests' memory streams) are taken to be TLS.
    """
    sock = getattr(stream, "socket", None)
    if sock is None:
        return True
    try:
        first = await sock.recv(1, socket.MSG_PEEK)
    except OSError:
        return True  # the handshake meets the same error and counts it
    return not first or first[0] == TLS_HANDSHAKE_BYTE


def _failure(exc: BaseException) -> tuple[str, str]:
    """(metric reason, log detail) of a failed server handshake."""
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return "certificate", f"client certificate refused: {cause.verify_message}"
    if isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError) or not isinstance(
        cause, ssl.SSLError
    ):
        return "closed", f"closed during the handshake ({cause or exc})"
    reason = cause.reason or ""
    if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        # PEER_DID_NOT_RETURN_A_CERTIFICATE (client_auth), or the client's
        # alert that it does not trust OUR certificate (unknown ca, bad certificate).
        return "certificate", reason_text(cause)
    return "protocol", reason_text(cause)


def dial_failure_reason(exc: BaseException) -> str:
    """The metric reason of a failed outbound handshake, from what
    client.tls.start_tls raised (chained to trio's BrokenResourceError)."""
    inner = exc.__cause__
    if isinstance(inner, trio.BrokenResourceError):
        return _failure(inner)[0]
    return "closed"
