"""The operator commands' planning and exit codes (no cluster processes)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.server.cli import main
from raftlog.server.cli_common import EXIT_UNREACHABLE, EXIT_USAGE
from raftlog.server.rebalance import (
    PartitionView,
    plan_drain,
    plan_leader_drain,
    plan_leader_moves,
)

from .cluster_harness import free_ports


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


@pytest.mark.parametrize(
    "args",
    [
        ["member", "list"],
        ["member", "add", "n4", "--address", "127.0.0.1:1"],
        ["partition", "reassign", "t", "0", "--replicas", "n1,n2"],
        ["leader", "transfer", "t", "0", "--to", "n2"],
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
