"""Node ports are picked where outgoing connections cannot take them first."""

from __future__ import annotations

import socket
from pathlib import Path

from raftlog.jepsen.ports import LOWEST_PORT, ephemeral_low, free_ports


def test_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    low = ephemeral_low()
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(LOWEST_PORT <= p < low for p in ports), (ports, low)
    with socket.socket() as sock:  # released again: a node can bind it
        sock.bind(("127.0.0.1", ports[0]))


def test_a_port_in_use_is_never_picked(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", LOWEST_PORT + 1))
        squatter.listen()
        # Only LOWEST_PORT .. LOWEST_PORT + 2 lie below this range.
        (tmp_path / "range").write_text(f"{LOWEST_PORT + 3}\t60999\n")
        ports = free_ports(2, range_file=tmp_path / "range")
    assert LOWEST_PORT + 1 not in ports and len(set(ports)) == 2


def test_ports_picked_earlier_and_not_bound_yet_are_avoided(tmp_path: Path) -> None:
    # Only LOWEST_PORT .. LOWEST_PORT + 2 lie below this range: all free, two avoided.
    (tmp_path / "range").write_text(f"{LOWEST_PORT + 3}\t60999\n")
    avoid = {LOWEST_PORT, LOWEST_PORT + 2}
    assert free_ports(1, range_file=tmp_path / "range", avoid=avoid) == [LOWEST_PORT + 1]
    # More than is left below it: the kernel's picks, never an avoided one.
    kernel = free_ports(3, range_file=tmp_path / "range", avoid=avoid)
    assert LOWEST_PORT + 1 in kernel and not avoid & set(kernel)


def test_without_room_below_the_range_the_kernel_chooses(tmp_path: Path) -> None:
    (tmp_path / "range").write_text("1024 60999\n")
    ports = free_ports(3, range_file=tmp_path / "range")
    assert len(set(ports)) == 3 and all(p >= 1024 for p in ports)


def test_an_unreadable_range_file_means_the_default_range(tmp_path: Path) -> None:
    assert ephemeral_low(tmp_path / "missing") == 32_768
    (tmp_path / "garbled").write_text("not ports")
    assert ephemeral_low(tmp_path / "garbled") == 32_768
