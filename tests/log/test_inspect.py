"""log/inspect.py: a data dir read offline and read-only, as the apply path wrote it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from raftlog.client.protocol import decode_batch, encode_records
from raftlog.log.commands import (
    CreateTopic,
    Produce,
    RegisterNode,
    TruncatePrefix,
    encode_entry_commands,
)
from raftlog.log.compaction import plan_sweep
from raftlog.log.identity import DataDirError
from raftlog.log.inspect import open_read_only, topic_report
from raftlog.log.metadata import METADATA_GROUP_ID, MetadataStateMachine
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState, Entry

from .test_compaction import kv
from .test_partition import Log


def produce(values: list[bytes]) -> Produce:
    blob, count, crc = encode_records([(None, v, None, None) for v in values])
    return Produce(blob, count, crc, None, None, 1000)


def served(sm: PartitionStateMachine) -> list[tuple[int, bytes]]:
    """What the fetch path of the node would serve, from start to end."""
    out = []
    for base, ts, _, blob in sm.read(sm.start_offset, 1 << 30):
        out += [(r.offset, r.value) for r in decode_batch(base, ts, blob, sm.start_offset)]
    return out


def create_topic(store: NodeStore, name: str, partitions: int) -> list[int]:
    """The metadata group 0 as the apply path leaves it; returns the partitions' groups."""
    store.create_group(METADATA_GROUP_ID, ConfState(voters=("n1",)))
    meta = MetadataStateMachine(store)
    entries = [
        Entry(term=1, index=1, data=_cmds(RegisterNode("n1", "127.0.0.1:7101", "inc"))),
        Entry(term=1, index=2, data=_cmds(CreateTopic(name, partitions, 1))),
    ]
    batch = store.new_batch()
    meta.apply(entries, batch)
    store.write(batch)
    return [p.group_id for p in meta.topics[name].partitions]


def _cmds(*cmds: object) -> bytes:
    return encode_entry_commands(list(cmds))


def fill(store: NodeStore, gid: int, batches: list[list[bytes]]) -> Log:
    store.create_group(gid, ConfState(voters=("n1",)))
    plog = Log(store, gid)
    for values in batches:
        plog.run(produce(values))
    return plog


def test_reads_the_applied_records_while_the_writer_is_open(data_dir: Path) -> None:
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as store:
        plog = fill(store, 7, [[b"a", b"b", b"c"], [b"d"], [b"e", b"f"]])
        with open_read_only(data_dir) as reader:
            assert reader.identity == store.identity
            assert 7 in reader.group_ids()
            view = reader.partition(7)
            assert (view.start_offset, view.end_offset) == (0, 6)
            assert view.applied_index == plog.sm.applied_index
            got = [(r.offset, r.value) for r in reader.records(7)]
        assert got == served(plog.sm)
        assert [v for _, v in got] == [b"a", b"b", b"c", b"d", b"e", b"f"]


def test_reads_from_the_retention_start_inside_a_straddling_batch(data_dir: Path) -> None:
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as store:
        plog = fill(store, 3, [[b"a", b"b", b"c"], [b"d", b"e"], [b"f"]])
        plog.run(TruncatePrefix(4))  # deletes batch 0..2, keeps 3..4 whole
        expected = served(plog.sm)
    with open_read_only(data_dir) as reader:
        view = reader.partition(3)
        got = [(r.offset, r.value) for r in reader.records(3)]
    assert (view.start_offset, view.end_offset) == (4, 6)
    assert got == expected == [(4, b"e"), (5, b"f")]


def test_batches_beyond_the_applied_end_are_not_records(data_dir: Path) -> None:
    # A snapshot transfer stores batches before the state machine applies them
    # (server/snapshots.py): they are not part of what the replica applied.
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as store:
        plog = fill(store, 2, [[b"a", b"b"]])
        blob, count, _ = encode_records([(None, b"later", None, None)])
        wb = store.new_batch()
        plog.sm.put_fetched([(2, 1000, count, blob)], wb)
        store.write(wb)
    with open_read_only(data_dir) as reader:
        assert reader.partition(2).end_offset == 2
        assert [r.value for r in reader.records(2)] == [b"a", b"b"]


def test_reads_past_batches_that_compaction_emptied(data_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # One batch per read, so that a read finds only emptied batches: the reader
    # must step over them by their offsets, not stop as at a hole.
    monkeypatch.setattr("raftlog.log.inspect.READ_CHUNK_BYTES", 1)
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as store:
        store.create_group(4, ConfState(voters=("n1",)))
        plog = Log(store, 4)
        for value in (b"1", b"2", b"3"):
            plog.run(kv([(b"a", value)]))
        plog.run(kv([(b"b", b"1"), (b"a", b"4")]))
        sm = plog.sm
        plan = plan_sweep(sm, start=0, end=sm.next_offset, tombstones_before_ms=None,
                          chunk_bytes=1 << 20)
        for chunk in plan.chunks:
            (result,) = plog.run(chunk)
            assert result.ok, result.message
        expected = served(sm)
    with open_read_only(data_dir) as reader:
        got = [(r.offset, r.key, r.value) for r in reader.records(4)]
    assert [(o, v) for o, _, v in got] == expected == [(3, b"1"), (4, b"4")]
    assert [k for _, k, _ in got] == [b"b", b"a"]


def test_opening_read_only_changes_nothing_on_disk(data_dir: Path) -> None:
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as store:
        fill(store, 1, [[b"x"]])
    before = {p.name: p.stat().st_size for p in data_dir.iterdir()}
    with open_read_only(data_dir) as reader:
        assert [r.value for r in reader.records(1)] == [b"x"]
    assert {p.name: p.stat().st_size for p in data_dir.iterdir()} == before
    # And the node can open its directory again afterwards.
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as store:
        assert PartitionStateMachine(store, 1).next_offset == 1


def test_a_directory_that_is_not_a_data_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(DataDirError):
        open_read_only(tmp_path / "junk")
    with pytest.raises(DataDirError):
        open_read_only(tmp_path / "missing")


def test_topic_report_maps_partitions_through_the_metadata_group(tmp_path: Path) -> None:
    dirs = [tmp_path / "n1", tmp_path / "n2"]
    for i, d in enumerate(dirs):
        with NodeStore.open(d, cluster="test", node_id=f"n{i + 1}") as store:
            g0, g1 = create_topic(store, "t", 2)
            fill(store, g0, [[b"1", b"2"], [b"3"]][: 2 - i])  # n2 lags one batch
            fill(store, g1, [[b"\xff"]])  # not UTF-8: must survive the JSON trip
    report = topic_report([*dirs, tmp_path / "nowhere"], "t")
    assert report["groups"] == {"0": g0, "1": g1}
    assert report["mapping_conflicts"] == []
    n1, n2 = report["nodes"][str(dirs[0])], report["nodes"][str(dirs[1])]
    assert (n1["node_id"], n2["node_id"]) == ("n1", "n2")
    assert n1["partitions"]["0"]["records"] == [[0, "1"], [1, "2"], [2, "3"]]
    assert (n2["partitions"]["0"]["end"], n2["partitions"]["0"]["records"]) == (2, [[0, "1"],
                                                                                    [1, "2"]])
    value = n1["partitions"]["1"]["records"][0][1]
    assert value.encode("utf-8", "surrogateescape") == b"\xff"
    assert "error" in report["nodes"][str(tmp_path / "nowhere")]


def test_command_line_prints_the_report_as_json(tmp_path: Path) -> None:
    d = tmp_path / "n1"
    with NodeStore.open(d, cluster="test", node_id="n1") as store:
        (g0,) = create_topic(store, "t", 1)
        fill(store, g0, [[b"7", b"8"]])
    out = subprocess.run(
        [sys.executable, "-m", "raftlog.log.inspect", "--topic", "t", str(d)],
        capture_output=True, timeout=60, check=True,
    )
    report = json.loads(out.stdout)
    assert report["nodes"][str(d)]["partitions"]["0"]["records"] == [[0, "7"], [1, "8"]]
