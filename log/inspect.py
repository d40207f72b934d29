"""Read a node's data directory offline and read-only: what did this replica apply?

A post-mortem tool (jepsen compares every replica's copy after a run; an
operator can look at a stopped node's disk). It never writes: RocksDB is
opened with ``AccessType.read_only()``, which takes no lock and replays the
WAL into memory only, so it also works on the directory of a node that is
still running (it then sees the state as of the open) or was SIGKILLed.

What a replica "applied" is exactly what its fetch path would serve: the
records of the partition state machine between its ``start_offset``
(retention, snapshots) and ``next_offset`` (the applied high watermark).
Batches at or beyond ``next_offset`` (pre-fetched by a snapshot transfer,
not applied yet) are not part of it, which ``PartitionStateMachine.read``
already guarantees; we reuse it instead of decoding the keys a second way.

    python -m raftlog.log.inspect --topic jepsen DATA_DIR [DATA_DIR ...]

prints one JSON document (see ``main``) with every given directory's copy of
the topic's partitions; values are UTF-8 with ``surrogateescape`` so that any
bytes survive the trip through JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftlog.client.protocol import Record, decode_batch
from rocksdict import AccessType, Options, Rdict

from . import keys
from .identity import DataDirError, NodeIdentity
from .metadata import METADATA_GROUP_ID, MetadataStateMachine, TopicInfo
from .partition import PartitionStateMachine
from .store import NodeStore

__all__ = ["DataDirReader", "PartitionView", "open_read_only"]

# Stored bytes per read while iterating a partition: bounds memory, not results.
READ_CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(slots=True, frozen=True)
class PartitionView:
    """A partition group's applied state on one node."""

    group_id: int
    applied_index: int
    start_offset: int  # first offset still stored
    end_offset: int  # next offset to be appended (the applied high watermark)


class DataDirReader:
    """A read-only view of one node's RocksDB (use ``open_read_only``)."""

    def __init__(self, store: NodeStore) -> None:
        # A NodeStore around a read-only handle: the state machines below only
        # read through ``store.db``; nothing here calls a NodeStore writer.
        self._store = store
        self.path = store.path
        self.identity = store.identity

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> DataDirReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def group_ids(self) -> list[int]:
        """Every Raft group this node holds (its group markers), metadata group included."""
        return self._store.scan_group_ids()

    def has_group(self, group_id: int) -> bool:
        return self._store.db.get(keys.group_marker(group_id)) is not None

    def topics(self) -> dict[str, TopicInfo]:
        """Topics as this node's applied metadata state (group 0) has them; empty when
        the node holds no metadata group."""
        if not self.has_group(METADATA_GROUP_ID):
            return {}
        return dict(MetadataStateMachine(self._store).topics)

    def partition(self, group_id: int) -> PartitionView:
        sm = PartitionStateMachine(self._store, group_id)
        return PartitionView(group_id, sm.applied_index, sm.start_offset, sm.next_offset)

    def records(self, group_id: int) -> Iterator[Record]:
        """The applied records of a partition group, in offset order."""
        sm = PartitionStateMachine(self._store, group_id)
        offset = sm.start_offset
        while offset < sm.next_offset:
            before = offset
            for base, ts, count, blob in sm.read(offset, READ_CHUNK_BYTES):
                yield from decode_batch(base, ts, blob, offset)
                # Past the batch, not its last record: a compacted batch may hold
                # none of its records any more, or not its last ones.
                offset = max(offset, base + count)
            if offset == before:
                return  # a hole: the caller sees records stop before end_offset


def open_read_only(path: str | Path) -> DataDirReader:
    """Open a data directory without writing to it; DataDirError if it is not one."""
    path = Path(path)
    if not (path / "CURRENT").is_file():
        raise DataDirError(f"{path} is not a RocksDB data directory")
    # raw_mode as in NodeStore.open: keys and values are our own bytes.
    opts = Options(raw_mode=True)
    try:
        db = Rdict(str(path), options=opts, access_type=AccessType.read_only())
    except Exception as exc:  # rocksdict raises a bare Exception for IO errors
        raise DataDirError(f"data dir {path} cannot be opened read-only: {exc}") from exc
    try:
        value = db.get(keys.IDENTITY_KEY)
        if value is None:
            raise DataDirError(f"data dir {path} has no identity record")
        identity = NodeIdentity.decode(value, str(path))
    except BaseException:
        db.close()
        raise
    return DataDirReader(NodeStore(db, path, identity, fsync=False))


# ---------------------------------------------------------------- command line


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "surrogateescape")


def _partitions(reader: DataDirReader, mapping: dict[int, int]) -> dict[str, Any]:
    held = set(reader.group_ids())
    out: dict[str, Any] = {}
    for partition, gid in sorted(mapping.items()):
        if gid not in held:
            continue
        view = reader.partition(gid)
        out[str(partition)] = {
            "group": gid,
            "applied_index": view.applied_index,
            "start": view.start_offset,
            "end": view.end_offset,
            "records": [[r.offset, _text(r.value)] for r in reader.records(gid)],
        }
    return out


def topic_report(paths: Sequence[Path], topic: str) -> dict[str, Any]:
    """Every directory's copy of ``topic``: the JSON ``main`` prints.

    The partition -> group mapping is taken from every node's metadata: a node
    may hold a partition's group while its own metadata copy lags. Nodes that
    map one partition to different groups are listed in ``mapping_conflicts``
    (group ids are assigned at apply time, so this would be a metadata bug).
    """
    nodes: dict[str, dict[str, Any]] = {}
    readers: dict[str, DataDirReader] = {}
    mapping: dict[int, int] = {}
    conflicts: list[dict[str, Any]] = []
    try:
        for path in paths:
            label = str(path)
            nodes[label] = {"path": label, "partitions": {}}
            try:
                reader = open_read_only(path)
            except DataDirError as exc:
                nodes[label]["error"] = str(exc)
                continue
            readers[label] = reader
            nodes[label]["node_id"] = reader.identity.node_id
            nodes[label]["incarnation"] = reader.identity.incarnation
            try:
                known = reader.topics().get(topic)
            except Exception as exc:  # a damaged dir must not hide the other nodes' copies
                nodes[label]["error"] = f"metadata: {type(exc).__name__}: {exc}"
                continue
            nodes[label]["knows_topic"] = known is not None
            for p in known.partitions if known else []:
                seen = mapping.setdefault(p.partition, p.group_id)
                if seen != p.group_id:
                    conflicts.append({"path": label, "partition": p.partition,
                                      "group": p.group_id, "other_group": seen})
        for label, reader in readers.items():
            try:
                nodes[label]["partitions"] = _partitions(reader, mapping)
            except Exception as exc:
                nodes[label]["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for reader in readers.values():
            reader.close()
    return {"topic": topic, "groups": {str(p): g for p, g in sorted(mapping.items())},
            "mapping_conflicts": conflicts, "nodes": nodes}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raftlog.log.inspect",
        description="Print the applied records of a topic in stopped nodes' data dirs (JSON).",
    )
    parser.add_argument("--topic", required=True)
    parser.add_argument("data_dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    json.dump(topic_report(args.data_dirs, args.topic), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
