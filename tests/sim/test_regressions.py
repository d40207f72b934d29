"""Seeds that once exposed a real bug in raftlog.raft, replayed forever.

Each case in ``seeds.CORE_BUG_SEEDS`` carries a note of the bug. A case the
core has not fixed yet is marked xfail(strict=True), so the fix turns it
into a failure that asks for the mark to be removed; invariants are never
loosened to make a seed pass.

A seed means something only for one version of schedule generation. The one
core bug the simulator found so far (a removed stale leader "leading" forever
without PreVote/CheckQuorum, seed 42928 at tests/sim@6fe5c57, fixed in
raft a08c547) is therefore pinned as a hand-written scenario in
``test_disruption.py``; no seed of the current generation reproduces it on
the unfixed core (1,500 scanned).
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


@pytest.mark.skipif(
    not CORE_BUG_SEEDS,
    reason="no core-bug seed in the current schedule generation (see module docstring)",
)
@pytest.mark.parametrize("case", _cases())
def test_core_bug_seed_passes(case: CoreBugSeed) -> None:
    r = run_seed(case.seed, case.n_nodes, length=case.length)
    SESSION.record(r)
    assert r.settle_ticks > 0  # the liveness phase ran and converged
