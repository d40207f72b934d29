"""GroupCoordinator (server/group_coordinator.py) with a fake clock: joins,
rebalances, leaves, expiries, stale generations, and a hypothesis property
that a stable group's partitions are owned once each by its live members."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.client.errors import ErrorCode
from raftlog.server.group_coordinator import (
    GroupCoordinator,
    GroupError,
    GroupState,
    JoinResult,
    range_assign,
)

SESSION = 3.0
REBALANCE = 5.0
MARGIN = 0.5
# A coordinator that started long ago: no start-up grace in the way.
T0 = 100.0


def coordinator(started: float = 0.0) -> GroupCoordinator:
    return GroupCoordinator(started, failover_margin_s=MARGIN)


def join(
    c: GroupCoordinator, member: str | None, now: float, partitions: int = 6, topic: str = "t"
) -> JoinResult:
    return c.join("g", topic, member, now, partitions=partitions, session_timeout=SESSION,
                  rebalance_timeout=REBALANCE)  # fmt: skip


def owners(c: GroupCoordinator) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for member, parts in c.groups["g"].assignment.items():
        for p in parts:
            out.setdefault(p, []).append(member)
    return out


def heartbeat_code(c: GroupCoordinator, member: str, generation: int, now: float) -> ErrorCode:
    with pytest.raises(GroupError) as info:
        c.heartbeat("g", member, generation, now)
    return info.value.code


def test_range_assign_splits_contiguously_in_member_order():
    assert range_assign(["b", "a"], 5) == {"a": (0, 1, 2), "b": (3, 4)}
    assert range_assign(["a", "b", "c"], 2) == {"a": (0,), "b": (1,), "c": ()}
    assert range_assign([], 3) == {}


def test_first_member_gets_every_partition_at_once():
    c = coordinator()
    result = join(c, "a", T0)
    assert result.state is GroupState.STABLE
    assert result.generation == 1
    assert result.partitions == tuple(range(6))
    c.heartbeat("g", "a", 1, T0 + 1)  # no error: the session is alive


def test_join_without_id_gets_a_new_member_id():
    c = coordinator()
    first = join(c, None, T0)
    second = join(c, None, T0)
    assert first.member_id and second.member_id and first.member_id != second.member_id


def test_second_member_starts_a_rebalance_and_the_split_waits_for_the_first():
    c = coordinator()
    join(c, "a", T0)
    pending = join(c, "b", T0 + 1)
    assert pending.state is GroupState.REBALANCING and pending.partitions is None
    # a still holds generation 1: told to rejoin, and no partition is given to b yet
    assert heartbeat_code(c, "a", 1, T0 + 1.5) is ErrorCode.REBALANCE_IN_PROGRESS
    assert c.groups["g"].assignment == {}
    a = join(c, "a", T0 + 2)
    b = join(c, "b", T0 + 2)
    assert a.generation == b.generation == 2
    assert set(a.partitions or ()) | set(b.partitions or ()) == set(range(6))
    assert not set(a.partitions or ()) & set(b.partitions or ())
    assert len(a.partitions or ()) == len(b.partitions or ()) == 3


def test_known_member_rejoining_a_stable_group_gets_its_assignment_back():
    c = coordinator()
    join(c, "a", T0)
    join(c, "b", T0)
    join(c, "a", T0)
    before = c.groups["g"].assignment
    again = join(c, "b", T0 + 1)
    assert again.generation == 2 and again.partitions == before["b"]
    assert c.groups["g"].state is GroupState.STABLE


def test_leave_gives_every_partition_to_the_remaining_member():
    c = coordinator()
    join(c, "a", T0)
    join(c, "b", T0)
    join(c, "a", T0)
    assert c.leave("g", "b", T0 + 1)
    assert heartbeat_code(c, "a", 2, T0 + 1) is ErrorCode.REBALANCE_IN_PROGRESS
    result = join(c, "a", T0 + 1.2)
    assert result.generation == 3 and result.partitions == tuple(range(6))
    assert not c.leave("g", "b", T0 + 2)  # already gone: a no-op


def test_last_member_leaving_empties_the_group_and_generations_keep_counting():
    c = coordinator()
    join(c, "a", T0)
    c.leave("g", "a", T0 + 1)
    assert c.describe("g", T0 + 1).state is GroupState.EMPTY
    assert c.active_groups() == 0
    assert join(c, "a", T0 + 2).generation == 2


def test_session_expiry_reassigns_the_dead_members_partitions():
    c = coordinator()
    join(c, "a", T0)
    join(c, "b", T0)
    join(c, "a", T0)
    # a heartbeats, b falls silent for longer than its session timeout
    c.heartbeat("g", "a", 2, T0 + 2)
    c.heartbeat("g", "a", 2, T0 + SESSION)
    assert heartbeat_code(c, "a", 2, T0 + SESSION + 0.5) is ErrorCode.REBALANCE_IN_PROGRESS
    assert [m for m, _c, _p in c.describe("g", T0 + SESSION + 0.5).members] == ["a"]
    result = join(c, "a", T0 + SESSION + 0.6)
    assert result.partitions == tuple(range(6)) and result.generation == 3
    assert heartbeat_code(c, "b", 2, T0 + SESSION + 1) is ErrorCode.UNKNOWN_MEMBER


def test_rebalance_deadline_drops_a_member_that_does_not_rejoin():
    c = coordinator()
    join(c, "a", T0)
    join(c, "b", T0 + 1)  # rebalance: a must rejoin within REBALANCE
    # a keeps its session alive by heartbeats but never rejoins (stuck user code)
    for t in (T0 + 2, T0 + 4, T0 + 5.5):
        assert heartbeat_code(c, "a", 1, t) is ErrorCode.REBALANCE_IN_PROGRESS
    # b polls its join; once the deadline passed, b forms the generation alone
    assert join(c, "b", T0 + 1 + REBALANCE - 0.1).state is GroupState.REBALANCING
    done = join(c, "b", T0 + 1 + REBALANCE + 0.1)
    assert done.state is GroupState.STABLE and done.partitions == tuple(range(6))
    assert heartbeat_code(c, "a", 1, T0 + 7) is ErrorCode.UNKNOWN_MEMBER


def test_stale_generation_heartbeat_is_told_to_rejoin_and_gets_the_current_one():
    c = coordinator()
    join(c, "a", T0)
    join(c, "b", T0)
    join(c, "a", T0)  # generation 2 formed; suppose a never saw this reply
    assert heartbeat_code(c, "a", 1, T0 + 1) is ErrorCode.REBALANCE_IN_PROGRESS
    assert c.groups["g"].state is GroupState.STABLE  # no new rebalance for that
    result = join(c, "a", T0 + 1.1)
    assert result.generation == 2
    c.heartbeat("g", "a", 2, T0 + 1.2)


def test_unknown_group_or_member_heartbeat_is_unknown_member():
    c = coordinator()
    assert heartbeat_code(c, "a", 1, T0) is ErrorCode.UNKNOWN_MEMBER
    join(c, "a", T0)
    assert heartbeat_code(c, "zz", 1, T0) is ErrorCode.UNKNOWN_MEMBER


def test_a_group_consumes_one_topic():
    c = coordinator()
    join(c, "a", T0)
    with pytest.raises(GroupError) as info:
        join(c, "b", T0, topic="other")
    assert info.value.code is ErrorCode.INVALID_REQUEST
    c.leave("g", "a", T0)
    assert join(c, "b", T0, topic="other").state is GroupState.STABLE  # empty: free again


def test_out_of_range_session_timeout_is_refused():
    c = coordinator()
    with pytest.raises(GroupError) as info:
        c.join("g", "t", "a", T0, partitions=1, session_timeout=0.0)
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_more_partitions_start_a_rebalance():
    c = coordinator()
    join(c, "a", T0, partitions=2)
    result = join(c, "a", T0 + 1, partitions=4)
    assert result.partitions == (0, 1, 2, 3) and result.generation == 2


def test_new_coordinator_forms_no_generation_within_the_startup_grace():
    # A new controller at t=10: members of the previous controller's generation
    # may still consume until their session runs out, so nothing is assigned
    # before started + session + margin.
    c = coordinator(started=10.0)
    assert join(c, "a", 10.5).state is GroupState.REBALANCING
    assert c.wake_at("g") == pytest.approx(10.0 + SESSION + MARGIN, abs=1e-3)
    assert join(c, "a", 10.0 + SESSION + MARGIN - 0.01).state is GroupState.REBALANCING
    done = join(c, "a", 10.0 + SESSION + MARGIN + 0.01)
    assert done.state is GroupState.STABLE and done.generation == 1


def test_tick_expires_members_of_every_group():
    c = coordinator()
    join(c, "a", T0)
    c.tick(T0 + SESSION + 1)
    assert c.active_groups() == 0
    assert c.describe("g", T0 + SESSION + 1).members == ()


# ---------------------------------------------------------------- property

MEMBERS = ["m0", "m1", "m2", "m3"]
OPS = st.one_of(
    st.tuples(st.just("join"), st.sampled_from(MEMBERS)),
    st.tuples(st.just("leave"), st.sampled_from(MEMBERS)),
    st.tuples(st.just("heartbeat"), st.sampled_from(MEMBERS)),
    st.tuples(st.just("advance"), st.floats(min_value=0.0, max_value=2 * REBALANCE)),
)


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(OPS, max_size=40),
    partitions=st.integers(min_value=1, max_value=7),
    started=st.sampled_from([0.0, 95.0]),
)
def test_once_stable_every_partition_has_exactly_one_live_owner(ops, partitions, started):
    c = coordinator(started)
    now = T0
    generations: dict[int, dict[str, tuple[int, ...]]] = {}  # what each generation assigned
    known: dict[str, int] = {}  # member -> generation it last got

    def check_generation() -> None:
        g = c.groups.get("g")
        if g is None or g.state is not GroupState.STABLE:
            return
        # a generation's assignment never changes once formed
        assert generations.setdefault(g.generation, dict(g.assignment)) == g.assignment
        assert set(g.assignment) == set(g.members)

    for op, arg in ops:
        if op == "join":
            result = join(c, arg, now, partitions)
            if result.partitions is not None:
                known[arg] = result.generation
        elif op == "leave":
            c.leave("g", arg, now)
        elif op == "heartbeat" and arg in known:
            try:
                c.heartbeat("g", arg, known[arg], now)
            except GroupError as exc:
                assert exc.code in (ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.UNKNOWN_MEMBER)
        elif op == "advance":
            now += arg
            c.tick(now)
        check_generation()
        # The server sleeps until wake_at: it must lie ahead, or a held join spins.
        wake = c.wake_at("g")
        assert wake is None or wake > now

    # Let the group settle: every remaining member rejoins (past any grace).
    now = max(now, started + SESSION + MARGIN + 0.01)
    live = list(c.groups["g"].members) if "g" in c.groups else []
    results = {m: join(c, m, now, partitions) for m in live}
    results = {m: join(c, m, now, partitions) for m in live}  # second round: all joined
    check_generation()
    g = c.groups.get("g")
    if not live:
        assert g is None or g.state is GroupState.EMPTY
        return
    assert g is not None and g.state is GroupState.STABLE
    owned = owners(c)
    assert sorted(owned) == list(range(partitions))
    assert all(len(who) == 1 and who[0] in g.members for who in owned.values())
    assert all(r.generation == g.generation for r in results.values())
    assert {m: r.partitions for m, r in results.items()} == g.assignment
