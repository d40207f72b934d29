"""Reports (plots written, results.json), the `jepsen check` command, nemesis targets."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from raftlog.jepsen.cli import jepsen
from raftlog.jepsen.history import OpType, save
from raftlog.jepsen.nemesis import choose_targets
from raftlog.jepsen.report import availability, write_plots, write_results
from raftlog.jepsen.runner import check_history

from .builders import HistoryBuilder

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MS = 1_000_000


def sample_history(lose_one: bool = False) -> list:
    h = HistoryBuilder()
    offset = 0
    acked = []
    for i in range(60):
        t = i * 50 * MS
        if i % 10 == 3:
            h.send(100 + i, 0, 1000 + i, None, t, t + 3000 * MS, OpType.INFO)  # retired
            continue
        h.send(i % 4, 0, i, offset, t, t + 20 * MS)
        acked.append((offset, i))
        offset += 1
    h.nemesis("start-partition", 500 * MS)
    h.nemesis("stop-partition", 1500 * MS)
    records = acked[:-5] + acked[-4:] if lose_one else acked
    h.drain(0, records, 4000 * MS, 4100 * MS)
    return h.build()


def test_plots_are_written_and_non_empty(tmp_path: Path) -> None:
    paths = write_plots(sample_history(), tmp_path)
    assert sorted(p.name for p in paths) == ["latency-raw.png", "rate.png"]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_results_json_counts_and_availability(tmp_path: Path) -> None:
    ops = sample_history()
    results = check_history(ops)
    results["availability"] = availability(ops)
    path = write_results(tmp_path, results)
    loaded = json.loads(path.read_text())
    assert loaded["valid"] is True
    assert loaded["counts"]["send"] == {"ok": 54, "info": 6}
    (after_heal,) = loaded["availability"]
    assert after_heal["event"] == "stop-partition"
    assert after_heal["first_ok_send_after_s"]["0"] >= 0


def test_check_command_exit_codes(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    save(sample_history(), good)
    save(sample_history(lose_one=True), bad)
    runner = CliRunner()
    ok = runner.invoke(jepsen, ["check", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "valid: True" in ok.output
    res = runner.invoke(jepsen, ["check", str(bad), "--json"])
    assert res.exit_code == 1
    out = json.loads(res.output)
    assert "lost-write" in out["log"]["anomaly_types"]
    assert out["linearizability"]["verdict"] == "not-linearizable"


def test_kill_targets() -> None:
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    rng = random.Random(5)
    assert len(choose_targets(nodes, "one", rng)) == 1
    assert len(choose_targets(nodes, "minority", rng)) == 2
    assert len(choose_targets(nodes, "majority", rng)) == 3
    assert choose_targets(nodes, "all", rng) == nodes
    assert choose_targets(nodes, "leader", rng, leader="n4") == ["n4"]
    with pytest.raises(ValueError):
        choose_targets(nodes, "half", rng)
