"""HTTP plumbing shared by the API clients: TLS, the long-lived client, pacing, backoff, URL pinning."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import random
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

from .errors import ApiError
from .settings import Settings

USER_AGENT = "o365ingest/0.1 (+https://github.com/o365ingest)"


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """System trust plus, when configured, an extra CA (the simulator's). Verification stays on."""
    context = ssl.create_default_context()
    if settings.ca_bundle is not None:
        context.load_verify_locations(cafile=str(settings.ca_bundle))
    return context


def skip_absent_optional_imports(names: tuple[str, ...] = ("sniffio",)) -> None:
    """Make imports of absent optional modules fail at once instead of searching ``sys.path`` each time.

    httpcore runs ``import sniffio`` (optional, not installed here) for every lock and event it
    creates -- several times per request -- and a failed import is not cached, so each one stats
    every ``sys.path`` entry: about a millisecond of CPU per blob. ``sys.modules[name] = None`` is
    Python's documented way to say "not available"; it is set only when the module really is absent.
    """
    for name in names:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = None  # type: ignore[assignment]


def make_http_client(settings: Settings, max_connections: int) -> httpx.AsyncClient:
    """One client per process: connection reuse matters when fetching thousands of blobs."""
    skip_absent_optional_imports()
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
    """Token bucket that never exceeds ``limit`` requests in any ``period + slack``-second span.

    The bucket holds about one second's worth (at least one request); refill is chosen so that a
    full bucket plus ``period + slack`` seconds of refill is exactly ``limit``. The ``slack`` is for
    requests that reach the service later than they were let through (a busy event loop, the
    network, the service counting after its own latency): however those delays vary, within
    ``slack`` seconds no ``period``-second span the service sees can hold more than ``limit``. It
    costs ``slack / (period + slack)`` of the budget (about 3 % at 60 s). One limiter per tenant is
    shared by all that tenant's streams, because Microsoft's budgets are per tenant.
    """

    def __init__(self, limit: float, period: float = 60.0, slack: float = 2.0) -> None:
        self.capacity = max(1.0, limit / (period + 1.0))
        self.rate = max(limit - self.capacity, 1e-9) / (period + slack)
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


@contextlib.asynccontextmanager
async def acquired(limiter: RateLimiter) -> AsyncIterator[None]:
    """A rate limiter's permit as a request slot (the bucket needs nothing back afterwards)."""
    await limiter.acquire()
    yield


async def send_with_retries(
    http: httpx.AsyncClient, method: str, url: str, *, op: str,
    token: Callable[[], Awaitable[str]],
    classify: Callable[[str, httpx.Response], ApiError],
    slot: Callable[[], contextlib.AbstractAsyncContextManager[None]],
    max_attempts: int, backoff: Backoff, deadline: Callable[[], float],
    renew_token: Callable[[ApiError], Awaitable[bool]] | None = None,
    on_request: Callable[[str, int, str | None], None] | None = None,
    on_retry: Callable[[str, ApiError, int, float], None] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """One API call with the rules every client shares; each API words its errors, so ``classify`` is its own.

    The request goes inside a pacing ``slot`` with a bearer token. Transport errors and answers
    classified retryable are retried up to ``max_attempts`` times after ``Retry-After`` or backoff; a
    401 may renew the token once when ``renew_token`` agrees; a wait that would overrun ``deadline``
    (monotonic) raises the error at once, so the run can commit and the next one continue.
    """
    attempts = 0
    renewed = False
    while True:
        attempts += 1
        bearer = await token()
        async with slot():
            try:
                response = await http.request(method, url,
                                              headers={**(headers or {}), "Authorization": f"Bearer {bearer}"})
            except httpx.TransportError as exc:  # timeouts, refused / dropped connections, protocol errors
                if on_request:
                    on_request(op, 0, type(exc).__name__)
                error = ApiError(f"{op} failed: {type(exc).__name__}", status=None, retryable=True)
            else:
                if response.status_code < 300:
                    if on_request:
                        on_request(op, response.status_code, None)
                    return response
                error = classify(op, response)
                if on_request:
                    on_request(op, response.status_code, error.code)
        if error.status == 401 and not renewed and renew_token is not None and await renew_token(error):
            renewed = True
            attempts -= 1
            continue
        if not error.retryable or attempts >= max_attempts:
            raise error
        delay = error.retry_after if error.retry_after is not None else backoff.delay(attempts)
        if on_retry:
            on_retry(op, error, attempts, delay)
        if time.monotonic() + delay > deadline():
            raise error  # waiting would overrun the run's time budget; the next run continues
        await asyncio.sleep(delay)
