"""LogThrottle: one line per interval, carrying the muted count."""

from raftlog.server.log_throttle import LogThrottle


def test_first_occurrence_logs_then_mutes_until_the_interval_passes() -> None:
    now = [100.0]
    throttle = LogThrottle(interval_s=1.0, clock=lambda: now[0])
    assert throttle.count() == 1
    assert [throttle.count() for _ in range(4)] == [0, 0, 0, 0]
    now[0] += 0.999
    assert throttle.count() == 0
    now[0] += 0.001
    assert throttle.count() == 6  # the five muted ones and this one
    assert throttle.count() == 0
    now[0] += 5.0
    assert throttle.count() == 2
