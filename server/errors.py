"""Exceptions the server layers raise to each other.

Errors are values at the wire (DESIGN.md §8): a request handler raises
``HandlerError`` and the listener turns it into an error reply with the same
stable code; nothing else about the exception leaves the node.
"""

from __future__ import annotations

from typing import Any

from raftlog.client.errors import ErrorCode


class HandlerError(Exception):
    """A request failed with a wire error code; ``details`` go into the reply."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.details = details


class ConfigError(Exception):
    """cluster.toml is unusable; the message names the file, the key and the problem."""
