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
``[limits] hello_timeout_ms``; a failed one is counted in
``raftlog_tls_handshake_failures_total{side, reason}`` and logged at most once
per LOG_INTERVAL_S (a misconfigured client reconnecting in a loop must not
flood the log). A plaintext client gets one plaintext UNAUTHORIZED reply that
says the node requires TLS, instead of a bare close.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import FrameDecoder, FrameError, encode_frame, error_reply
from raftlog.client.tls import (
    TLS_HANDSHAKE_BYTE,
    load_crl_pem,
    load_error_text,
    reason_text,
    send_alert,
)

from .config import ClusterConfig, ConfigError
from .log_throttle import LogThrottle
from .metrics import Metrics
from .x509_der import Revocations, cert_not_after, crl_next_update, pem_blocks

log = logging.getLogger(__name__)

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


def _read_crl(crl: Path) -> bytes:
    try:
        return crl.read_bytes()
    except OSError as exc:
        raise ConfigError(f"[tls] crl_file {str(crl)!r}: cannot read: {exc.strerror}") from None


def _load_crl(ctx: ssl.SSLContext, crl: Path, pem: bytes) -> None:
    """[tls] crl_file, read once as ``pem``: refuse the certificates it revokes,
    peers' and clients' (client.tls.load_crl_pem says what it must hold)."""
    try:
        load_crl_pem(ctx, pem)
    except ValueError as exc:
        raise ConfigError(f"[tls] crl_file {str(crl)!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class _Files:
    """What a node's TLS is built from: the paths in its [tls]."""

    ca: Path
    cert: Path
    key: Path
    client_auth: bool
    crl: Path | None


@dataclass(frozen=True, slots=True)
class _Loaded:
    """A node's TLS as last loaded from its files, replaced whole by ``reload``."""

    server: ssl.SSLContext  # the listener's (clients and peers dialling in)
    peer: ssl.SSLContext  # for dialling other nodes
    revocations: Revocations | None  # crl_file's, for connections already open
    # The earliest notAfter of the node's certificate ("node") and of ca_file
    # ("ca"), and crl_file's earliest nextUpdate ("crl"), as Unix seconds.
    expiries: dict[str, float]


# One _Loaded per set of files, shared by every connection (snapshot transfers
# open connections again and again) and by nodes of one process that share
# files (tests). Entries are replaced, never mutated: a handshake that already
# took a context keeps a consistent one.
_LOADED: dict[_Files, _Loaded] = {}
_MAX_LOADED = 64
# Successful reloads in this process: an open connection compares it with the
# count it last saw (RevocationWatch), one int compare per request.
_reloads = 0


def _files(cfg: ClusterConfig, node_id: str) -> _Files:
    assert cfg.tls is not None
    cert, key = cfg.tls_cert_and_key(node_id)
    return _Files(cfg.tls.ca_file, cert, key, cfg.tls.client_auth, cfg.tls.crl_file)


def _build(files: _Files) -> _Loaded:
    """Load every file into fresh contexts; ConfigError if one does not load.

    crl_file is read once: both contexts and the revoked serials come from the
    same version of it, even if it is rewritten in place meanwhile.
    """
    crl_pem = None if files.crl is None else _read_crl(files.crl)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS >= 1.2
    _load_chain(server, files.cert, files.key, "certificate")
    _load_ca(server, files.ca)
    server.verify_mode = ssl.CERT_REQUIRED if files.client_auth else ssl.CERT_OPTIONAL
    peer = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # CERT_REQUIRED, check_hostname
    _load_ca(peer, files.ca)
    _load_chain(peer, files.cert, files.key, "certificate")
    revocations = None
    if files.crl is not None and crl_pem is not None:
        _load_crl(server, files.crl, crl_pem)
        _load_crl(peer, files.crl, crl_pem)
        revocations = Revocations.from_pem(crl_pem)
    return _Loaded(server, peer, revocations, _expiries(files, crl_pem))


def _expiries(files: _Files, crl_pem: bytes | None) -> dict[str, float]:
    times = {"node": earliest_expiry(files.cert), "ca": earliest_expiry(files.ca)}
    if crl_pem is not None:
        times["crl"] = _earliest_in(crl_pem, b"X509 CRL", crl_next_update)
    return {which: when for which, when in times.items() if when is not None}


def _loaded(cfg: ClusterConfig, node_id: str) -> _Loaded | None:
    if cfg.tls is None:
        return None
    files = _files(cfg, node_id)
    loaded = _LOADED.get(files)
    if loaded is None:
        loaded = _LOADED[files] = _build(files)
        if len(_LOADED) > _MAX_LOADED:  # only a test process holds this many
            del _LOADED[next(iter(_LOADED))]
    return loaded


def server_context(cfg: ClusterConfig, node_id: str) -> ssl.SSLContext | None:
    """The listener's context (None without [tls]); ConfigError if a file cannot be loaded."""
    loaded = _loaded(cfg, node_id)
    return None if loaded is None else loaded.server


def peer_context(cfg: ClusterConfig, node_id: str) -> ssl.SSLContext | None:
    """The context ``node_id`` dials other nodes with (None without [tls]):
    verifies them against ca_file (and crl_file), presents ``node_id``'s certificate."""
    loaded = _loaded(cfg, node_id)
    return None if loaded is None else loaded.peer


# ---------------------------------------------------------------- reload and expiry


def reload(cfg: ClusterConfig, node_id: str) -> None:
    """Read the node's certificate, key, ca_file and crl_file again.

    Certificates are rotated without a restart (like nginx's or etcd's
    reload): every handshake after this, accepted or dialled, uses new
    contexts built from the files alone, so a CA taken out of ca_file is no
    longer trusted and a CRL replaces the one before. Connections already open
    keep the certificates they agreed on, except those whose certificate the
    new CRL revokes: they are cut off at their next request or frame
    (``RevocationWatch``), and a client connection that sends nothing by the
    listener's sweep (server/connection_sweeper.py). A file that does not load
    (half-written, a key that does not match) raises ConfigError and changes
    nothing.
    """
    if cfg.tls is None:
        return
    global _reloads
    files = _files(cfg, node_id)
    _LOADED[files] = _build(files)
    _reloads += 1


def expiries(cfg: ClusterConfig, node_id: str) -> dict[str, float]:
    """When what the node loaded stops working, as Unix seconds: its certificate
    ("node"), a CA of ca_file ("ca"), and with a crl_file, the earliest CRL
    nextUpdate ("crl"; past it OpenSSL refuses every certificate of that CA).
    Empty without [tls]. For the gauge and ``cluster status``."""
    loaded = _loaded(cfg, node_id)
    return {} if loaded is None else dict(loaded.expiries)


def record_expiry(cfg: ClusterConfig, node_id: str, metrics: Metrics) -> None:
    """Set raftlog_tls_cert_expiry_timestamp_seconds from ``expiries``: the alert
    that prevents the most common TLS outage is "expires within 14 days"."""
    for which, when in expiries(cfg, node_id).items():
        metrics.tls_cert_expiry.set(when, cert=which)


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


def _earliest(path: Path, label: bytes, read: Callable[[bytes], float | None]) -> float | None:
    """The least ``read(DER)`` over the PEM blocks ``label`` in ``path``,
    skipping blocks it cannot read or has no time for."""
    try:
        pem = path.read_bytes()
    except OSError:
        return None
    return _earliest_in(pem, label, read)


def _earliest_in(pem: bytes, label: bytes, read: Callable[[bytes], float | None]) -> float | None:
    times = []
    for der in pem_blocks(pem, label):
        with contextlib.suppress(ValueError):
            if (when := read(der)) is not None:
                times.append(when)
    return min(times, default=None)


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
class RevocationWatch:
    """Has a reload's CRL revoked the certificate that the other side of an open
    connection presented? Asked at each request or frame; the handshake checked
    the CRL of its time, so until a reload this is one int compare."""

    files: _Files
    cert_der: bytes
    seen_reloads: int

    @classmethod
    def of(
        cls, cfg: ClusterConfig, node_id: str, stream: trio.SSLStream[Any]
    ) -> RevocationWatch | None:
        """A watch over ``stream``'s peer certificate; None without a crl_file
        or a certificate (nothing a CRL could revoke)."""
        loaded = _loaded(cfg, node_id)
        if loaded is None or loaded.revocations is None:
            return None
        der = stream.getpeercert(binary_form=True)
        return cls(_files(cfg, node_id), der, _reloads) if der else None

    def revoked(self) -> bool:
        if self.seen_reloads == _reloads:
            return False
        self.seen_reloads = _reloads
        loaded = _LOADED.get(self.files)
        revocations = loaded.revocations if loaded is not None else None
        return revocations is not None and revocations.revokes(self.cert_der)


@dataclass(slots=True)
class TLSAcceptor:
    """The listener's side of TLS: handshake, failures counted and logged."""

    cfg: ClusterConfig
    node_id: str
    metrics: Metrics
    max_frame_bytes: int
    # [limits] hello_timeout_ms: a dialler that never completes a handshake
    # must not hold a task and a socket for long.
    timeout_s: float = 10.0
    log_throttle: LogThrottle = field(default_factory=lambda: LogThrottle(LOG_INTERVAL_S))

    @classmethod
    def create(cls, cfg: ClusterConfig, node_id: str, metrics: Metrics) -> TLSAcceptor | None:
        if server_context(cfg, node_id) is None:  # ConfigError if a file does not load
            return None
        # Rendered as 0 from the start, so a rate alert sees a series, not "no data".
        for reason in ACCEPT_FAILURE_REASONS:
            metrics.tls_handshake_failures.inc(0, side="accept", reason=reason)
        for result in ("ok", "failed"):
            metrics.tls_reloads.inc(0, result=result)
        if cfg.tls is not None and cfg.tls.crl_file is not None:
            for role in ("client", "peer", "dial"):
                metrics.tls_connections_revoked.inc(0, role=role)
        record_expiry(cfg, node_id, metrics)
        limits = cfg.limits
        return cls(cfg, node_id, metrics, limits.max_frame_bytes, limits.hello_timeout_ms / 1000)

    async def accept(
        self, stream: trio.abc.Stream, remote: str
    ) -> trio.SSLStream[trio.abc.Stream] | None:
        """``stream`` after a server handshake; None when it failed (counted,
        logged, the stream closed)."""
        context = server_context(self.cfg, self.node_id)  # the latest reload's
        assert context is not None
        tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
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

    def watch(self, stream: trio.SSLStream[Any]) -> RevocationWatch | None:
        return RevocationWatch.of(self.cfg, self.node_id, stream)

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
