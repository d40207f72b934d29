"""GroupCoordinator (server/group_coordinator.py) with a fake clock: joins,
rebalances, leaves, expiries, stale generations, persisted generations and
their restore on a new coordinator, and a hypothesis property that a stable
group's partitions are owned once each by its live members and that a
generation number names one assignment across coordinator fail-overs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.client.errors import ErrorCode
from raftlog.log.commands import SetConsumerGroup
from raftlog.log.metadata import ConsumerGroupInfo
from raftlog.server.group_coordinator import (
    GroupCoordinator,
    GroupError,
    GroupState,
    JoinResult,
    range_assign,
    sticky_assign,
)

SESSION = 3.0
REBALANCE = 5.0
MARGIN = 0.5
# A coordinator that started long ago: no start-up grace in the way.
T0 = 100.0


Store = dict[str, ConsumerGroupInfo]  # the committed records, as log/metadata.py keeps them


def coordinator(started: float = 0.0) -> GroupCoordinator:
    return GroupCoordinator(started, failover_margin_s=MARGIN)


def apply(store: Store, rec: SetConsumerGroup) -> bool:
    """The metadata state machine's rule: generations only move forward."""
    old = store.get(rec.group)
    stored = old.generation if old else 0
    if rec.generation < stored or (rec.members and rec.generation == stored):
        return False
    store[rec.group] = ConsumerGroupInfo(
        rec.group, rec.topic, rec.generation, rec.partitions, rec.members
    )
    return True


def commit(
    c: GroupCoordinator, now: float, store: Store | None = None, ok: bool = True
) -> list[SetConsumerGroup]:
    """Commit (or fail) every record the coordinator made, as the server does."""
    records = c.take_records()
    for rec in records:
        applied = apply(store if store is not None else {}, rec) if ok else False
        c.persisted(rec.group, rec.generation, applied, now)
    return records


def restored(store: Store, now: float) -> GroupCoordinator:
    """A new controller's coordinator, loaded from the committed records."""
    c = coordinator(started=now)
    c.restore(store.values(), now)
    return c


def join(
    c: GroupCoordinator,
    member: str | None,
    now: float,
    partitions: int = 6,
    topic: str = "t",
    store: Store | None = None,
) -> JoinResult:
    """Join; a generation this join formed is committed at once and the join polled again."""
    result = c.join("g", topic, member, now, partitions=partitions, session_timeout=SESSION,
                    rebalance_timeout=REBALANCE)  # fmt: skip
    if any(rec.members for rec in commit(c, now, store)):
        result = c.join("g", topic, result.member_id, now, partitions=partitions,
                        session_timeout=SESSION, rebalance_timeout=REBALANCE)  # fmt: skip
    return result


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


def _max_kept(members: list[str], partitions: int, previous: dict[str, tuple[int, ...]]) -> int:
    """The most partitions a balanced assignment can leave with their previous owner
    (``previous`` gives each partition at most one owner)."""
    held = {m: sum(1 for p in previous.get(m, ()) if p < partitions) for m in members}
    base, extra = divmod(partitions, len(members))
    return sum(min(h, base) for h in held.values()) + min(
        extra, sum(1 for h in held.values() if h > base)
    )


@settings(max_examples=300, deadline=None)
@given(
    members=st.sets(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1),
    partitions=st.integers(min_value=1, max_value=12),
    # The owner of each partition in the generation before (None: nobody), which
    # may have had more partitions than now and members that are gone.
    owner_of=st.lists(st.sampled_from(["a", "b", "c", "d", "e", "gone", None]), max_size=15),
)
def test_sticky_assign_is_balanced_and_keeps_the_most_partitions_in_place(
    members, partitions, owner_of
):
    previous: dict[str, tuple[int, ...]] = {}
    for p, owner in enumerate(owner_of):
        if owner is not None:
            previous[owner] = (*previous.get(owner, ()), p)
    out = sticky_assign(list(members), partitions, previous)
    assert set(out) == members
    everything = [p for parts in out.values() for p in parts]
    assert sorted(everything) == list(range(partitions))  # each partition exactly once
    sizes = [len(parts) for parts in out.values()]
    assert max(sizes) - min(sizes) <= 1
    kept = sum(len(set(out[m]) & set(previous.get(m, ()))) for m in members)
    assert kept == _max_kept(list(members), partitions, previous)
    # With nothing to keep it is the range assignment.
    if not any(p < partitions for m in members for p in previous.get(m, ())):
        assert out == range_assign(list(members), partitions)
    # A balanced assignment of the same members is left as it is.
    assert sticky_assign(list(members), partitions, out) == out


def test_sticky_assign_moves_only_the_partitions_it_must():
    before = range_assign(["a", "b", "c"], 6)  # a: 0 1, b: 2 3, c: 4 5
    # b leaves: a and c keep theirs, b's two are split between them.
    after = sticky_assign(["a", "c"], 6, before)
    assert set(before["a"]) <= set(after["a"]) and set(before["c"]) <= set(after["c"])
    assert after == {"a": (0, 1, 2), "c": (3, 4, 5)}
    # d joins: each member above the new share gives up its highest partition.
    joined = sticky_assign(["a", "c", "d"], 6, after)
    assert joined == {"a": (0, 1), "c": (3, 4), "d": (2, 5)}
    # The topic grows: the new partitions go to whoever is below the new share.
    grown = sticky_assign(["a", "c", "d"], 9, joined)
    assert grown == {"a": (0, 1, 6), "c": (3, 4, 7), "d": (2, 5, 8)}


def test_a_member_leaving_a_rebalanced_group_moves_only_its_own_partitions():
    c = coordinator()
    for member in ("a", "b", "c"):
        join(c, member, T0)
    for member in ("a", "b", "c"):
        join(c, member, T0)
    before = dict(c.groups["g"].assignment)
    assert c.groups["g"].state is GroupState.STABLE and len(before) == 3
    assert c.leave("g", "b", T0 + 1)
    join(c, "a", T0 + 1.1)
    join(c, "c", T0 + 1.1)
    after = c.groups["g"].assignment
    assert c.groups["g"].state is GroupState.STABLE and set(after) == {"a", "c"}
    assert set(before["a"]) <= set(after["a"]) and set(before["c"]) <= set(after["c"])
    assert set(after["a"]) | set(after["c"]) == set(range(6))


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


def test_new_coordinator_forms_a_new_groups_first_generation_at_once():
    # A controller that started a moment ago: a group it has no record of has
    # no owners anywhere (generations are handed out only once recorded), so
    # its first member gets its partitions without waiting out any session.
    c = coordinator(started=10.0)
    result = join(c, "a", 10.5)
    assert result.state is GroupState.STABLE and result.generation == 1
    assert result.partitions == tuple(range(6))


def test_an_in_memory_coordinator_waits_the_startup_grace():
    # Without records a new coordinator cannot know whom a previous one gave
    # partitions to, so nothing is assigned before started + session + margin.
    c = GroupCoordinator(10.0, failover_margin_s=MARGIN, durable=False)
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


# ---------------------------------------------------------------- persisted generations


def test_a_generation_is_handed_out_only_once_its_record_commits():
    c = coordinator()
    pending = c.join("g", "t", "a", T0, partitions=6, session_timeout=SESSION)
    assert pending.partitions is None and pending.state is GroupState.REBALANCING
    (rec,) = c.take_records()
    assert (rec.group, rec.topic, rec.generation, rec.partitions) == ("g", "t", 1, 6)
    assert [(m.member_id, m.session_timeout_ms, m.partitions) for m in rec.members] == [
        ("a", SESSION * 1000, tuple(range(6)))
    ]
    # still polling: nothing until the commit
    assert c.join("g", "t", "a", T0 + 0.1, partitions=6, session_timeout=SESSION).partitions is None
    assert c.take_records() == []  # not proposed twice
    c.persisted("g", 1, True, T0 + 0.2)
    done = c.join("g", "t", "a", T0 + 0.3, partitions=6, session_timeout=SESSION)
    assert done.partitions == tuple(range(6)) and done.generation == 1
    assert c.rebalances == 1


def test_a_failed_record_restarts_the_rebalance_with_a_higher_generation():
    c = coordinator()
    join(c, "a", T0)
    c.join("g", "t", "b", T0 + 1, partitions=6, session_timeout=SESSION)
    c.join("g", "t", "a", T0 + 1, partitions=6, session_timeout=SESSION)
    (rec,) = c.take_records()
    assert rec.generation == 2
    c.persisted("g", 2, False, T0 + 1.5)  # e.g. TIMEOUT: it may still commit
    assert c.groups["g"].state is GroupState.REBALANCING and c.groups["g"].assignment == {}
    assert heartbeat_code(c, "a", 1, T0 + 1.6) is ErrorCode.REBALANCE_IN_PROGRESS
    store: Store = {}
    assert join(c, "a", T0 + 2, store=store).partitions is None  # b has to rejoin too
    b = join(c, "b", T0 + 2, store=store)
    a = join(c, "a", T0 + 2, store=store)
    assert a.generation == b.generation == 3 == store["g"].generation


def test_a_membership_change_abandons_a_generation_waiting_for_its_record():
    c = coordinator()
    c.join("g", "t", "a", T0, partitions=6, session_timeout=SESSION)
    (first,) = c.take_records()
    c.join("g", "t", "b", T0 + 0.1, partitions=6, session_timeout=SESSION)  # a new member
    c.persisted("g", first.generation, True, T0 + 0.2)  # too late: it lacks b
    assert c.groups["g"].state is GroupState.REBALANCING
    c.join("g", "t", "a", T0 + 0.3, partitions=6, session_timeout=SESSION)
    (second,) = c.take_records()
    assert second.generation == first.generation + 1
    assert {m.member_id for m in second.members} == {"a", "b"}


def test_the_last_member_leaving_is_persisted_as_an_empty_group():
    c = coordinator()
    store: Store = {}
    join(c, "a", T0, store=store)
    c.leave("g", "a", T0 + 1)
    (rec,) = commit(c, T0 + 1, store)
    assert rec.members == () and rec.generation == 1
    assert store["g"].members == ()
    # a later controller does not bring "a" back, and keeps counting
    c2 = restored(store, T0 + 2)
    assert c2.describe("g", T0 + 2).members == ()
    assert heartbeat_code(c2, "a", 1, T0 + 2) is ErrorCode.UNKNOWN_MEMBER
    assert join(c2, "b", T0 + 2, store=store).generation == 2


def two_member_store() -> tuple[Store, dict[str, JoinResult]]:
    c = coordinator()
    store: Store = {}
    join(c, "a", T0, store=store)
    join(c, "b", T0, store=store)
    got = {m: join(c, m, T0, store=store) for m in ("a", "b")}
    assert store["g"].generation == got["a"].generation == 2
    return store, got


def test_a_new_coordinator_restores_the_group_stable_with_its_assignment():
    store, got = two_member_store()
    c = restored(store, 200.0)  # started just now: no grace for a persisted group
    view = c.describe("g", 200.0)
    assert view.state is GroupState.STABLE and view.generation == 2 and view.topic == "t"
    assert {m: p for m, _client, p in view.members} == {m: r.partitions for m, r in got.items()}
    # members heartbeat with their generation and keep consuming: no rebalance
    for t in (200.5, 201.0, 202.5):
        for m in ("a", "b"):
            c.heartbeat("g", m, 2, t)
    again = c.join("g", "t", "a", 203.0, partitions=6, session_timeout=SESSION)
    assert again.generation == 2 and again.partitions == got["a"].partitions
    assert c.take_records() == [] and c.rebalances == 0


def test_a_restored_member_that_stays_silent_expires_and_generation_plus_one_forms():
    store, _got = two_member_store()
    c = restored(store, 200.0)
    c.heartbeat("g", "a", 2, 200.0 + SESSION - 0.5)  # b never finds the new controller
    assert heartbeat_code(c, "a", 2, 200.0 + SESSION + 0.1) is ErrorCode.REBALANCE_IN_PROGRESS
    assert heartbeat_code(c, "b", 2, 200.0 + SESSION + 0.1) is ErrorCode.UNKNOWN_MEMBER
    result = join(c, "a", 200.0 + SESSION + 0.2, store=store)
    # at once (no start-up grace), numbered after the persisted generation
    assert result.generation == 3 and result.partitions == tuple(range(6))
    assert store["g"].generation == 3 and [m.member_id for m in store["g"].members] == ["a"]


def test_a_restored_member_is_not_dropped_by_a_rebalance_deadline_before_its_session_ends():
    # b's last successful heartbeat may have gone to the old controller just
    # before this one restored the group: it owns its partitions until a session
    # after the restore, so a short rebalance must not hand them out sooner.
    store, _got = two_member_store()
    c = restored(store, 200.0)
    c.join("g", "t", "c", 200.0, partitions=6, session_timeout=SESSION, rebalance_timeout=0.5)
    c.join("g", "t", "a", 200.0, partitions=6, session_timeout=SESSION, rebalance_timeout=0.5)
    c.tick(200.0 + 1.0)  # the rebalance deadline (0.5 s) passed; b never rejoined
    assert "b" in c.groups["g"].members and c.take_records() == []
    assert c.wake_at("g") == pytest.approx(200.0 + SESSION, abs=1e-3)
    for m in ("c", "a"):  # still polling their joins
        c.join("g", "t", m, 202.0, partitions=6, session_timeout=SESSION, rebalance_timeout=0.5)
    assert c.take_records() == []
    c.tick(200.0 + SESSION + 0.1)  # b's session is over: a and c form the next generation
    (rec,) = c.take_records()
    assert sorted(m.member_id for m in rec.members) == ["a", "c"] and rec.generation == 3


def test_a_group_with_no_record_forms_at_once_on_a_new_coordinator():
    c = restored({}, 10.0)
    result = c.join("g", "t", "a", 10.5, partitions=6, session_timeout=SESSION)
    assert result.partitions is None  # held until its record commits ...
    assert [r.generation for r in c.take_records()] == [1]  # ... which is proposed at once


def test_an_in_memory_coordinator_forms_generations_without_records():
    c = GroupCoordinator(-1e9, durable=False)
    result = c.join("g", "t", "a", T0, partitions=3, session_timeout=SESSION)
    assert result.partitions == (0, 1, 2) and c.take_records() == []


# ---------------------------------------------------------------- property across fail-overs

FAILOVER_OPS = st.one_of(
    OPS,
    st.tuples(st.just("commit"), st.booleans()),  # the records in flight commit, or fail
    st.tuples(st.just("failover"), st.booleans()),  # ... and a new controller takes over
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(FAILOVER_OPS, max_size=40), partitions=st.integers(min_value=1, max_value=7))
def test_across_failovers_a_generation_names_one_assignment_and_restored_members_keep_it(
    ops, partitions
):
    store: Store = {}
    now = T0
    c = coordinator(0.0)
    generations: dict[int, dict[str, tuple[int, ...]]] = {}  # every assignment ever handed out
    known: dict[str, int] = {}  # member -> generation it holds (as its consumer would)

    def settle_records(ok: bool) -> None:
        commit(c, now, store, ok)

    def check() -> None:
        g = c.groups.get("g")
        if g is not None and g.state is GroupState.STABLE:
            # one assignment per generation number, whichever coordinator formed it
            assert generations.setdefault(g.generation, dict(g.assignment)) == g.assignment
            owned = [p for parts in g.assignment.values() for p in parts]
            assert len(owned) == len(set(owned))  # no partition twice in a generation
            assert store["g"].generation == g.generation  # only committed ones are handed out
        wake = c.wake_at("g")
        assert wake is None or wake > now

    for op, arg in ops:
        if op == "join":
            result = c.join("g", "t", arg, now, partitions=partitions, session_timeout=SESSION,
                            rebalance_timeout=REBALANCE)  # fmt: skip
            if result.partitions is not None:
                known[arg] = result.generation
                assert (
                    generations.setdefault(result.generation, {}).get(arg, result.partitions)
                    == result.partitions
                )
        elif op == "leave":
            c.leave("g", arg, now)
            known.pop(arg, None)
        elif op == "heartbeat" and arg in known:
            try:
                c.heartbeat("g", arg, known[arg], now)
            except GroupError as exc:
                assert exc.code in (ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.UNKNOWN_MEMBER)
                known.pop(arg)
        elif op == "advance":
            now += arg
            c.tick(now)
        elif op == "commit":
            settle_records(arg)
        elif op == "failover":
            settle_records(arg)  # in flight: committed by the new leader, or lost
            c = restored(store, now)
            # every member of the persisted generation is known, with its partitions,
            # and its heartbeat with that generation succeeds: it keeps consuming
            rec = store.get("g")
            for m in rec.members if rec is not None else ():
                assert c.groups["g"].assignment[m.member_id] == m.partitions
                c.heartbeat("g", m.member_id, rec.generation, now)
        check()

    # Let the group settle: every remaining member rejoins, records commit.
    now += SESSION + MARGIN + 0.01
    for _ in range(3):
        live = list(c.groups["g"].members) if "g" in c.groups else []
        results = {m: c.join("g", "t", m, now, partitions=partitions, session_timeout=SESSION,
                              rebalance_timeout=REBALANCE) for m in live}  # fmt: skip
        settle_records(True)
        check()
    g = c.groups.get("g")
    if not live:
        assert g is None or g.state is GroupState.EMPTY
        return
    assert g is not None and g.state is GroupState.STABLE
    assert sorted(p for parts in g.assignment.values() for p in parts) == list(range(partitions))
    assert {m: r.partitions for m, r in results.items()} == g.assignment


def test_sticky_assign_gives_a_partition_claimed_twice_to_the_first_member_id():
    # Not a state the coordinator makes; the assignment must still be a partition.
    out = sticky_assign(["a", "b", "c"], 5, {"b": (0, 1, 4), "c": (4,)})
    assert sorted(p for parts in out.values() for p in parts) == list(range(5))
    assert out["b"] == (0, 1)  # b keeps its lowest two; 4 goes back to the pool


def delete(c: GroupCoordinator, now: float, store: Store) -> int:
    """Delete group "g" as the server does: the tombstone commits, then is reported."""
    deletion = c.delete("g", now)
    assert deletion.record is not None and deletion.record.deleted
    assert deletion.record.members == ()
    store["g"] = ConsumerGroupInfo(
        "g", deletion.topic, deletion.generation, deletion.partitions, (), deleted=True
    )
    assert c.deleted("g", deletion.generation, now)
    return deletion.generation


def emptied_group() -> tuple[GroupCoordinator, Store]:
    """Group "g" formed generation 1 with member "a", which left: empty, recorded."""
    c = coordinator()
    store: Store = {}
    join(c, "a", T0, store=store)
    c.leave("g", "a", T0 + 1)
    commit(c, T0 + 1, store)  # the empty record
    return c, store


def test_only_a_known_group_with_no_members_can_be_deleted():
    c = coordinator()
    store: Store = {}
    with pytest.raises(GroupError) as unknown:
        c.delete("g", T0)
    assert unknown.value.code is ErrorCode.UNKNOWN_GROUP
    join(c, "a", T0, store=store)
    with pytest.raises(GroupError) as busy:
        c.delete("g", T0 + 1)
    assert busy.value.code is ErrorCode.GROUP_NOT_EMPTY and busy.value.details["members"] == 1
    with pytest.raises(GroupError) as wrong_topic:
        c.delete("g", T0 + 1, topic="other")
    assert wrong_topic.value.code is ErrorCode.INVALID_REQUEST
    assert c.take_records() == []  # a refused delete makes no record
    # once its only member's session ran out, it can go
    assert c.delete("g", T0 + 1 + SESSION + 0.1).generation == 2


def test_a_deleted_group_is_hidden_and_joining_the_name_counts_on_from_the_deletion():
    c, store = emptied_group()
    assert delete(c, T0 + 2, store) == 2
    assert c.list_groups(T0 + 2) == []
    assert c.describe("g", T0 + 2).topic is None
    assert heartbeat_code(c, "a", 1, T0 + 2) is ErrorCode.UNKNOWN_MEMBER
    # deleting it again starts nothing new: the same number, no record
    again = c.delete("g", T0 + 3)
    assert (again.generation, again.record) == (2, None)
    # the name joined again (any topic) is a new group, above the tombstone
    fresh = join(c, "b", T0 + 4, topic="t2", store=store)
    assert fresh.generation == 3 and c.describe("g", T0 + 4).topic == "t2"
    assert [v.name for v in c.list_groups(T0 + 4)] == ["g"]


def test_a_new_controller_restores_a_deletion_and_keeps_counting():
    c, store = emptied_group()
    assert delete(c, T0 + 2, store) == 2
    c2 = restored(store, T0 + 3)
    assert c2.list_groups(T0 + 3) == []
    assert c2.delete("g", T0 + 3).record is None
    assert join(c2, "b", T0 + 4, store=store).generation == 3


def test_a_join_while_the_tombstone_commits_keeps_the_group_alive():
    c, store = emptied_group()
    deletion = c.delete("g", T0 + 2)
    assert deletion.generation == 2
    joined = join(c, "b", T0 + 2, store=store)  # before the tombstone is reported
    assert joined.generation == 3  # above the deletion: its claims win over the deletes
    assert not c.deleted("g", deletion.generation, T0 + 3)
    assert [v.name for v in c.list_groups(T0 + 3)] == ["g"]


# ---------------------------------------------------------------- offsets retention

RETENTION = 60.0


def test_a_group_is_idle_once_empty_for_the_retention_counted_from_its_last_member():
    c, _ = emptied_group()  # its only member left at T0 + 1
    assert c.idle_groups(T0 + 1 + RETENTION - 0.1, RETENTION) == []
    assert c.idle_groups(T0 + 1 + RETENTION, RETENTION) == ["g"]
    # Joined and left again in between: the count starts over at the leave,
    # even though no idle_groups call saw the member.
    c2, store2 = emptied_group()
    join(c2, "b", T0 + 30, store=store2)
    c2.leave("g", "b", T0 + 40)
    commit(c2, T0 + 40, store2)
    assert c2.idle_groups(T0 + 1 + RETENTION, RETENTION) == []
    assert c2.idle_groups(T0 + 40 + RETENTION, RETENTION) == ["g"]


def test_a_live_group_is_never_idle_and_a_dead_session_starts_the_count():
    c = coordinator()
    store: Store = {}
    join(c, "a", T0, store=store)
    assert c.idle_groups(T0 + SESSION, RETENTION) == []  # still within its session
    # Silent past its session: the call ends it there, and the count starts then.
    silent_until = T0 + 10 * RETENTION
    assert c.idle_groups(silent_until, RETENTION) == []
    assert c.idle_groups(silent_until + RETENTION, RETENTION) == ["g"]


def test_a_restored_empty_group_counts_from_the_first_look_and_a_deleted_one_never():
    _, store = emptied_group()
    c2 = restored(store, T0 + 5 * RETENTION)  # a new controller, long after the leave
    now = T0 + 5 * RETENTION
    assert c2.idle_groups(now, RETENTION) == []  # the first look starts the count
    assert c2.idle_groups(now + RETENTION, RETENTION) == ["g"]
    assert delete(c2, now + RETENTION, store) == 2
    assert c2.idle_groups(now + 10 * RETENTION, RETENTION) == []
