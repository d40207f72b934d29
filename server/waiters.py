"""One-shot result slots that request handlers await while the driver works.

A handler never touches a Raft core: it queues a command or a read in the
driver and awaits a ``Waiter``. The driver, the only task that drives the
cores, resolves the waiter with a value or an error code once the outcome is
known. A waiter whose handler gave up (deadline) may still be resolved later;
that is harmless, nobody reads it any more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from raftlog.client.errors import ErrorCode

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    """What the driver decided about one request."""

    value: Any = None
    error: ErrorCode | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class Waiter:
    """A result slot plus the event that announces it (first resolution wins)."""

    __slots__ = ("_callback", "_event", "nbytes", "outcome")

    def __init__(self, nbytes: int = 0) -> None:
        self._event = trio.Event()
        self._callback: Callable[[Outcome], None] | None = None
        self.outcome: Outcome | None = None
        # Payload size of the request's command, for flow control.
        self.nbytes = nbytes

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def on_done(self, fn: Callable[[Outcome], None]) -> None:
        """Call ``fn(outcome)`` when resolved (now, if it already is).

        For requests answered without a task of their own (the listener's fast
        path): ``fn`` runs inside the driver's turn, so it must not block.
        """
        if self.outcome is not None:
            fn(self.outcome)
        else:
            self._callback = fn

    def resolve(self, value: Any = None) -> None:
        if self.outcome is None:
            self._finish(Outcome(value=value))

    def fail(self, code: ErrorCode, message: str, **details: Any) -> None:
        if self.outcome is None:
            self._finish(Outcome(error=code, message=message, details=details))

    def time_out(self) -> None:
        """TIMEOUT unless already resolved: the outcome is unknown (DESIGN §3.3)."""
        self.fail(ErrorCode.TIMEOUT, "request timed out; the outcome is unknown")

    def _finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self._event.set()
        callback, self._callback = self._callback, None
        if callback is not None:
            try:
                callback(outcome)
            except Exception:  # one request's bug must not break the driver's turn
                log.exception("event=waiter_callback_failed")

    async def wait(self, deadline: float) -> Outcome:
        """The outcome, or TIMEOUT at ``deadline`` (trio clock): outcome unknown (DESIGN §3.3)."""
        with trio.move_on_at(deadline):
            await self._event.wait()
        # Mark it so a late resolution by the driver is ignored.
        self.time_out()
        assert self.outcome is not None
        return self.outcome
