"""Seeded random membership changes under message loss, partitions and restarts.

Also a replica that joins with no membership at all, and every combination
of PreVote / CheckQuorum.

The randomized simulator (tests/sim/) changes membership among nodes that
all bootstrapped it; this small pump-based run adds arbitrary (also invalid)
simple, joint and learner changes and an empty joiner. After every
step: at most one leader per term, and no two nodes apply different entries
at the same index. At the end: durable logs satisfy Log Matching and a leader
is elected once the network heals.
"""

from __future__ import annotations

import contextlib
import random

import pytest
from raftlog.raft.errors import NotLeaderError, ProposalDroppedError
from raftlog.raft.memory_storage import MemoryStorage
from raftlog.raft.types import ConfChange, ConfChangeItem, ConfChangeType, ConfState, Role

from .harness import Net

IDS = ["a", "b", "c", "d", "e"]
SEEDS = range(40)


def _random_change(rng: random.Random, joint: bool) -> ConfChange:
    if joint and rng.random() < 0.5:
        return ConfChange(leave_joint=True)
    items = [ConfChangeItem(rng.choice(list(ConfChangeType)), rng.choice(IDS))]
    if rng.random() < 0.3:
        items.append(ConfChangeItem(rng.choice(list(ConfChangeType)), rng.choice(IDS)))
    return ConfChange(changes=tuple(items), enter_joint=rng.random() < 0.2)


def _step(net: Net, rng: random.Random, step: int) -> None:
    r = rng.random()
    leader = net.leader()
    if r < 0.5:
        net.tick(1)
    elif r < 0.65 and leader is not None:
        with contextlib.suppress(NotLeaderError, ProposalDroppedError):
            leader.propose(b"p%d" % step)
    elif r < 0.72 and leader is not None:
        with contextlib.suppress(NotLeaderError, ProposalDroppedError):
            leader.propose_conf_change(_random_change(rng, leader.conf_state.is_joint()))
    elif r < 0.78:
        net.isolate(rng.choice(IDS))
    elif r < 0.84:
        net.heal()
    elif r < 0.88:
        net.restart(rng.choice(IDS))
    elif r < 0.90 and leader is not None:
        leader.transfer_leader(rng.choice(IDS))
    elif r < 0.92:
        m = net.members[rng.choice(IDS)]
        idx = m.node.applied_index
        if idx > m.storage.snapshot().meta.index and idx >= m.storage.first_index():
            m.storage.create_snapshot(idx, m.node.conf_state, b"")
            m.storage.compact(idx)
    else:
        net.deliver()


@pytest.mark.parametrize("seed", SEEDS)
def test_random_membership_changes_stay_safe(seed: int) -> None:
    rng = random.Random(seed)
    pre_vote, check_quorum = [(True, True), (False, True), (True, False), (False, False)][seed % 4]
    net = Net(["a", "b", "c"], seed=seed, pre_vote=pre_vote, check_quorum=check_quorum)
    # d joins knowing the bootstrap membership; e joins with none at all and
    # must rely on the membership each conf change carries (ConfChange.base).
    net.add("d", MemoryStorage(conf_state=ConfState(voters=("a", "b", "c"))))
    net.add("e", MemoryStorage())
    drop = rng.random() * 0.2
    net.filter = lambda m: rng.random() >= drop
    leaders: dict[int, str] = {}
    applied_at: dict[int, tuple[int, bytes]] = {}
    checked: dict[str, int] = {}
    for step in range(300):
        _step(net, rng, step)
        for nid, m in net.members.items():
            if m.node.role == Role.LEADER:
                first = leaders.setdefault(m.node.term, nid)
                assert first == nid, f"seed={seed} step={step}: two leaders in {m.node.term}"
            # Incremental: only entries applied since the last check (the list
            # may shrink on restart, then re-check from there).
            start = min(checked.get(nid, 0), len(m.applied))
            checked[nid] = len(m.applied)
            for e in m.applied[start:]:
                if e.term == 0:
                    continue  # padding for state restored from a snapshot
                seen = applied_at.setdefault(e.index, (e.term, e.data))
                assert seen == (e.term, e.data), f"seed={seed} step={step} index={e.index}"
    logs = {nid: {e.index: e for e in m.storage.all_entries()} for nid, m in net.members.items()}
    for a in IDS:
        for b in IDS:
            common = [i for i in logs[a] if i in logs[b] and logs[a][i].term == logs[b][i].term]
            if common:
                top = max(common)
                assert all(
                    logs[a][i] == logs[b][i] for i in logs[a] if i <= top and i in logs[b]
                ), f"seed={seed}: Log Matching between {a} and {b} up to {top}"
    net.heal()
    net.filter = None
    net.tick_until(lambda: net.leader() is not None, 300)
