"""Microsoft Graph message trace client: ``GET /v1.0/admin/exchange/tracing/messageTraces``.

Every request waits for a slot of the tenant's quota limiter (list and detail calls share
Microsoft's 100 requests per 5 minutes), carries a Graph token, and follows the retry rules shared
with the Management API client. ``@odata.nextLink`` is followed only on the configured Graph host,
so the token never goes anywhere else. The stream drives paging page by page, so it can save the
link of the next unread page when a run stops mid-window.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import httpx
import orjson

from .apiclient import ApiClient
from .clouds import MESSAGETRACE_FIRST_PARTY_APP_ID, MESSAGETRACE_ROLE
from .errors import ApiError, UnsafeUrlError
from .http import retry_after_seconds, same_origin
from .planning import Window
from .quota import QuotaLimiter
from .settings import TenantConfig
from .tokens import TenantTokens
from .tracecursor import format_graph_time

log = logging.getLogger(__name__)

TRACES_PATH = "/v1.0/admin/exchange/tracing/messageTraces"
MAX_TOP = 5000


def service_principal_remedy(tenant_id: str) -> str:
    app = MESSAGETRACE_FIRST_PARTY_APP_ID
    return (f"Create the service principal of Microsoft's message-trace app {app} in tenant {tenant_id}, as an "
            f"administrator: `az ad sp create --id {app}` (Azure CLI) or `New-MgServicePrincipal -AppId {app}` "
            "(Microsoft Graph PowerShell). Provisioning can take several hours; until then Graph answers 401 and "
            "the next runs try again.")


def permission_remedy(tenant_id: str) -> str:
    return (f"Add {MESSAGETRACE_ROLE} (Microsoft Graph, application) to the app registration and grant admin "
            f"consent in tenant {tenant_id}.")


@dataclass(frozen=True)
class TracePage:
    rows: list[dict[str, Any]]  # in the Graph ``exchangeMessageTrace`` shape, whatever the source
    next_url: str | None


class TraceSource(Protocol):
    """What the stream needs from a message-trace API (Graph, or the legacy Reporting Web Service)."""

    name: str
    supports_details: bool

    def first_page_url(self, window: Window) -> str: ...
    async def page(self, url: str) -> TracePage: ...
    async def details(self, trace_id: str, recipient: str) -> list[dict[str, Any]] | None: ...


def error_body(body: bytes) -> tuple[str | None, str]:
    """``{"error": {"code", "message"}}`` (message may be an OData ``{"value": ...}``) -> (code, message)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, body[:200].decode("utf-8", "replace")
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        message = err.get("message", "")
        if isinstance(message, dict):
            message = message.get("value", "")
        return (str(err["code"]) if err.get("code") else None), str(message)[:500]
    if isinstance(doc, dict) and "Message" in doc:
        return (str(doc["ErrorCode"]) if doc.get("ErrorCode") else None), str(doc["Message"])[:500]
    return None, body[:200].decode("utf-8", "replace")


class TraceHttp(ApiClient):
    """The transport both trace clients share: the API client's rules, paced by the tenant's quota."""

    no_renewal_codes = frozenset({"ServicePrincipalMissing"})

    def __init__(self, http: httpx.AsyncClient, base_url: str, tenant: TenantConfig, tokens: TenantTokens,
                 resource: str, limiter: QuotaLimiter, **options: Any) -> None:
        super().__init__(http, base_url, tenant, tokens, resource, **options)
        self.limiter = limiter

    async def get(self, url: str, op: str) -> httpx.Response:
        return await self.send("GET", url, op=op, headers={"Accept": "application/json"})

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.limiter.slot(self.deadline())

    def retrying(self, error: ApiError, delay: float) -> None:
        if error.status == 429:
            self.limiter.defer(delay)  # the tenant's quota is spent: every stream of the tenant waits

    def classify(self, op: str, response: httpx.Response) -> ApiError:
        status = response.status_code
        code, message = error_body(response.content)
        text = f"{op} answered HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if status == 429:
            self.throttled += 1
            return ApiError(text, status=status, code="TooManyRequests", retryable=True,
                            retry_after=retry_after_seconds(response))
        if status >= 500 or status == 408:
            return ApiError(text, status=status, code=f"HTTP{status}", retryable=True,
                            retry_after=retry_after_seconds(response))
        return self.refusal(text, status, message)

    def refusal(self, text: str, status: int, message: str) -> ApiError:
        """A 4xx that retrying cannot fix; the API-specific wording and remedy."""
        return ApiError(text, status=status, code=f"HTTP{status}")


class GraphTraceClient(TraceHttp):
    name = "graph"
    supports_details = True

    def __init__(self, *args: Any, page_size: int = MAX_TOP, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.page_size = max(1, min(MAX_TOP, page_size))

    def first_page_url(self, window: Window) -> str:
        """Both bounds are required by Graph; at most 10 days apart and 90 days back (the planner's job)."""
        query = urlencode({
            "$filter": f"receivedDateTime ge {format_graph_time(window.start)} and "
                       f"receivedDateTime le {format_graph_time(window.end)}",
            "$top": str(self.page_size),
        }, quote_via=quote, safe="$:")
        return f"{self.base_url}{TRACES_PATH}?{query}"

    async def page(self, url: str) -> TracePage:
        response = await self.get(url, "ListMessageTraces")
        try:
            doc = orjson.loads(response.content)
            rows = doc["value"]
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise TypeError("value is not an array of objects")
        except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
            raise ApiError(f"ListMessageTraces: the answer was not a JSON object with a value array ({exc})",
                           status=response.status_code, code="BadContent", retryable=True) from exc
        next_url = doc.get("@odata.nextLink")
        if next_url is not None and not (isinstance(next_url, str) and same_origin(next_url, self.base_url)):
            raise UnsafeUrlError(f"@odata.nextLink points at another host ({urlsplit(str(next_url)).hostname}); "
                                 "it was not requested and the token was not sent")
        return TracePage(rows, next_url)

    async def details(self, trace_id: str, recipient: str) -> list[dict[str, Any]] | None:
        """getDetailsByRecipient for one row; None when Graph no longer knows the row (404)."""
        literal = recipient.replace("'", "''")  # OData string literal
        function = quote(f"getDetailsByRecipient(recipientAddress='{literal}')", safe="()='@+")
        url = f"{self.base_url}{TRACES_PATH}/{quote(trace_id, safe='')}/{function}"
        try:
            response = await self.get(url, "GetMessageTraceDetails")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        try:
            value = orjson.loads(response.content).get("value", [])
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return value if isinstance(value, list) else None

    def refusal(self, text: str, status: int, message: str) -> ApiError:
        tenant_id = self.tenant.tenant_id
        lowered = message.lower()
        if status == 401 and ("service principal" in lowered or MESSAGETRACE_FIRST_PARTY_APP_ID in lowered):
            return ApiError(text, status=status, code="ServicePrincipalMissing", fatal=True,
                            remedy=service_principal_remedy(tenant_id))
        if status == 403:
            return ApiError(text, status=status, code="MissingPermission", fatal=True,
                            remedy=permission_remedy(tenant_id))
        if status == 401:
            return ApiError(text, status=status, code="Unauthorized", fatal=True,
                            remedy=f"Graph rejected the app's token: {permission_remedy(tenant_id)} Check O365_CLOUD.")
        return ApiError(text, status=status, code=f"HTTP{status}")
