"""Peers' wall clocks, from the node-to-node clock frames.

Raft itself never reads a wall clock: elections, heartbeats and ReadIndex use
the monotonic clock. Two things do: the timestamp a partition leader gives
each batch, and time-based retention, which deletes batches older than the
leader's ``now - retention_ms``. A leader whose wall clock runs ahead would
delete records that are not yet that old, on every replica, for good. So
retention by time asks first that the leader's clock is not ahead of a
majority of the cluster's nodes (itself included) by more than
``[retention] max_clock_skew_ms``; otherwise it deletes nothing by time
(``raftlog_retention_clock_refusals_total``) until the clocks agree again.
A clock that runs behind only delays deletion, which is safe.

Every node sends each peer a clock frame (the node heartbeat, group id -1,
carrying its ``wall_time()`` as a big-endian double) at least every
``CLOCK_FRAME_EVERY_S``. An offset is the peer's last frame, carried forward
by the monotonic time since, minus our wall clock now: off by the one-way
delay (well under a millisecond here, and always in the direction that makes
the peer look *behind*), which is nothing next to a tolerance of seconds. An
empty heartbeat (an older node) is no sample.

A leader whose clock runs behind would stamp its batches too old, and a
later leader with a right clock would then delete them early. So a leader
stamps with ``max(its clock, the median clock of the nodes)`` (its own
included, peers from fresh frames): a slow clock is corrected, a fast one is
kept (stamps in the future only keep records longer).

Every wall-clock read of the node goes through ``wall_time()``. For fault
injection (tests, ``raftlog jepsen``'s clock nemesis), like libfaketime's
``FAKETIME`` with ``DONT_FAKE_MONOTONIC`` (the monotonic clock that Raft runs
on is untouched): ``RAFTLOG_TEST_WALL_CLOCK_OFFSET_S`` shifts it by that many
seconds from the start, and ``RAFTLOG_TEST_WALL_CLOCK_FILE`` names a file
holding the offset, which the node re-reads every ``OFFSET_FILE_POLL_S``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

log = logging.getLogger("raftlog.clock")

WALL_CLOCK_OFFSET_ENV = "RAFTLOG_TEST_WALL_CLOCK_OFFSET_S"
WALL_CLOCK_FILE_ENV = "RAFTLOG_TEST_WALL_CLOCK_FILE"
OFFSET_FILE_POLL_S = 0.1
CLOCK_FRAME = struct.Struct(">d")
CLOCK_FRAME_EVERY_S = 1.0
# A sample older than this says nothing about the clock now.
STALE_AFTER_S = 10.0


def _offset_from_env() -> float:
    raw = os.environ.get(WALL_CLOCK_OFFSET_ENV, "")
    if not raw:
        return 0.0
    offset = float(raw)
    log.warning("event=wall_clock_offset seconds=%s (fault injection)", offset)
    return offset


_WALL_OFFSET_S = _offset_from_env()


def wall_time() -> float:
    """This node's wall clock, in seconds since the epoch (see the module docstring)."""
    return time.time() + _WALL_OFFSET_S


def set_wall_offset(seconds: float) -> None:
    global _WALL_OFFSET_S
    if seconds != _WALL_OFFSET_S:
        log.warning("event=wall_clock_offset seconds=%s (fault injection)", seconds)
    _WALL_OFFSET_S = seconds


async def follow_offset_file(path: str) -> None:
    """Keep the wall-clock offset equal to the number in ``path`` (fault injection);
    a missing or unreadable file leaves it as it is."""
    while True:
        with contextlib.suppress(OSError, ValueError):
            set_wall_offset(float(await trio.Path(path).read_text()))
        await trio.sleep(OFFSET_FILE_POLL_S)


def clock_frame(wall: float) -> bytes:
    return CLOCK_FRAME.pack(wall)


@dataclass
class PeerClocks:
    """Each peer's last clock frame: its wall time and when (monotonic) it came.

    An offset is worked out when it is asked for, against our wall clock *then*,
    with the peer's clock carried forward by the monotonic time since the frame.
    So a jump of our own clock shows at once; storing "peer minus us" at
    receipt would hide it until the next frame, and jepsen's clock nemesis
    caught a leader deleting by time in that second.
    """

    stale_after_s: float = STALE_AFTER_S
    # peer -> (its wall clock in its last frame, our monotonic clock when it came)
    _samples: dict[str, tuple[float, float]] = field(default_factory=dict)

    def observe(self, peer: str, payload: bytes, now: float) -> None:
        """Record a clock frame from ``peer`` received at monotonic ``now``;
        anything but one finite double is ignored."""
        if len(payload) != CLOCK_FRAME.size:
            return
        (peer_wall,) = CLOCK_FRAME.unpack(payload)
        if math.isfinite(peer_wall):
            self._samples[peer] = (peer_wall, now)

    def offset(self, peer: str, now: float, own_wall: float) -> float | None:
        """``peer``'s clock minus ours (``own_wall`` at monotonic ``now``), in
        seconds; None without a fresh sample."""
        sample = self._samples.get(peer)
        if sample is None or now - sample[1] > self.stale_after_s:
            return None
        peer_wall, seen = sample
        return peer_wall + (now - seen) - own_wall

    def offsets(self, peers: Iterable[str], now: float, own_wall: float) -> dict[str, float]:
        return {p: o for p in peers if (o := self.offset(p, now, own_wall)) is not None}

    def median_offset(self, peers: Iterable[str], now: float, own_wall: float) -> float:
        """The median of the nodes' clocks minus ours (ours counts as 0; peers
        without a fresh sample are left out)."""
        values = sorted([0.0, *self.offsets(peers, now, own_wall).values()])
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    def not_ahead_of_majority(
        self, peers: Iterable[str], max_skew_s: float, now: float, own_wall: float
    ) -> bool:
        """True when our wall clock is ahead by at most ``max_skew_s`` of a majority of
        the nodes (``peers`` and us). A peer without a fresh sample does not count
        for us: no evidence that our clock is right is not evidence."""
        peers = list(peers)
        offsets = self.offsets(peers, now, own_wall).values()
        agreeing = 1 + sum(1 for o in offsets if o >= -max_skew_s)
        return agreeing > (len(peers) + 1) // 2


class NodeClock:
    """This node's wall clock next to its peers': batch stamps and retention's check.

    ``peers`` is passed to each call (membership changes it). The stamp
    correction is worked out again with every clock frame, when it is a second
    old, and at once when our wall clock moved other than the monotonic one did
    (it jumped): a stamp never uses a correction from before a jump.
    """

    def __init__(self) -> None:
        self.peers = PeerClocks()
        self.stamp_correction_s = 0.0  # never negative: a fast clock keeps its stamps
        self._checked = (0.0, -1e9)  # (wall, monotonic) when the correction was worked out

    def observe(self, peer: str, payload: bytes, peers: Iterable[str]) -> float | None:
        """A clock frame from ``peer``; its offset now (None: not a clock frame)."""
        now, wall = time.monotonic(), wall_time()
        self.peers.observe(peer, payload, now)
        self._correct(peers, wall, now)
        return self.peers.offset(peer, now, wall)

    def stamp_ms(self, peers: Iterable[str]) -> int:
        """A batch timestamp: our wall clock, or the nodes' median if we run behind."""
        wall, now = wall_time(), time.monotonic()
        last_wall, last_now = self._checked
        if now - last_now > 1.0 or abs((wall - last_wall) - (now - last_now)) > 0.1:
            self._correct(peers, wall, now)
        return int((wall + self.stamp_correction_s) * 1000)

    def not_ahead(self, peers: Iterable[str], max_skew_s: float) -> bool:
        """Is our wall clock ahead of a majority of the nodes by at most ``max_skew_s``?"""
        return self.peers.not_ahead_of_majority(peers, max_skew_s, time.monotonic(), wall_time())

    def offsets(self, peers: Iterable[str]) -> dict[str, float]:
        return self.peers.offsets(peers, time.monotonic(), wall_time())

    def _correct(self, peers: Iterable[str], wall: float, now: float) -> None:
        self.stamp_correction_s = max(0.0, self.peers.median_offset(peers, now, wall))
        self._checked = (wall, now)
