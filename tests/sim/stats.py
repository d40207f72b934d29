"""Session totals of the simulation ring, printed in pytest's terminal summary.

The README quotes "N randomized schedules, M simulated ticks" from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .schedule import SimResult


@dataclass(slots=True)
class SessionStats:
    schedules: int = 0
    ticks: int = 0
    proposals: int = 0
    acked: int = 0
    reads: int = 0
    checks: int = 0
    # Process CPU seconds spent in recorded schedules (wall time on a shared
    # CI box says little; this is what the ring costs).
    cpu_seconds: float = 0.0

    def record(self, r: SimResult, cpu_seconds: float = 0.0) -> None:
        self.cpu_seconds += cpu_seconds
        self.schedules += 1
        self.ticks += r.ticks
        self.proposals += r.proposals
        self.acked += r.acked
        self.reads += r.reads
        self.checks += r.checks

    def summary(self) -> str:
        return (
            f"simulation: {self.schedules} schedules, {self.ticks} ticks, "
            f"{self.proposals} proposals ({self.acked} acknowledged), {self.reads} linearizable "
            f"reads, {self.checks} invariant checks, {self.cpu_seconds:.1f}s CPU"
        )


SESSION = SessionStats()
