"""Who a data directory belongs to (DESIGN.md §3 rule 7).

A data dir records the cluster it was created for, the node id it serves and
a random incarnation chosen at its creation. A node restarted on a wiped (or
someone else's) directory therefore cannot pass for its old self: its
incarnation differs, and peers that recorded the old one refuse it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import msgpack

# Bump when the on-disk layout changes incompatibly; older code refuses newer dirs.
FORMAT_VERSION = 1


class DataDirError(Exception):
    """The data directory cannot be used by this node (wrong owner, newer format, damaged)."""


@dataclass(slots=True, frozen=True)
class NodeIdentity:
    cluster: str
    node_id: str
    incarnation: str
    format_version: int = FORMAT_VERSION

    @classmethod
    def new(cls, cluster: str, node_id: str) -> NodeIdentity:
        return cls(cluster=cluster, node_id=node_id, incarnation=uuid.uuid4().hex)

    def encode(self) -> bytes:
        return msgpack.packb(
            {
                "cluster": self.cluster,
                "node_id": self.node_id,
                "incarnation": self.incarnation,
                "format_version": self.format_version,
            }
        )

    @classmethod
    def decode(cls, value: bytes, path: str) -> NodeIdentity:
        try:
            obj = msgpack.unpackb(value, raw=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise DataDirError(f"data dir {path}: identity record is corrupt ({exc})") from exc
        if not isinstance(obj, dict):
            raise DataDirError(f"data dir {path}: identity record is corrupt (not a map)")
        version = obj.get("format_version")
        if not isinstance(version, int):
            raise DataDirError(f"data dir {path}: identity record is corrupt (no format_version)")
        # Check the version first: a newer format may have changed the other fields.
        if version > FORMAT_VERSION:
            raise DataDirError(
                f"data dir {path} has format version {version}, newer than this "
                f"raftlog supports ({FORMAT_VERSION}); upgrade raftlog"
            )
        fields = (obj.get("cluster"), obj.get("node_id"), obj.get("incarnation"))
        if not all(isinstance(f, str) and f for f in fields):
            raise DataDirError(f"data dir {path}: identity record is corrupt (missing fields)")
        cluster, node_id, incarnation = fields
        return cls(cluster, node_id, incarnation, version)

    def check(self, cluster: str, node_id: str, path: str) -> None:
        if self.cluster != cluster:
            raise DataDirError(
                f"data dir {path} belongs to cluster {self.cluster!r}, not {cluster!r}; "
                "refusing to mix clusters"
            )
        if self.node_id != node_id:
            raise DataDirError(
                f"data dir {path} belongs to node {self.node_id!r}, not {node_id!r}; "
                "check --node and data_dir in the config"
            )
