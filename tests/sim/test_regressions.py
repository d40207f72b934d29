"""Seeds that once exposed a real bug in raftlog.raft, replayed forever.

Each case in ``seeds.CORE_BUG_SEEDS`` carries a note of the bug. A case the
core has not fixed yet is marked xfail(strict=True), so the fix turns it
into a failure that asks for the mark to be removed; invariants are never
loosened to make a seed pass.
"""

from __future__ import annotations

import pytest

from .schedule import run_seed
from .seeds import CORE_BUG_SEEDS, CoreBugSeed
from .stats import SESSION


def _cases() -> list[object]:
    return [
        pytest.param(
            case,
            id=f"seed{case.seed}-n{case.n_nodes}",
            marks=[pytest.mark.xfail(strict=True, reason=case.bug)] if case.still_broken else [],
        )
        for case in CORE_BUG_SEEDS
    ]


@pytest.mark.skipif(not CORE_BUG_SEEDS, reason="no core bug found by the simulator so far")
@pytest.mark.parametrize("case", _cases())
def test_core_bug_seed_passes(case: CoreBugSeed) -> None:
    r = run_seed(case.seed, case.n_nodes, length=case.length)
    SESSION.record(r)
    assert r.settle_ticks > 0  # the liveness phase ran and converged
