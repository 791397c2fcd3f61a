"""Legacy Reporting Web Service ``MessageTrace`` report (m365-apis.md B.2, deprecated).

Its paging was never documented and collectors disagree, so the next-link form is a
per-tenant switch (``__next``, ``odata.nextLink`` or bare ``$skiptoken`` offsets).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web

from m365sim.auth import authenticate, roles_of
from m365sim.clock import utcnow
from m365sim.httputil import ErrorResponse, json_response, query_param, service
from m365sim.odatafilter import FilterError, parse_filter
from m365sim.resources import EXCHANGE, ROLE_RWS
from m365sim.state import SimState, TenantRuntime
from m365sim.tokens import InvalidToken
from m365sim.tracedata import RWS_BASE, rws_row

REPORT_PATH = "/ecp/ReportingWebService/Reporting.svc/MessageTrace"
DEFAULT_WINDOW = timedelta(hours=48)
MAX_AGE = timedelta(days=30)
# RWS column -> Graph row key, for eq filters besides the dates.
_FILTER_COLUMNS = {
    "senderaddress": "senderAddress",
    "recipientaddress": "recipientAddress",
    "messagetraceid": "id",
    "messageid": "messageId",
    "status": "status",
    "fromip": "fromIP",
    "toip": "toIP",
}


def _case_insensitive(literal: str) -> str:
    """Regex matching ``literal`` in any letter case (aiohttp routes are case-sensitive)."""
    out = []
    for ch in literal:
        if ch.isalpha():
            out.append(f"[{ch.lower()}{ch.upper()}]")
        elif ch in ".()[]{}^$*+?|\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def odata_error(status: int, message: str, code: str = "") -> ErrorResponse:
    body = {"error": {"code": code, "message": {"lang": "en-US", "value": message}}}
    return ErrorResponse(json_response(body, status=status), code or f"RWS{status}")


class ReportingApi:
    """``/ecp/reportingwebservice/reporting.svc/MessageTrace`` (any path casing)."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        pattern = _case_insensitive(REPORT_PATH.lstrip("/"))
        return [web.get("/{report:" + pattern + "}", self.message_trace)]

    def _begin(self, request: web.Request) -> TenantRuntime:
        try:
            claims = authenticate(request, self.state.tokens, (EXCHANGE,))
        except InvalidToken as exc:
            response = json_response({"ErrorCode": "", "Message": "The request is not authorized."}, status=401)
            response.headers["WWW-Authenticate"] = 'Bearer client_id="00000002-0000-0ff1-ce00-000000000000"'
            raise ErrorResponse(response, f"token_{exc.reason}") from exc
        tenant = self.state.tenants.get(str(claims.get("tid", "")).lower())
        if tenant is None or ROLE_RWS not in roles_of(claims):
            body = {"ErrorCode": "", "Message": "No permission to access the report for the organization ."}
            raise ErrorResponse(json_response(body, status=403), "NoPermission")
        return tenant

    @service("rws")
    async def message_trace(self, request: web.Request) -> web.Response:
        tenant = self._begin(request)
        if not _wants_json(request):
            response = web.Response(
                status=400,
                content_type="application/xml",
                text=(
                    '<?xml version="1.0" encoding="utf-8"?><error xmlns="http://schemas.microsoft.com/ado/2007/08/'
                    'dataservices/metadata"><code /><message xml:lang="en-US">The simulator serves this report as '
                    "JSON only; request $format=json.</message></error>"
                ),
            )
            raise ErrorResponse(response, "RWSFormat")
        now = utcnow()
        filter_text = query_param(request, "$filter")
        start, end, equals = _parse(filter_text, now)
        offset = _offset(query_param(request, "$skiptoken"))
        rows = tenant.traces.query(start, end, now)
        for key, value in equals:
            rows = [r for r in rows if str(r.get(key) or "").lower() == value]
        size = tenant.config.rws_page_size
        page = rows[offset : offset + size]
        prefix = f"{self.state.base_url}/ecp/ReportingWebService/Reporting.svc"
        results = [
            _relocate(
                rws_row(
                    row,
                    tenant.config.rws_date_style,
                    index=offset + i,
                    organization=tenant.domain,
                    start_date=start,
                    end_date=end,
                ),
                prefix,
            )
            for i, row in enumerate(page)
        ]
        data: dict[str, Any] = {"results": results}
        if offset + size < len(rows) and tenant.config.rws_paging != "skiptoken":
            params = ["$format=json", f"$skiptoken={offset + size}"]
            if filter_text is not None:
                params.insert(0, f"$filter={quote(filter_text, safe='')}")
            link = f"{self.state.base_url}{REPORT_PATH}?" + "&".join(params)
            data["__next" if tenant.config.rws_paging == "__next" else "@odata.nextLink"] = link
        return json_response({"d": data})


def _wants_json(request: web.Request) -> bool:
    fmt = query_param(request, "$format")
    if fmt is not None:
        return fmt.lower() == "json"
    return "application/json" in request.headers.get("Accept", "").lower()


def _parse(filter_text: str | None, now: datetime) -> tuple[datetime, datetime, list[tuple[str, str]]]:
    if filter_text is None:
        return now - DEFAULT_WINDOW, now, []
    try:
        clauses = parse_filter(filter_text)
    except FilterError as exc:
        raise odata_error(400, f"Invalid filter expression: {exc}") from None
    start: datetime | None = None
    end: datetime | None = None
    equals: list[tuple[str, str]] = []
    for clause in clauses:
        prop = clause.prop.lower()
        if clause.op != "eq":
            raise odata_error(400, f"The operator '{clause.op}' is not supported for {clause.prop}.")
        if prop in ("startdate", "enddate"):
            try:
                value = datetime.fromisoformat(clause.value.replace("Z", "+00:00"))
            except ValueError:
                raise odata_error(400, f"Invalid DateTime value '{clause.value}'.") from None
            value = value if value.tzinfo else value.replace(tzinfo=UTC)
            if prop == "startdate":
                start = value
            else:
                end = value
        elif prop in _FILTER_COLUMNS:
            equals.append((_FILTER_COLUMNS[prop], clause.value.lower()))
        else:
            raise odata_error(400, f"No property '{clause.prop}' exists in type 'TenantReporting.MessageTrace'.")
    if start is None and end is None:
        return now - DEFAULT_WINDOW, now, equals
    if start is None or end is None:
        raise odata_error(400, "StartDate and EndDate must both be specified.")
    if start > end:
        raise odata_error(400, "StartDate must be earlier than EndDate.")
    if start < now - MAX_AGE:
        raise odata_error(400, "The StartDate can't be older than 30 days from today.")
    return start, end, equals


def _offset(raw: str | None) -> int:
    if raw is None:
        return 0
    if not raw.isdigit():
        raise odata_error(400, f"Invalid $skiptoken value '{raw}'.")
    return int(raw)


def _relocate(row: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Point ``__metadata`` URIs at the simulator instead of reports.office365.com."""
    meta = row.get("__metadata")
    if isinstance(meta, dict):
        for key in ("id", "uri"):
            value = meta.get(key)
            if isinstance(value, str) and value.startswith(RWS_BASE):
                meta[key] = prefix + value[len(RWS_BASE) :]
    return row
