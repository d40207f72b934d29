"""Simulation-ring fixtures: quiet core logs, session totals in the summary."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from .stats import SESSION


@pytest.fixture(autouse=True, scope="module")
def _quiet_core_logs() -> Iterator[None]:
    # Thousands of simulated elections would print thousands of warnings
    # (check_quorum_failed ...) and cost time; restore the level afterwards.
    logger = logging.getLogger("raftlog.raft")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SESSION.schedules:
        terminalreporter.write_sep("-", SESSION.summary())
