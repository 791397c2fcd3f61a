"""Office 365 Management Activity API client for one tenant.

Every call carries ``PublisherIdentifier`` (blob GETs included), is paced by the tenant's rate
limiter, and is retried with backoff on throttling (HTTP 429 and HTTP 403 with ``AF429``), 5xx,
``AF50000``, timeouts and dropped connections. URLs that come from the network (``contentUri``,
``NextPageUri``) are requested only when they are on the configured API host; the bearer token
never goes anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson

from .apiclient import ApiClient
from .clouds import MANAGEMENT_DLP_ROLE, MANAGEMENT_ROLE
from .cursor import parse_time
from .errors import ApiError, BadContentError, UnsafeUrlError
from .http import RateLimiter, acquired, retry_after_seconds, same_origin
from .planning import Window, format_api_time
from .settings import TenantConfig
from .tokens import TenantTokens

log = logging.getLogger(__name__)

# Error codes after which retrying cannot help: the stream stops with the remedy.
FATAL_REMEDIES: dict[str, str] = {
    "AF10001": f"Add the application permission {MANAGEMENT_ROLE} (Office 365 Management APIs) and grant admin "
               "consent.",
    "AF20010": "The token's tenant differs from the tenant in the URL: check O365_TENANTS and O365_CLIENT_ID.",
    "AF20011": "The tenant does not exist for the Management API: check O365_TENANTS and O365_CLOUD, and turn on "
               "unified audit logging (Microsoft Purview > Audit); it can take 60 minutes to take effect.",
    "AF20012": "The tenant is not configured for the Management API: turn on unified audit logging and retry "
               "after 60 minutes.",
    "AF20013": "The tenant ID in the URL is not a GUID: check O365_TENANTS.",
    "AF20020": "The content type is not valid: check O365_CONTENT_TYPES.",
    "AF20030": "A listing window broke the API's rules (this is a bug in o365ingest; please report it).",
    "AF20055": "A listing window broke the API's rules (this is a bug in o365ingest; please report it).",
    "AF20031": "The API refused a NextPageUri; the window will be listed again next run.",
}
AUDIT_OFF_MARKER = "does not exist"


@dataclass(frozen=True)
class ContentItem:
    content_type: str
    content_id: str
    content_uri: str
    content_created: datetime
    content_expiration: datetime

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> ContentItem:
        return cls(
            content_type=str(item["contentType"]),
            content_id=str(item["contentId"]),
            content_uri=str(item["contentUri"]),
            content_created=parse_time(str(item["contentCreated"])),
            content_expiration=parse_time(str(item["contentExpiration"])),
        )


def error_code(body: bytes) -> tuple[str | None, str]:
    """``{"error": {"code", "message"}}`` → (code, message); tolerant of HTML and other bodies."""
    try:
        doc = orjson.loads(body)
        err = doc.get("error", {}) if isinstance(doc, dict) else {}
        if isinstance(err, dict):
            message = str(err.get("message", "")).strip().splitlines()
            return (str(err["code"]) if err.get("code") else None), (message[0] if message else "")[:500]
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return None, body[:200].decode("utf-8", "replace")


def with_publisher(url: str, publisher_id: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "publisheridentifier"]
    query.append(("PublisherIdentifier", publisher_id))
    return urlunsplit(parts._replace(query=urlencode(query, safe=":$")))


class ManagementClient(ApiClient):
    no_renewal_codes = frozenset({"AF10001"})  # the app lacks the permission: a new token has the same roles

    def __init__(self, http: httpx.AsyncClient, base_url: str, tenant: TenantConfig, tokens: TenantTokens,
                 resource: str, limiter: RateLimiter, **options: Any) -> None:
        super().__init__(http, base_url, tenant, tokens, resource, **options)
        self.limiter = limiter
        self.feed = f"{self.base_url}/api/v1.0/{tenant.tenant_id}/activity/feed"

    # --- operations
    async def list_content(self, content_type: str, window: Window) -> AsyncIterator[list[ContentItem]]:
        """Pages of the listing for one window; follows ``NextPageUri`` until it is absent."""
        url: str | None = f"{self.feed}/subscriptions/content?" + urlencode({
            "contentType": content_type, "startTime": format_api_time(window.start),
            "endTime": format_api_time(window.end)})
        while url is not None:
            response = await self.request("GET", url, op="ListContent")
            try:
                items = orjson.loads(response.content)
                if not isinstance(items, list):
                    raise TypeError("not a JSON array")
                page = [ContentItem.from_json(i) for i in items]
            except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
                raise ApiError(f"content listing for {content_type} was not a JSON array of content items ({exc})",
                               status=response.status_code, retryable=True) from exc
            yield page
            url = response.headers.get("NextPageUri")  # httpx headers are case-insensitive
            if url is not None and not same_origin(url, self.base_url):
                raise UnsafeUrlError(f"NextPageUri points at another host ({urlsplit(url).hostname}); "
                                     "it was not requested and the token was not sent")

    async def fetch_blob(self, item: ContentItem) -> list[dict[str, Any]]:
        """The blob's records; the body must be a JSON array of objects."""
        if not same_origin(item.content_uri, self.base_url):
            raise UnsafeUrlError(f"contentUri of {item.content_id} points at another host "
                                 f"({urlsplit(item.content_uri).hostname}); it was not requested")
        attempts = 0
        while True:
            attempts += 1
            response = await self.request("GET", item.content_uri, op="GetBlob")
            try:
                return parse_blob(response.content)
            except BadContentError as exc:
                self.on_request("GetBlob", response.status_code, "BadContent")
                if attempts >= self.max_attempts:
                    raise
                self.retries += 1
                self.on_retry("GetBlob")
                delay = self.backoff.delay(attempts)
                log.warning("blob %s: %s; retrying in %.1fs (attempt %d of %d)", item.content_id, exc.message,
                            delay, attempts, self.max_attempts)
                await self._sleep(delay, exc)

    async def start_subscription(self, content_type: str) -> str:
        """Start (or confirm) a subscription; AF20024 'already enabled' counts as success."""
        url = f"{self.feed}/subscriptions/start?" + urlencode({"contentType": content_type})
        try:
            response = await self.request("POST", url, op="StartSubscription")
        except ApiError as exc:
            if exc.code == "AF20024":
                return "enabled"
            raise
        try:
            return str(orjson.loads(response.content).get("status", "enabled"))
        except (orjson.JSONDecodeError, AttributeError):
            return "enabled"

    async def list_subscriptions(self) -> list[dict[str, Any]]:
        response = await self.request("GET", f"{self.feed}/subscriptions/list", op="ListSubscriptions")
        doc = orjson.loads(response.content)
        return doc if isinstance(doc, list) else []

    # --- transport
    async def request(self, method: str, url: str, *, op: str) -> httpx.Response:
        """One API call with pacing, token, PublisherIdentifier, retries and error classification."""
        return await self.send(method, url, op=op)

    def prepare(self, url: str) -> str:
        return with_publisher(url, self.tenant.publisher_id)  # on every call, blob GETs included

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        return acquired(self.limiter)

    async def _sleep(self, delay: float, error: Exception) -> None:
        if time.monotonic() + delay > self.deadline():
            raise error  # waiting would overrun the run's time budget; the next run continues
        await asyncio.sleep(delay)

    def classify(self, op: str, response: httpx.Response) -> ApiError:
        status = response.status_code
        code, message = error_code(response.content)
        retry_after = retry_after_seconds(response)
        text = f"{op} answered HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if code == "AF429" or status == 429:
            self.throttled += 1
            return ApiError(text, status=status, code=code or "HTTP429", retryable=True, retry_after=retry_after)
        if status >= 500 or code == "AF50000":
            return ApiError(text, status=status, code=code, retryable=True, retry_after=retry_after)
        if code == "AF10001" or (status in (401, 403) and MANAGEMENT_DLP_ROLE in message):
            missing = MANAGEMENT_DLP_ROLE if MANAGEMENT_DLP_ROLE in message else MANAGEMENT_ROLE
            return ApiError(text, status=status, code=code or "AF10001", fatal=True,
                            remedy=f"Add the application permission {missing} (Office 365 Management APIs) to the "
                                   f"app registration and grant admin consent in tenant {self.tenant.tenant_id}.")
        if AUDIT_OFF_MARKER in message and "Tenant" in message:
            # Microsoft's body splits one long string (with a correlation ID) between code and message.
            return ApiError(text, status=status, code="AuditDisabled", fatal=True,
                            remedy="Unified audit logging looks off for this tenant: turn it on in Microsoft Purview "
                                   "> Audit (or Set-AdminAuditLogConfig -UnifiedAuditLogIngestionEnabled $true); "
                                   "it can take 60 minutes to take effect.")
        if code in FATAL_REMEDIES:
            return ApiError(text, status=status, code=code, fatal=code != "AF20031", remedy=FATAL_REMEDIES[code])
        if status == 401:
            return ApiError(text, status=status, code=code or "HTTP401", fatal=True,
                            remedy="The API rejected the token: check the app's permissions and admin consent.")
        if status == 408:
            return ApiError(text, status=status, code=code, retryable=True, retry_after=retry_after)
        return ApiError(text, status=status, code=code)


def parse_blob(body: bytes) -> list[dict[str, Any]]:
    """A blob is a JSON array of record objects; anything else is bad content (retried, then dead-lettered)."""
    if not body.strip():
        raise BadContentError("empty body instead of a JSON array")
    try:
        records = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        snippet = body[:60].decode("utf-8", "replace").replace("\n", " ")
        kind = "an HTML page" if snippet.lstrip().lower().startswith(("<!doctype", "<html")) else "invalid JSON"
        raise BadContentError(f"{kind} instead of a JSON array ({exc.msg} at byte {exc.pos}): {snippet!r}") from exc
    if not isinstance(records, list):
        raise BadContentError(f"a JSON {type(records).__name__} instead of an array")
    if not all(isinstance(r, dict) for r in records):
        raise BadContentError("the array holds values that are not record objects")
    return records

