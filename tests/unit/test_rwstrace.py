"""The legacy Reporting Web Service client: dates, the mapping to the Graph shape, every paging form."""

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from o365ingest.errors import ApiError, UnsafeUrlError
from o365ingest.http import Backoff
from o365ingest.planning import Window
from o365ingest.quota import QuotaLimiter
from o365ingest.rwstrace import RwsTraceClient, parse_rws_time, to_graph_row
from o365ingest.tokens import Token
from tests.helpers import settings

RWS = "https://reports.office365.com"
REPORT = f"{RWS}/ecp/reportingwebservice/reporting.svc/MessageTrace"
WINDOW = Window(datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC))


class FakeTokens:
    async def get(self, resource):
        return Token("rws-token", 3600, ("ReportingWebService.Read.All",), False)

    async def invalidate(self):
        pass


def client():
    return RwsTraceClient(httpx.AsyncClient(), RWS, settings().tenants[0], FakeTokens(), "https://outlook.office365.com",
                          QuotaLimiter(100, 300.0), backoff=Backoff(base=0.001, cap=0.002))


def legacy(i, received="/Date(1764064800000)/", status="Delivered"):
    return {"__metadata": {"type": "TenantReporting.MessageTrace"}, "Organization": "contoso.onmicrosoft.com",
            "MessageId": f"<m{i}@contoso>", "Received": received, "SenderAddress": "a@contoso.example",
            "RecipientAddress": f"r{i}@contoso.example", "Subject": "Hi", "Status": status, "ToIP": None,
            "FromIP": "203.0.113.10", "Size": 1234, "MessageTraceId": f"trace-{i}",
            "StartDate": "/Date(1764000000000)/", "EndDate": "/Date(1764100000000)/", "Index": i}


@pytest.mark.parametrize(("text", "expected"), [
    ("/Date(1764064800000)/", datetime(2025, 11, 25, 10, 0, tzinfo=UTC)),
    ("/Date(1764064800123+0000)/", datetime(2025, 11, 25, 10, 0, 0, 123000, tzinfo=UTC)),
    ("2025-11-25T10:00:00.1234567", datetime(2025, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2025-11-25T10:00:00.0000000Z", datetime(2025, 11, 25, 10, 0, tzinfo=UTC)),
    ("2025-11-25T12:00:00+02:00", datetime(2025, 11, 25, 10, 0, tzinfo=UTC)),
])
def test_dates_in_every_form_seen(text, expected):
    assert parse_rws_time(text) == expected


@pytest.mark.parametrize("text", [None, "", "yesterday", "/Date(abc)/"])
def test_unreadable_dates_are_none(text):
    assert parse_rws_time(text) is None


def test_a_legacy_row_is_published_in_the_graph_shape_with_the_original_kept():
    original = legacy(7, received="2025-11-25T10:00:00.0000000", status="FilteredAsSpam")
    row = to_graph_row(original)
    assert list(row) == ["id", "messageId", "receivedDateTime", "senderAddress", "recipientAddress", "subject",
                         "size", "fromIP", "toIP", "status", "original"]
    assert row["id"] == "trace-7" and row["recipientAddress"] == "r7@contoso.example"
    assert row["receivedDateTime"] == "2025-11-25T10:00:00Z" and row["status"] == "filteredAsSpam"
    assert row["toIP"] == "" and row["fromIP"] == "203.0.113.10" and row["size"] == 1234
    assert row["original"] is original


@respx.mock
@pytest.mark.parametrize("form", ["__next", "odata.nextLink", "@odata.nextLink-top", "relative"])
async def test_paging_by_link_in_every_spelling(form):
    link = f"{REPORT}?$format=json&$skiptoken=2"
    if form == "relative":
        link = "MessageTrace?$format=json&$skiptoken=2"
    first = {"d": {"results": [legacy(0), legacy(1)], ("__next" if form in ("__next", "relative") else
                                                         "odata.nextLink"): link}}
    if form == "@odata.nextLink-top":
        first = {"d": {"results": [legacy(0), legacy(1)]}, "@odata.nextLink": link}
    route = respx.get(url__startswith=REPORT).mock(side_effect=[
        httpx.Response(200, json=first), httpx.Response(200, json={"d": {"results": [legacy(2)]}})])
    c = client()
    page = await c.page(c.first_page_url(WINDOW))
    last = await c.page(page.next_url)
    assert [r["id"] for r in page.rows + last.rows] == ["trace-0", "trace-1", "trace-2"]
    assert last.next_url is None and route.call_count == 2
    assert str(route.calls[1].request.url).endswith("$skiptoken=2")
    query = parse_qs(urlsplit(str(route.calls[0].request.url)).query)
    assert query["$format"] == ["json"]
    assert query["$filter"] == ["StartDate eq datetime'2026-11-20T00:00:00Z' and EndDate eq datetime'2026-11-25T00:00:00Z'"]


@respx.mock
async def test_paging_by_bare_skiptoken_offsets_until_an_empty_page():
    route = respx.get(url__startswith=REPORT).mock(side_effect=[
        httpx.Response(200, json={"d": {"results": [legacy(0), legacy(1)]}}),
        httpx.Response(200, json={"d": {"results": [legacy(2)]}}),
        httpx.Response(200, json={"d": {"results": []}}),
    ])
    c = client()
    url, ids = c.first_page_url(WINDOW), []
    while url is not None:
        page = await c.page(url)
        ids += [r["id"] for r in page.rows]
        url = page.next_url
    assert ids == ["trace-0", "trace-1", "trace-2"]
    offsets = [parse_qs(urlsplit(str(call.request.url)).query).get("$skiptoken") for call in route.calls]
    assert offsets == [None, ["2"], ["3"]]


@respx.mock
async def test_a_server_that_ignores_the_offset_does_not_loop_forever():
    route = respx.get(url__startswith=REPORT).mock(return_value=httpx.Response(
        200, json={"d": {"results": [legacy(0), legacy(1)]}}))
    c = client()
    page = await c.page(c.first_page_url(WINDOW))
    again = await c.page(page.next_url)
    assert again.rows == [] and again.next_url is None and route.call_count == 2


@respx.mock
async def test_a_link_to_another_host_is_refused():
    respx.get(url__startswith=REPORT).mock(return_value=httpx.Response(
        200, json={"d": {"results": [legacy(0)], "__next": "https://reports.evil.example/next"}}))
    c = client()
    with pytest.raises(UnsafeUrlError):
        await c.page(c.first_page_url(WINDOW))


@respx.mock
async def test_a_tenant_without_the_legacy_report_is_told_to_use_graph():
    respx.get(url__startswith=REPORT).mock(return_value=httpx.Response(404, text="Not Found"))
    c = client()
    with pytest.raises(ApiError) as info:
        await c.page(c.first_page_url(WINDOW))
    assert info.value.fatal and "O365_MESSAGETRACE_SOURCE=graph" in info.value.remedy
