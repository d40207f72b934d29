"""Background rounds: retention, compaction and offsets retention each run one
round every ``interval_s`` on every node, for the node's whole life."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio


async def run_rounds(
    interval_s: float,
    one_round: Callable[[], Awaitable[object]],
    log: logging.Logger,
    what: str,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Await ``one_round()`` every ``interval_s``. A round that raises is logged
    (``event=<what>_error``) and the next one runs: a background round must
    never take the node down."""
    task_status.started()
    while True:
        await trio.sleep(interval_s)
        try:
            await one_round()
        except Exception:
            log.exception("event=%s_error", what)
