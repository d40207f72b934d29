"""Cooperative rebalancing in the GroupCoordinator (server/group_coordinator.py).

A cooperative member keeps consuming its partitions while it rejoins and
reports them (``owned``); a generation never gives a partition to a member
while another member still reports owning it. The partition is withheld,
its owner gives it up, and the next rebalance hands it out (Kafka KIP-429).

The hypothesis test drives clients that follow the protocol the way
client/consumer.py does (eager and cooperative, mixed), with controller
fail-overs and failed records, and checks after every step that no two
clients own one partition, then that the group settles with every
partition owned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.client.errors import ErrorCode
from raftlog.server.group_coordinator import GroupCoordinator, GroupError, GroupState

from .test_group_coordinator import MARGIN, SESSION, T0, Store, commit, restored

REBALANCE = 5.0
PARTITIONS = 6


def cjoin(c: GroupCoordinator, member: str | None, now: float, owned=(), **kw):
    return c.join("g", "t", member, now, partitions=kw.pop("partitions", PARTITIONS),
                  session_timeout=kw.pop("session", SESSION), rebalance_timeout=REBALANCE,
                  owned=owned, cooperative=kw.pop("cooperative", True), **kw)  # fmt: skip


def form(c: GroupCoordinator, members: dict[str, set[int]], now: float, store: Store):
    """Every member of ``members`` (id -> owned) joins until a generation forms;
    returns id -> partitions of the formed generation."""
    out: dict[str, tuple[int, ...]] = {}
    for _ in range(3):
        for member, owned in members.items():
            result = cjoin(c, member, now, sorted(owned))
            if result.partitions is not None:
                out[member] = result.partitions
        commit(c, now, store)
        if len(out) == len(members):
            return out
    raise AssertionError(f"no generation formed: {c.groups['g']}")


def test_a_joining_member_gets_moved_partitions_only_after_their_owner_let_go():
    c, store = GroupCoordinator(0.0, failover_margin_s=MARGIN), {}
    first = form(c, {"a": set(), "b": set()}, T0, store)
    assert first == {"a": (0, 1, 2), "b": (3, 4, 5)}
    gen1 = c.groups["g"].generation
    # c joins; a and b keep consuming and report what they own.
    assert cjoin(c, "c", T0 + 1).partitions is None
    assert c.groups["g"].state is GroupState.REBALANCING
    second = form(c, {"a": {0, 1, 2}, "b": {3, 4, 5}, "c": set()}, T0 + 1, store)
    # Sticky wants a:(0,1) b:(3,4) c:(2,5); 2 and 5 are still owned: withheld.
    assert second == {"a": (0, 1), "b": (3, 4), "c": ()}
    g = c.groups["g"]
    assert g.state is GroupState.STABLE and c.describe("g", T0 + 1).withheld == (2, 5)
    assert g.generation == gen1 + 1
    # a gives 2 up and rejoins: b still owns 5, so nothing moves yet.
    assert cjoin(c, "a", T0 + 2, owned=[0, 1]).partitions == (0, 1)
    assert g.state is GroupState.STABLE
    # b gives 5 up: the second rebalance starts and hands both to c.
    assert cjoin(c, "b", T0 + 2, owned=[3, 4]).partitions is None
    third = form(c, {"a": {0, 1}, "b": {3, 4}, "c": set()}, T0 + 2, store)
    assert third == {"a": (0, 1), "b": (3, 4), "c": (2, 5)}
    assert not c.describe("g", T0 + 2).withheld
    # The persisted record of the middle generation lists nobody for 2 and 5.
    assert store["g"].generation == gen1 + 2


def test_a_heartbeat_with_the_current_generation_releases_what_it_lost():
    c, store = GroupCoordinator(0.0, failover_margin_s=MARGIN), {}
    form(c, {"a": set()}, T0, store)
    cjoin(c, "b", T0 + 1)
    second = form(c, {"a": {0, 1, 2, 3, 4, 5}, "b": set()}, T0 + 1, store)
    assert second["b"] == ()
    gen = c.groups["g"].generation
    # b heartbeating changes nothing: it never owned what is withheld.
    c.heartbeat("g", "b", gen, T0 + 1.5)
    # a's heartbeat with the new generation says it applied it (gave 3-5 up).
    with pytest.raises(GroupError) as info:
        c.heartbeat("g", "a", gen, T0 + 2)
    assert info.value.code is ErrorCode.REBALANCE_IN_PROGRESS
    third = form(c, {"a": {0, 1, 2}, "b": set()}, T0 + 2, store)
    assert third == {"a": (0, 1, 2), "b": (3, 4, 5)}


def test_eager_and_cooperative_members_mix():
    c, store = GroupCoordinator(0.0, failover_margin_s=MARGIN), {}
    form(c, {"a": set(), "b": set()}, T0, store)
    cjoin(c, "e", T0 + 1)
    # a is eager (gave everything up), b cooperative (keeps 3, 4, 5).
    second = form(c, {"a": set(), "b": {3, 4, 5}, "e": set()}, T0 + 1, store)
    assert second == {"a": (0, 1), "b": (3, 4), "e": (2,)}
    assert c.describe("g", T0 + 1).withheld == (5,)


def test_a_restored_generation_with_withheld_partitions_rebalances_at_once():
    c, store = GroupCoordinator(0.0, failover_margin_s=MARGIN), {}
    form(c, {"a": set(), "b": set()}, T0, store)
    cjoin(c, "c", T0 + 1)
    form(c, {"a": {0, 1, 2}, "b": {3, 4, 5}, "c": set()}, T0 + 1, store)
    # The controller changes before a and b gave 2 and 5 up.
    new = restored(store, T0 + 2)
    g = new.groups["g"]
    assert g.state is GroupState.REBALANCING
    # a never learned the middle generation: it still owns 2, so c waits for it.
    after = form(new, {"a": {0, 1, 2}, "b": {3, 4}, "c": set()}, T0 + 2, store)
    assert after == {"a": (0, 1), "b": (3, 4), "c": (5,)}
    assert new.describe("g", T0 + 2).withheld == (2,)


@pytest.mark.parametrize("cooperative", [True, False])
def test_a_member_that_did_not_rejoin_is_not_dropped_while_it_may_still_consume(
    cooperative: bool,
):
    c, store = GroupCoordinator(0.0, failover_margin_s=MARGIN), {}
    long_session = 20.0
    for _ in range(2):
        cjoin(c, "a", T0, session=long_session, cooperative=cooperative)
        cjoin(c, "b", T0, session=long_session)
        commit(c, T0, store)
    gen = c.groups["g"].generation
    c.heartbeat("g", "a", gen, T0 + 1)  # a was last told it is a member at T0 + 1
    cjoin(c, "c", T0 + 2)  # a rebalance; b and c join, a does not
    cjoin(c, "b", T0 + 2, owned=[3, 4, 5], session=long_session)
    past_deadline = T0 + 2 + REBALANCE + 1
    c.tick(past_deadline)
    if not cooperative:
        # Eager: dropped at the deadline, as in Kafka (a zombie if it still
        # consumes; its commits are fenced by generation).
        assert "a" not in c.groups["g"].members
        return
    assert "a" in c.groups["g"].members  # may still consume until T0 + 1 + 20
    assert c.wake_at("g") == pytest.approx(T0 + 1 + long_session, abs=1e-3)
    c.tick(T0 + 1 + long_session + 0.01)
    assert "a" not in c.groups["g"].members


# ---------------------------------------------------------------- the property


@dataclass
class ClientModel:
    """One consumer as client/consumer.py runs it, reduced to what it owns."""

    name: str
    cooperative: bool
    owned: set[int] = field(default_factory=set)
    generation: int | None = None  # None: joining
    member_id: str | None = None


def step(c: GroupCoordinator, client: ClientModel, now: float) -> None:
    """One protocol action of ``client``: a heartbeat when it holds a generation,
    else a join (applying an assignment that arrives, revoking first)."""
    if client.generation is not None:
        try:
            c.heartbeat("g", client.member_id or "", client.generation, now)
        except GroupError as exc:
            if exc.code is ErrorCode.UNKNOWN_MEMBER or not client.cooperative:
                client.owned = set()  # eager, or maybe expired: give everything up
            client.generation = None
        return
    result = cjoin(c, client.member_id, now, sorted(client.owned), cooperative=client.cooperative)
    client.member_id = result.member_id
    if result.partitions is None:
        return
    new = set(result.partitions)
    lost = client.owned - new
    client.owned = new  # revoke what it lost, then take (claim) what it gained
    # Gave something up: rejoin at once (cooperative) so it can be handed out.
    client.generation = None if lost else result.generation


def check_exclusive(clients: list[ClientModel]) -> None:
    seen: dict[int, str] = {}
    for client in clients:
        for p in client.owned:
            assert p not in seen, f"partition {p} owned by {seen[p]} and {client.name}"
            seen[p] = client.name


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["step", "step", "step", "add", "leave", "failover", "fail_records"]),
        st.integers(min_value=0, max_value=7),
        st.booleans(),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(actions=ACTIONS)
def test_no_partition_is_ever_owned_twice_and_the_group_settles(actions):
    store: Store = {}
    c = GroupCoordinator(0.0, failover_margin_s=MARGIN)
    clients: list[ClientModel] = []
    now = T0
    for n, (action, pick, flag) in enumerate(actions):
        now += 0.01  # far below any session: nobody expires
        if action == "add" or not clients:
            clients.append(ClientModel(f"m{n}", cooperative=flag))
            step(c, clients[-1], now)
        elif action == "step":
            step(c, clients[pick % len(clients)], now)
        elif action == "leave":
            gone = clients.pop(pick % len(clients))
            gone.owned = set()  # close(): stop, commit, then leave
            if gone.member_id is not None:
                c.leave("g", gone.member_id, now)
        elif action == "failover":
            commit(c, now, store)
            c = restored(store, now)
        commit(c, now, store, ok=action != "fail_records")
        check_exclusive(clients)
    if not clients:
        return  # everyone left: nothing to settle
    # Quiet from here on: everyone keeps following the protocol, while time runs
    # out the sessions of members a restored controller brought back after they
    # had left (half a second a round: the live ones heartbeat well within theirs).
    for _ in range(40):
        for client in clients:
            now += 0.5 / len(clients)
            step(c, client, now)
            commit(c, now, store)
            check_exclusive(clients)
        g = c.groups.get("g")
        settled = (
            g is not None
            and g.state is GroupState.STABLE
            and not c.describe("g", now).withheld
            and set(g.members) == {client.member_id for client in clients}
        )
        if settled and all(client.generation == g.generation for client in clients):
            break
    else:
        raise AssertionError(f"the group did not settle: {c.groups.get('g')} {clients}")
    owned = sorted(p for client in clients for p in client.owned)
    assert owned == list(range(PARTITIONS))
