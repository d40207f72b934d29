"""The ``limit`` nemesis: the topic's ``max_message_bytes`` lowered under load.

An operator may lower a topic's record-batch limit while producers are
running. Batches sealed under the old limit are then refused as too large;
the batching Producer splits them and sends the pieces in their place under
the sequence numbers they held (Kafka's KIP-126), and a record too large by
itself fails for good (RECORD_TOO_LARGE: it was never appended). Start sets
the limit to one of ``LIMITS_BYTES``, stop removes it again, through the
metadata group like any ``raftlog topic alter``.

The limits are small because the workloads' records are: a record of the
``log`` and ``producer`` workloads (a decimal integer, no key, no headers, the
leader's timestamp) encodes to 8-13 bytes. 4 refuses every record (each send
must then fail definitely and never be read, and the idempotent producer moves
to a fresh producer id), 24 fits two records to a batch, 64 about five, well
under the producer workload's 512-byte batches.

The change goes through Raft like any other write, so it can fail or time out
under the other faults; such a start is recorded with its error, and the
limit is removed again at stop and at the heal (retried until
``restore_deadline``). Whether or not a change landed, every checker stage
applies unchanged: splitting must not lose, duplicate or reorder anything.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from raftlog.client.errors import RaftlogError

log = logging.getLogger(__name__)

LIMITS_BYTES = (4, 24, 64)
CONFIG_KEY = "max_message_bytes"

SetTopicConfig = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass
class TopicLimit:
    """Lowers and restores one topic's ``max_message_bytes``."""

    set_config: SetTopicConfig  # alters the run's topic: {key: value or None (remove)}
    limits: tuple[int, ...] = LIMITS_BYTES
    call_deadline: float = 10.0  # one alter, under whatever else is going on
    restore_deadline: float = 30.0
    failures: list[str] = field(default_factory=list)  # limits never removed
    _lowered: bool = False  # a lowering was attempted and not undone yet

    async def _alter(self, value: int | None) -> str | None:
        """One attempt; the error's name if it failed or timed out (outcome unknown)."""
        try:
            with trio.fail_after(self.call_deadline):
                await self.set_config({CONFIG_KEY: value})
        except (RaftlogError, trio.TooSlowError) as exc:
            return f"{type(exc).__name__}: {exc}"[:200]
        return None

    async def lower(self, rng: random.Random) -> dict[str, Any]:
        limit = rng.choice(self.limits)
        self._lowered = True  # even if the call fails: it may have landed
        error = await self._alter(limit)
        value: dict[str, Any] = {"bytes": limit}
        if error:
            value["error"] = error
            log.info("event=topic_limit_not_lowered bytes=%s error=%s", limit, error)
        return value

    async def restore(self, *, final: bool = False) -> dict[str, Any]:
        """Remove the limit, retrying until ``restore_deadline``; ``final`` (the
        heal): a limit still in place is a failure of the run."""
        if not self._lowered:
            return {}
        attempts = 0
        error: str | None = None
        with trio.move_on_after(self.restore_deadline):
            while True:
                attempts += 1
                error = await self._alter(None)
                if error is None:
                    self._lowered = False
                    return {"attempts": attempts}
                await trio.sleep(0.5)  # the next try, after a failed round trip
        if final:
            self.failures.append(
                f"topic {CONFIG_KEY} not removed within {self.restore_deadline}s: {error}"
            )
        log.error("event=topic_limit_not_restored error=%s", error)
        return {"attempts": attempts, "error": error}
