"""Points in time on the command line: start reading "from an hour ago" or "from 09:00".

Two spellings, as operators know them from Kafka's ``kafka-consumer-groups
--reset-offsets --to-datetime / --by-duration`` and NATS' ``--since``:

- a duration back from now: ``90s``, ``15m``, ``1h30m``, ``2d``, ``500ms``, or ISO 8601
  ``PT1H30M`` / ``P1DT2H``;
- a date and time: ISO 8601, ``2026-11-23T09:00:00Z``, ``2026-11-23T09:00+01:00``,
  ``2026-11-23 09:00``, ``2026-11-23``. Without a UTC offset it is local time, as in
  Kafka's tool and ``date``.

Both become milliseconds since the epoch, the unit of record timestamps.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_SHORT = re.compile(r"(\d+)(ms|s|m|h|d)")
_ISO = re.compile(
    r"P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?",
    re.IGNORECASE,
)


def parse_duration_ms(text: str) -> int:
    """``1h30m`` or ``PT1H30M`` -> 5,400,000. Raises ValueError on anything else."""
    spec = text.strip()
    iso = _ISO.fullmatch(spec)
    if iso is not None and spec.upper() not in ("P", "PT") and any(iso.groupdict().values()):
        d, h, m, s = (iso.group(k) for k in "dhms")
        seconds = int(d or 0) * 86_400 + int(h or 0) * 3_600 + int(m or 0) * 60
        return seconds * 1000 + round(float(s or 0) * 1000)
    parts = _SHORT.findall(spec)
    if not spec or "".join(n + u for n, u in parts) != spec:
        raise ValueError(
            f"{text!r} is not a duration: use e.g. 90s, 15m, 1h30m, 2d, 500ms or PT1H30M"
        )
    return sum(int(n) * _UNIT_MS[u] for n, u in parts)


def parse_datetime_ms(text: str) -> int:
    """An ISO 8601 date/time -> ms since the epoch (local time without an offset)."""
    spec = text.strip()
    if spec.endswith(("Z", "z")):
        spec = spec[:-1] + "+00:00"  # fromisoformat takes "Z" but not "z"
    try:
        when = datetime.fromisoformat(spec)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date and time: use ISO 8601, e.g. 2026-11-23T09:00:00Z, "
            "2026-11-23T09:00+01:00 or 2026-11-23 09:00 (local time)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as Kafka's --to-datetime without an offset
    return round(when.timestamp() * 1000)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def format_ms(timestamp_ms: int) -> str:
    """ms since the epoch -> ``2026-11-23T09:00:00.000Z`` (UTC, for plans and logs)."""
    when = datetime.fromtimestamp(timestamp_ms // 1000, tz=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{timestamp_ms % 1000:03d}Z"


class _Milliseconds(click.ParamType):
    """A click type whose text ``parse`` turns into milliseconds (ints pass as they are:
    click hands defaults over already converted)."""

    parse: Callable[[str], int]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return type(self).parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Duration(_Milliseconds):
    """A duration, as milliseconds."""

    name = "duration"
    parse = staticmethod(parse_duration_ms)


class DateTime(_Milliseconds):
    """An ISO 8601 date and time, as milliseconds since the epoch."""

    name = "datetime"
    parse = staticmethod(parse_datetime_ms)
