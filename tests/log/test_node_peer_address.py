"""A node's peer address in its metadata record (log format NODE_PEER_ADDRESS):
written only once every node decodes it, and kept through snapshots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from raftlog.client.errors import ErrorCode
from raftlog.log.commands import (
    CommandError,
    CommandKind,
    RegisterNode,
    SetLogFormat,
    decode_entry_commands,
    encode_entry_commands,
)
from raftlog.log.features import NODE_PEER_ADDRESS
from raftlog.log.metadata import NodeInfo
from raftlog.log.store import NodeStore

from .test_metadata import Meta, restored_elsewhere


@pytest.fixture
def meta(store: NodeStore) -> Iterator[Meta]:
    yield Meta(store)


def test_a_registration_without_a_peer_address_keeps_the_form_older_nodes_decode() -> None:
    plain = encode_entry_commands([RegisterNode("n1", "h:1", "inc")])
    assert msgpack.unpackb(plain) == [[CommandKind.REGISTER_NODE, "n1", "h:1", "inc"]]
    assert decode_entry_commands(plain) == [RegisterNode("n1", "h:1", "inc", None)]
    with_peer = encode_entry_commands([RegisterNode("n1", "h:1", "inc", "h:2")])
    assert msgpack.unpackb(with_peer) == [[CommandKind.REGISTER_NODE, "n1", "h:1", "inc", "h:2"]]
    assert decode_entry_commands(with_peer) == [RegisterNode("n1", "h:1", "inc", "h:2")]
    with pytest.raises(CommandError, match="field 3 must be str"):
        decode_entry_commands(msgpack.packb([[CommandKind.REGISTER_NODE, "n1", "h:1", "i", 2]]))


def test_a_peer_address_is_refused_below_its_log_format_by_every_replica(meta: Meta) -> None:
    (early,) = meta.run(RegisterNode("n1", "h:1", "inc", "h:2"))
    assert early.error is ErrorCode.INVALID_REQUEST
    assert f"needs log format {NODE_PEER_ADDRESS}" in early.message
    assert "n1" not in meta.sm.nodes
    meta.run(SetLogFormat(NODE_PEER_ADDRESS))
    (ok,) = meta.run(RegisterNode("n1", "h:1", "inc", "h:2"))
    assert ok.ok
    assert meta.sm.nodes["n1"] == NodeInfo("h:1", "inc", "h:2")


@pytest.mark.parametrize("peer_address", ["", "h:1"])
def test_an_empty_peer_address_or_the_address_itself_is_refused(
    meta: Meta, peer_address: str
) -> None:
    meta.run(SetLogFormat(NODE_PEER_ADDRESS))
    (bad,) = meta.run(RegisterNode("n1", "h:1", "inc", peer_address))
    assert bad.error is ErrorCode.INVALID_REQUEST
    assert "n1" not in meta.sm.nodes


def test_a_re_registration_without_a_peer_address_clears_it(meta: Meta) -> None:
    meta.run(SetLogFormat(NODE_PEER_ADDRESS))
    meta.run(RegisterNode("n1", "h:1", "inc", "h:2"))
    meta.run(RegisterNode("n1", "h:1", "inc"))
    assert meta.sm.nodes["n1"] == NodeInfo("h:1", "inc", None)


def test_the_peer_address_survives_a_snapshot_and_older_states_still_read(
    meta: Meta, tmp_path: Path
) -> None:
    meta.run(RegisterNode("n1", "h:1", "inc1"))
    # No peer address anywhere: each node entry keeps the two fields of old.
    before = msgpack.unpackb(meta.sm.snapshot_state(), raw=False, strict_map_key=False)
    assert before["nodes"] == {"n1": ["h:1", "inc1"]}
    meta.run(SetLogFormat(NODE_PEER_ADDRESS), RegisterNode("n2", "h:3", "inc2", "h:4"))
    with restored_elsewhere(meta.sm.snapshot_state(), tmp_path / "other") as reopened:
        assert reopened.nodes == {
            "n1": NodeInfo("h:1", "inc1", None),
            "n2": NodeInfo("h:3", "inc2", "h:4"),
        }
