"""Sliding-window request counters (Management API budget, Graph message-trace quota)."""

from __future__ import annotations

import math
from collections import deque


class SlidingWindow:
    """At most ``limit`` accepted requests within any ``window`` seconds.

    Only accepted requests are counted: a client that backs off recovers as soon as old
    requests age out, which is how Microsoft describes both limits.
    """

    __slots__ = ("_times", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        times = self._times
        while times and times[0] <= cutoff:
            times.popleft()

    def try_acquire(self, now: float) -> bool:
        """Count one request at ``now`` if the window has room."""
        self._expire(now)
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True

    def retry_after(self, now: float) -> int:
        """Whole seconds until a slot frees (at least 1)."""
        self._expire(now)
        if len(self._times) < self.limit:
            return 0
        index = len(self._times) - self.limit
        return max(1, math.ceil(self._times[index] + self.window - now))

    def used(self, now: float) -> int:
        self._expire(now)
        return len(self._times)
