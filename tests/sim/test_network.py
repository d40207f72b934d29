"""Unit tests of the simulated network: partitions, loss, delays, determinism."""

from __future__ import annotations

import random

from raftlog.raft.types import Message, MessageType

from .network import NetConfig, Network

IDS = ("n1", "n2", "n3", "n4", "n5")


def _net(cfg: NetConfig | None = None, seed: int = 1) -> Network:
    return Network(random.Random(seed), IDS, cfg or NetConfig())


def _msg(frm: str, to: str, index: int = 0) -> Message:
    return Message(type=MessageType.APPEND, to=to, frm=frm, term=1, index=index)


def test_reliable_network_delivers_in_send_order_after_one_round() -> None:
    net = _net()
    for i in range(5):
        net.send(_msg("n1", "n2", i), now=0)
    assert net.due(0) == [_msg("n1", "n2", i) for i in range(5)]
    assert net.pending() == 0


def test_delayed_message_waits_for_its_tick() -> None:
    net = _net(NetConfig(min_delay=3, max_delay=3))
    net.send(_msg("n1", "n2"), now=10)
    assert net.due(12) == []
    assert net.due(13) == [_msg("n1", "n2")]


def test_isolate_cuts_both_directions_and_heal_restores() -> None:
    net = _net()
    net.isolate("n3")
    assert not net.can_talk("n3", "n1") and not net.can_talk("n5", "n3")
    assert net.can_talk("n1", "n2")
    net.send(_msg("n3", "n1"), 0)
    net.send(_msg("n1", "n2"), 0)
    assert net.due(0) == [_msg("n1", "n2")]
    assert net.stats.cut == 1
    net.heal()
    assert net.can_talk("n3", "n1")


def test_ring_keeps_only_neighbours() -> None:
    net = _net()
    net.ring()
    assert net.can_talk("n1", "n2") and net.can_talk("n1", "n5")
    assert not net.can_talk("n1", "n3") and not net.can_talk("n2", "n4")


def test_bridge_node_talks_to_both_halves_that_cannot_talk_to_each_other() -> None:
    net = _net()
    net.bridge("n3")
    assert all(net.can_talk("n3", n) for n in IDS if n != "n3")
    assert not net.can_talk("n1", "n4") and not net.can_talk("n2", "n5")
    assert net.can_talk("n1", "n2") and net.can_talk("n4", "n5")


def test_one_way_cut_is_asymmetric() -> None:
    net = _net()
    net.one_way("n1", "n2")
    net.send(_msg("n1", "n2"), 0)
    net.send(_msg("n2", "n1"), 0)
    assert net.due(0) == [_msg("n2", "n1")]


def test_connected_majority_follows_partitions_and_crashes() -> None:
    net = _net()
    assert net.connected_majority(IDS)
    net.halves(["n1", "n2"])
    assert net.connected_majority(IDS)
    assert not net.connected_majority(["n1", "n2", "n3"])
    net.ring()
    assert not net.connected_majority(IDS)


def test_lossy_network_drops_duplicates_and_reorders_deterministically() -> None:
    cfg = NetConfig(drop=0.2, duplicate=0.2, max_delay=2, reorder=0.2)

    def run(seed: int) -> list[int]:
        net = _net(cfg, seed)
        for i in range(200):
            net.send(_msg("n1", "n2", i), now=0)
        out: list[int] = []
        for t in range(20):
            out.extend(m.index for m in net.due(t))
        return out

    a = run(7)
    assert a == run(7)
    assert a != run(8)
    assert len(set(a)) < 200  # some lost
    assert len(a) > len(set(a))  # some duplicated
    assert a != sorted(a)  # some reordered


def test_lost_snapshots_are_reported_once() -> None:
    net = _net()
    net.isolate("n2")
    snap = Message(type=MessageType.SNAPSHOT, to="n2", frm="n1", term=1)
    net.send(snap, 0)
    assert net.due(0) == []
    assert net.take_lost_snapshots() == [snap]
    assert net.take_lost_snapshots() == []
