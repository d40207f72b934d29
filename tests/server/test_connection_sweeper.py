"""The sweep that closes idle and revoked client connections, on fake
connections and a fake clock (server/connection_sweeper.py). The listener's
side, over real sockets, is in test_idle_connections.py."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.server.connection_sweeper import ConnectionSweeper
from raftlog.server.metrics import Metrics


@dataclass(eq=False)  # hashed by identity, as the listener's connections are
class FakeConnection:
    reads: int = 0
    in_flight: int = 0
    revoked: str | None = None
    revoke_at_next_check: bool = False
    checks: int = 0
    closed_for: str | None = None

    def busy(self) -> bool:
        return self.in_flight > 0

    def check_credentials(self) -> None:
        self.checks += 1
        if self.revoke_at_next_check:
            self.revoked = "its token was revoked"

    def close_by_node(self, reason: str) -> None:
        assert self.closed_for is None, "closed twice"
        self.closed_for = reason


def closed_count(sweeper: ConnectionSweeper, reason: str) -> float:
    return sweeper.metrics.client_connections_closed.value(reason=reason)


def test_a_quiet_connection_is_closed_once_idle_for_the_limit_and_not_before() -> None:
    sweeper = ConnectionSweeper(10.0, Metrics())
    conn, other = FakeConnection(), FakeConnection()
    sweeper.add(conn, now=0.0)
    sweeper.add(other, now=5.0)
    assert sweeper.sweep(9.99) == 0 and conn.closed_for is None
    assert sweeper.sweep(10.0) == 1
    assert (conn.closed_for, other.closed_for) == ("idle", None)
    assert closed_count(sweeper, "idle") == 1 and closed_count(sweeper, "revoked") == 0
    assert len(sweeper) == 1  # a closed connection is no longer swept
    assert sweeper.sweep(15.0) == 1 and other.closed_for == "idle"


def test_reads_and_requests_in_flight_restart_the_idle_clock() -> None:
    sweeper = ConnectionSweeper(10.0, Metrics())
    conn = FakeConnection()
    sweeper.add(conn, now=0.0)
    conn.reads += 1  # the client sent something
    sweeper.sweep(5.0)
    assert sweeper.sweep(14.9) == 0
    conn.in_flight = 1  # a long poll, far longer than the limit
    assert sweeper.sweep(15.0) == 0
    assert sweeper.sweep(100.0) == 0
    conn.in_flight = 0  # answered at some time between two sweeps: the next one counts
    assert sweeper.sweep(101.0) == 0
    assert sweeper.sweep(110.9) == 0 and conn.closed_for is None
    assert sweeper.sweep(111.0) == 1 and conn.closed_for == "idle"


def test_without_an_idle_limit_only_revoked_connections_are_closed() -> None:
    sweeper = ConnectionSweeper.for_limit(0, Metrics())
    assert sweeper.max_idle_s is None and sweeper.interval == 1.0
    kept, revoked = FakeConnection(), FakeConnection(revoke_at_next_check=True)
    sweeper.add(kept, now=0.0)
    sweeper.add(revoked, now=0.0)
    sweeper.sweep(1e9)
    assert sweeper.sweep(1e9 + sweeper.revoked_grace_s) == 1
    assert (kept.closed_for, revoked.closed_for) == (None, "revoked")
    assert kept.checks == 2  # every sweep asks every connection


def test_a_revoked_connection_is_closed_after_the_grace_once_its_replies_are_out() -> None:
    sweeper = ConnectionSweeper(None, Metrics())
    grace = sweeper.revoked_grace_s
    conn = FakeConnection(in_flight=1)
    sweeper.add(conn, now=0.0)
    assert sweeper.sweep(1.0) == 0
    conn.revoke_at_next_check = True
    assert sweeper.sweep(2.0) == 0  # found revoked now: the grace starts
    conn.reads += 5  # the client keeps sending; each request is refused
    assert sweeper.sweep(2.0 + grace - 0.01) == 0
    assert sweeper.sweep(2.0 + grace) == 0  # a reply is still owed
    conn.in_flight = 0
    assert sweeper.sweep(2.0 + grace + 1) == 1 and conn.closed_for == "revoked"
    assert closed_count(sweeper, "revoked") == 1


def test_the_grace_is_read_at_every_sweep() -> None:
    """[auth] revoked_grace_s as the config holds it now: a reload that changes it
    applies to connections already found revoked."""
    grace = [60.0]
    sweeper = ConnectionSweeper(None, Metrics(), lambda: grace[0])
    assert ConnectionSweeper(None, Metrics()).revoked_grace_s == 5.0  # the default
    conn = FakeConnection(revoke_at_next_check=True)
    sweeper.add(conn, now=0.0)
    assert sweeper.sweep(1.0) == 0  # found revoked now
    assert sweeper.sweep(30.0) == 0 and conn.closed_for is None
    grace[0] = 30.5  # a reload lowered it: counted from when the sweep found it
    assert sweeper.revoked_grace_s == 30.5
    assert sweeper.sweep(31.4) == 0
    assert sweeper.sweep(31.5) == 1 and conn.closed_for == "revoked"


def test_the_sweep_interval_follows_the_limit() -> None:
    metrics = Metrics()
    assert ConnectionSweeper.for_limit(600_000, metrics).interval == 1.0
    assert ConnectionSweeper.for_limit(2_000, metrics).interval == 0.5
    assert ConnectionSweeper.for_limit(100, metrics).interval == 0.05  # the floor
    assert ConnectionSweeper.for_limit(100, metrics).max_idle_s == 0.1


# A connection's life as steps: (seconds later, what happens then).
_EVENTS = st.lists(
    st.tuples(
        st.floats(0.0, 3.0, allow_nan=False),
        st.sampled_from(["read", "request", "answer", "nothing"]),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(events=_EVENTS, max_idle=st.sampled_from([0.4, 1.0, 2.5, 6.0]))
def test_an_idle_close_is_never_early_and_at_most_two_sweeps_late(
    events: list[tuple[float, str]], max_idle: float
) -> None:
    """Sweeping every ``interval``, a connection is closed only when nothing was
    in flight and nothing read for ``max_idle``, and no later than two
    intervals after that (activity is seen at the next sweep, the close at the
    sweep after the limit)."""
    sweeper = ConnectionSweeper(max_idle, Metrics())
    interval = sweeper.interval
    conn = FakeConnection()
    sweeper.add(conn, now=0.0)
    last_active = 0.0  # the last read, or the end of the last request in flight
    now = 0.0
    next_sweep = interval
    # Play the events, then a quiet tail long enough for any close to be due.
    for gap, what in [*events, (max_idle + 3 * interval, "nothing")]:
        until = now + gap
        while next_sweep <= until and conn.closed_for is None:
            sweeper.sweep(next_sweep)
            if conn.closed_for is not None:
                quiet_for = next_sweep - last_active
                assert conn.in_flight == 0
                assert quiet_for >= max_idle, (quiet_for, max_idle)
            elif conn.in_flight == 0:
                assert next_sweep - last_active < max_idle + 2 * interval + 1e-9
            next_sweep += interval
        if conn.closed_for is not None:
            break
        now = until
        if what == "read":
            conn.reads += 1
            last_active = now
        elif what == "request":
            conn.reads += 1
            conn.in_flight += 1
            last_active = now
        elif what == "answer" and conn.in_flight:
            conn.in_flight -= 1
            last_active = now
    if conn.in_flight == 0:
        assert conn.closed_for == "idle"
