"""Durations and date-times on the command line (server/cli_time.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from raftlog.server.cli_time import format_ms, parse_datetime_ms, parse_duration_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("90s", 90_000),
        ("15m", 900_000),
        ("1h30m", 5_400_000),
        ("2d", 172_800_000),
        ("1d2h", 93_600_000),
        ("PT1H30M", 5_400_000),
        ("P1DT2H", 93_600_000),
        ("pt0.5s", 500),
        (" 2h ", 7_200_000),
    ],
)
def test_durations_in_short_and_iso_8601_form(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "h", "1x", "1h 30m", "-1h", "P", "PT", "1.5h", "PT1H5", "1H"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration_ms(text)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1970-01-01T00:00:01.500Z", 1500),
        ("2026-11-23T09:00:00Z", 1_795_424_400_000),
        ("2026-11-23T10:00:00+01:00", 1_795_424_400_000),
        ("2026-11-23T09:00:00.250+00:00", 1_795_424_400_250),
    ],
)
def test_date_times_with_an_offset(text: str, ms: int) -> None:
    assert parse_datetime_ms(text) == ms


def test_a_date_time_without_an_offset_is_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "IST-5:30")  # POSIX rule for UTC+05:30: needs no tzdata
    time.tzset()
    try:
        assert parse_datetime_ms("2026-11-23 14:30") == parse_datetime_ms("2026-11-23T09:00Z")
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("text", ["yesterday", "23/11/2026", "2026-13-01", ""])
def test_anything_else_is_not_a_date_time(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_datetime_ms(text)


@given(st.integers(0, 2**42))
def test_format_and_parse_round_trip(ms: int) -> None:
    assert parse_datetime_ms(format_ms(ms)) == ms
