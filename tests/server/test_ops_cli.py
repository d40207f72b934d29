"""The operator commands' planning and exit codes; one real-process check of
moving the metadata group's leadership (marked integration)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.server import cli_ops
from raftlog.server.cli import main
from raftlog.server.cli_common import EXIT_CLUSTER_ERROR, EXIT_UNREACHABLE, EXIT_USAGE
from raftlog.server.rebalance import (
    PartitionView,
    plan_drain,
    plan_leader_drain,
    plan_leader_moves,
    plan_metadata_leader_drain,
)

from .cluster_harness import LocalCluster, free_ports
from .test_node_processes import WAIT_S, wait_until


def _view(group: int, replicas: tuple[str, ...], leader: str | None) -> PartitionView:
    return PartitionView("t", group - 1, group, replicas, leader)


def _leader_counts(parts: list[PartitionView], moves, nodes) -> Counter[str]:
    leaders = {p.group: p.leader for p in parts}
    for m in moves:
        assert leaders[m.group] == m.frm, "a move starts at the current leader"
        leaders[m.group] = m.to
    counts = Counter({n: 0 for n in nodes})
    counts.update(v for v in leaders.values() if v is not None)
    return counts


def test_all_leaders_on_one_node_are_spread() -> None:
    nodes = ["n1", "n2", "n3"]
    parts = [_view(g, ("n1", "n2", "n3"), "n1") for g in range(1, 7)]
    moves = plan_leader_moves(parts, nodes)
    assert _leader_counts(parts, moves, nodes) == Counter({"n1": 2, "n2": 2, "n3": 2})
    assert all(m.to in ("n2", "n3") for m in moves)


def test_balanced_leaders_need_no_move() -> None:
    parts = [_view(1, ("n1", "n2"), "n1"), _view(2, ("n1", "n2"), "n2")]
    assert plan_leader_moves(parts, ["n1", "n2"]) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.permutations(["n1", "n2", "n3", "n4"]), st.integers(0, 2)),
        min_size=1,
        max_size=20,
    )
)
def test_moves_only_go_to_replicas_and_never_widen_the_spread(rows) -> None:
    nodes = ["n1", "n2", "n3", "n4"]
    parts = [_view(g, tuple(perm[:3]), perm[lead]) for g, (perm, lead) in enumerate(rows, 1)]
    moves = plan_leader_moves(parts, nodes)
    by_group = {p.group: p for p in parts}
    assert all(m.to in by_group[m.group].replicas for m in moves)
    assert len({m.group for m in moves}) == len(moves) <= len(parts)
    before = _leader_counts(parts, [], nodes)
    after = _leader_counts(parts, moves, nodes)
    assert max(after.values()) - min(after.values()) <= max(before.values()) - min(before.values())


def test_drain_replaces_the_node_in_place_with_the_least_loaded_candidate() -> None:
    parts = [
        _view(1, ("n3", "n1", "n2"), "n3"),
        _view(2, ("n1", "n3", "n2"), "n1"),
        _view(3, ("n1", "n2", "n4"), "n1"),
    ]
    plan = plan_drain(parts, "n3", ["n1", "n2", "n4", "n5"])
    assert [(p.group, new) for p, new in plan] == [
        (1, ("n5", "n1", "n2")),  # n4 already holds one replica, n5 none
        (2, ("n1", "n4", "n2")),  # then both hold one: the id breaks the tie
    ]


def test_drain_shrinks_when_no_other_node_is_left() -> None:
    plan = plan_drain([_view(1, ("n1", "n2", "n3"), "n1")], "n3", ["n1", "n2"])
    assert [new for _, new in plan] == [("n1", "n2")]


def test_leader_drain_moves_every_leadership_off_the_node_evenly() -> None:
    parts = [_view(g, ("n1", "n2", "n3"), "n1") for g in range(1, 5)]
    parts.append(_view(5, ("n1",), "n1"))  # nobody else can lead it
    parts.append(_view(6, ("n2", "n3"), "n2"))
    moves = plan_leader_drain(parts, "n1")
    assert [m.group for m in moves] == [1, 2, 3, 4]
    counts = _leader_counts(parts, moves, ["n1", "n2", "n3"])
    assert counts == Counter({"n1": 1, "n2": 3, "n3": 2})  # only the 1-replica group stays


def _drain_view(metadata_leader: str) -> cli_ops.ClusterView:
    parts = [
        _view(1, ("n1", "n2", "n3"), "n1"),
        _view(2, ("n1", "n2", "n3"), "n2"),
        _view(3, ("n2", "n3", "n4"), "n2"),
        _view(4, ("n2", "n3", "n4"), "n3"),
    ]
    addresses = {n: f"127.0.0.1:{7100 + i}" for i, n in enumerate(["n1", "n2", "n3", "n4"], 1)}
    return cli_ops.ClusterView(addresses, parts, metadata_leader, set(addresses))


def test_leader_drain_moves_the_metadata_leadership_when_the_node_holds_it() -> None:
    voters = ["n1", "n2", "n3", "n4"]
    moves, meta_to = cli_ops.plan_node_leader_drain(_drain_view("n1"), "n1", voters)
    assert [(m.group, m.to) for m in moves] == [(1, "n3")]  # n3 leads one partition, n2 two
    # After that move n2 and n3 lead two partitions each, n4 none: it takes group 0.
    assert meta_to == "n4"
    moves_other, meta_other = cli_ops.plan_node_leader_drain(_drain_view("n2"), "n1", voters)
    assert moves_other == moves and meta_other is None  # n1 does not lead group 0


def test_metadata_drain_picks_a_live_voter_and_none_when_there_is_no_other() -> None:
    view = _drain_view("n1")
    # n4 is not a voter of group 0 (say, a partition-only node being added).
    assert plan_metadata_leader_drain(view.partitions, [], "n1", "n1", ["n1", "n2", "n3"]) == "n3"
    # The least-loaded voter is down: the next one, not a transfer that would time out.
    down = plan_metadata_leader_drain(
        view.partitions, [], "n1", "n1", ["n1", "n3", "n4"], {"n1", "n3"}
    )
    assert down == "n3"
    assert plan_metadata_leader_drain(view.partitions, [], "n1", "n1", ["n1"]) is None


def test_leader_drain_dry_run_prints_the_metadata_move_last(monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(cli_ops, "cluster_view", lambda session: _drain_view("n1"))
    monkeypatch.setattr(
        cli_ops, "metadata_voters", lambda session: calls.append("voters") or ["n1", "n2", "n3"]
    )
    result = CliRunner().invoke(
        main, ["leader", "drain", "n1", "--dry-run", "--bootstrap", "127.0.0.1:9"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines == ["transfer t/0: n1 -> n3", "transfer metadata (group 0): n1 -> n2"]
    # Draining a node that does not lead group 0 asks nothing about group 0.
    result = CliRunner().invoke(
        main, ["leader", "drain", "n3", "--dry-run", "--bootstrap", "127.0.0.1:9"]
    )
    assert result.exit_code == 0, result.output
    assert "metadata" not in result.output and calls == ["voters"]


@pytest.mark.parametrize(
    "args",
    [
        ["member", "list"],
        ["member", "add", "n4", "--address", "127.0.0.1:1"],
        ["partition", "reassign", "t", "0", "--replicas", "n1,n2"],
        ["leader", "transfer", "t", "0", "--to", "n2"],
        ["leader", "transfer-metadata", "--to", "n2"],
        ["leader", "drain", "n1"],
        ["cluster", "rebalance"],
    ],
)
def test_an_unreachable_cluster_exits_3(args: list[str]) -> None:
    (port,) = free_ports(1)  # nothing listens there
    result = CliRunner().invoke(main, [*args, "--bootstrap", f"127.0.0.1:{port}", "--timeout", "1"])
    assert result.exit_code == EXIT_UNREACHABLE, result.output


def test_bad_replica_lists_are_usage_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["partition", "reassign", "t", "0", "--replicas", "n1,n1", "--bootstrap", "127.0.0.1:9"],
    )
    assert result.exit_code == EXIT_USAGE
    assert "distinct" in result.output


def _ops(cluster: LocalCluster, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, [*args, "--config", str(cluster.config_path), "--timeout", "20"]
    )
    return result.exit_code, result.output


@pytest.mark.integration
def test_transfer_metadata_and_drain_move_the_controller_of_real_nodes(local_cluster) -> None:
    cluster = local_cluster(3)
    cluster.start_all()
    cluster.wait_for_leaders(deadline=WAIT_S)
    old = cluster.leader_of(0)
    target = next(n for n in cluster.node_ids() if n != old)
    code, out = _ops(cluster, "leader", "transfer-metadata", "--to", target)
    assert code == 0, out
    assert out == f"metadata: leader {target} ({cluster.address(target)})\n"
    wait_until(lambda: cluster.leader_of(0) == target, "the new controller to report itself")
    code, out = _ops(cluster, "leader", "transfer-metadata", "--to", "n9")
    assert code == EXIT_CLUSTER_ERROR and "unknown node 'n9'" in out
    # Before restarting the controller: its leadership goes too.
    code, out = _ops(cluster, "leader", "drain", target)
    assert code == 0, out
    assert f"transfer metadata (group 0): {target} -> " in out
    wait_until(lambda: cluster.leader_of(0) != target, "the controller to leave the drained node")
    code, out = _ops(cluster, "member", "list")  # metadata reads still work at the new leader
    assert code == 0 and "controller_leader" in out, out
