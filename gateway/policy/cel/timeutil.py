"""Time values: timestamps and durations as integers of nanoseconds, their parsing, time zones,
CEL's accessors, and the linear form k*request.time + c of every time-valued expression."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_NS: Final = 1_000_000_000
MIN_TS: Final = (date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86_400 * _NS
MAX_TS: Final = (date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL + 1) * 86_400 * _NS - 1
MAX_DUR: Final = 315_576_000_000 * _NS + 999_999_999  # cel-go's limit: 10,000 years
MIN_US: Final = MIN_TS // 1000
MAX_US: Final = MAX_TS // 1000

_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_DURATION_PART: Final = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS: Final = {
    "ns": 1,
    "us": 1000,
    "µs": 1000,
    "μs": 1000,
    "ms": 1_000_000,
    "s": _NS,
    "m": 60 * _NS,
    "h": 3600 * _NS,
}
TZ_OFFSET: Final = re.compile(r"([+-])([0-9]{2}):([0-9]{2})")


def parse_timestamp(text: str) -> int | str:
    """Nanoseconds since the epoch, or the reason the text is not an RFC 3339 timestamp."""
    found = _RFC3339.fullmatch(text)
    if found is None:
        return "expected RFC 3339 like '2026-12-31T00:00:00Z'"
    year, month, day, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
    try:
        ordinal = date(year, month, day).toordinal()
    except ValueError as exc:
        return str(exc)
    if hour > 23 or minute > 59 or second > 59:
        return "time of day out of range"
    offset = 0
    if found.group(9):
        off_h, off_m = int(found.group(10)), int(found.group(11))
        if off_h > 23 or off_m > 59:
            return "time zone offset out of range"
        offset = (off_h * 3600 + off_m * 60) * (1 if found.group(9) == "+" else -1)
    fraction = (found.group(7) or "").ljust(9, "0")
    seconds = (ordinal - _EPOCH_ORDINAL) * 86_400 + hour * 3600 + minute * 60 + second - offset
    ns = seconds * _NS + int(fraction or "0")
    if not MIN_TS <= ns <= MAX_TS:
        return "outside the range 0001-01-01 to 9999-12-31"
    return ns


def parse_duration(text: str) -> int | str:
    """Nanoseconds, or the reason the text is not a duration like '3600s' or '1h30m'."""
    body, sign = text, 1
    if body[:1] in "+-" and body:
        sign, body = (-1 if body[0] == "-" else 1), body[1:]
    if body == "0":
        return 0
    total, pos = 0, 0
    while pos < len(body):
        part = _DURATION_PART.match(body, pos)
        if part is None or not (part.group(1) or part.group(2)):
            return "expected a number with a unit (h, m, s, ms, us, ns) like '3600s' or '1h30m'"
        unit = _DURATION_UNITS[part.group(3)]
        fraction = part.group(2) or ""
        total += int(part.group(1) or "0") * unit
        if fraction:
            total += int(fraction) * unit // 10 ** len(fraction)
        pos = part.end()
    if pos == 0:
        return "empty duration"
    total *= sign
    if abs(total) > MAX_DUR:
        return "out of range (more than 10,000 years)"
    return total


def ns_to_datetime(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


@functools.lru_cache(maxsize=256)
def time_zone(name: str) -> tzinfo:
    """An IANA zone name or a fixed offset like '+05:30'; raises ValueError if unknown."""
    offset = TZ_OFFSET.fullmatch(name)
    if offset:
        hours, minutes = int(offset.group(2)), int(offset.group(3))
        if hours > 23 or minutes > 59:
            raise ValueError(f"time zone offset {name!r} out of range")
        delta = timedelta(hours=hours, minutes=minutes)
        return timezone(-delta if offset.group(1) == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}") from None


def zone_suggestion(name: str) -> str:
    import zoneinfo

    close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=1)
    return f" (did you mean {close[0]!r}?)" if close else " (use an IANA name like 'Europe/Paris')"


# Accessors of timestamps, with CEL's numbering (getMonth and getDayOfMonth count from 0,
# getDate from 1, getDayOfWeek is 0 for Sunday).
TIME_ACCESSORS: Final[dict[str, Callable[[datetime], int]]] = {
    "getFullYear": lambda t: t.year,
    "getMonth": lambda t: t.month - 1,
    "getDate": lambda t: t.day,
    "getDayOfMonth": lambda t: t.day - 1,
    "getDayOfWeek": lambda t: t.isoweekday() % 7,
    "getDayOfYear": lambda t: t.timetuple().tm_yday - 1,
    "getHours": lambda t: t.hour,
    "getMinutes": lambda t: t.minute,
    "getSeconds": lambda t: t.second,
    "getMilliseconds": lambda t: t.microsecond // 1000,
}
DURATION_ACCESSORS: Final = frozenset({"getHours", "getMinutes", "getSeconds", "getMilliseconds"})


@dataclass(frozen=True, slots=True)
class Lin:
    """The value k * request.time + c (nanoseconds), valid only while lo <= request.time <= hi
    (outside, some intermediate value overflows CEL's range and evaluation is an error)."""

    k: int
    c: int
    lo: int = MIN_TS
    hi: int = MAX_TS
