"""Static group membership (Kafka KIP-345) in the GroupCoordinator, fake clock:
a restarted member with its old instance id takes its place back without a
rebalance, the replaced member id is fenced, the instance id is persisted and
restored, and a static member that stays away expires like any other."""

from __future__ import annotations

import pytest
from raftlog.client.errors import ErrorCode
from raftlog.server.group_coordinator import (
    MAX_FENCED_PER_GROUP,
    MAX_INSTANCE_ID_CHARS,
    GroupCoordinator,
    GroupError,
    GroupState,
    JoinResult,
)

from .test_group_coordinator import (
    REBALANCE,
    SESSION,
    T0,
    Store,
    commit,
    coordinator,
    heartbeat_code,
    restored,
)


def join(
    c: GroupCoordinator,
    member: str,
    now: float,
    instance: str | None = None,
    store: Store | None = None,
    partitions: int = 6,
) -> JoinResult:
    """Join (static with ``instance``); a record this made is committed and the join
    polled again, as the server's long poll does."""

    def once() -> JoinResult:
        return c.join("g", "t", member, now, partitions=partitions, session_timeout=SESSION,
                      rebalance_timeout=REBALANCE, instance_id=instance)  # fmt: skip

    result = once()
    if any(rec.members for rec in commit(c, now, store)):
        result = once()
    return result


def stable_pair(c: GroupCoordinator, store: Store | None = None) -> tuple[JoinResult, JoinResult]:
    """Static member a (instance "ia") and dynamic member b, stable."""
    join(c, "a", T0, "ia", store)
    join(c, "b", T0, None, store)
    a = join(c, "a", T0, "ia", store)
    b = join(c, "b", T0, None, store)
    assert a.state is b.state is GroupState.STABLE and a.generation == b.generation
    return a, b


def test_a_restarted_static_member_takes_its_partitions_back_without_a_rebalance():
    c = coordinator()
    a, b = stable_pair(c)
    rebalances = c.rebalances
    # "a" restarts: a new member id, the same instance id.
    a2 = join(c, "a2", T0 + 1, "ia")
    assert a2.state is GroupState.STABLE
    assert (a2.generation, a2.partitions) == (a.generation, a.partitions)
    assert c.take_records() == []  # nothing to persist: the generation is unchanged
    assert c.rebalances == rebalances
    # The other member never noticed: its generation still holds.
    c.heartbeat("g", "b", b.generation, T0 + 1)
    c.heartbeat("g", "a2", a2.generation, T0 + 1)
    assert set(c.groups["g"].members) == {"a2", "b"}
    view = c.describe("g", T0 + 1)
    assert view.instance_ids == {"a2": "ia"}
    assert dict((m, p) for m, _c, p in view.members) == {"a2": a.partitions, "b": b.partitions}


def test_the_replaced_member_id_is_fenced_and_cannot_take_the_instance_back():
    c = coordinator()
    a, _b = stable_pair(c)
    join(c, "a2", T0 + 1, "ia")
    assert heartbeat_code(c, "a", a.generation, T0 + 1) is ErrorCode.FENCED_INSTANCE_ID
    with pytest.raises(GroupError) as info:
        c.join("g", "t", "a", T0 + 1, partitions=6, session_timeout=SESSION,
               rebalance_timeout=REBALANCE, instance_id="ia")  # fmt: skip
    assert info.value.code is ErrorCode.FENCED_INSTANCE_ID
    assert "ia" in info.value.message
    assert set(c.groups["g"].members) == {"a2", "b"}  # the newer member kept its place
    # A leave from the fenced id changes nothing either.
    assert c.leave("g", "a", T0 + 1) is False
    assert c.groups["g"].state is GroupState.STABLE


def test_a_dynamic_member_with_a_new_id_is_a_new_member_and_rebalances():
    """The contrast: without an instance id a restart is a join of a stranger."""
    c = coordinator()
    _a, b = stable_pair(c)
    fresh = c.join("g", "t", "b2", T0 + 1, partitions=6, session_timeout=SESSION,
                   rebalance_timeout=REBALANCE)  # fmt: skip
    assert fresh.state is GroupState.REBALANCING
    assert heartbeat_code(c, "b", b.generation, T0 + 1) is ErrorCode.REBALANCE_IN_PROGRESS


def test_a_static_member_that_stays_away_expires_and_the_others_rebalance():
    c = coordinator()
    a, b = stable_pair(c)
    # a closed (a static member does not leave); only b heartbeats.
    for t in (T0 + 1, T0 + 2):
        c.heartbeat("g", "b", b.generation, t)
    late = T0 + SESSION + 0.5  # a's session ran out
    assert heartbeat_code(c, "b", b.generation, late) is ErrorCode.REBALANCE_IN_PROGRESS
    assert set(c.groups["g"].members) == {"b"}
    later = join(c, "b", T0 + SESSION + 0.6)
    assert later.generation == b.generation + 1
    assert later.partitions == tuple(range(6))
    # a restart after its session: a new member again, the group rebalances to split.
    back = c.join("g", "t", "a3", T0 + SESSION + 1, partitions=6, session_timeout=SESSION,
                  rebalance_timeout=REBALANCE, instance_id="ia")  # fmt: skip
    assert back.state is GroupState.REBALANCING
    assert a.partitions  # it had some before


def test_a_takeover_during_a_rebalance_keeps_the_old_members_place_and_partitions():
    c = coordinator()
    a, b = stable_pair(c)
    # c joins: a rebalance starts; b rejoins; a restarts (as a2) before rejoining.
    c.join("g", "t", "c", T0 + 1, partitions=6, session_timeout=SESSION,
           rebalance_timeout=REBALANCE)  # fmt: skip
    c.join("g", "t", "b", T0 + 1, partitions=6, session_timeout=SESSION,
           rebalance_timeout=REBALANCE)  # fmt: skip
    join(c, "a2", T0 + 1, "ia")
    g = c.groups["g"]
    assert g.state is GroupState.STABLE and set(g.members) == {"a2", "b", "c"}
    assert g.generation == a.generation + 1
    # Sticky through the takeover: a2 keeps what a owned, within its new share of 2.
    assert set(g.assignment["a2"]) <= set(a.partitions) and len(g.assignment["a2"]) == 2
    assert set(g.assignment["b"]) <= set(b.partitions)


def test_a_takeover_while_the_generation_waits_for_its_record_hands_the_slot_to_the_new_id():
    c = coordinator()
    store: Store = {}
    join(c, "a", T0, "ia", store)
    # b joins and a rejoins: the generation is formed, its record not yet committed.
    c.join("g", "t", "b", T0, partitions=6, session_timeout=SESSION, rebalance_timeout=REBALANCE)
    c.join("g", "t", "a", T0, partitions=6, session_timeout=SESSION, rebalance_timeout=REBALANCE,
           instance_id="ia")  # fmt: skip
    assert c.groups["g"].pending is not None
    waiting = c.join("g", "t", "a2", T0, partitions=6, session_timeout=SESSION,
                     rebalance_timeout=REBALANCE, instance_id="ia")  # fmt: skip
    assert waiting.partitions is None  # still waiting for the record
    records = commit(c, T0, store)
    # The record names the old id with the instance id; in memory the slot is a2's.
    assert [(m.member_id, m.instance_id) for m in records[-1].members] == [
        ("a", "ia"),
        ("b", None),
    ]
    g = c.groups["g"]
    assert g.state is GroupState.STABLE and set(g.assignment) == {"a2", "b"}
    assert g.assignment["a2"] == records[-1].members[0].partitions


def test_the_instance_id_is_persisted_and_a_new_coordinator_maps_a_new_member_to_it():
    c = coordinator()
    store: Store = {}
    a, b = stable_pair(c, store)
    assert {m.member_id: m.instance_id for m in store["g"].members} == {"a": "ia", "b": None}
    # Controller fail-over, and the static member restarts meanwhile.
    c2 = restored(store, T0 + 1)
    a2 = join(c2, "a2", T0 + 1, "ia")
    assert (a2.state, a2.generation, a2.partitions) == (
        GroupState.STABLE,
        a.generation,
        a.partitions,
    )
    assert c2.take_records() == []
    c2.heartbeat("g", "b", b.generation, T0 + 1)
    assert heartbeat_code(c2, "a", a.generation, T0 + 1) is ErrorCode.FENCED_INSTANCE_ID


@pytest.mark.parametrize("bad", ["", "x" * (MAX_INSTANCE_ID_CHARS + 1)])
def test_an_instance_id_out_of_bounds_is_refused(bad: str):
    c = coordinator()
    with pytest.raises(GroupError) as info:
        c.join("g", "t", "a", T0, partitions=6, instance_id=bad)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert "g" not in c.groups or not c.groups["g"].members


def test_the_fenced_ids_a_group_remembers_are_bounded_newest_kept():
    c = coordinator()
    stable_pair(c)
    ids = [f"a{i}" for i in range(MAX_FENCED_PER_GROUP + 6)]
    for member in ids:
        join(c, member, T0 + 1, "ia")
    fenced = c.groups["g"].fenced
    assert len(fenced) == MAX_FENCED_PER_GROUP
    assert ids[-2] in fenced and "a" not in fenced  # the oldest forgotten first
    assert set(c.groups["g"].members) == {ids[-1], "b"}
