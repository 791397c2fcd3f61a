"""Time helpers: the simulator runs on real UTC time; only the advertised Date is skewed."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import formatdate


def utcnow() -> datetime:
    return datetime.now(UTC)


class DateHeader:
    """RFC 1123 ``Date`` value shifted by ``skew`` seconds, cached per second (hot path)."""

    def __init__(self, skew_seconds: float = 0.0) -> None:
        self.skew = skew_seconds
        self._second = -1
        self._value = ""

    def value(self) -> str:
        now = time.time() + self.skew
        second = int(now)
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True)
        return self._value


def iso_ms(value: datetime) -> str:
    """``2015-05-23T17:35:00.000Z`` as the Management API prints datetimes."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def iso_seconds(value: datetime) -> str:
    """``2026-01-27T10:00:00Z`` (Graph style, whole seconds)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def entra_timestamp(value: datetime) -> str:
    """``2024-02-28 10:59:21Z`` as Entra prints it in error descriptions."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def entra_precise(value: datetime) -> str:
    """``2024-10-02T22:05:03.6755165Z`` (7 fractional digits, .NET round-trip format)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}0Z"
