"""Membership hooks of the multi-raft driver (DESIGN §3 rules 6 and 7).

The driver calls these small functions at fixed points; the logic lives here
so that driver.py keeps one job (the loop):

- ``bootstrap_conf``: the ConfState of group 0 on a node's very first start.
  Nodes of the initial cluster bootstrap it with every non-``join`` node as a
  voter; a ``join = true`` node starts it EMPTY: it is nobody's voter, never
  campaigns (not promotable) and learns the real configuration from the log
  the leader sends once ``member add`` made it a learner.
- ``apply_conf_entry``: apply a committed CONF_CHANGE entry to the core AND
  record the resulting ConfState in the apply batch, atomically with the state
  machine's applied index, so a restart resumes with the membership it had
  (otherwise a restarted node would count votes of the bootstrap config).
- ``admit``: refuse (pre-)vote requests from nodes this replica saw being
  removed from the group, so a removed node that did not learn of its
  removal cannot disrupt it (thesis §4.2.3; PreVote and CheckQuorum cover
  the rest, also after a restart, when that memory is gone).
- ``group_for_message``: a node added to a partition's group (as a learner,
  by ``partition reassign``) hosts no copy yet; the first message of that
  group creates one with an EMPTY ConfState. A joining replica cannot replay
  the membership from index 1 (a group's bootstrap membership is written by
  ``create_group``, not logged), so the conf change that adds nodes carries
  the membership it applies to in its context (``base_context``); earlier
  changes are skipped, their effect is in that base. A snapshot, when the
  log was compacted, carries the membership itself.
- ``sweep_joined_groups``: a group created that way that the metadata never
  lists for this node, and whose membership does not name this node, is
  deleted after ``JOINED_GROUP_GRACE_S``. Such a group is an orphan: a stale
  message from a replica that had not applied this node's removal yet
  re-created it right after the removal deleted it (jepsen's replica check
  found one, empty, on a removed node), or the reassign that added this node
  was undone. Nothing else would ever remove it.
- ``register_nodes``: the metadata leader registers the nodes of group 0 with
  their address, incarnation and peer address, and records a peer address a
  node's hello reports anew (set, changed or removed in its own file).
- ``sync_peers``: nodes registered in the metadata group (REGISTER_NODE, done
  by ``member add``) but absent from this node's cluster.toml become peers:
  the listener accepts their hello and the transport dials them; once
  unregistered (``member remove``) they are forgotten again.
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Any

import trio
from raftlog.client.protocol import NOT_SAID
from raftlog.log import keys
from raftlog.log.commands import RegisterNode
from raftlog.log.features import NODE_PEER_ADDRESS
from raftlog.log.metadata import NodeInfo
from raftlog.raft import codec
from raftlog.raft.conf_change import ConfChangeError, apply_conf_change
from raftlog.raft.types import (
    ConfChangeType,
    ConfState,
    Entry,
    Message,
    MessageType,
    Role,
)

from .config import NodeConfig, parse_address
from .groups import METADATA_GROUP, Group

log = logging.getLogger("raftlog.membership")

_VOTE_REQUESTS = frozenset({MessageType.VOTE, MessageType.PRE_VOTE})


def bootstrap_conf(cfg: Any, node_id: str) -> ConfState:
    """Group 0's membership on a node's first start (see module docstring)."""
    if cfg.node(node_id).join:
        return ConfState()
    return ConfState(voters=tuple(n.id for n in cfg.nodes if not n.join))


def apply_conf_entry(driver: Any, group: Group, entry: Entry, batch: Any) -> None:
    """Apply a committed conf change and persist the new ConfState in ``batch``."""
    if entry.index <= group.sm.applied_index:
        # A replay after restart: the stored ConfState (written with the
        # applied index in one batch) already includes this change.
        return
    try:
        cc = codec.decode_conf_change(entry.data)
    except codec.CodecError as exc:
        # Undecodable on every replica alike: ignored everywhere, consistently.
        log.warning("event=conf_change_undecodable group=%d index=%d error=%s",
                    group.gid, entry.index, exc)  # fmt: skip
        return
    before = group.raft.conf_state
    if not before.all_nodes():
        cs = _first_conf(group, cc)
        if cs is None:
            return
    else:
        cs = group.raft.apply_conf_change(cc)
    driver.store.set_conf_state(group.gid, cs, batch)
    _note_removals(group, before, cs)
    log.info(
        "event=membership_applied group=%d index=%d voters=%s learners=%s outgoing=%s",
        group.gid,
        entry.index,
        ",".join(cs.voters),
        ",".join(cs.learners + cs.learners_next),
        ",".join(cs.voters_outgoing),
    )
    if group.gid == METADATA_GROUP:
        for item in cc.changes:
            if item.type is ConfChangeType.ADD_LEARNER and item.node_id not in before.all_nodes():
                # After this Ready's metadata commands are applied: the node's
                # registration may be in the same batch (a far-behind peer).
                driver.readded_nodes.append(item.node_id)


def base_context(cs: ConfState) -> bytes:
    """The ``context`` of a conf change that ADDS nodes: the ConfState it applies to.

    A group's bootstrap membership is written by ``create_group``, not logged,
    so a node that joins later cannot rebuild the membership by replaying the
    log from index 1. It skips conf changes until the one that adds it, which
    carries the membership it applies to (see ``_first_conf``).
    """
    return codec.encode_conf_state(cs)


def _first_conf(group: Group, cc: Any) -> ConfState | None:
    """A joining node's first conf change: base membership from the context, then cc."""
    try:
        base = codec.decode_conf_state(cc.context) if cc.context else None
    except codec.CodecError:
        base = None
    if base is None or not base.voters:
        # An earlier change, before this node was added: its effect is part of
        # the base the change adding us will carry. Nothing to do until then.
        log.debug("event=conf_change_skipped group=%d reason=joining_without_base", group.gid)
        return None
    try:
        cs = apply_conf_change(base, cc)
    except ConfChangeError as exc:
        log.warning("event=conf_change_ignored group=%d reason=%s", group.gid, exc)
        return None
    # The core has no public "set membership" (it learns one from storage or a
    # snapshot); a joining replica's first membership is exactly that case.
    group.raft._switch_to_config(cs)
    return cs


def adopt_incarnation(driver: Any, node_id: str) -> None:
    """A node (re-)added to the cluster is a NEW member: expect the incarnation it
    was registered with (the one it reported to the controller at ``member add``),
    or, if that is unknown (a node too old to report it), trust its next hello.

    DESIGN §3 rule 7: ``member add`` refuses a node that is still a replica of any
    partition, so a wiped node can only come back after it was removed
    everywhere, i.e. nothing counts its old votes or acks. Taking the registered
    incarnation instead of trusting the first hello means that a peer far
    behind, which learns of the add late, still refuses the node if it was
    wiped AGAIN meanwhile.
    """
    if node_id == driver.node_id:
        return
    store = driver.store
    registered = driver.metadata.nodes.get(node_id)
    incarnation = registered.incarnation if registered is not None else ""
    if incarnation:
        if store.peer_incarnation(node_id) != incarnation:
            store.set_peer_incarnation(node_id, incarnation)
            log.info("event=peer_incarnation_adopted peer=%s incarnation=%s reason=added",
                     node_id, incarnation)  # fmt: skip
    elif store.peer_incarnation(node_id) is not None:
        store.db.delete(keys.peer_key(node_id))
        log.info("event=peer_incarnation_forgotten peer=%s reason=added", node_id)


def wake(driver: Any, group: Group) -> None:
    """Make the driver look at ``group`` on its next turn (after a direct core call
    from a handler task, like ``MultiRaft.transfer_leader`` does)."""
    driver._unquiet(group)
    driver._dirty.add(group.gid)
    driver._wake.set()


# Per group core: nodes this replica saw being removed from the group (and not
# re-added since). Weak keys: a deleted group's entry goes with its core.
_REMOVED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def _note_removals(group: Group, before: ConfState, after: ConfState) -> None:
    gone = set(before.all_nodes()) - set(after.all_nodes())
    back = set(after.all_nodes())
    removed = _REMOVED.setdefault(group.raft, set())
    removed -= back
    removed |= gone


def admit(group: Group, msg: Message, self_id: str) -> bool:
    """Whether to step ``msg``: no vote requests from nodes removed from the group.

    Only nodes this replica SAW leave are refused (thesis §4.2.3: a removed
    server that missed its removal times out and campaigns). A node merely
    unknown here may be a voter added by a change this replica has not
    applied yet; refusing it could leave a new configuration unable to elect
    a leader, so it is left to the usual vote rules (PreVote, log check).
    """
    if msg.type not in _VOTE_REQUESTS:
        return True
    removed = _REMOVED.get(group.raft)
    return not removed or msg.frm not in removed


# How long a group created by a message may stay unlisted by the metadata while
# its membership does not name this node. A learner being added names itself
# as soon as the leader's first snapshot or conf change arrives, well within it.
JOINED_GROUP_GRACE_S = 30.0


def group_for_message(driver: Any, gid: int, msg: Message) -> Group | None:
    """Create a partition group a leader replicates to us before metadata lists us."""
    if gid == METADATA_GROUP or msg.type in _VOTE_REQUESTS:
        return None  # nobody asks a non-member for votes; and group 0 always exists
    meta = driver.metadata
    if meta.partition_of_group(gid) is None:
        return None  # unknown or deleted topic: never resurrect its group
    if not driver.store.has_group(gid):
        driver.store.create_group(gid, ConfState())
    group = driver._add_partition(gid)
    info = meta.partition_of_group(gid)
    group.topic, group.partition, group.replicas = info.topic, info.partition, info.replicas
    driver.joined_by_message[gid] = trio.current_time()
    log.info("event=group_joined group=%d topic=%s partition=%s from=%s",
             gid, info.topic, info.partition, msg.frm)  # fmt: skip
    return group


def sweep_joined_groups(driver: Any, now: float) -> None:
    """Delete groups created by a message that turned out to be orphans (above)."""
    joined: dict[int, float] = driver.joined_by_message
    for gid, since in list(joined.items()):
        group = driver.groups.get(gid)
        if group is None or gid in driver._desired:
            del joined[gid]  # gone already, or the metadata lists us: a real replica
            continue
        if now - since < JOINED_GROUP_GRACE_S or _names(group.raft.conf_state, driver.node_id):
            continue
        del joined[gid]
        log.warning(
            "event=orphan_group_deleted group=%d topic=%s partition=%s joined_s_ago=%.0f "
            "reason='not a replica in the metadata nor in the group membership'",
            gid, group.topic, group.partition, now - since,
        )  # fmt: skip
        driver._delete_group(gid)


def _names(conf: ConfState, node_id: str) -> bool:
    return node_id in (*conf.voters, *conf.learners, *conf.voters_outgoing, *conf.learners_next)


def _forget_peer(driver: Any, node_id: str) -> None:
    """Undo what ``sync_peers`` did when it learned ``node_id``."""
    driver.learned_peers.discard(node_id)
    driver.cfg.nodes[:] = [n for n in driver.cfg.nodes if n.id != node_id]
    if node_id in driver.peers:
        driver.peers.remove(node_id)
    remove_peer = getattr(driver.transport, "remove_peer", None)
    if remove_peer is not None:
        remove_peer(node_id)


def register_nodes(driver: Any) -> None:
    """The metadata leader registers every configured node not registered yet, and
    records the peer address each node says it has.

    Done by the leader (only it may propose) on behalf of all nodes, with the
    address from cluster.toml and the incarnation it has seen in the peer's
    hello (recorded by the listener), retried until applied.
    """
    group = driver.groups.get(METADATA_GROUP)
    if group is None or group.role is not Role.LEADER:
        return
    if group.queued_cmds or group.proposals:
        return  # one registration round at a time
    registered = driver.metadata.nodes
    members = group.raft.conf_state.all_nodes()
    # Below NODE_PEER_ADDRESS, nodes could not decode the field.
    with_peer = driver.metadata.log_format >= NODE_PEER_ADDRESS
    for node in driver.cfg.nodes:
        if node.id not in members:
            # Only members of group 0: nodes added later are registered by
            # `member add`, removed ones stay unregistered (membership_ops).
            continue
        info = registered.get(node.id)
        if info is None:
            if node.id == driver.node_id:
                incarnation = driver.store.identity.incarnation
            else:
                incarnation = driver.store.peer_incarnation(node.id) or ""
            said = _said_peer_address(driver, node)
            peer_address = (node.peer_address if said is NOT_SAID else said) if with_peer else None
            driver.submit(METADATA_GROUP, RegisterNode(node.id, node.address, incarnation,
                                                       peer_address))  # fmt: skip
            continue
        peer_address = _recorded_peer_address(driver, node, info) if with_peer else None
        if with_peer and peer_address != info.peer_address and node.address == info.address:
            # The incarnation stays the registered one (rule 7).
            driver.submit(
                METADATA_GROUP,
                RegisterNode(node.id, info.address, info.incarnation, peer_address),
            )
            log.info("event=peer_address_recorded node=%s peer_address=%s previous=%s",
                     node.id, peer_address, info.peer_address)  # fmt: skip


def _said_peer_address(driver: Any, node: NodeConfig) -> Any:
    """The peer address ``node`` gives itself: its own file's for this node, else
    what its live link's hello said (NOT_SAID: no link, or a node too old to say)."""
    if node.id == driver.node_id:
        return node.peer_address
    said = driver.said_peer_address(node.id)
    # The state machine refuses a peer address equal to the address (at every
    # round, were it proposed): not a usable report.
    return NOT_SAID if said == node.address else said


def _recorded_peer_address(driver: Any, node: NodeConfig, info: NodeInfo) -> str | None:
    """The peer address ``node``'s record should carry.

    What the node says of itself wins: it is the one listening, so a peer address
    removed from its file is removed from its record too, and two controllers
    whose files disagree do not flip the record at each leader change. A node
    that has not said (not linked to this one, or too old) keeps its record,
    unless this node's file gives it a peer address the record lacks (registered
    before the format allowed one).
    """
    said = _said_peer_address(driver, node)
    if said is not NOT_SAID:
        return said
    if node.peer_address is None or node.id in getattr(driver, "learned_peers", ()):
        # A learned node's entry is a copy of its record, perhaps an older one.
        return info.peer_address
    return node.peer_address


def sync_peers(driver: Any) -> None:
    """Make registered nodes unknown to cluster.toml peers of this node (and forget
    such learned peers again once they are unregistered by ``member remove``)."""
    cfg = driver.cfg
    learned: set[str] = driver.__dict__.setdefault("learned_peers", set())
    for node_id in sorted(learned - set(driver.metadata.nodes)):
        # Removed: the listener no longer accepts its hello, nobody dials it.
        _forget_peer(driver, node_id)
        log.info("event=peer_forgotten peer=%s reason=unregistered", node_id)
    known = set(cfg.node_ids())
    for node_id, info in sorted(driver.metadata.nodes.items()):
        if node_id in learned and cfg.node(node_id).peer_address != info.peer_address:
            _forget_peer(driver, node_id)  # re-registered with a peer address: redial
            known.discard(node_id)
        if node_id in known or not info.address:
            continue
        try:
            host, port = parse_address(info.address)
            if info.peer_address is not None:
                parse_address(info.peer_address)
        except Exception:  # a bad address in the log must not stop the loop
            log.warning("event=peer_address_invalid peer=%s address=%s peer_address=%s",
                        node_id, info.address, info.peer_address)  # fmt: skip
            continue
        # Appended to the shared config object: the listener accepts a peer
        # hello only from ids in cfg.nodes, the transport dials from it.
        cfg.nodes.append(
            NodeConfig(id=node_id, address=info.address, host=host, port=port,
                       data_dir=Path(), join=True, peer_address=info.peer_address)
        )  # fmt: skip
        driver.peers.append(node_id)
        learned.add(node_id)
        driver._addresses[node_id] = info.address
        add_peer = getattr(driver.transport, "add_peer", None)
        if add_peer is not None:
            add_peer(node_id, cfg.dial_address(driver.node_id, node_id))
        log.info("event=peer_learned peer=%s address=%s peer_address=%s",
                 node_id, info.address, info.peer_address)  # fmt: skip
