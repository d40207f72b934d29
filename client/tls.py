"""TLS for connections to raftlog nodes (clients, and nodes dialling each other).

``TLSConfig`` names PEM files; ``client_context`` turns it (or an
``ssl.SSLContext`` the caller built) into the context a connection uses;
``start_tls`` runs the handshake on a fresh TCP stream and turns its failures
into errors that say what to fix.

The TLS stream is opened with ``https_compatible=True``: an EOF without a TLS
close_notify counts as an ordinary EOF. That is sound here because every
frame carries its own length (DESIGN.md §4), so a truncated stream shows as a
short frame, never as a shorter valid message; and it keeps a killed node's
connection behaving exactly like a plaintext one (EOF), and ``aclose`` from
ever waiting to send a close_notify to a peer that stopped reading.

A ``trio.SSLStream`` has no ``socket`` attribute, so ``sockio.socket_fd``
returns None for it and every caller takes its stream (``send_all`` /
``receive_some``) path: the plaintext fast path on the raw descriptor is
untouched, and nothing ever writes plaintext bytes under a TLS session.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trio

from .errors import TLSError

__all__ = [
    "TLSConfig",
    "client_context",
    "load_crl_file",
    "load_crl_pem",
    "handshake_error",
    "hello_error",
    "host_of",
    "send_alert",
    "start_tls",
]

# How long a failed handshake may spend telling the other side why (see send_alert).
ALERT_SEND_TIMEOUT_S = 1.0
# The first byte of every TLS handshake record (RFC 8446 §5.1, ContentType
# handshake); no raftlog frame starts with it in practice (a 369 MB length).
TLS_HANDSHAKE_BYTE = 0x16


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """PEM files for a TLS client.

    ``ca_file``: the CA that signed the nodes' certificates (None: the system's
    trust store). ``cert_file`` / ``key_file``: this client's certificate, for
    nodes with ``[tls] client_auth = true`` (``key_file`` may be omitted when
    ``cert_file`` holds the key too). ``crl_file``: PEM CRLs; a node whose
    certificate they revoke is refused (see ``load_crl_file``).
    """

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    crl_file: str | Path | None = None

    def __post_init__(self) -> None:
        if self.key_file is not None and self.cert_file is None:
            raise TLSError("TLSConfig: key_file without cert_file")

    def context(self) -> ssl.SSLContext:
        """A client context: verifies the node's certificate and its host name or IP."""
        # create_default_context: CERT_REQUIRED, check_hostname, TLS >= 1.2.
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=_opt(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            why = load_error_text(exc)
            raise TLSError(f"cannot load TLS ca_file {str(self.ca_file)!r}: {why}") from None
        if self.cert_file is not None:
            try:
                ctx.load_cert_chain(str(self.cert_file), _opt(self.key_file))
            except (OSError, ssl.SSLError) as exc:
                raise TLSError(
                    f"cannot load TLS cert_file {str(self.cert_file)!r} / key_file "
                    f"{str(self.key_file)!r}: {load_error_text(exc)}"
                ) from None
        if self.crl_file is not None:
            try:
                load_crl_file(ctx, Path(self.crl_file))
            except ValueError as exc:
                raise TLSError(f"TLS crl_file {str(self.crl_file)!r}: {exc}") from None
        return ctx


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def load_crl_file(ctx: ssl.SSLContext, path: Path) -> None:
    """Make ``ctx`` check every leaf certificate it verifies against the CRLs in
    ``path`` (PEM); ValueError says what is wrong with the file (see
    ``load_crl_pem``)."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror}") from None
    load_crl_pem(ctx, pem)


def load_crl_pem(ctx: ssl.SSLContext, pem: bytes) -> None:
    """Make ``ctx`` check every leaf certificate it verifies against the CRLs in
    ``pem``, the contents of a crl_file; ValueError says what is wrong with it.

    The bytes, not the path: whoever reads the file once (a node building
    both its contexts and its list of revoked serials) checks and loads the
    same version of it, however the file is rewritten meanwhile. OpenSSL
    reads CRLs only from a file, so they are loaded from a private copy.

    OpenSSL loads CRLs through the same call as CAs, so a certificate in this
    file would become a trust anchor: only X509 CRL blocks are taken. With
    VERIFY_CRL_CHECK_LEAF a certificate whose issuer has no CRL here is
    refused ("unable to get certificate CRL"), and so is every certificate
    of a CA once its CRL is past its nextUpdate ("CRL has expired"): the file
    must hold a current CRL of every CA that signs the certificates checked.
    Loading a later CRL of the same CA into the same context makes it the one
    used (OpenSSL picks the latest thisUpdate).
    """
    kinds = set(_PEM_BLOCK.findall(pem))
    if kinds != {b"X509 CRL"}:
        found = ", ".join(sorted(k.decode() for k in kinds)) or "no PEM block"
        raise ValueError(f"must hold only PEM X509 CRL blocks, found {found}")
    try:
        with tempfile.NamedTemporaryFile(prefix="raftlog-crl-", suffix=".pem") as copy:
            copy.write(pem)
            copy.flush()
            ctx.load_verify_locations(cafile=copy.name)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load: {load_error_text(exc)}") from None
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def _opt(path: str | Path | None) -> str | None:
    return None if path is None else str(path)


def load_error_text(exc: BaseException) -> str:
    """Why a certificate, key or CA file could not be loaded, in words
    (OpenSSL's reason, or the OS error); shared with server/tls.py."""
    if isinstance(exc, ssl.SSLError):
        return reason_text(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def client_context(tls: ssl.SSLContext | TLSConfig | None) -> ssl.SSLContext | None:
    """The context connections use: ``tls`` itself, built from a TLSConfig, or None (plaintext)."""
    if tls is None or isinstance(tls, ssl.SSLContext):
        return tls
    if isinstance(tls, TLSConfig):
        return tls.context()
    raise TypeError(f"tls must be an ssl.SSLContext or a TLSConfig, not {type(tls).__name__}")


def host_of(address: str) -> str:
    """The host of ``HOST:PORT`` ("[::1]:7101" -> "::1"): what the certificate must name."""
    return address.rpartition(":")[0].strip("[]")


async def start_tls(
    stream: trio.abc.Stream, context: ssl.SSLContext, address: str
) -> trio.SSLStream[trio.abc.Stream]:
    """Handshake as a client over ``stream``, checking the certificate against
    ``address``'s host; on failure the stream is closed and ``handshake_error``
    raised. The caller bounds the time (its connect timeout)."""
    tls = trio.SSLStream(stream, context, server_hostname=host_of(address), https_compatible=True)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await send_alert(tls)
        await trio.aclose_forcefully(stream)
        raise handshake_error(address, exc) from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls


async def send_alert(tls: trio.SSLStream[trio.abc.Stream]) -> None:
    """Send the TLS alert of a failed handshake, best effort.

    trio marks the stream broken and raises as soon as OpenSSL fails, leaving
    the alert OpenSSL wrote (unknown_ca, certificate_expired, ...) unsent; the
    other side would then see a bare EOF and could only guess why. The alert
    sits in the SSLStream's outgoing memory BIO (a private attribute; if a
    trio version lacks it, the other side just sees the EOF).
    """
    bio = getattr(tls, "_outgoing", None)
    if not isinstance(bio, ssl.MemoryBIO):
        return
    data = bio.read()
    if not data:
        return
    with (
        trio.move_on_after(ALERT_SEND_TIMEOUT_S),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
    ):
        await tls.transport_stream.send_all(data)


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
    if isinstance(cause, ssl.SSLError) and not isinstance(
        cause, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError
    ):
        return cause
    return None


def handshake_error(address: str, exc: BaseException) -> TLSError | ConnectionRefusedError:
    """What a failed client handshake means.

    A certificate or protocol failure is a TLSError (retrying cannot help).
    A connection closed mid-handshake is a ConnectionRefusedError, which the
    client retries like any unreachable node: a plaintext node closes it (it
    takes the ClientHello for an oversized frame), but so may a node going down.
    """
    cause = _ssl_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return TLSError(
            f"certificate verify failed for {address}: {cause.verify_message} "
            "(is the CA given as ca_file / --tls-ca the one that signed the node's certificate, "
            "and is the certificate valid for this host?)",
            address=address,
        )
    if cause is not None:
        return TLSError(
            f"TLS handshake with {address} failed: {reason_text(cause)}", address=address
        )
    return ConnectionRefusedError(
        f"{address} closed the connection during the TLS handshake: "
        "does the node serve TLS ([tls] in its cluster.toml)?"
    )


def reason_text(exc: ssl.SSLError) -> str:
    """OpenSSL's reason in words (SSLV3_ALERT_BAD_CERTIFICATE -> sslv3 alert bad certificate)."""
    return (exc.reason or str(exc)).lower().replace("_", " ")


def hello_error(address: str, exc: BaseException) -> TLSError | ConnectionRefusedError:
    """What a TLS connection failing between the handshake and the hello reply means.

    With TLS 1.3 a client's handshake completes before the node has checked
    the client's certificate (RFC 8446 §4.4.2): a refused certificate shows up
    as an alert on the first read, here.
    """
    cause = _ssl_cause(exc)
    if cause is not None:
        reason = cause.reason or ""
        if "CERTIFICATE_REQUIRED" in reason:
            return TLSError(
                f"{address} requires a client certificate ([tls] client_auth = true): "
                "give cert_file and key_file (TLSConfig / --tls-cert --tls-key)",
                address=address,
            )
        if "ALERT" in reason and ("CERTIFICATE" in reason or "UNKNOWN_CA" in reason):
            return TLSError(
                f"{address} refused our TLS client certificate ({reason_text(cause)}): "
                "is it signed by the node's [tls] ca_file, and still valid?",
                address=address,
            )
        return TLSError(f"{address} ended the TLS session: {reason_text(cause)}", address=address)
    return ConnectionRefusedError(
        f"{address} closed the TLS connection during hello: did it refuse our client "
        f"certificate ([tls] client_auth)? ({exc or 'EOF'})"
    )
