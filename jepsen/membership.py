"""The membership nemesis: add and remove nodes, move partitions, transfer leaders.

It runs as its own task, beside the kill / pause / partition schedule, so that
membership changes race with crashes and network faults. Every change goes
through the client admin API (``member_add``, ``member_remove``,
``partition_reassign``, ``leader_transfer``), never through raft/ or log/.

Rules it keeps, whatever the other faults do:

- at most one change in flight: operations run one after another, and an
  operation whose outcome was not ``ok`` (timeout, leader lost ...) is
  retried first, before any other change, because the server's changes are
  idempotent (a retry continues the change where it stopped);
- never below ``min_voters`` (3) voters in the metadata group: a node whose
  addition is unconfirmed does not count, a node whose removal started no
  longer counts;
- a node is removed as an operator would (``raftlog member remove``): each
  partition it holds is first moved to another voter, then it leaves the
  metadata group; the harness then kills it and wipes its data dir, so that it
  can come back later as a NEW incarnation under the same id (started with
  ``join = true``, then ``member add``; DESIGN §3 rule 7), unless ``rejoin``
  is off.

Each operation is a ``start-membership`` / ``stop-membership`` pair of nemesis
lines; the stop carries ``outcome`` (``ok``, ``fail``: the server refused,
``unknown``: it may or may not have happened) and the error. ``regrow`` runs
after the other faults are healed: it finishes a pending change and adds
nodes back until the original voter count is reached again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import ErrorCode, RaftlogError

from .history import NEMESIS, Op, Recorder

log = logging.getLogger(__name__)

MIN_VOTERS = 3
# Roles of ``member_list`` that are voters of the metadata group.
VOTER_ROLES = frozenset({"voter", "controller_leader"})
# Server answers that are properties of the request: retrying the same change
# cannot succeed, so it is given up rather than retried forever.
REFUSALS = frozenset({ErrorCode.INVALID_REQUEST, ErrorCode.UNKNOWN_TOPIC,
                      ErrorCode.UNKNOWN_PARTITION})
MAX_ATTEMPTS = 4  # of one change (the first try and its retries)
MIN_REPLICAS = 3  # a removal's drain never shrinks a partition below this


class MemberOp(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    MOVE = "move"
    TRANSFER = "transfer"


# Node changes are the rarer, riskier operations: weigh them up.
OP_WEIGHTS = {MemberOp.ADD: 3.0, MemberOp.REMOVE: 3.0, MemberOp.MOVE: 2.0, MemberOp.TRANSFER: 1.0}


class Outcome(StrEnum):
    OK = "ok"
    FAIL = "fail"  # refused by the server: nothing changed (or nothing more will)
    UNKNOWN = "unknown"  # timed out, connection lost, leader lost: maybe half done


@dataclass(slots=True, frozen=True)
class PartitionView:
    partition: int
    replicas: tuple[str, ...]
    leader: str | None


@dataclass(slots=True)
class Change:
    """One planned operation (the value of its start line)."""

    op: MemberOp
    node: str | None = None
    partition: int | None = None
    replicas: tuple[str, ...] = ()
    attempt: int = 1

    def to_value(self) -> dict[str, Any]:
        value: dict[str, Any] = {"op": self.op.value, "attempt": self.attempt}
        if self.node is not None:
            value["node"] = self.node
        if self.partition is not None:
            value["partition"] = self.partition
        if self.replicas:
            value["replicas"] = list(self.replicas)
        return value


class Admin(Protocol):
    """What the nemesis asks of the cluster (the client admin API, or a fake)."""

    async def voters(self) -> set[str]: ...
    async def partitions(self) -> list[PartitionView]: ...
    async def add(self, node: str, address: str) -> None: ...
    async def remove(self, node: str) -> None: ...
    async def reassign(self, partition: int, replicas: Sequence[str]) -> None: ...
    async def transfer(self, partition: int, to: str) -> None: ...


class MemberCluster(Protocol):
    """The process side of a change (``JepsenCluster``, or a fake)."""

    def address(self, nid: str) -> str: ...
    def start(self, nid: str) -> None: ...
    async def wait_started(self, nid: str, deadline: float) -> None: ...
    def kill(self, nid: str) -> None: ...
    def wipe(self, nid: str) -> None: ...
    def set_join(self, nid: str) -> None: ...


@dataclass
class ClientAdmin:
    """``Admin`` over the client library's admin API, for one topic."""

    client: AsyncClient
    topic: str
    budget_s: float = 20.0

    async def voters(self) -> set[str]:
        return {m["id"] for m in await self.client.member_list() if m.get("role") in VOTER_ROLES}

    async def partitions(self) -> list[PartitionView]:
        meta = await self.client.metadata()
        for t in meta.get("topics") or []:
            if t.get("name") == self.topic:
                return [PartitionView(int(p["partition"]), tuple(p.get("replicas") or ()),
                                      p.get("leader"))
                        for p in t.get("partitions") or []]
        return []

    async def add(self, node: str, address: str) -> None:
        await self.client.member_add(node, address, budget_s=self.budget_s)

    async def remove(self, node: str) -> None:
        await self.client.member_remove(node, budget_s=self.budget_s)

    async def reassign(self, partition: int, replicas: Sequence[str]) -> None:
        await self.client.partition_reassign(self.topic, partition, list(replicas),
                                             budget_s=self.budget_s)

    async def transfer(self, partition: int, to: str) -> None:
        await self.client.leader_transfer(self.topic, partition, to,
                                          budget_s=self.budget_s / 2)


def summary(ops: Iterable[Op]) -> dict[str, dict[str, int]]:
    """Membership operations of a history by kind and outcome (from the stop lines)."""
    out: dict[str, dict[str, int]] = {}
    for op in ops:
        if op.process == NEMESIS and op.f == "stop-membership" and isinstance(op.value, dict):
            by = out.setdefault(str(op.value.get("op")), {})
            outcome = str(op.value.get("outcome"))
            by[outcome] = by.get(outcome, 0) + 1
    return out


class Infeasible(Exception):
    """The harness cannot do this change (nothing was asked of the cluster)."""


def classify(exc: BaseException) -> Outcome:
    if isinstance(exc, Infeasible):
        return Outcome.FAIL
    if isinstance(exc, RaftlogError) and exc.code in REFUSALS:
        return Outcome.FAIL
    return Outcome.UNKNOWN


@dataclass
class MembershipNemesis:
    """Seeded membership changes; ``live`` is shared with the process faults."""

    cluster: MemberCluster
    admin: Admin
    recorder: Recorder
    rng: random.Random
    initial: Sequence[str]
    spares: Sequence[str]
    live: set[str]  # nodes the harness wants running (kill/pause pick from these)
    min_voters: int = MIN_VOTERS
    start_deadline: float = 30.0
    # May a removed node come back (wiped, as a new incarnation)? Off, a run
    # only adds spares that never ran: a way around a known bug of rejoining
    # nodes while it is open (see tests/jepsen/test_found_anomalies.py).
    rejoin: bool = True
    removed: set[str] = field(default_factory=set)
    voters: set[str] = field(default_factory=set)
    pending: Change | None = None
    history: list[tuple[Change, Outcome]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # liveness problems for the report
    in_flight: int = 0  # >1 would be a bug: one change at a time
    # After an add or remove was given up, our view of the voters may be wrong:
    # the next plan reads the cluster's before anything else.
    resync: bool = False

    def __post_init__(self) -> None:
        if len(self.initial) < self.min_voters:
            raise ValueError(f"the membership nemesis needs at least {self.min_voters} nodes")
        self.voters = set(self.initial)

    @property
    def pool(self) -> list[str]:
        return [*self.initial, *self.spares]

    def stable_voters(self) -> list[str]:
        """Voters not being added or removed right now (safe replica targets)."""
        busy = {self.pending.node} if self.pending and self.pending.node else set()
        return sorted(self.voters - busy)

    def outside(self) -> list[str]:
        """Nodes an add may bring in."""
        return [n for n in self.pool if n not in self.voters
                and (self.rejoin or n not in self.removed)]

    def counted_voters(self) -> int:
        """Voters for the min_voters rule: a pending removal no longer counts."""
        if self.pending is not None and self.pending.op is MemberOp.REMOVE:
            return len(self.voters - {self.pending.node})
        return len(self.voters)

    # ------------------------------------------------------------ planning

    async def plan(self) -> Change | None:
        """The next change: the pending one first, else a random possible one."""
        if self.pending is not None:
            p = self.pending
            return Change(p.op, p.node, p.partition, p.replicas, p.attempt + 1)
        if self.resync:
            await self._resync()
        weights = dict(OP_WEIGHTS)
        outside = self.outside()
        if not outside:
            del weights[MemberOp.ADD]
        if self.counted_voters() <= self.min_voters:
            del weights[MemberOp.REMOVE]
        op = self.rng.choices(list(weights), list(weights.values()))[0]
        if op is MemberOp.ADD:
            return Change(op, node=self.rng.choice(outside))
        if op is MemberOp.REMOVE:
            return Change(op, node=self.rng.choice(sorted(self.voters)))
        parts = await self.admin.partitions()
        if not parts:
            return None
        p = self.rng.choice(parts)
        if op is MemberOp.TRANSFER:
            others = [r for r in p.replicas if r != p.leader]
            if not others:
                return None
            return Change(op, partition=p.partition, node=self.rng.choice(others))
        candidates = self.stable_voters()
        size = len(p.replicas) or min(3, len(candidates))
        if len(candidates) < size:
            return None
        for _ in range(8):
            new = tuple(self.rng.sample(candidates, size))
            if set(new) != set(p.replicas):
                return Change(op, partition=p.partition, replicas=new)
        return None  # no other replica set exists (as many voters as replicas)

    # ------------------------------------------------------------ execution

    async def step(self) -> Outcome | None:
        """Plan and run one change, recorded as a start/stop pair."""
        try:
            change = await self.plan()
        except (RaftlogError, OSError) as exc:
            self.recorder.nemesis("membership-skipped", {"error": f"no cluster view: {exc}"})
            return None
        if change is None:
            return None
        return await self.execute(change)

    async def execute(self, change: Change) -> Outcome:
        self.in_flight += 1
        value = change.to_value()
        self.recorder.nemesis("start-membership", value)
        log.info("event=membership_start value=%s", value)
        detail: dict[str, Any] = {}
        try:
            await self._do(change, detail)
            outcome, error = Outcome.OK, None
        except (RaftlogError, OSError, RuntimeError, trio.TooSlowError, Infeasible) as exc:
            outcome = classify(exc)
            error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            self.in_flight -= 1
        self._settle(change, outcome)
        stop = {**value, **detail, "outcome": outcome.value}
        if error:
            stop["error"] = error
        self.recorder.nemesis("stop-membership", stop)
        log.info("event=membership_stop value=%s", stop)
        self.history.append((change, outcome))
        return outcome

    def _settle(self, change: Change, outcome: Outcome) -> None:
        """Book-keeping after a change; decides whether it stays pending."""
        if outcome is Outcome.OK:
            self.pending = None
            return
        if change.op in (MemberOp.ADD, MemberOp.REMOVE) and change.attempt < MAX_ATTEMPTS \
                and outcome is Outcome.UNKNOWN:
            self.pending = change  # half done, maybe: continue it before anything else
            return
        if change.op is MemberOp.MOVE and change.attempt < MAX_ATTEMPTS \
                and outcome is Outcome.UNKNOWN:
            # A group left with learners or in a joint config: finish the move.
            self.pending = change
            return
        self.pending = None
        if change.op in (MemberOp.ADD, MemberOp.REMOVE):
            log.warning("event=membership_abandoned change=%s outcome=%s", change, outcome)
            self.resync = True

    async def _resync(self) -> None:
        """Take the cluster's voters as ours (a given-up change may have happened)."""
        seen = await self.admin.voters()
        self.resync = False
        for node in sorted(self.voters - seen):
            # Removed after all: finish the harness side of the removal.
            self._retire(node)
        self.voters |= seen & set(self.pool)
        self.recorder.nemesis("membership-resync", {"voters": sorted(self.voters)})

    def _retire(self, node: str) -> None:
        """Out of the cluster: stop it and forget its disk, so that a later add
        brings it back as a new incarnation."""
        self.voters.discard(node)
        self.removed.add(node)
        self.live.discard(node)
        self.cluster.kill(node)
        self.cluster.wipe(node)

    async def _do(self, change: Change, detail: dict[str, Any]) -> None:
        if change.op is MemberOp.ADD:
            await self._add(change.node or "", detail)
        elif change.op is MemberOp.REMOVE:
            await self._remove(change.node or "", detail)
        elif change.op is MemberOp.MOVE:
            assert change.partition is not None
            await self.admin.reassign(change.partition, change.replicas)
        elif change.op is MemberOp.TRANSFER:
            assert change.partition is not None and change.node is not None
            await self.admin.transfer(change.partition, change.node)

    async def _add(self, node: str, detail: dict[str, Any]) -> None:
        # A node never started, or removed and wiped: it must join, not
        # bootstrap a metadata group of its own.
        self.cluster.set_join(node)
        self.live.add(node)
        self.cluster.start(node)
        await self.cluster.wait_started(node, self.start_deadline)
        await self.admin.add(node, self.cluster.address(node))
        self.voters.add(node)
        detail["voters"] = sorted(self.voters)

    async def _remove(self, node: str, detail: dict[str, Any]) -> None:
        if node in self.voters and len(self.voters) - 1 < self.min_voters:
            raise AssertionError(f"removing {node} would leave fewer than {self.min_voters}")
        moved = []
        for p in await self.admin.partitions():
            if node not in p.replicas:
                continue
            targets = [v for v in self.stable_voters() if v not in p.replicas and v != node]
            if targets:
                new = tuple(self.rng.choice(targets) if r == node else r for r in p.replicas)
            elif len(p.replicas) > MIN_REPLICAS:
                # Every voter holds it already (replicated on all nodes): it
                # shrinks by one, as `raftlog member remove` does.
                new = tuple(r for r in p.replicas if r != node)
            else:
                raise Infeasible(f"partition {p.partition}: no voter to move {node}'s replica "
                                 f"to, and it has only {len(p.replicas)} replicas")
            await self.admin.reassign(p.partition, new)
            moved.append({"partition": p.partition, "replicas": list(new)})
        detail["moved"] = moved
        await self.admin.remove(node)
        self._retire(node)
        detail["voters"] = sorted(self.voters)

    # ------------------------------------------------------------ schedule

    async def run(self, duration: float, interval: float) -> None:
        """One change about every ``interval`` seconds for ``duration`` seconds.

        A change that started is let finish (each admin call is bounded), so
        the history never holds a start without its stop.
        """
        end = trio.current_time() + duration
        while True:
            wait = interval * self.rng.uniform(0.5, 1.5)
            if trio.current_time() + wait >= end:
                await trio.sleep(max(0.0, end - trio.current_time()))
                return
            await trio.sleep(wait)
            await self.step()

    async def regrow(self, target: int, deadline: float) -> bool:
        """After the heal: finish a pending change, then add nodes back until
        ``target`` voters. True if the cluster got there within ``deadline``."""
        end = trio.current_time() + deadline
        while trio.current_time() < end:
            if self.resync:
                try:
                    await self._resync()
                except (RaftlogError, OSError) as exc:
                    log.info("event=membership_resync_failed error=%s", exc)
                    await trio.sleep(1.0)
                continue
            if self.pending is not None:
                change = await self.plan()
                assert change is not None
                change.attempt = 1  # faults are healed: a fresh budget of attempts
                if await self.execute(change) is not Outcome.OK:
                    await trio.sleep(1.0)
                continue
            if len(self.voters) >= target:
                break
            outside = self.outside()
            if not outside:
                break
            # The original nodes first, so a run ends with its initial node set when it can.
            node = next((n for n in self.initial if n in outside), outside[0])
            if await self.execute(Change(MemberOp.ADD, node=node)) is not Outcome.OK:
                await trio.sleep(1.0)
        seen = await self._server_voters(deadline=10.0)
        self.recorder.nemesis("membership-final", {
            "voters": sorted(self.voters), "server_voters": sorted(seen) if seen else None})
        reachable = len(self.voters) + len(self.outside())
        ok = self.pending is None and len(self.voters) >= min(target, reachable)
        if not ok:
            self.failures.append(
                f"membership: not re-grown to {target} voters within {deadline}s "
                f"(voters {sorted(self.voters)}, pending {self.pending})")
        elif seen is not None and seen != self.voters:
            self.failures.append(
                f"membership: cluster reports voters {sorted(seen)}, expected "
                f"{sorted(self.voters)}")
        return ok

    async def _server_voters(self, deadline: float) -> set[str] | None:
        """The voters the cluster reports, once they match ours (a follower's view
        may lag the last change by a moment), or the last answer at the deadline."""
        seen: set[str] | None = None
        with trio.move_on_after(deadline):
            while True:
                try:
                    seen = await self.admin.voters()
                except (RaftlogError, OSError) as exc:
                    log.info("event=member_list_failed error=%s", exc)
                if seen == self.voters:
                    break
                await trio.sleep(0.5)
        if seen is None:
            self.failures.append("membership: cannot read the final voters")
        return seen
