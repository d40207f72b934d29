"""The membership nemesis against a fake cluster and a fake admin API (no
processes), on trio's mock clock: its rules (never below 3 voters, one change
at a time, unknown outcomes continued first, removed nodes wiped and brought
back as joiners) and its records in the history."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from raftlog.client.errors import InvalidRequestError, RequestTimeoutError
from raftlog.jepsen.history import NEMESIS, Op, Recorder
from raftlog.jepsen.membership import (
    Change,
    MemberOp,
    MembershipNemesis,
    Outcome,
    PartitionView,
    summary,
)
from raftlog.jepsen.nemesis import Nemesis

INITIAL = ["n1", "n2", "n3"]
SPARES = ["n4", "n5"]


@dataclass
class FakeNodes:
    """Processes and disks: a node's first start without ``join`` bootstraps,
    which is only allowed for the initial nodes on an empty disk."""

    initial_ids: list[str] = field(default_factory=lambda: list(INITIAL))
    spare_ids: list[str] = field(default_factory=lambda: list(SPARES))
    mesh: None = None
    running: set[str] = field(default_factory=lambda: set(INITIAL))
    has_data: set[str] = field(default_factory=lambda: set(INITIAL))
    join: set[str] = field(default_factory=lambda: set(SPARES))
    paused: set[str] = field(default_factory=set)
    events: list[tuple[str, str]] = field(default_factory=list)

    @property
    def node_ids(self) -> list[str]:
        return self.initial_ids + self.spare_ids

    def address(self, nid: str) -> str:
        return f"127.0.0.1:{7100 + int(nid[1:])}"

    def start(self, nid: str) -> None:
        if nid not in self.has_data and nid not in self.join:
            raise AssertionError(f"{nid} would bootstrap a second cluster")
        self.running.add(nid)
        self.has_data.add(nid)
        self.events.append(("start", nid))

    async def wait_started(self, nid: str, deadline: float) -> None:
        await trio.sleep(0.5)

    def kill(self, nid: str) -> None:
        self.running.discard(nid)
        self.events.append(("kill", nid))

    def wipe(self, nid: str) -> None:
        assert nid not in self.running, f"wiped {nid} while it runs"
        self.has_data.discard(nid)
        self.events.append(("wipe", nid))

    def set_join(self, nid: str) -> None:
        self.join.add(nid)

    def is_running(self, nid: str) -> bool:
        return nid in self.running

    def pause(self, nid: str) -> None:
        self.paused.add(nid)

    def resume(self, nid: str) -> None:
        self.paused.discard(nid)

    def unexpected_exits(self) -> dict[str, int]:
        return {}

    def full_disk_exits(self) -> dict[str, int]:
        return {}


@dataclass
class FakeAdmin:
    """The server side of the admin API, with its refusals, and fault injection:
    ``lose_reply`` makes the next call of that name apply and then time out."""

    nodes: FakeNodes
    voters_: set[str] = field(default_factory=lambda: set(INITIAL))
    replicas: dict[int, list[str]] = field(
        default_factory=lambda: {p: list(INITIAL) for p in range(3)})
    leaders: dict[int, str] = field(default_factory=lambda: {0: "n1", 1: "n2", 2: "n3"})
    lose_reply: set[str] = field(default_factory=set)
    refuse: set[str] = field(default_factory=set)
    calls: list[tuple[str, object]] = field(default_factory=list)
    busy: int = 0
    max_busy: int = 0
    min_voters_seen: int = 3

    async def _call(self, name: str, arg: object) -> None:
        self.calls.append((name, arg))
        self.busy += 1
        self.max_busy = max(self.max_busy, self.busy)
        try:
            await trio.sleep(0.2)
        finally:
            self.busy -= 1
        if name in self.refuse:
            raise InvalidRequestError(f"{name} refused")

    def _answer(self, name: str) -> None:
        self.min_voters_seen = min(self.min_voters_seen, len(self.voters_))
        if name in self.lose_reply:
            self.lose_reply.discard(name)
            raise RequestTimeoutError(f"{name}: no answer (outcome unknown)")

    async def voters(self) -> set[str]:
        await trio.sleep(0.05)
        return set(self.voters_)

    async def partitions(self) -> list[PartitionView]:
        await trio.sleep(0.05)
        return [PartitionView(p, tuple(r), self.leaders.get(p)) for p, r in
                sorted(self.replicas.items())]

    async def add(self, node: str, address: str) -> None:
        await self._call("add", node)
        assert address == self.nodes.address(node)
        if node not in self.nodes.running:
            raise RequestTimeoutError(f"learner {node} not caught up")
        self.voters_.add(node)
        self._answer("add")

    async def remove(self, node: str) -> None:
        await self._call("remove", node)
        held = [p for p, r in self.replicas.items() if node in r]
        if held:
            raise InvalidRequestError(f"{node} still holds replicas of {held}")
        self.voters_.discard(node)
        self._answer("remove")

    async def reassign(self, partition: int, replicas: Sequence[str]) -> None:
        await self._call("reassign", (partition, tuple(replicas)))
        unknown = [r for r in replicas if r not in self.voters_]
        if unknown:
            raise InvalidRequestError(f"unknown node(s) {unknown}")
        self.replicas[partition] = list(replicas)
        if self.leaders.get(partition) not in replicas:
            self.leaders[partition] = replicas[0]
        self._answer("reassign")

    async def transfer(self, partition: int, to: str) -> None:
        await self._call("transfer", (partition, to))
        if to not in self.replicas[partition]:
            raise InvalidRequestError(f"{to} is not a replica")
        self.leaders[partition] = to
        self._answer("transfer")


def make(seed: int = 1, nodes: FakeNodes | None = None
         ) -> tuple[MembershipNemesis, FakeAdmin, FakeNodes, Recorder]:
    nodes = nodes or FakeNodes()
    admin = FakeAdmin(nodes)
    recorder = Recorder()
    m = MembershipNemesis(nodes, admin, recorder, random.Random(seed), nodes.initial_ids,
                          nodes.spare_ids, set(nodes.initial_ids))
    return m, admin, nodes, recorder


def run_trio(fn) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def membership_lines(recorder: Recorder) -> list[Op]:
    return [op for op in recorder.ops if op.process == NEMESIS and "membership" in op.f]


def check_pairs(recorder: Recorder) -> list[tuple[Op, Op]]:
    """Every start is followed by its stop before the next start (one at a time)."""
    lines = [op for op in membership_lines(recorder) if op.f.endswith("-membership")]
    assert len(lines) % 2 == 0
    pairs = list(zip(lines[::2], lines[1::2], strict=True))
    for start, stop in pairs:
        assert (start.f, stop.f) == ("start-membership", "stop-membership")
        assert stop.value["op"] == start.value["op"]
        assert stop.value["outcome"] in {o.value for o in Outcome}
    return pairs


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_long_schedule_keeps_three_voters_and_one_change_at_a_time(seed: int) -> None:
    m, admin, nodes, recorder = make(seed)

    async def main() -> None:
        await m.run(duration=200, interval=2.0)

    run_trio(main)
    pairs = check_pairs(recorder)
    assert len(pairs) >= 40
    assert admin.max_busy == 1 and admin.min_voters_seen >= 3
    ops = {start.value["op"] for start, _ in pairs}
    assert ops == {"add", "remove", "move", "transfer"}, ops
    # Every partition only ever lives on voters, and the harness's view is the server's.
    assert m.voters == admin.voters_
    by_kind = summary(recorder.ops)
    assert sum(sum(v.values()) for v in by_kind.values()) == len(pairs)
    assert set(by_kind) == ops and all(set(v) <= {"ok", "fail", "unknown"}
                                       for v in by_kind.values())
    for replicas in admin.replicas.values():
        assert set(replicas) <= admin.voters_ and len(replicas) == 3
    # Exactly the voters run: removed nodes were stopped, added ones started.
    assert nodes.running == admin.voters_ == m.live


def test_without_rejoin_a_removed_node_never_starts_again() -> None:
    m, admin, nodes, recorder = make(seed=2)
    m.rejoin = False

    run_trio(lambda: m.run(duration=120, interval=2.0))
    assert m.removed, "a 120 s schedule never removed a node"
    for node in m.removed:
        last_wipe = max(i for i, e in enumerate(nodes.events) if e == ("wipe", node))
        assert ("start", node) not in nodes.events[last_wipe:]
    assert len(m.voters) >= 3 and m.voters == admin.voters_ == nodes.running
    adds = [op.value["node"] for op in membership_lines(recorder)
            if op.f == "start-membership" and op.value["op"] == "add"]
    assert len(adds) == len(set(adds))  # each spare joined once, nobody came back


def test_same_seed_same_membership_schedule() -> None:
    def schedule(seed: int) -> list:
        m, _, _, recorder = make(seed)
        run_trio(lambda: m.run(duration=40, interval=2.0))
        return [(op.f, op.value) for op in membership_lines(recorder)]

    assert schedule(7) == schedule(7)
    assert schedule(7) != schedule(8)


def test_removed_node_is_drained_killed_wiped_and_can_come_back_as_a_joiner() -> None:
    m, admin, nodes, recorder = make()
    m.voters.add("n4")  # four voters: one may go
    admin.voters_.add("n4")
    nodes.running.add("n4")
    nodes.has_data.add("n4")
    m.live.add("n4")

    async def main() -> None:
        assert await m.execute(Change(MemberOp.REMOVE, node="n2")) is Outcome.OK
        assert await m.execute(Change(MemberOp.ADD, node="n2")) is Outcome.OK

    run_trio(main)
    # Drained first: every partition moved off n2 before the removal itself.
    names = [name for name, _ in admin.calls]
    assert names.index("remove") == 3 and names[:3] == ["reassign"] * 3
    first_wipe = nodes.events.index(("wipe", "n2"))
    assert nodes.events[first_wipe - 1] == ("kill", "n2")
    assert nodes.events[first_wipe + 1] == ("start", "n2")  # the add restarts it, as a joiner
    assert "n2" in nodes.join and m.voters == {"n1", "n2", "n3", "n4"}
    stop_remove = check_pairs(recorder)[0][1]
    assert [mv["partition"] for mv in stop_remove.value["moved"]] == [0, 1, 2]
    assert all("n2" not in mv["replicas"] for mv in stop_remove.value["moved"])


def test_unknown_outcome_is_continued_before_any_other_change() -> None:
    m, admin, _, recorder = make(seed=5)
    admin.lose_reply.add("add")  # the add happens, its reply is lost

    async def main() -> None:
        assert await m.execute(Change(MemberOp.ADD, node="n4")) is Outcome.UNKNOWN
        assert m.pending is not None and "n4" not in m.voters
        # A pending add does not count as a voter, so no removal is planned meanwhile.
        assert m.counted_voters() == 3
        assert await m.step() is Outcome.OK

    run_trio(main)
    (s1, e1), (s2, e2) = check_pairs(recorder)
    assert (s1.value["op"], e1.value["outcome"]) == ("add", "unknown")
    assert "RequestTimeoutError" in e1.value["error"]
    assert (s2.value["op"], s2.value["node"], s2.value["attempt"]) == ("add", "n4", 2)
    assert e2.value["outcome"] == "ok" and m.pending is None and "n4" in m.voters


def test_a_removal_given_up_is_resynced_from_the_cluster_before_the_next_plan() -> None:
    m, admin, nodes, recorder = make(seed=4)
    m.voters.add("n4")
    admin.voters_.add("n4")
    nodes.running.add("n4")
    nodes.has_data.add("n4")
    m.live.add("n4")

    async def main() -> None:
        change = Change(MemberOp.REMOVE, node="n4", attempt=4)  # its last attempt
        admin.lose_reply.add("remove")  # it happens; we never learn it
        assert await m.execute(change) is Outcome.UNKNOWN
        assert m.pending is None and "n4" in m.voters and m.resync
        await m.plan()  # reads the cluster's voters first

    run_trio(main)
    assert m.voters == {"n1", "n2", "n3"} and not m.resync
    assert "n4" not in nodes.running and "n4" not in nodes.has_data and "n4" not in m.live
    assert any(op.f == "membership-resync" for op in recorder.ops)


def test_removal_shrinks_a_partition_held_by_every_voter_but_never_below_three() -> None:
    m, admin, nodes, _ = make()
    for n in ("n4", "n5"):
        m.voters.add(n)
        admin.voters_.add(n)
        nodes.running.add(n)
        nodes.has_data.add(n)
        m.live.add(n)
    admin.replicas = {0: ["n1", "n2", "n3", "n4", "n5"], 1: ["n1", "n2", "n3"]}

    async def main() -> None:
        assert await m.execute(Change(MemberOp.REMOVE, node="n1")) is Outcome.OK

    run_trio(main)
    assert admin.replicas[0] == ["n2", "n3", "n4", "n5"]  # shrunk: no voter left to take it
    assert len(admin.replicas[1]) == 3 and "n1" not in admin.replicas[1]  # moved
    assert "n1" not in admin.voters_

    # Three voters holding a 3-replica partition (min_voters lowered to get
    # there): nowhere to move it, and it may not shrink: refused by the harness.
    m, admin, _, _ = make()
    m.min_voters = 2
    admin.replicas = {0: ["n1", "n2", "n3"]}

    async def refused() -> None:
        assert await m.execute(Change(MemberOp.REMOVE, node="n1")) is Outcome.FAIL

    run_trio(refused)
    assert m.pending is None and admin.calls == [] and "n1" in admin.voters_


def test_refused_change_is_recorded_as_fail_and_not_retried() -> None:
    m, admin, _, recorder = make()
    admin.refuse.add("reassign")

    async def main() -> None:
        change = Change(MemberOp.MOVE, partition=0, replicas=("n2", "n3", "n1"))
        assert await m.execute(change) is Outcome.FAIL

    run_trio(main)
    ((_, stop),) = check_pairs(recorder)
    assert stop.value["outcome"] == "fail" and "refused" in stop.value["error"]
    assert m.pending is None


def test_regrow_finishes_a_pending_removal_then_adds_back_to_the_initial_count() -> None:
    m, admin, nodes, recorder = make(seed=3)
    admin.lose_reply.add("remove")

    async def main() -> None:
        assert await m.execute(Change(MemberOp.ADD, node="n4")) is Outcome.OK
        assert await m.execute(Change(MemberOp.REMOVE, node="n1")) is Outcome.UNKNOWN
        assert await m.regrow(target=5, deadline=60)

    run_trio(main)
    assert m.voters == admin.voters_ == {"n1", "n2", "n3", "n4", "n5"}
    assert not m.failures
    final = [op for op in recorder.ops if op.f == "membership-final"]
    assert final and final[0].value["server_voters"] == sorted(m.voters)
    # n1 left for real (reply lost) and came back only after its wipe.
    assert nodes.events.index(("wipe", "n1")) < len(nodes.events) - 1
    assert ("start", "n1") in nodes.events[nodes.events.index(("wipe", "n1")):]


def test_regrow_that_cannot_finish_is_a_liveness_failure() -> None:
    m, admin, nodes, _ = make()

    async def main() -> None:
        m.voters.discard("n3")  # as if n3 had been removed and cannot come back
        nodes.running.discard("n3")
        nodes.has_data.discard("n3")
        admin.voters_.discard("n3")
        admin.refuse.add("add")
        assert not await m.regrow(target=3, deadline=10)

    run_trio(main)
    assert any("not re-grown" in f for f in m.failures)


def test_with_kill_faults_removed_nodes_stay_down_and_faults_hit_only_live_nodes() -> None:
    nodes = FakeNodes()
    admin = FakeAdmin(nodes)
    recorder = Recorder()
    nemesis = Nemesis(nodes, recorder, random.Random(2), ["kill", "membership"],  # type: ignore[arg-type]
                      interval=2.0, admin=admin)
    assert nemesis.membership is not None and nemesis.kinds == ["kill"]

    run_trio(lambda: nemesis.run(120))
    fs = [op.f for op in recorder.ops if op.process == NEMESIS]
    assert "start-kill" in fs and "start-membership" in fs
    assert fs.index("heal") < fs.index("membership-final")
    membership = nemesis.membership
    assert not membership.failures and admin.max_busy == 1
    assert len(membership.voters) >= 3 and membership.voters == admin.voters_
    assert nodes.running == membership.live == membership.voters
    wiped = {n for e, n in nodes.events if e == "wipe"}
    assert wiped, "a 120 s schedule never removed a node"
    # A kill never targeted a node outside the live set of its moment (removed
    # nodes are wiped right after their kill, never killed again before a start).
    for op in recorder.ops:
        if op.f == "start-kill":
            assert set(op.value["nodes"]) <= set(INITIAL + SPARES)


def test_membership_without_a_spare_or_an_admin_is_skipped_with_a_message() -> None:
    no_spares = FakeNodes(spare_ids=[])
    n = Nemesis(no_spares, Recorder(), random.Random(1), ["membership"],  # type: ignore[arg-type]
                admin=FakeAdmin(no_spares))
    assert n.membership is None and any("spare" in s for s in n.skipped)
    n = Nemesis(FakeNodes(), Recorder(), random.Random(1), ["membership"])  # type: ignore[arg-type]
    assert n.membership is None and any("admin" in s for s in n.skipped)
