"""Legacy Reporting Web Service ``MessageTrace`` client, for tenants that still have it.

Microsoft began retiring it on 6 April 2026 and new tenants never get it; it stays behind
``O365_MESSAGETRACE_SOURCE=rws``. Its paging was never documented, so every form seen in the wild
is followed: an OData v2 ``__next`` link, an ``odata.nextLink`` / ``@odata.nextLink``, and bare
numeric ``$skiptoken`` offsets (no link at all: ask again from the next offset until a page is
empty). Dates come as ``/Date(ms)/`` or ISO strings. Rows are published in the Graph shape, so
consumers see one schema whatever the source, with the service's own row kept under ``original``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import orjson

from .clouds import REPORTING_ROLE
from .errors import ApiError, UnsafeUrlError
from .graphtrace import TraceHttp, TracePage
from .http import same_origin
from .planning import Window

REPORT_PATH = "/ecp/reportingwebservice/reporting.svc/MessageTrace"
_MSDATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
_FRACTION = re.compile(r"(\.\d{6})\d+")
_LINK_KEYS = ("__next", "@odata.nextLink", "odata.nextLink")


def parse_rws_time(value: Any) -> datetime | None:
    """``/Date(1659020996164)/`` (milliseconds since the epoch, UTC) or ISO 8601, zone or not (UTC)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    match = _MSDATE.match(text)
    if match:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
    text = _FRACTION.sub(r"\1", text.replace("Z", "+00:00"))  # 7 fractional digits -> 6
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def graph_time(moment: datetime) -> str:
    """Graph's ``receivedDateTime`` form: whole seconds with ``Z``, a fraction only when there is one."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def graph_status(value: Any) -> Any:
    """``Delivered`` -> ``delivered``, ``FilteredAsSpam`` -> ``filteredAsSpam`` (Graph's enum casing)."""
    return value[:1].lower() + value[1:] if isinstance(value, str) else value


def to_graph_row(record: dict[str, Any]) -> dict[str, Any]:
    """The legacy row in the Graph ``exchangeMessageTrace`` shape (m365-apis.md B.3 mapping)."""
    received = parse_rws_time(record.get("Received"))
    return {
        "id": record.get("MessageTraceId"),
        "messageId": record.get("MessageId"),
        "receivedDateTime": graph_time(received) if received else record.get("Received"),
        "senderAddress": record.get("SenderAddress"),
        "recipientAddress": record.get("RecipientAddress"),
        "subject": record.get("Subject"),
        "size": record.get("Size"),
        "fromIP": record.get("FromIP") or "",
        "toIP": record.get("ToIP") or "",
        "status": graph_status(record.get("Status")),
        "original": record,
    }


def _next_link(*sources: Any) -> str | None:
    """The next-page link in any of its spellings, inside ``d`` or at the top level."""
    for source in sources:
        if isinstance(source, dict):
            for key in _LINK_KEYS:
                if isinstance(source.get(key), str) and source[key]:
                    return str(source[key])
    return None


def _with_skiptoken(url: str, offset: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "$skiptoken"]
    query.append(("$skiptoken", str(offset)))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote, safe="$:'")))


def _skiptoken(url: str) -> int:
    for key, value in parse_qsl(urlsplit(url).query):
        if key.lower() == "$skiptoken" and value.isdigit():
            return int(value)
    return 0


class RwsTraceClient(TraceHttp):
    name = "rws"
    supports_details = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (offset link we made, first row of the page it follows): a server that ignores $skiptoken
        # would answer that link with the same page again, forever.
        self._offset_link: tuple[str, str] | None = None
        # Links the server gave: a page reached by one and carrying none is the last (no offset probe).
        self._server_links: set[str] = set()

    def first_page_url(self, window: Window) -> str:
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        query = urlencode({
            "$format": "json",
            "$filter": f"StartDate eq datetime'{window.start.strftime(fmt)}' and "
                       f"EndDate eq datetime'{window.end.strftime(fmt)}'",
        }, quote_via=quote, safe="$:'")
        return f"{self.base_url}{REPORT_PATH}?{query}"

    async def page(self, url: str) -> TracePage:
        response = await self.get(url, "RwsMessageTrace")
        try:
            doc = orjson.loads(response.content)
            data = doc.get("d", doc) if isinstance(doc, dict) else doc
            results = data.get("results", data.get("value")) if isinstance(data, dict) else data
            if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
                raise TypeError("no array of report rows")
        except (orjson.JSONDecodeError, TypeError, AttributeError) as exc:
            raise ApiError(f"RwsMessageTrace: the answer was not an OData JSON report ({exc})",
                           status=response.status_code, code="BadContent", retryable=True) from exc
        first = str(results[0].get("MessageTraceId")) + str(results[0].get("RecipientAddress")) if results else ""
        if self._offset_link is not None and self._offset_link == (url, first):
            return TracePage([], None)  # the offset was ignored: this is the previous page again
        link = _next_link(data, doc)
        next_url: str | None = None
        if link is not None and results:
            next_url = urljoin(url, link)
            if not same_origin(next_url, self.base_url):
                raise UnsafeUrlError(f"the report's next link points at another host ({urlsplit(next_url).hostname});"
                                     " it was not requested and the token was not sent")
            self._server_links.add(next_url)
        elif results and url not in self._server_links:
            next_url = _with_skiptoken(url, _skiptoken(url) + len(results))
            self._offset_link = (next_url, first)
        return TracePage([to_graph_row(r) for r in results], next_url)

    async def details(self, trace_id: str, recipient: str) -> list[dict[str, Any]] | None:
        return None  # MessageTraceDetail is retired with the service; details come from Graph only

    def refusal(self, text: str, status: int, message: str) -> ApiError:
        if status in (401, 403):
            return ApiError(text, status=status, code=f"HTTP{status}", fatal=True, remedy=(
                f"Add {REPORTING_ROLE} (Office 365 Exchange Online, application) to the app registration, grant "
                f"admin consent in tenant {self.tenant.tenant_id}, and give the app an Entra role that may read "
                "reports (Global Reader or Security Reader). Microsoft is retiring this service: prefer "
                "O365_MESSAGETRACE_SOURCE=graph."))
        if status == 404:
            return ApiError(text, status=status, code="ReportNotFound", fatal=True, remedy=(
                "This tenant has no Reporting Web Service message trace (Microsoft retired it from 6 April 2026; "
                "new tenants never had it): set O365_MESSAGETRACE_SOURCE=graph."))
        return ApiError(text, status=status, code=f"HTTP{status}")
