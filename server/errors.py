"""Exceptions the server layers raise to each other.

Errors are values at the wire (DESIGN.md §8): a request handler raises
``HandlerError`` and the listener turns it into an error reply with the same
stable code; nothing else about the exception leaves the node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
from raftlog.client.errors import ErrorCode

if TYPE_CHECKING:
    from .waiters import Outcome


# How long a request may take when it gives no ``timeout_ms``.
DEFAULT_REQUEST_TIMEOUT_S = 10.0


def request_deadline(fields: dict[str, Any], default_s: float = DEFAULT_REQUEST_TIMEOUT_S) -> float:
    """The trio deadline of a request: its ``timeout_ms`` when positive, else ``default_s``."""
    timeout_ms = fields.get("timeout_ms")
    seconds = timeout_ms / 1000.0 if timeout_ms and timeout_ms > 0 else default_s
    return trio.current_time() + seconds


class HandlerError(Exception):
    """A request failed with a wire error code; ``details`` go into the reply."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.details = details


def raise_outcome(outcome: Outcome) -> Any:
    """The value of a proposal's outcome, or HandlerError with its code."""
    if outcome.error is not None:
        raise HandlerError(outcome.error, outcome.message, **outcome.details)
    return outcome.value


def raise_result_error(result: Any) -> None:
    """State machine results carry errors as values (e.g. TOPIC_EXISTS)."""
    error = getattr(result, "error", None)
    if error:
        code = ErrorCode(error) if not isinstance(error, ErrorCode) else error
        message = getattr(result, "message", None) or code.value
        raise HandlerError(code, str(message))


def out_of_range(offset: int, start: int, end: int) -> HandlerError:
    """OUT_OF_RANGE for a read at ``offset`` of a partition holding [start, end)."""
    return HandlerError(
        ErrorCode.OUT_OF_RANGE,
        f"offset {offset} outside [{start}, {end}]",
        start_offset=start,
        end_offset=end,
    )


class ConfigError(Exception):
    """cluster.toml is unusable; the message names the file, the key and the problem."""
