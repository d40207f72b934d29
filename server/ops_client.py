"""A small blocking admin session for the operator commands (server/cli_ops.py).

Like ``cli_node.request_once`` it speaks the wire protocol directly, so the
operator tools work even when the client library does not, but it keeps the
error reply's code and details: the day-2 operations follow NOT_LEADER
redirects to the leader that can do the next step, and retry an incomplete
(TIMEOUT) step, since every operation continues where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import FrameDecoder, encode_frame, hello

# Codes after which the same request is simply sent again (elsewhere).
_RETRY = frozenset({ErrorCode.NOT_LEADER, ErrorCode.NOT_AVAILABLE, ErrorCode.TIMEOUT})
BACKOFF_S = 0.2


class OpsError(Exception):
    """The cluster answered with an error (exit code 1)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}


class UnreachableError(Exception):
    """No node could be asked (exit code 3)."""


def call(
    address: str,
    op: str,
    fields: dict[str, Any],
    timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
    credential: str | None = None,
) -> dict[str, Any]:
    """One request on a fresh connection: the reply, or OpsError / UnreachableError.

    ``ssl_context``: connect with TLS (nodes with [tls]), checking the node's host.
    ``credential``: the hello's token, for nodes with [auth].
    """
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    frames: list[dict[str, Any]] = []
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(
                socket.create_connection((host, int(port)), timeout=min(timeout_s, 5.0))
            )
            if ssl_context is not None:
                sock = stack.enter_context(
                    ssl_context.wrap_socket(sock, server_hostname=host.strip("[]"))
                )
            sock.sendall(
                encode_frame(hello("client", f"raftlog-ops-{os.getpid()}", credential=credential))
                + encode_frame({"type": op, "id": 1, **fields})
            )
            decoder = FrameDecoder()
            while len(frames) < 2:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UnreachableError(f"{address}: no reply within {timeout_s:.1f}s")
                sock.settimeout(remaining)
                data = sock.recv(1 << 20)
                if not data:
                    break
                frames += decoder.feed(data)
    except (OSError, ValueError) as exc:
        raise UnreachableError(f"{address}: {exc}") from None
    for frame in frames:
        if frame.get("ok") is False:
            details = {
                k: v for k, v in frame.items() if k not in ("ok", "id", "error", "message", "type")
            }
            raise OpsError(str(frame.get("error")), str(frame.get("message")), details)
    if len(frames) < 2:
        raise UnreachableError(f"{address}: connection closed before the reply")
    return frames[1]


@dataclass
class AdminSession:
    """Operator requests against a cluster, given a few of its addresses."""

    addresses: list[str]
    timeout_s: float = 60.0
    request_timeout_s: float = 30.0
    log: list[str] = field(default_factory=list)
    ssl_context: ssl.SSLContext | None = None  # TLS to nodes with [tls]
    credential: str | None = None  # the hello's token, for nodes with [auth]

    def any(self, op: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        """The first node that answers (errors are the cluster's answer)."""
        problems = []
        for address in self.addresses:
            try:
                return call(
                    address,
                    op,
                    fields or {},
                    min(self.request_timeout_s, 5.0),
                    self.ssl_context,
                    self.credential,
                )
            except UnreachableError as exc:
                problems.append(str(exc))
        raise UnreachableError("; ".join(problems) or "no address to contact")

    def learn(self, addresses: list[str]) -> None:
        for address in addresses:
            if address and address not in self.addresses:
                self.addresses.append(address)

    def follow(
        self, op: str, fields: dict[str, Any], start: str | None = None, deadline: float = 0.0
    ) -> dict[str, Any]:
        """Send ``op`` to the node that can do it: follow redirects, retry
        NOT_AVAILABLE/TIMEOUT (operations are idempotent) until the deadline."""
        deadline = deadline or time.monotonic() + self.timeout_s
        order = ([start] if start else []) + [a for a in self.addresses if a != start]
        target = order[0] if order else None
        rotation = 0
        last: Exception | None = None
        while True:
            if target is None:
                raise UnreachableError("no address to contact")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise last or UnreachableError(f"{op}: no answer before the deadline")
            budget = min(self.request_timeout_s, remaining)
            try:
                timed = {**fields, "timeout_ms": int(budget * 1000)}
                return call(target, op, timed, budget + 2, self.ssl_context, self.credential)
            except OpsError as exc:
                if exc.code not in _RETRY:
                    raise
                last = exc
                self.log.append(f"{target}: {exc}")
                leader_address = exc.details.get("leader_address")
                if exc.code == ErrorCode.NOT_LEADER and leader_address:
                    self.learn([leader_address])
                    if leader_address != target:
                        target = leader_address
                        continue
            except UnreachableError as exc:
                last = exc
                self.log.append(str(exc))
            rotation += 1
            target = order[rotation % len(order)]
            time.sleep(min(BACKOFF_S, max(0.0, deadline - time.monotonic())))
