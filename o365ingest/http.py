"""HTTP plumbing shared by the API clients: TLS, the long-lived client, pacing, backoff, URL pinning."""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

from .settings import Settings

USER_AGENT = "o365ingest/0.1 (+https://github.com/o365ingest)"


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """System trust plus, when configured, an extra CA (the simulator's). Verification stays on."""
    context = ssl.create_default_context()
    if settings.ca_bundle is not None:
        context.load_verify_locations(cafile=str(settings.ca_bundle))
    return context


def make_http_client(settings: Settings, max_connections: int) -> httpx.AsyncClient:
    """One client per process: connection reuse matters when fetching thousands of blobs."""
    timeout = settings.http_timeout_seconds
    return httpx.AsyncClient(
        verify=ssl_context(settings),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0), pool=None),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                            keepalive_expiry=30.0),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,  # a redirect could carry our bearer token elsewhere
    )


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.scheme.lower(), (parts.hostname or "").lower(), port)


def same_origin(url: str, base: str) -> bool:
    """True when ``url`` is on the configured API host; only then may it receive a token."""
    return origin(url) == origin(base)


def retry_after_seconds(response: httpx.Response, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (delta or HTTP date), or None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (now if now is not None else time.time()))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: spreads retries from many workers over time."""

    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        return (rng or random).uniform(ceiling / 2, ceiling)


class RateLimiter:
    """Token bucket that never exceeds ``limit`` requests in any ``period``-second span.

    The bucket holds about one second's worth (at least one request); refill is chosen so that a
    full bucket plus ``period`` seconds of refill is exactly ``limit``. One limiter per tenant is
    shared by all that tenant's streams, because Microsoft's budgets are per tenant.
    """

    def __init__(self, limit: float, period: float = 60.0) -> None:
        self.capacity = max(1.0, limit / (period + 1.0))
        self.rate = max(limit - self.capacity, 1e-9) / period
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()
        self.waited = 0.0

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            if self._tokens < 1.0:
                wait = (1.0 - self._tokens) / self.rate
                self.waited += wait
                await asyncio.sleep(wait)
                self._refill()
            self._tokens -= 1.0
