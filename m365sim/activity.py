"""Office 365 Management Activity API (m365-apis.md A.4-A.12), one instance per tenant.

Order of checks per request: tenant budget (AF429), bearer token (401), tenant match
(AF20010), permissions (AF10001), unified audit switch, then the operation's own rules.
"""

from __future__ import annotations

import bisect
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
from aiohttp import web

from m365sim.auth import authenticate, roles_of
from m365sim.clock import iso_ms, utcnow
from m365sim.dataset import CONTENT_TYPES, BlobMeta
from m365sim.httputil import ErrorResponse, json_response, query_param, raw_json, service
from m365sim.mgmtwindow import WindowError, resolve_window
from m365sim.resources import MANAGEMENT_RESOURCES, ROLE_ACTIVITY_FEED, ROLE_ACTIVITY_FEED_DLP
from m365sim.state import ZERO_GUID, SimState, Subscription, TenantRuntime
from m365sim.tokens import InvalidToken

H = TypeVar("H", bound=Callable[..., Any])

_CONTENT_TYPES = {ct.lower(): ct for ct in CONTENT_TYPES}
DLP = "DLP.All"
PUBLISHER_PARAM = "PublisherIdentifier"

DLP_SENSITIVE_TYPES = [
    {"id": "50842eb7-edc8-4019-85dd-5a5c1f2bb085", "name": "CreditCardNumber"},
    {"id": "0e9b3178-9678-47dd-a509-37222ca96b42", "name": "EUDebitCardNumber"},
    {"id": "a44669fe-0d48-453d-a9b1-2cc83f2cba77", "name": "U.S. Social Security Number (SSN)"},
    {"id": "a2ce32a8-f935-4bb6-8e96-2a5157672e2c", "name": "U.S. / U.K. Passport Number"},
]


def method(name: str) -> Callable[[H], H]:
    """Tag a handler with the API method name used in AF429 messages."""

    def mark(fn: H) -> H:
        fn.sim_method = name  # type: ignore[attr-defined]
        return fn

    return mark


def af_error(status: int, code: str, message: str) -> ErrorResponse:
    return ErrorResponse(json_response({"error": {"code": code, "message": message}}, status=status), code)


def publisher_of(request: web.Request) -> str:
    return query_param(request, PUBLISHER_PARAM) or ZERO_GUID


def throttled(tenant: TenantRuntime | None, request: web.Request, method_name: str) -> ErrorResponse:
    status = tenant.config.throttle_status if tenant is not None else 403
    return af_error(status, "AF429", f"Too many requests. Method={method_name}, PublisherId={publisher_of(request)}")


def internal_error() -> ErrorResponse:
    return af_error(500, "AF50000", "An internal error occurred. Retry the request.")


class ActivityApi:
    """Handlers under ``/api/v1.0/{tenant}/activity/feed`` (and the ``/api/v1`` alias)."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        out: list[web.RouteDef] = []
        for prefix in ("/api/v1.0", "/api/v1"):
            base = prefix + "/{tenant}/activity/feed"
            out += [
                web.post(base + "/subscriptions/start", self.start),
                web.post(base + "/subscriptions/stop", self.stop),
                web.get(base + "/subscriptions/list", self.list_subscriptions),
                web.get(base + "/subscriptions/content", self.list_content),
                web.get(base + "/subscriptions/notifications", self.list_notifications),
                web.get(base + "/audit/{content_id}", self.get_blob),
                web.get(base + "/resources/dlpSensitiveTypes", self.dlp_sensitive_types),
            ]
        return out

    # ------------------------------------------------------------------ common checks

    def _begin(self, request: web.Request, method_name: str) -> tuple[TenantRuntime, dict[str, Any]]:
        url_tenant = request.match_info["tenant"]
        tenant = self.state.tenants.get(url_tenant.lower())
        if tenant is not None and not tenant.budget(publisher_of(request)).try_acquire(time.monotonic()):
            raise throttled(tenant, request, method_name)
        audiences = (tenant.config.management_resource,) if tenant is not None else MANAGEMENT_RESOURCES
        try:
            claims = authenticate(request, self.state.tokens, audiences)
        except InvalidToken as exc:
            response = json_response({"Message": "Authorization has been denied for this request."}, status=401)
            response.headers["WWW-Authenticate"] = "Bearer"
            raise ErrorResponse(response, f"token_{exc.reason}") from exc
        if not _is_guid(url_tenant):
            raise af_error(400, "AF20013", f"The tenant ID passed in the URL ({url_tenant}) is not a valid GUID.")
        token_tenant = str(claims.get("tid", ""))
        if token_tenant.lower() != url_tenant.lower():
            raise af_error(
                401,
                "AF20010",
                f"The tenant ID passed in the URL ({url_tenant}) does not match the tenant ID passed in the "
                f"access token ({token_tenant}).",
            )
        if tenant is None:
            raise af_error(
                400, "AF20011", f"Specified tenant ID ({url_tenant}) does not exist in the system or has been deleted."
            )
        roles = roles_of(claims)
        if ROLE_ACTIVITY_FEED not in roles:
            raise af_error(
                401,
                "AF10001",
                f"The permission set ({','.join(roles)}) sent in the request did not include the expected "
                f"permission {ROLE_ACTIVITY_FEED}.",
            )
        if not tenant.config.audit_enabled:
            raise self._audit_disabled(request, tenant, claims, method_name)
        return tenant, claims

    def _audit_disabled(
        self, request: web.Request, tenant: TenantRuntime, claims: dict[str, Any], method_name: str
    ) -> ErrorResponse:
        """The DataServiceException Microsoft returns while unified audit logging is off.

        Microsoft's body really splits one long string between ``code`` and ``message``.
        """
        app_id = str(claims.get("appid", ZERO_GUID))
        ct = _content_type_or_none(request) or ""
        code = (
            f"{method_name} [CorrId={uuid.uuid4()}][TenantId={tenant.tenant_id},ContentType={ct},"
            f"ApplicationId={app_id},PublisherId={publisher_of(request)}][AppId"
        )
        message = (
            f"{app_id[1:]}] failed. Exception: Microsoft.Office.Compliance.Audit.DataServiceException: Tenant "
            f"{tenant.tenant_id} does not exist.\r\n   at Microsoft.Office.Compliance.Audit.API.AzureManager."
            "<GetSubscriptionTableClientForTenantAsync>d__52.MoveNext()\r\n--- End of stack trace from previous "
            "location where exception was thrown ---\r\n   at System.Runtime.ExceptionServices."
            "ExceptionDispatchInfo.Throw()"
        )
        return ErrorResponse(json_response({"error": {"code": code, "message": message}}, status=400), "AuditDisabled")

    def _content_type(self, request: web.Request) -> str:
        raw = query_param(request, "contentType")
        if not raw:
            raise af_error(400, "AF20001", "Missing parameter: contentType.")
        ct = _CONTENT_TYPES.get(raw.lower())
        if ct is None:
            raise af_error(400, "AF20020", "The specified content type is not valid.")
        return ct

    @staticmethod
    def _require_dlp(ct: str, claims: dict[str, Any]) -> None:
        roles = roles_of(claims)
        if ct == DLP and ROLE_ACTIVITY_FEED_DLP not in roles:
            raise af_error(
                401,
                "AF10001",
                f"The permission set ({','.join(roles)}) sent in the request did not include the expected "
                f"permission {ROLE_ACTIVITY_FEED_DLP}.",
            )

    @staticmethod
    def _require_subscription(tenant: TenantRuntime, ct: str) -> None:
        sub = tenant.subscriptions.get(ct)
        if sub is None:
            raise af_error(400, "AF20022", "No subscription found for the specified content type.")
        if sub.status != "enabled":
            raise af_error(400, "AF20023", "The subscription was disabled by a tenant admin.")

    # ------------------------------------------------------------------ subscriptions

    @service("subscriptions")
    @method("StartSubscription")
    async def start(self, request: web.Request) -> web.Response:
        tenant, claims = self._begin(request, "StartSubscription")
        ct = self._content_type(request)
        self._require_dlp(ct, claims)
        webhook = await self._webhook(request)
        sub = tenant.subscriptions.get(ct)
        if sub is not None and sub.status == "enabled" and (webhook is None or webhook == sub.webhook):
            raise af_error(400, "AF20024", "The subscription is already enabled. No property change.")
        if sub is None:
            sub = tenant.subscriptions[ct] = Subscription(status="enabled")
        sub.status = "enabled"
        if webhook is not None:
            sub.webhook = webhook
        sub.started_at = time.time()
        return json_response({"contentType": ct, "status": "enabled", "webhook": sub.webhook})

    async def _webhook(self, request: web.Request) -> dict[str, Any] | None:
        if not request.can_read_body:
            return None
        raw = await request.read()
        if not raw.strip():
            return None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise af_error(400, "AF20002", "Invalid parameter type: webhook. Expected type: json") from None
        hook = body.get("webhook") if isinstance(body, dict) else None
        if not isinstance(hook, dict):
            return None
        address = str(hook.get("address", ""))
        if not address.lower().startswith("https://"):
            raise af_error(
                400,
                "AF20021",
                f"The webhook endpoint ({address}) could not be validated. The address must begin with HTTPS.",
            )
        return {
            "status": "enabled",
            "address": address,
            "authId": hook.get("authId"),
            "expiration": hook.get("expiration") or None,
        }

    @service("subscriptions")
    @method("StopSubscription")
    async def stop(self, request: web.Request) -> web.Response:
        tenant, claims = self._begin(request, "StopSubscription")
        ct = self._content_type(request)
        self._require_dlp(ct, claims)
        sub = tenant.subscriptions.get(ct)
        if sub is None:
            raise af_error(400, "AF20022", "No subscription found for the specified content type.")
        sub.status = "disabled"
        return web.Response(status=200)

    @service("subscriptions")
    @method("ListSubscriptions")
    async def list_subscriptions(self, request: web.Request) -> web.Response:
        tenant, _claims = self._begin(request, "ListSubscriptions")
        return json_response(
            [
                {"contentType": ct, "status": sub.status, "webhook": sub.webhook}
                for ct, sub in sorted(tenant.subscriptions.items())
            ]
        )

    # ------------------------------------------------------------------ content

    @service("list")
    @method("ListContent")
    async def list_content(self, request: web.Request) -> web.Response:
        tenant, claims = self._begin(request, "ListContent")
        ct = self._content_type(request)
        self._require_dlp(ct, claims)
        now = utcnow()
        try:
            window = resolve_window(query_param(request, "startTime"), query_param(request, "endTime"), now)
        except WindowError as exc:
            raise af_error(400, exc.code, exc.message) from None
        self._require_subscription(tenant, ct)
        blobs = tenant.audit.list_content(ct, window.start, window.end, now)
        start = 0
        cursor = query_param(request, "nextPage")
        if cursor is not None:
            start = _cursor_position(cursor, blobs, window.start, window.end)
        page_size = tenant.config.page_size
        page = blobs[start : start + page_size]
        body = b"[" + b",".join(self._item(tenant, blob) for blob in page) + b"]"
        response = raw_json(body)
        if start + page_size < len(blobs):
            following = blobs[start + page_size]
            response.headers[tenant.config.next_page_header] = (
                f"{self.state.base_url}/api/v1/{tenant.tenant_id}/activity/feed/subscriptions/content"
                f"?contentType={ct}&startTime={quote(window.start_text, safe=':')}"
                f"&endTime={quote(window.end_text, safe=':')}&nextPage={_cursor(following)}"
            )
        return response

    def _item(self, tenant: TenantRuntime, blob: BlobMeta) -> bytes:
        """Serialized listing item, cached per blob (listing pages are a hot path)."""
        cached = tenant.listing_items.get(blob.content_id)
        if cached is None:
            base = tenant.content_uri_base.get(blob.content_id, self.state.base_url).rstrip("/")
            cached = orjson.dumps(
                {
                    "contentType": blob.content_type,
                    "contentId": blob.content_id,
                    "contentUri": f"{base}/api/v1.0/{tenant.tenant_id}/activity/feed/audit/{blob.content_id}",
                    "contentCreated": iso_ms(blob.content_created),
                    "contentExpiration": iso_ms(expiration_of(tenant, blob)),
                }
            )
            tenant.listing_items[blob.content_id] = cached
        return cached

    @service("list")
    @method("ListNotifications")
    async def list_notifications(self, request: web.Request) -> web.Response:
        """Webhook delivery history: always empty, because the simulator sends no webhooks."""
        tenant, claims = self._begin(request, "ListNotifications")
        ct = self._content_type(request)
        self._require_dlp(ct, claims)
        try:
            resolve_window(query_param(request, "startTime"), query_param(request, "endTime"), utcnow())
        except WindowError as exc:
            raise af_error(400, exc.code, exc.message) from None
        self._require_subscription(tenant, ct)
        return raw_json(b"[]")

    @service("blob")
    @method("GetBlob")
    async def get_blob(self, request: web.Request) -> web.Response:
        tenant, claims = self._begin(request, "GetBlob")
        content_id = request.match_info["content_id"]
        blob = tenant.audit.blob(content_id)
        if blob is None:
            raise af_error(400, "AF20050", f"The specified content ({content_id}) does not exist.")
        self._require_dlp(blob.content_type, claims)
        if utcnow() >= expiration_of(tenant, blob):
            raise af_error(
                400,
                "AF20051",
                f"Content requested with the key {content_id} has already expired. Content older than 7 days "
                "cannot be retrieved.",
            )
        return raw_json(tenant.audit.body(content_id))

    @service("subscriptions")
    @method("GetResourceFriendlyNames")
    async def dlp_sensitive_types(self, request: web.Request) -> web.Response:
        self._begin(request, "GetResourceFriendlyNames")
        language = request.headers.get("Accept-Language")
        if language is not None:
            if "," in language:
                raise af_error(400, "AF20053", "Only one language may be present in the Accept-Language header.")
            if not language.strip() or any(c in language for c in " ;="):
                raise af_error(400, "AF20054", "Invalid syntax in Accept-Language header.")
        return json_response(DLP_SENSITIVE_TYPES)


def expiration_of(tenant: TenantRuntime, blob: BlobMeta) -> datetime:
    """contentExpiration, brought forward when a test expired the blob early."""
    forced = tenant.expired_at.get(blob.content_id)
    return forced if forced is not None and forced < blob.content_expiration else blob.content_expiration


def _content_type_or_none(request: web.Request) -> str | None:
    raw = query_param(request, "contentType")
    return _CONTENT_TYPES.get(raw.lower()) if raw else None


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _cursor(blob: BlobMeta) -> str:
    """Opaque nextPage value: the first blob of the next page (contentCreated + index)."""
    created = blob.content_created
    return created.strftime("%Y%m%d%H%M%S") + f"{created.microsecond // 1000:03d}R{blob.index:09d}"


def _cursor_position(cursor: str, blobs: list[BlobMeta], start: datetime, end: datetime) -> int:
    invalid = af_error(400, "AF20031", f"Invalid nextPage Input: {cursor}.")
    stamp, sep, index_text = cursor.partition("R")
    if not sep or len(stamp) != 17 or not stamp.isdigit() or not index_text.isdigit():
        raise invalid
    try:
        created = datetime.strptime(stamp[:14], "%Y%m%d%H%M%S").replace(
            microsecond=int(stamp[14:]) * 1000, tzinfo=start.tzinfo
        )
    except ValueError:
        raise invalid from None
    if not start <= created < end:
        raise invalid
    key = (created, int(index_text))
    return bisect.bisect_left(blobs, key, key=lambda b: (b.content_created, b.index))
