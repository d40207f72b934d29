"""The client's TLS settings and the errors a user sees when TLS is misconfigured."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import ClusterUnreachableError, TLSError, UnauthorizedError
from raftlog.client.sync import Client
from raftlog.client.tls import TLSConfig, client_context

from tests.server.cluster_harness import make_config
from tests.server.test_tls import TLSFiles, serve_fake


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return TLSFiles.create(tmp_path / "tls")


def test_missing_or_bad_files_fail_when_the_client_is_built(
    tmp_path: Path, files: TLSFiles
) -> None:
    missing = TLSConfig(ca_file=tmp_path / "nope.pem")
    with pytest.raises(TLSError, match=r"cannot load TLS ca_file .*nope\.pem"):
        AsyncClient("127.0.0.1:1", tls=missing)
    with pytest.raises(TLSError, match=r"nope\.pem"):
        Client("127.0.0.1:1", tls=missing)
    cert, _ = files.issue("c", "c.test")
    _, other_key = files.issue("d", "d.test")
    mismatched = TLSConfig(ca_file=files.ca_file, cert_file=cert, key_file=other_key)
    with pytest.raises(TLSError, match="cannot load TLS cert_file"):
        AsyncClient("127.0.0.1:1", tls=mismatched)
    with pytest.raises(TLSError, match="key_file without cert_file"):
        TLSConfig(ca_file=files.ca_file, key_file=other_key)
    with pytest.raises(TypeError, match=r"ssl\.SSLContext or a TLSConfig"):
        AsyncClient("127.0.0.1:1", tls="yes")  # type: ignore[arg-type]


def test_a_context_of_the_callers_own_is_used_as_it_is() -> None:
    ctx = ssl.create_default_context()
    assert client_context(ctx) is ctx
    assert client_context(None) is None


def test_tls_errors_are_unauthorized_and_not_retried() -> None:
    # aio retries only NotAvailableError-type connect failures; a TLSError is
    # an UnauthorizedError, which it raises at once.
    assert issubclass(TLSError, UnauthorizedError)


async def test_tls_client_against_a_plaintext_node(tmp_path: Path, nursery: trio.Nursery) -> None:
    served = await serve_fake(nursery, make_config(tmp_path, 1))  # no [tls]
    files = TLSFiles.create(tmp_path / "tls")
    async with AsyncClient(
        [served.address], tls=TLSConfig(ca_file=files.ca_file), request_timeout=1.0
    ) as client:
        with pytest.raises(ClusterUnreachableError, match="does the node serve TLS"):
            await client.request("metadata")
    # The node logged it as a framing error that names TLS, and serves plaintext on.
    assert served.metrics.frame_errors.value(reason="malformed") >= 1
    async with AsyncClient([served.address]) as plain:
        assert (await plain.request("metadata"))["op"] == "metadata"
    assert [c[0] for c in served.node.calls] == [plain.client_id]


async def test_the_reason_an_earlier_dial_found_outlives_a_dial_the_deadline_cut_short(
    tmp_path: Path,
) -> None:
    # First connection: closed at once (what a plaintext node does to a TLS
    # handshake). Later ones: accepted and never answered, so the last dial only
    # ends with the call's deadline. The error must still name the TLS mismatch.
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    held: list[trio.SocketStream] = []

    async def serve() -> None:
        first = True
        while True:
            stream = await listener.accept()
            if first:
                first = False
                await stream.aclose()
            else:
                held.append(stream)

    files = TLSFiles.create(tmp_path / "tls")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        async with AsyncClient(
            [f"127.0.0.1:{port}"], tls=TLSConfig(ca_file=files.ca_file), request_timeout=1.0
        ) as client:
            with pytest.raises(ClusterUnreachableError, match="does the node serve TLS"):
                await client.request("metadata")
        nursery.cancel_scope.cancel()
    assert held  # the later dials did hang until the deadline
    for stream in held:
        await stream.aclose()
    await listener.aclose()
