"""Who records a node's peer address in the metadata (log format NODE_PEER_ADDRESS):
the controller for the nodes of its cluster.toml, `member add` for a node that joins,
and the controller again for whatever a node says of itself in its peer hello.
In one process, real drivers and stores over an in-memory network; the sockets
(peers dialling a learned node's peer address) are in test_peer_address.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio
from raftlog.client.protocol import NOT_SAID, NotSaid
from raftlog.log.commands import SetLogFormat
from raftlog.log.features import NODE_PEER_ADDRESS
from raftlog.log.metadata import NodeInfo
from raftlog.server import membership
from raftlog.server.config import ClusterConfig, NodeConfig
from raftlog.server.membership_ops import _reported_peer_address

from .inproc_cluster import InProcCluster, small_config


def with_fake_peer_addresses(cfg: ClusterConfig) -> ClusterConfig:
    """Peer addresses nobody dials: the in-memory network ignores addresses."""
    nodes = [dataclasses.replace(n, peer_address=f"127.0.0.2:{n.port}") for n in cfg.nodes]
    return dataclasses.replace(cfg, nodes=nodes)


async def raise_format(c: InProcCluster, to: int) -> None:
    """What the controller's LogFormatUpgrade does once every node reads ``to``
    (it needs the peer links' hellos, which the in-memory network has not)."""
    leader = await c.wait_leader(0)
    outcome = await c.driver(leader).propose(0, SetLogFormat(to), trio.current_time() + 10)
    assert outcome.error is None, outcome


def recorded(c: InProcCluster, at: str) -> dict[str, str | None]:
    return {n: info.peer_address for n, info in c.driver(at).metadata.nodes.items()}


def incarnations(c: InProcCluster, at: str) -> dict[str, str]:
    return {n: info.incarnation for n, info in c.driver(at).metadata.nodes.items()}


async def test_the_controller_records_the_files_peer_addresses_once_the_format_allows(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cfg = with_fake_peer_addresses(small_config(tmp_path))
    want = {n.id: n.peer_address for n in cfg.nodes}
    async with InProcCluster(cfg, nursery).running() as c:
        leader = await c.wait_leader(0)
        await c.wait_for(lambda: len(recorded(c, leader)) == 3, what="all registered")
        # Registered at the baseline format: no node may be sent the longer form.
        assert recorded(c, leader) == dict.fromkeys(want)
        before = incarnations(c, leader)
        await raise_format(c, NODE_PEER_ADDRESS)
        for node in c.node_ids:
            await c.wait_for(lambda node=node: recorded(c, node) == want, what=f"{node} updated")
        # Re-registered with the incarnations already recorded (DESIGN §3 rule 7).
        assert incarnations(c, leader) == before


async def test_member_add_records_the_peer_address_the_node_reports(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    async with InProcCluster(small_config(tmp_path), nursery).running() as c:
        leader = await c.wait_leader(0)
        await c.wait_for(lambda: len(recorded(c, leader)) == 3, what="all registered")
        c.cfg.nodes.append(
            NodeConfig(id="n4", address="127.0.0.1:1", host="127.0.0.1", port=1,
                       data_dir=tmp_path / "n4", join=True, peer_address="127.0.0.1:2")
        )  # fmt: skip
        await c.start("n4")
        # Below the format, the node is registered without it.
        await c.call(leader, "member_add", node="n4", address="127.0.0.1:1")
        assert recorded(c, leader)["n4"] is None
        await raise_format(c, NODE_PEER_ADDRESS)
        # Added again (an operator's retry): now the record carries it.
        await c.call(leader, "member_add", node="n4", address="127.0.0.1:1")
        assert recorded(c, leader)["n4"] == "127.0.0.1:2"
        assert c.driver(leader).metadata.nodes["n4"].incarnation == (
            c.stores["n4"].identity.incarnation
        )


@pytest.mark.parametrize(
    ("reported", "recorded_as"),
    [("127.0.0.1:2", "127.0.0.1:2"), (None, None), ("127.0.0.1:1", None),
     ("no-port", None), (7, None)],
)  # fmt: skip
def test_only_a_well_formed_peer_address_other_than_the_address_is_recorded(
    reported: object, recorded_as: str | None
) -> None:
    reply = {"node": "n4", "incarnation": "i", "peer_address": reported}
    assert _reported_peer_address(reply, "127.0.0.1:1") == recorded_as


def hellos_say(c: InProcCluster, said: dict[str, str | None]) -> None:
    """Every driver hears ``said`` as what those nodes' peer hellos said of their
    peer address (the listener's LogFormats, which the in-memory network has not)."""

    def peer_address_of(node_id: str) -> str | NotSaid | None:
        return said.get(node_id, NOT_SAID)

    for node in c.node_ids:
        c.driver(node).said_peer_address = peer_address_of


async def files_recorded(c: InProcCluster) -> tuple[str, dict[str, str | None]]:
    """The format raised and the files' peer addresses recorded: the leader of
    the metadata group, and what its records say."""
    await raise_format(c, NODE_PEER_ADDRESS)
    leader = await c.wait_leader(0)
    want = {n.id: n.peer_address for n in c.cfg.nodes}
    await c.wait_for(lambda: recorded(c, leader) == want, what="the files' recorded")
    return leader, want


async def test_the_controller_records_what_a_node_says_of_its_peer_address(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Changed or removed in the node's own file: its hello says so, and that wins
    over the controller's file (which still has the old one)."""
    cfg = with_fake_peer_addresses(small_config(tmp_path))
    async with InProcCluster(cfg, nursery).running() as c:
        leader, want = await files_recorded(c)
        before = incarnations(c, leader)
        # The followers: the leader goes by its own file (shared here) for itself.
        changed, removed = (n for n in c.node_ids if n != leader)
        said: dict[str, str | None] = {changed: "127.0.0.3:9", removed: None}
        hellos_say(c, said)
        want |= said
        for node in c.node_ids:
            await c.wait_for(lambda node=node: recorded(c, node) == want, what=f"{node} updated")
        assert incarnations(c, leader) == before  # rule 7: never from a hello
        said[changed] = None  # and removed again
        want |= said
        await c.wait_for(lambda: recorded(c, leader) == want, what=f"{changed}'s removed")


async def test_a_peer_address_the_state_machine_would_refuse_is_never_proposed(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    cfg = with_fake_peer_addresses(small_config(tmp_path))
    async with InProcCluster(cfg, nursery).running() as c:
        leader, want = await files_recorded(c)
        follower = next(n for n in c.node_ids if n != leader)
        hellos_say(c, {follower: cfg.node(follower).address})  # its client address
        group = c.driver(leader).groups[0]
        membership.register_nodes(c.driver(leader))
        # Proposed, it would be refused at every round (every 0.5 s, for good).
        assert not group.queued_cmds and not group.proposals
        assert recorded(c, leader) == want


def fake_driver(me: str, said: dict[str, str | None], learned: set[str]) -> object:
    class Driver:
        node_id = me
        learned_peers = learned

        def said_peer_address(self, node_id: str) -> str | NotSaid | None:
            return said.get(node_id, NOT_SAID)

    return Driver()


@pytest.mark.parametrize(
    ("node", "file_says", "hello_says", "learned", "wanted"),
    [
        # This node: its own file, whatever the record.
        ("n1", "127.0.0.1:8", NOT_SAID, False, "127.0.0.1:8"),
        ("n1", None, NOT_SAID, False, None),
        # A peer that said: what it said, even none.
        ("n2", "127.0.0.1:8", "127.0.0.1:9", False, "127.0.0.1:9"),
        ("n2", "127.0.0.1:8", None, False, None),
        # A peer that did not: set from this file, never cleared by it.
        ("n2", "127.0.0.1:8", NOT_SAID, False, "127.0.0.1:8"),
        ("n2", None, NOT_SAID, False, "127.0.0.1:7"),
        # A learned node's entry copies an older record: the record stays.
        ("n2", "127.0.0.1:8", NOT_SAID, True, "127.0.0.1:7"),
    ],
)
def test_which_peer_address_a_record_should_carry(
    node: str,
    file_says: str | None,
    hello_says: str | NotSaid | None,
    learned: bool,
    wanted: str | None,
) -> None:
    said = {} if hello_says is NOT_SAID else {node: hello_says}
    driver = fake_driver("n1", said, {node} if learned else set())  # type: ignore[arg-type]
    entry = NodeConfig(id=node, address="127.0.0.1:1", host="127.0.0.1", port=1,
                       data_dir=Path(), peer_address=file_says)  # fmt: skip
    info = NodeInfo("127.0.0.1:1", "inc", "127.0.0.1:7")
    assert membership._recorded_peer_address(driver, entry, info) == wanted
