"""Microsoft Graph message trace API (m365-apis.md B.3).

Tenant = the token's ``tid`` (Graph URLs carry no tenant). Checks: token (401), the
Transport Data Platform service principal (401), ``ExchangeMessageTrace.Read.All`` (403),
the 100-requests-per-5-minutes tenant quota shared with getDetailsByRecipient (429), then
the query rules.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web

from m365sim.auth import authenticate, roles_of
from m365sim.clock import iso_seconds, utcnow
from m365sim.httputil import CLIENT_REQUEST_ID, REQUEST_ID, ErrorResponse, json_response, query_param, service
from m365sim.odatafilter import Clause, FilterError, parse_filter
from m365sim.resources import GRAPH, MESSAGE_TRACE_SP_APP_ID, ROLE_MESSAGE_TRACE
from m365sim.state import SimState, TenantRuntime
from m365sim.tokens import InvalidToken
from m365sim.tracedetails import detail_events

MAX_WINDOW = timedelta(days=10)
MAX_AGE = timedelta(days=90)
DEFAULT_WINDOW = timedelta(hours=48)
FUTURE_SKEW = timedelta(minutes=5)
DEFAULT_TOP = 1000
MAX_TOP = 5000
TRACES_PATH = "/admin/exchange/tracing/messageTraces"
_DETAILS_RE = re.compile(r"^getDetailsByRecipient\(recipientAddress='(?P<addr>(?:[^']|'')*)'\)$")

_TOKEN_MESSAGES = {
    "missing": "Access token is empty.",
    "malformed": "IDX14100: JWT is not well formed, there are no dots (.).",
    "signature": "Access token validation failure. Invalid signature.",
    "expired": "Lifetime validation failed, the token is expired.",
    "not_yet_valid": "Lifetime validation failed, the token is not yet valid.",
    "audience": "Access token validation failure. Invalid audience.",
}
_TEXT_PROPS = ("id", "messageId", "recipientAddress", "senderAddress", "fromIP", "toIP", "status", "subject")
_CASELESS = frozenset({"id", "recipientAddress", "senderAddress", "status", "subject"})


def graph_error(
    request: web.Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> ErrorResponse:
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": iso_seconds(utcnow()),
                "request-id": request.get(REQUEST_ID, ""),
                "client-request-id": request.get(CLIENT_REQUEST_ID, ""),
            },
        }
    }
    return ErrorResponse(json_response(body, status=status, headers=headers), code)


def throttled(request: web.Request, retry_after: int) -> ErrorResponse:
    return graph_error(
        request,
        429,
        "TooManyRequests",
        "Too many requests. The message trace quota of this tenant is exhausted; retry after the indicated time.",
        {"Retry-After": str(retry_after)},
    )


class GraphApi:
    """``/v1.0`` and ``/beta`` message trace endpoints."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        out: list[web.RouteDef] = []
        for version in ("v1.0", "beta"):
            out += [
                web.get(f"/{version}{TRACES_PATH}", self.list_traces),
                web.get(f"/{version}{TRACES_PATH}/{{trace_id}}/{{function}}", self.details),
            ]
        return out

    def _begin(self, request: web.Request) -> TenantRuntime:
        try:
            claims = authenticate(request, self.state.tokens, (GRAPH,))
        except InvalidToken as exc:
            raise graph_error(
                request,
                401,
                "InvalidAuthenticationToken",
                _TOKEN_MESSAGES.get(exc.reason, "Access token validation failure."),
                {
                    "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
                    'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
                },
            ) from exc
        tenant = self.state.tenants.get(str(claims.get("tid", "")).lower())
        if tenant is None:
            raise graph_error(
                request, 401, "InvalidAuthenticationToken", "Access token validation failure. Invalid issuer."
            )
        if not tenant.config.messagetrace_sp_provisioned:
            raise graph_error(
                request,
                401,
                "Unauthorized",
                "Service principal-less Authentication failed: the service principal for App ID "
                f"{MESSAGE_TRACE_SP_APP_ID} was not found in the tenant.",
            )
        roles = roles_of(claims)
        if ROLE_MESSAGE_TRACE not in roles:
            raise graph_error(
                request,
                403,
                "Forbidden",
                f"Missing role permissions on the request. API requires one of '{ROLE_MESSAGE_TRACE}'. "
                f"Roles on the request '{','.join(roles)}'.",
            )
        now = time.monotonic()
        if not tenant.graph_quota.try_acquire(now):
            raise throttled(request, tenant.graph_quota.retry_after(now))
        return tenant

    @service("graph")
    async def list_traces(self, request: web.Request) -> web.Response:
        tenant = self._begin(request)
        version = request.path.split("/", 2)[1]
        now = utcnow()
        filter_text = query_param(request, "$filter")
        start, end, predicate = self._window(request, filter_text, now)
        top = self._top(request)
        offset = self._skip(request)
        rows = tenant.traces.query(start, end, now)
        if predicate is not None:
            rows = [row for row in rows if predicate(row)]
        page = rows[offset : offset + top]
        body: dict[str, Any] = {
            "@odata.context": f"{self.state.base_url}/{version}/$metadata#admin/exchange/tracing/messageTraces",
            "value": page,
        }
        if offset + top < len(rows):
            params = []
            if filter_text is not None:
                params.append(f"$filter={quote(filter_text, safe='')}")
            params.append(f"$top={top}")
            params.append(f"$skiptoken={_skiptoken(offset + top)}")
            body["@odata.nextLink"] = f"{self.state.base_url}/{version}{TRACES_PATH}?" + "&".join(params)
        return json_response(body)

    def _window(
        self, request: web.Request, filter_text: str | None, now: datetime
    ) -> tuple[datetime, datetime, Callable[[dict[str, Any]], bool] | None]:
        if filter_text is None:
            return now - DEFAULT_WINDOW, now, None
        try:
            clauses = parse_filter(filter_text)
        except FilterError as exc:
            raise graph_error(request, 400, "BadRequest", f"Invalid filter clause: {exc}") from None
        start: datetime | None = None
        end: datetime | None = None
        others: list[Clause] = []
        for clause in clauses:
            if clause.prop == "receivedDateTime":
                when = self._datetime(request, clause.value)
                if clause.op in ("ge", "gt"):
                    start = when if clause.op == "ge" else when + timedelta(microseconds=1)
                elif clause.op in ("le", "lt"):
                    end = when if clause.op == "le" else when - timedelta(microseconds=1)
                else:
                    raise graph_error(
                        request, 400, "BadRequest", f"Operator '{clause.op}' is not supported for receivedDateTime."
                    )
            elif clause.prop in _TEXT_PROPS:
                if clause.op not in ("eq", "contains", "startswith", "endswith") or (
                    clause.op != "eq" and clause.prop != "subject"
                ):
                    raise graph_error(
                        request, 400, "BadRequest", f"Operator '{clause.op}' is not supported for {clause.prop}."
                    )
                others.append(clause)
            else:
                raise graph_error(
                    request,
                    400,
                    "BadRequest",
                    f"Could not find a property named '{clause.prop}' on type 'microsoft.graph.exchangeMessageTrace'.",
                )
        if start is None and end is None:
            start, end = now - DEFAULT_WINDOW, now
        elif start is None or end is None:
            raise graph_error(
                request,
                400,
                "BadRequest",
                "Both a start (receivedDateTime ge) and an end (receivedDateTime le) must be specified.",
            )
        if start > end:
            raise graph_error(request, 400, "BadRequest", "The start date must be earlier than the end date.")
        if end > now + FUTURE_SKEW:
            raise graph_error(request, 400, "BadRequest", "The end date can't be later than the current time.")
        if start < now - MAX_AGE:
            raise graph_error(request, 400, "BadRequest", "The start date can't be older than 90 days.")
        if end - start > MAX_WINDOW:
            raise graph_error(
                request, 400, "BadRequest", "The time range between the start and end date can't exceed 10 days."
            )
        return start, end, _predicate(others) if others else None

    @staticmethod
    def _datetime(request: web.Request, text: str) -> datetime:
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise graph_error(
                request,
                400,
                "BadRequest",
                f"The DateTimeOffset text '{text}' should be in format 'yyyy-mm-ddThh:mm:ssZ'.",
            ) from None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @staticmethod
    def _top(request: web.Request) -> int:
        raw = query_param(request, "$top")
        if raw is None:
            return DEFAULT_TOP
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_TOP:
            raise graph_error(
                request, 400, "BadRequest", f"Invalid page size specified: '{raw}'. Must be between 1 and 5000."
            )
        return int(raw)

    @staticmethod
    def _skip(request: web.Request) -> int:
        raw = query_param(request, "$skiptoken")
        if raw is None:
            return 0
        try:
            text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError):
            text = ""
        if not text.startswith("o=") or not text[2:].isdigit():
            raise graph_error(request, 400, "BadRequest", "The skip token is invalid.")
        return int(text[2:])

    @service("graph")
    async def details(self, request: web.Request) -> web.Response:
        function = request.match_info["function"]
        match = _DETAILS_RE.match(function)
        if match is None:
            raise graph_error(
                request, 400, "BadRequest", f"Resource not found for the segment '{function.split('(')[0]}'."
            )
        tenant = self._begin(request)
        trace_id = request.match_info["trace_id"]
        recipient = match["addr"].replace("''", "'")
        row = _trace_index(tenant).get((trace_id.lower(), recipient.lower()))
        if row is None:
            raise graph_error(request, 404, "NotFound", "The requested message trace was not found.")
        now = utcnow()
        status = tenant.traces.status_at(row["id"], row["recipientAddress"], now)
        host = f"{tenant.domain.split('.', 1)[0].upper()}.namprd05.prod.outlook.com"
        version = request.path.split("/", 2)[1]
        return json_response(
            {
                "@odata.context": (
                    f"{self.state.base_url}/{version}/$metadata#Collection(microsoft.graph.exchangeMessageTraceDetail)"
                ),
                "value": detail_events(row, status, host),
            }
        )


def _trace_index(tenant: TenantRuntime) -> dict[tuple[str, str], dict[str, Any]]:
    """(id, recipient) -> row, built once per tenant (rows never change except status)."""
    if tenant.trace_index is None:
        far = datetime(1970, 1, 1, tzinfo=UTC)
        rows = tenant.traces.query(far, datetime(9999, 1, 1, tzinfo=UTC), utcnow())
        tenant.trace_index = {(r["id"].lower(), r["recipientAddress"].lower()): r for r in rows}
    return tenant.trace_index


def _predicate(clauses: list[Clause]) -> Callable[[dict[str, Any]], bool]:
    def matches(row: dict[str, Any]) -> bool:
        for clause in clauses:
            value = str(row.get(clause.prop) or "")
            want = clause.value
            if clause.prop in _CASELESS:
                value, want = value.lower(), want.lower()
            if clause.op == "eq" and value != want:
                return False
            if clause.op == "contains" and want not in value:
                return False
            if clause.op == "startswith" and not value.startswith(want):
                return False
            if clause.op == "endswith" and not value.endswith(want):
                return False
        return True

    return matches


def _skiptoken(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o={offset}".encode()).rstrip(b"=").decode()
