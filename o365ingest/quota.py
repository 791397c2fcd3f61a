"""The client-side limiter for Microsoft's message-trace quota: 100 requests per 5 minutes per tenant.

A log of request times rather than a token bucket: the quota is small and rolling, and a log can be
saved in the checkpoint and merged by the next process, so a restart does not buy a fresh burst.

A request is counted from the moment it is let through until its answer arrives, and is then logged
at the answer's time. The service counts it at some moment in between, so a window that is clear by
the logged times is clear by the service's times too, whatever the network latency.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable

from .errors import O365IngestError

QUOTA_REQUESTS = 100  # per tenant, shared by every message-trace consumer (Graph and the V2 cmdlets)
QUOTA_PERIOD = 300.0  # seconds, rolling


class QuotaExhausted(O365IngestError):
    """The share of the quota is spent and the next free slot comes after the run's deadline."""


def share_limit(share: float) -> int:
    """Requests per period for a share of the tenant's quota (at least one)."""
    return max(1, math.floor(QUOTA_REQUESTS * share + 1e-9))


# Two logged times this close are one request: checkpoints written before the log was saved exactly
# held times rounded to microseconds.
SAME_REQUEST_SECONDS = 1e-6


def union_times(mine: list[float], theirs: list[float], tolerance: float = SAME_REQUEST_SECONDS) -> list[float]:
    """Both sorted logs as one, each request once: a time in both (within ``tolerance``) counts once,
    a time repeated in one log (two answers at the same clock reading) counts as often as it is there."""
    merged: list[float] = []
    i = j = 0
    while i < len(mine) and j < len(theirs):
        if abs(mine[i] - theirs[j]) <= tolerance:
            merged.append(mine[i])
            i, j = i + 1, j + 1
        elif mine[i] < theirs[j]:
            merged.append(mine[i])
            i += 1
        else:
            merged.append(theirs[j])
            j += 1
    return merged + mine[i:] + theirs[j:]


class QuotaLimiter:
    """At most ``limit`` requests in any ``period`` seconds; one per tenant, shared by its streams."""

    def __init__(self, limit: int, period: float = QUOTA_PERIOD, clock: Callable[[], float] = time.time) -> None:
        self.limit = max(1, limit)
        self.period = period
        self.clock = clock
        self._done: list[float] = []  # answer times, sorted, within the last period
        self._in_flight = 0
        self._not_before = 0.0  # set by a 429's Retry-After: nobody in the tenant sends before it
        self._changed = asyncio.Condition()
        self.requests = 0
        self.waited = 0.0

    def _expire(self, now: float) -> None:
        cutoff = now - self.period
        drop = bisect.bisect_right(self._done, cutoff)
        if drop:
            del self._done[:drop]

    def wait_time(self) -> float | None:
        """Seconds until a request may go; None while only an answer still in flight can free a slot."""
        now = self.clock()
        self._expire(now)
        wait = max(0.0, self._not_before - now)
        excess = self._in_flight + len(self._done) - self.limit + 1
        if excess > 0:
            if excess > len(self._done):
                return None
            wait = max(wait, self._done[excess - 1] + self.period - now)
        return wait

    @contextlib.asynccontextmanager
    async def slot(self, deadline: float | None = None) -> AsyncIterator[None]:
        """Hold one request slot; ``deadline`` (monotonic) bounds the wait, else QuotaExhausted."""
        async with self._changed:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise QuotaExhausted("the run's time budget is used up; the next run continues")
                wait = self.wait_time()
                if wait is not None and wait <= 0:
                    break
                if remaining is not None and wait is not None and wait > remaining:
                    raise QuotaExhausted(
                        f"the message-trace quota share ({self.limit} requests per {self.period:g}s) is spent "
                        f"for this run (next slot in {wait:.0f}s)",
                        "Nothing to do: the next run continues. Raise O365_MESSAGETRACE_QUOTA_SHARE only if no "
                        "other tool in the tenant uses message trace.")
                started = time.monotonic()
                timeout = remaining if wait is None else wait
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=timeout)
                self.waited += time.monotonic() - started
            self._in_flight += 1
            self.requests += 1
        try:
            yield
        finally:
            async with self._changed:
                self._in_flight -= 1
                bisect.insort(self._done, self.clock())
                self._changed.notify_all()

    def defer(self, seconds: float) -> None:
        """The service said to wait (429 Retry-After): hold every request of the tenant until then."""
        self._not_before = max(self._not_before, self.clock() + seconds)

    def merge(self, history: Iterable[float]) -> None:
        """Add request times logged elsewhere (a checkpoint); times this limiter already holds are not
        added again, so merging a log it saved itself, once or many times, changes nothing."""
        now = self.clock()
        self._expire(now)
        recent = sorted(m for m in (min(float(t), now) for t in history) if m > now - self.period)
        self._done = union_times(self._done, recent)

    def history(self) -> list[float]:
        """Request times within the last period, to save in the checkpoint."""
        self._expire(self.clock())
        return list(self._done)
