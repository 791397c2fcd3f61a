"""What every Microsoft API client here shares: its token goes only to its own host, each request
waits for a pacing slot, transient failures are retried, and a 401 renews the token once.

Subclasses say how the API words its errors (``classify``), what a request waits for (``slot``),
which 401 codes a new token cannot fix, and how a URL is completed (``prepare``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import ClassVar
from urllib.parse import urlsplit

import httpx

from .errors import ApiError, UnsafeUrlError
from .http import Backoff, same_origin, send_with_retries
from .settings import TenantConfig
from .tokens import TenantTokens

log = logging.getLogger(__name__)

# The bearer token is reused between requests for at most this long: MSAL's cache lookup runs in a
# worker thread and decodes the token, which cost more CPU per blob than the request itself.
TOKEN_REUSE_SECONDS = 60.0

RequestHook = Callable[[str, int, "str | None"], None]  # (operation, HTTP status or 0, error code)


class ApiClient:
    no_renewal_codes: ClassVar[frozenset[str]] = frozenset()  # 401s that name a missing permission

    def __init__(self, http: httpx.AsyncClient, base_url: str, tenant: TenantConfig, tokens: TenantTokens,
                 resource: str, *, max_attempts: int = 6, backoff: Backoff | None = None,
                 deadline: Callable[[], float] | None = None, on_request: RequestHook | None = None,
                 on_retry: Callable[[str], None] | None = None) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.tenant = tenant
        self.tokens = tokens
        self.resource = resource
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.deadline = deadline or (lambda: float("inf"))
        self.on_request: RequestHook = on_request or (lambda op, status, code: None)  # the requests metric
        self.on_retry = on_retry or (lambda op: None)  # the retries metric
        self.retries = 0
        self.throttled = 0
        self._bearer: str | None = None
        self._bearer_until = 0.0

    # --- what each API says for itself
    def classify(self, op: str, response: httpx.Response) -> ApiError:
        raise NotImplementedError

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def prepare(self, url: str) -> str:
        return url

    def retrying(self, error: ApiError, delay: float) -> None:
        """Called before each retry's wait."""

    # --- shared
    async def send(self, method: str, url: str, *, op: str, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """One API call; a URL on any other host (they come from the network) never gets the token."""
        if not same_origin(url, self.base_url):
            raise UnsafeUrlError(f"{op}: refusing to send a token to {urlsplit(url).hostname}")
        return await send_with_retries(
            self.http, method, self.prepare(url), op=op, token=self._token, classify=self.classify,
            slot=self.slot, max_attempts=self.max_attempts, backoff=self.backoff, deadline=self.deadline,
            renew_token=self._renew, on_request=self.on_request, on_retry=self._retrying, headers=headers)

    async def _token(self) -> str:
        now = time.monotonic()
        if self._bearer is not None and now < self._bearer_until:
            return self._bearer
        token = await self.tokens.get(self.resource)
        # At most a minute, and never into the last five minutes of the token's life (MSAL renews there).
        self._bearer_until = now + min(TOKEN_REUSE_SECONDS, token.expires_in - 300)
        self._bearer = token.access_token
        return token.access_token

    async def _renew(self, error: ApiError) -> bool:
        """A 401 gets one fresh token, unless it names what is missing (a new token cannot fix that)."""
        if error.code in self.no_renewal_codes:
            return False
        self._bearer = None
        await self.tokens.invalidate()
        return True

    def _retrying(self, op: str, error: ApiError, attempt: int, delay: float) -> None:
        self.retries += 1
        self.on_retry(op)
        self.retrying(error, delay)
        log.info("%s %s: %s; retry %d of %d in %.1fs", op, self.tenant.tenant_id, error.message, attempt,
                 self.max_attempts - 1, delay)
