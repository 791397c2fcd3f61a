"""Window planning for ``/subscriptions/content``: a pure function of (watermark, now, policy).

Microsoft's rules: windows are on ``contentCreated`` (when a blob became available), start
inclusive and end exclusive, at most 24 hours wide, and the start no more than 7 days back.
Blobs can show up in a listing later than their ``contentCreated``, so each run re-lists an
overlap before the watermark; the seen-set makes that re-listing free of duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_WINDOW = timedelta(hours=24)
# 7 days minus a margin, so a request planned now is still valid when it reaches the API.
MAX_AGE = timedelta(days=7) - timedelta(minutes=10)


@dataclass(frozen=True)
class WindowPolicy:
    lookback: timedelta
    overlap: timedelta
    safety_lag: timedelta
    max_window: timedelta = MAX_WINDOW
    max_age: timedelta = MAX_AGE


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Plan:
    windows: tuple[Window, ...]
    # The part of the requested range older than the API's 7-day limit: it cannot be listed any
    # more, and any blob in it that was never fetched is lost. Reported, never silently skipped.
    lost: Window | None


def truncate_to_second(moment: datetime) -> datetime:
    """The API accepts at most second precision; planning on whole seconds keeps windows exact."""
    return moment.replace(microsecond=0)


def plan_windows(watermark: datetime | None, now: datetime, policy: WindowPolicy) -> Plan:
    """Windows to list, oldest first, tiling [start, now - safety_lag) without gaps."""
    end_limit = truncate_to_second(now - policy.safety_lag)
    earliest = truncate_to_second(now - policy.max_age) + timedelta(seconds=1)
    start = now - policy.lookback if watermark is None else watermark - policy.overlap
    start = truncate_to_second(start)
    # Only a stream that fell behind (not one on its first run) can lose data to the 7-day edge.
    lost = Window(watermark, earliest) if watermark is not None and watermark < earliest else None
    start = max(start, earliest)
    windows: list[Window] = []
    while start < end_limit:
        end = min(start + policy.max_window, end_limit)
        windows.append(Window(start, end))
        start = end
    return Plan(tuple(windows), lost)


def format_api_time(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS``, UTC, the most precise form the API documents."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S")
