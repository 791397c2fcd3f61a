"""startTime/endTime rules of the Management Activity API listing operations (A.6).

Kept apart from the handlers because these rules are exactly what collectors get wrong
(24-hour windows, the 7-day horizon, inclusive start / exclusive end).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MAX_SPAN = timedelta(hours=24)
MAX_AGE = timedelta(days=7)

AF20030_MESSAGE = (
    "Start time and end time must both be specified (or both omitted) and must be less than or equal to 24 hours "
    "apart, with the start time no more than 7 days in the past."
)
AF20055_MESSAGE = (
    "Start time and end time must both be specified (or both omitted) and must be less than or equal to 24 hours "
    "apart, with the start time prior to end time and start time no more than 7 days in the past."
)

_TIME_RE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:T(?P<hm>\d{2}:\d{2})(?::(?P<s>\d{2})(?:\.(?P<frac>\d{1,7}))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?$"
)


class WindowError(ValueError):
    """A window rule was broken; ``code`` is the AF error code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    start_text: str
    end_text: str


def parse_time(text: str) -> datetime:
    """Parse YYYY-MM-DD, YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH:MM:SS (optional fraction and zone)."""
    match = _TIME_RE.match(text.strip())
    if not match:
        raise ValueError(text)
    value = datetime.strptime(match["date"], "%Y-%m-%d")
    if match["hm"]:
        hours, minutes = (int(x) for x in match["hm"].split(":"))
        seconds = int(match["s"] or 0)
        micros = int((match["frac"] or "0").ljust(6, "0")[:6])
        value = value.replace(hour=hours, minute=minutes, second=seconds, microsecond=micros)
    tz = match["tz"]
    result = value.replace(tzinfo=UTC)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        hours, minutes = (int(x) for x in tz[1:].split(":"))
        result -= sign * timedelta(hours=hours, minutes=minutes)
    return result


def resolve_window(start_text: str | None, end_text: str | None, now: datetime) -> Window:
    """Apply every rule; neither bound given means the 24 hours before ``now``."""
    if start_text is None and end_text is None:
        start = now - MAX_SPAN
        return Window(start, now, _format(start), _format(now))
    if not start_text or not end_text:
        raise WindowError("AF20030", AF20030_MESSAGE)
    try:
        start = parse_time(start_text)
    except ValueError:
        raise WindowError("AF20002", "Invalid parameter type: startTime. Expected type: datetime") from None
    try:
        end = parse_time(end_text)
    except ValueError:
        raise WindowError("AF20002", "Invalid parameter type: endTime. Expected type: datetime") from None
    if start >= end:
        raise WindowError("AF20055", AF20055_MESSAGE)
    if end - start > MAX_SPAN:
        raise WindowError("AF20030", AF20030_MESSAGE)
    if start < now - MAX_AGE:
        raise WindowError("AF20030", AF20030_MESSAGE)
    return Window(start, end, start_text, end_text)


def _format(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
