"""The replica check (jepsen/replicas.py, jepsen/datadirs.py): State Machine Safety on disk."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from raftlog.client.protocol import encode_records
from raftlog.jepsen.cli import jepsen
from raftlog.jepsen.datadirs import check_replicas, copies_from_report
from raftlog.jepsen.history import OpType, save
from raftlog.jepsen.replicas import DrainedLog, ReplicaCopy, compare, from_history
from raftlog.jepsen.report import replica_lines
from raftlog.log.commands import CreateTopic, Produce, RegisterNode, encode_entry_commands
from raftlog.log.metadata import MetadataStateMachine
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState, Entry

from .builders import HistoryBuilder

SENT = {0: set(range(1, 100))}


def copy(node: str, values: list[int], start: int = 0, key: int = 0) -> ReplicaCopy:
    return ReplicaCopy(node, key, start, start + len(values),
                       [(start + i, v) for i, v in enumerate(values)])


def drain(values: list[int]) -> dict[int, DrainedLog]:
    return {0: DrainedLog(list(enumerate(values)), len(values))}


def types(check) -> list[str]:
    return sorted(a.type for a in check.anomalies)


def test_agreeing_replicas_are_valid_and_every_record_is_compared() -> None:
    log = [5, 6, 7, 8]
    check = compare([copy(n, log) for n in ("n1", "n2", "n3")], drain(log), SENT)
    assert check.valid and check.anomalies == []
    assert [(r.node, r.start, r.end, r.compared) for r in check.rows] == [
        ("n1", 0, 4, 4), ("n2", 0, 4, 4), ("n3", 0, 4, 4)]
    assert check.summary() == "replicas compared: 3 nodes x 1 partitions, 12 records, " \
                              "no divergence"
    d = check.to_dict()
    assert d["valid"] and d["records_compared"] == 12 and d["anomaly_types"] == []


def test_a_lagging_replica_is_a_note_not_an_anomaly() -> None:
    log = [5, 6, 7, 8, 9]
    check = compare([copy("n1", log), copy("n2", log[:2])], drain(log), SENT)
    assert check.valid, check.anomalies
    (row,) = [r for r in check.rows if r.node == "n2"]
    assert (row.end, row.records, row.compared, row.behind_drain) == (2, 2, 2, 3)
    assert any("n2 partition 0: 3 records behind the drain" in n for n in check.notes)


def test_a_replica_that_starts_later_is_compared_from_its_start() -> None:
    log = [5, 6, 7, 8]
    check = compare([copy("n1", log), copy("n2", log[2:], start=2)], drain(log), SENT)
    assert check.valid, check.anomalies
    assert any("n2 partition 0: starts at offset 2" in n for n in check.notes)
    assert [r.compared for r in check.rows] == [4, 2]


def test_two_replicas_that_differ_at_one_offset_diverge() -> None:
    check = compare([copy("n1", [5, 6, 7]), copy("n2", [5, 9, 7])], {}, SENT)
    assert not check.valid
    (a,) = check.anomalies
    assert a.type == "replica-divergence" and a.key == 0
    assert a.details["nodes"] == ["n1", "n2"] and a.details["offsets"] == [1]
    assert "1 replica-divergence" in check.summary()


def test_replicas_that_agree_but_differ_from_the_drain_diverge() -> None:
    check = compare([copy("n1", [5, 6, 7]), copy("n2", [5, 6])], drain([5, 6, 8]), SENT)
    assert types(check) == ["replica-divergence"]
    (a,) = check.anomalies
    assert a.details == {"nodes": ["n1", "drain"], "offsets": [2], "count": 1}


def test_a_value_nobody_sent_beyond_the_drain_is_a_phantom() -> None:
    log = [5, 6]
    check = compare([copy("n1", [*log, 7, 500]), copy("n2", log)], drain(log), SENT)
    assert types(check) == ["replica-phantom"]
    assert check.anomalies[0].details["offsets"] == [3]
    # 7 was sent: it may have committed after the drain read, so only a note.
    assert any("1 records beyond the drained end 2" in n for n in check.notes)


def test_records_beyond_the_drain_with_sent_values_are_valid() -> None:
    check = compare([copy("n1", [5, 6, 7]), copy("n2", [5, 6, 7])], drain([5, 6]), SENT)
    assert check.valid
    assert [r.compared for r in check.rows] == [3, 3]  # offset 2 with each other


def test_a_hole_in_a_replica_is_a_gap() -> None:
    holey = ReplicaCopy("n2", 0, 0, 3, [(0, 5), (2, 7)])
    check = compare([copy("n1", [5, 6, 7]), holey], drain([5, 6, 7]), SENT)
    assert types(check) == ["replica-gap"]
    assert check.anomalies[0].details["offset"] == 1  # the missing one


def test_a_replica_missing_its_tail_is_a_gap_not_a_lag() -> None:
    # It claims end 3 (its applied high watermark) but holds two records.
    short = ReplicaCopy("n2", 0, 0, 3, [(0, 5), (1, 6)])
    check = compare([copy("n1", [5, 6, 7]), short], drain([5, 6, 7]), SENT)
    assert types(check) == ["replica-gap"]
    assert check.anomalies[0].details["offset"] == 2


def test_each_partition_is_checked_on_its_own() -> None:
    copies = [copy("n1", [1, 2], key=0), copy("n2", [1, 2], key=0),
              copy("n1", [3], key=1), copy("n2", [4], key=1)]
    check = compare(copies, {}, {0: {1, 2}, 1: {3, 4}})
    assert [(a.type, a.key) for a in check.anomalies] == [("replica-divergence", 1)]
    assert any("no final drain" in n for n in check.notes)


def test_from_history_takes_the_last_leader_drain_and_every_attempted_send() -> None:
    h = HistoryBuilder()
    h.send(0, 0, 1, 0, 0, 10)
    h.send(1, 0, 2, None, 0, 20, OpType.INFO)
    h.send(2, 1, 3, None, 0, 30, OpType.FAIL)
    h.drain(0, [(0, 1)], 100, 110)
    h.drain(0, [(0, 1), (1, 2)], 200, 210)
    h.drain(0, [(0, 9)], 300, 310, node="n1")  # per-node: not the leader's word
    drains, sent = from_history(h.build())
    assert drains == {0: DrainedLog([(0, 1), (1, 2)], 2)}
    assert sent == {0: {1, 2}, 1: {3}}


def test_inspect_report_becomes_copies_with_the_workloads_values() -> None:
    report = {
        "nodes": {
            "/r/data/n1": {"node_id": "n1", "partitions": {
                "0": {"start": 0, "end": 2, "records": [[0, "17"], [1, "x\udcff"]]}}},
            "/r/data/n2": {"error": "cannot be opened", "partitions": {}},
        },
        "mapping_conflicts": [{"path": "/r/data/n1", "partition": 0, "group": 1,
                               "other_group": 4}],
    }
    copies, notes, anomalies = copies_from_report(report)
    assert copies == [ReplicaCopy("n1", 0, 0, 2, [(0, 17), (1, "x\ufffd")])]
    assert notes == ["n2: data dir not (fully) read: cannot be opened"]
    assert [(a.type, a.key) for a in anomalies] == [("replica-divergence", 0)]


def test_report_lines_show_the_verdict_and_the_notes() -> None:
    check = compare([copy("n1", [5, 9]), copy("n2", [5])], drain([5, 6]), SENT)
    lines = replica_lines({"replicas": check.to_dict()})
    assert lines[0].startswith("replicas compared: 2 nodes x 1 partitions")
    assert lines[1].startswith("anomaly replica-divergence: 1 (e.g. partition 0:")
    assert "replicas n2: p0 [0, 1) 1 compared" in lines
    assert "replicas: n2 partition 0: 1 records behind the drain (end 1 < 2)" in lines


# ---------------------------------------------------------------- real data dirs


def write_node(path: Path, node: str, values: list[bytes]) -> None:
    """A node's data dir as its apply path leaves it: metadata group 0 with the
    topic, and the partition's group with ``values`` applied."""
    def entry(index: int, *cmds: object) -> Entry:
        return Entry(term=1, index=index, data=encode_entry_commands(list(cmds)))

    with NodeStore.open(path, cluster="jepsen", node_id=node) as store:
        store.create_group(0, ConfState(voters=(node,)))
        meta = MetadataStateMachine(store)
        wb = store.new_batch()
        meta.apply([entry(1, RegisterNode(node, "127.0.0.1:1", "i")),
                    entry(2, CreateTopic("jepsen", 1, 1))], wb)
        store.write(wb)
        gid = meta.topics["jepsen"].partitions[0].group_id
        store.create_group(gid, ConfState(voters=(node,)))
        sm = PartitionStateMachine(store, gid)
        blob, count, crc = encode_records([(None, v, None, None) for v in values])
        wb = store.new_batch()
        sm.apply([entry(1, Produce(blob, count, crc, None, None, 1000))], wb)
        store.write(wb)


async def test_data_dirs_that_applied_different_records_are_caught(tmp_path: Path) -> None:
    dirs = [tmp_path / n for n in ("n1", "n2", "n3")]
    write_node(dirs[0], "n1", [b"1", b"2", b"3"])
    write_node(dirs[1], "n2", [b"1", b"2"])
    write_node(dirs[2], "n3", [b"1", b"4", b"3"])
    h = HistoryBuilder()
    for i, v in enumerate((1, 2, 3, 4)):
        h.send(i, 0, v, None, 0, 10, OpType.INFO)
    h.drain(0, [(0, 1), (1, 2), (2, 3)], 100, 110)
    result = await check_replicas(dirs, "jepsen", h.build())
    assert result["checked"] and not result["valid"]
    assert result["anomaly_types"] == ["replica-divergence"]
    pairs = [a["details"]["nodes"] for a in result["anomalies"]["replica-divergence"]]
    # n1 and n2 agree where both hold a record, but both applied entry 1, so the
    # record only n1 holds is a divergence too.
    assert sorted(pairs) == [["n1", "n2"], ["n1", "n3"], ["n2", "n3"], ["n3", "drain"]]
    rows = {r["node"]: r for r in result["replicas"]}
    assert rows["n2"]["behind_drain"] == 1 and rows["n1"]["compared"] == 3


async def test_no_data_dirs_means_not_checked(tmp_path: Path) -> None:
    result = await check_replicas([], "jepsen", [])
    assert result["checked"] is False and result["valid"]
    assert result["summary"].startswith("replicas not compared")


def test_jepsen_check_compares_the_data_dirs_a_run_left(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_node(run / "data" / "n1", "n1", [b"1", b"2"])
    write_node(run / "data" / "n2", "n2", [b"1", b"3"])
    h = HistoryBuilder()
    h.send(0, 0, 1, 0, 0, 10)
    h.send(1, 0, 2, 1, 20, 30)
    h.send(2, 0, 3, None, 40, 50, OpType.INFO)
    h.drain(0, [(0, 1), (1, 2)], 100, 110)
    save(h.build(), run / "history.jsonl")
    out = CliRunner().invoke(jepsen, ["check", str(run / "history.jsonl")])
    assert out.exit_code == 1, out.output
    assert "replicas compared: 2 nodes x 1 partitions, 4 records, 2 replica-divergence" \
        in out.output
    skipped = CliRunner().invoke(jepsen, ["check", "--no-replicas", str(run / "history.jsonl")])
    assert skipped.exit_code == 0 and "replicas" not in skipped.output, skipped.output
