"""The Raft safety invariants, checked incrementally while a simulation runs.

The cluster calls the ``on_*`` hooks at the moment the observed state changes
(a message stepped, a Ready persisted, an entry applied), so a violation is
reported at the first step that shows it. Every check is O(1) or O(log n)
per event; nothing rescans whole logs on the hot path (a final full scan runs
once per schedule in :meth:`Checker.final_check`).

What is checked (Raft paper, Figure 3 and §5.4; thesis §6.4 for reads):

- Election Safety: at most one leader per term, ever, across the whole run.
- Log Matching, on the *durable* logs: an entry (index, term) is created once,
  by the leader of that term, so every durable copy of it must carry the same
  data and follow an entry of the same term. By induction this is exactly
  "same index and term => identical prefixes".
- Leader Completeness: an entry committed in term X is in the log of every
  leader of a later term. Checked on durable logs: a log whose last term T is
  greater than X was (by Log Matching) written by the leader of T and must
  hold the committed entry at its index.
- State Machine Safety: no two nodes apply different entries at one index,
  and what any node's durable commit index covers agrees with that.
- Commit durability (checked by the cluster, which sees the disks): when a
  leader's commit index moves, a majority of each voter group of its
  configuration holds the entry on disk.
- Commit monotonicity: a node's in-memory commit index never decreases within
  one incarnation; the durable commit (HardState.commit) never decreases.
- Linearizable reads: a ReadIndex answer is at least the index of every entry
  known committed (acknowledged to a client or not) before the read was issued.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from raftlog.raft.types import Entry, NodeId


def default_replay(seed: int, n_nodes: int) -> str:
    return f"python -m tests.sim.replay --seed {seed} --nodes {n_nodes}"


class SimulationFailure(AssertionError):
    """An invariant violation, with what is needed to replay it."""


@dataclass(slots=True)
class ChosenEntry:
    term: int
    data: bytes
    source: str  # who first showed it committed, for the error message


@dataclass(slots=True)
class Checker:
    seed: int
    n_nodes: int
    # Set by the cluster before each event so messages can say where we are.
    step: int = 0
    leaders: dict[int, NodeId] = field(default_factory=dict)
    # (index, term) -> (data, term of index-1): the identity of every entry
    # that has ever been durable anywhere.
    facts: dict[tuple[int, int], tuple[bytes, int]] = field(default_factory=dict)
    # chosen[i-1] is the committed entry at index i (None if only its index is
    # known, e.g. covered by a snapshot before anyone showed it).
    chosen: list[ChosenEntry | None] = field(default_factory=list)
    # commit_term[i-1]: an upper bound of the term in which index i was
    # committed, kept non-decreasing (committing j commits all i < j, so
    # min over j >= i is still an upper bound) so a bisect finds the highest
    # index committed before a given term.
    commit_term: list[int] = field(default_factory=list)
    durable_commit: dict[NodeId, int] = field(default_factory=dict)
    durable_vote: dict[NodeId, tuple[int, NodeId | None]] = field(default_factory=dict)
    checks: int = 0
    # How to reproduce this run; set by the driver that built the schedule.
    replay: str = ""

    # ---- error reporting ----------------------------------------------------

    def fail(self, invariant: str, detail: str) -> None:
        raise SimulationFailure(
            f"{invariant} violated (seed={self.seed} nodes={self.n_nodes} step={self.step}): "
            f"{detail}\n  replay: "
            + (self.replay or default_replay(self.seed, self.n_nodes))
        )

    # ---- election safety ------------------------------------------------------

    def on_leader(self, node: NodeId, term: int) -> None:
        self.checks += 1
        prev = self.leaders.get(term)
        if prev is None:
            self.leaders[term] = node
        elif prev != node:
            self.fail("Election Safety", f"two leaders in term {term}: {prev} and {node}")

    # ---- commit monotonicity ---------------------------------------------------

    def on_commit_regress(self, node: NodeId, before: int, after: int, incarnation: int) -> None:
        self.fail(
            "Commit monotonicity",
            f"{node} (incarnation {incarnation}) commit index went {before} -> {after}",
        )

    # ---- durable state -----------------------------------------------------------

    def on_persist_entries(self, node: NodeId, entries: list[Entry], prev_term: int) -> None:
        """Log Matching for a batch of entries just made durable on ``node``.

        ``prev_term`` is the durable term of the entry before the first one.
        """
        facts = self.facts
        for e in entries:
            self.checks += 1
            key = (e.index, e.term)
            seen = facts.get(key)
            if seen is None:
                facts[key] = (e.data, prev_term)
            elif seen != (e.data, prev_term):
                self.fail(
                    "Log Matching",
                    f"{node} persisted entry index={e.index} term={e.term} data={e.data!r} "
                    f"prev_term={prev_term}, but another durable copy has data={seen[0]!r} "
                    f"prev_term={seen[1]}",
                )
            prev_term = e.term

    def on_hard_state(self, node: NodeId, term: int, vote: NodeId | None) -> None:
        """Durable term never decreases; one durable vote per term (Raft §5.2, Figure 2)."""
        self.checks += 1
        prev = self.durable_vote.get(node)
        if prev is not None:
            prev_term, prev_vote = prev
            if term < prev_term:
                self.fail(
                    "Durable term monotonicity", f"{node} hard state term {prev_term} -> {term}"
                )
            if term == prev_term and prev_vote is not None and vote != prev_vote:
                self.fail(
                    "One vote per term",
                    f"{node} durably voted for {prev_vote} in term {term}, now for {vote}",
                )
        self.durable_vote[node] = (term, vote)

    def on_durable_commit(
        self, node: NodeId, term: int, commit: int, log_entry: Callable[[int], Entry | None]
    ) -> None:
        """``node`` durably recorded HardState(term, commit).

        ``log_entry(i)`` returns the node's durable entry at ``i`` or None if
        compacted. Every newly covered index is recorded as chosen (or checked
        against what was chosen) with ``term`` as its commit-term bound.
        """
        before = self.durable_commit.get(node, 0)
        if commit < before:
            self.fail(
                "Durable commit monotonicity", f"{node} hard state commit {before} -> {commit}"
            )
        self.durable_commit[node] = commit
        for i in range(before + 1, commit + 1):
            e = log_entry(i)
            if e is None:
                self._note_commit_index(i, term)
            else:
                self._choose(i, e.term, e.data, f"{node} durable commit={commit}", term)

    def _note_commit_index(self, index: int, term: int) -> None:
        while len(self.chosen) < index:
            self.chosen.append(None)
            self.commit_term.append(term)
        self._lower_commit_term(index, term)

    def _lower_commit_term(self, index: int, term: int) -> None:
        ct = self.commit_term
        i = index - 1
        while i >= 0 and ct[i] > term:
            ct[i] = term
            i -= 1

    def _choose(self, index: int, term: int, data: bytes, source: str, commit_term: int) -> None:
        self.checks += 1
        chosen = self.chosen
        if index > len(chosen):
            self._note_commit_index(index, commit_term)
        c = chosen[index - 1]
        if c is None:
            chosen[index - 1] = ChosenEntry(term, data, source)
        elif c.term != term or c.data != data:
            self.fail(
                "State Machine Safety",
                f"index {index}: {source} has term={term} data={data!r}, but {c.source} "
                f"had term={c.term} data={c.data!r}",
            )
        self._lower_commit_term(index, commit_term)

    def on_apply(self, node: NodeId, entry: Entry, term_now: int) -> None:
        self._choose(entry.index, entry.term, entry.data, f"{node} applied", term_now)

    def check_leader_completeness(
        self,
        node: NodeId,
        last_index: int,
        last_term: int,
        first_index: int,
        term_at: Callable[[int], int],
        what: str = "durable log",
    ) -> None:
        """Leader Completeness on a log (see module docstring).

        On a durable log ``last_term`` is its last entry's term. On a new
        leader's in-memory log it is the leader's term: every entry committed
        in an earlier term must already be there when it takes office (§5.4).
        """
        # Highest index committed in a term strictly below last_term.
        hi = bisect.bisect_left(self.commit_term, last_term)
        if hi == 0:
            return
        self.checks += 1
        c = self.chosen[hi - 1]
        if hi > last_index:
            self.fail(
                "Leader Completeness",
                f"{node}'s {what} ends at index {last_index} (term {last_term}) but index "
                f"{hi} was committed in term <= {self.commit_term[hi - 1]}"
                + (f" (term={c.term} data={c.data!r}, {c.source})" if c else ""),
            )
        if c is None:
            return
        if hi >= first_index:
            got = term_at(hi)
            if got != c.term:
                self.fail(
                    "Leader Completeness",
                    f"{node}'s {what} (term {last_term}) has term {got} at index {hi}, "
                    f"but the committed entry there has term {c.term} data={c.data!r} "
                    f"({c.source})",
                )
        else:
            # Covered by the node's snapshot: its boundary must be a committed entry.
            snap_index = first_index - 1
            if snap_index <= len(self.chosen):
                s = self.chosen[snap_index - 1]
                got = term_at(snap_index)
                if s is not None and got != s.term:
                    self.fail(
                        "Leader Completeness",
                        f"{node}'s snapshot at index {snap_index} has term {got}, committed "
                        f"entry there has term {s.term}",
                    )

    def check_snapshot_contents(
        self, node: NodeId, contents: list[tuple[int, bytes]]
    ) -> None:
        """A state-machine snapshot installed on ``node`` must agree with what was chosen."""
        for i, (term, data) in enumerate(contents, start=1):
            self._choose(i, term, data, f"{node} installed snapshot", 1 << 62)

    # ---- reads ------------------------------------------------------------------

    def on_read_state(self, node: NodeId, ctx: bytes, index: int, min_index: int) -> None:
        self.checks += 1
        if index < min_index:
            self.fail(
                "Linearizable read",
                f"{node} answered read {ctx!r} with read index {index}, but index {min_index} "
                f"was committed before the read was issued",
            )
