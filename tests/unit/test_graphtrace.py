"""The Graph message-trace client (respx); end-to-end behaviour is tested against the simulator."""

import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from o365ingest.errors import ApiError, UnsafeUrlError
from o365ingest.graphtrace import GraphTraceClient
from o365ingest.http import Backoff
from o365ingest.planning import Window
from o365ingest.quota import QuotaLimiter
from o365ingest.settings import SettingsError, load_settings
from o365ingest.tokens import Token
from tests.helpers import TENANT, env, settings

GRAPH = "https://graph.microsoft.com"
TRACES = f"{GRAPH}/v1.0/admin/exchange/tracing/messageTraces"
WINDOW = Window(datetime(2026, 11, 20, 8, 0, tzinfo=UTC), datetime(2026, 11, 25, 8, 0, tzinfo=UTC))
APP = "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"


class FakeTokens:
    def __init__(self):
        self.invalidated = 0

    async def get(self, resource):
        assert resource == GRAPH
        return Token(f"graph-token-{self.invalidated}", 3600, ("ExchangeMessageTrace.Read.All",), False)

    async def invalidate(self):
        self.invalidated += 1


def client(tokens=None, limiter=None, **kw):
    return GraphTraceClient(httpx.AsyncClient(), GRAPH, settings().tenants[0], tokens or FakeTokens(), GRAPH,
                            limiter or QuotaLimiter(100, 300.0), backoff=Backoff(base=0.001, cap=0.002), **kw)


def rows(n, start=0):
    return [{"id": f"trace-{i}", "recipientAddress": f"user{i}@contoso.example", "status": "delivered",
             "receivedDateTime": "2026-11-24T10:00:00Z"} for i in range(start, start + n)]


@respx.mock
async def test_pages_follow_next_link_with_both_bounds_and_top_and_every_call_is_paced():
    next_link = f"{TRACES}?$filter=x&$top=2&$skiptoken=abc"
    route = respx.get(url__startswith=TRACES).mock(side_effect=[
        httpx.Response(200, json={"value": rows(2), "@odata.nextLink": next_link}),
        httpx.Response(200, json={"value": rows(1, 2)}),
    ])
    limiter = QuotaLimiter(100, 300.0)
    c = client(limiter=limiter, page_size=2)
    first = await c.page(c.first_page_url(WINDOW))
    second = await c.page(first.next_url)
    assert [r["id"] for r in first.rows + second.rows] == ["trace-0", "trace-1", "trace-2"]
    assert second.next_url is None
    query = parse_qs(urlsplit(str(route.calls[0].request.url)).query)
    assert query["$filter"] == ["receivedDateTime ge 2026-11-20T08:00:00Z and receivedDateTime le 2026-11-25T08:00:00Z"]
    assert query["$top"] == ["2"]
    assert str(route.calls[1].request.url) == next_link
    assert all(c.request.headers["Authorization"] == "Bearer graph-token-0" for c in route.calls)
    assert limiter.requests == 2 and len(limiter.history()) == 2


def test_page_size_is_capped_at_graphs_maximum():
    url = client(page_size=20_000).first_page_url(WINDOW)
    assert parse_qs(urlsplit(url).query)["$top"] == ["5000"]


@respx.mock
async def test_next_link_on_another_host_is_never_requested():
    respx.get(url__startswith=TRACES).mock(return_value=httpx.Response(
        200, json={"value": rows(1), "@odata.nextLink": "https://graph.evil.example/v1.0/next"}))
    evil = respx.get(url__startswith="https://graph.evil.example").mock(return_value=httpx.Response(200))
    c = client()
    with pytest.raises(UnsafeUrlError):
        await c.page(c.first_page_url(WINDOW))
    for url in ("https://graph.evil.example/v1.0/x", f"{GRAPH}:8443/v1.0/x", "http://graph.microsoft.com/v1.0/x"):
        with pytest.raises(UnsafeUrlError):
            await c.page(url)
    assert not evil.called


@respx.mock
async def test_429_waits_for_retry_after_and_holds_the_tenants_other_requests():
    route = respx.get(url__startswith=TRACES).mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "0.4"}, json={"error": {"code": "TooManyRequests"}}),
        httpx.Response(200, json={"value": rows(1)}),
    ])
    limiter = QuotaLimiter(100, 300.0)
    c = client(limiter=limiter)
    started = time.monotonic()
    page = await c.page(c.first_page_url(WINDOW))
    assert len(page.rows) == 1 and route.call_count == 2
    assert time.monotonic() - started >= 0.4
    assert c.throttled == 1 and c.retries == 1
    assert limiter.wait_time() == 0  # the deferral has passed


@respx.mock
async def test_429_whose_wait_overruns_the_deadline_raises_at_once():
    route = respx.get(url__startswith=TRACES).mock(return_value=httpx.Response(429, headers={"Retry-After": "200"}))
    c = client(deadline=lambda: time.monotonic() + 5)
    with pytest.raises(ApiError) as info:
        await c.page(c.first_page_url(WINDOW))
    assert info.value.status == 429 and route.call_count == 1


@respx.mock
async def test_5xx_and_dropped_connections_are_retried():
    route = respx.get(url__startswith=TRACES).mock(side_effect=[
        httpx.Response(503, text="<html>busy</html>"), httpx.ConnectError("reset"),
        httpx.Response(200, json={"value": []}),
    ])
    retried: list[str] = []
    c = client(on_retry=retried.append)
    assert (await c.page(c.first_page_url(WINDOW))).rows == []
    assert route.call_count == 3
    assert retried == ["ListMessageTraces", "ListMessageTraces"]  # each retry reported, by operation


@respx.mock
async def test_missing_service_principal_is_fatal_with_the_exact_remedy_and_no_token_churn():
    tokens = FakeTokens()
    route = respx.get(url__startswith=TRACES).mock(return_value=httpx.Response(401, json={"error": {
        "code": "Unauthorized", "message": f"Service principal-less Authentication failed: the service principal for "
                                          f"App ID {APP} was not found in the tenant."}}))
    c = client(tokens)
    with pytest.raises(ApiError) as info:
        await c.page(c.first_page_url(WINDOW))
    error = info.value
    assert error.fatal and error.code == "ServicePrincipalMissing"
    assert f"az ad sp create --id {APP}" in error.remedy
    assert f"New-MgServicePrincipal -AppId {APP}" in error.remedy
    assert "several hours" in error.remedy and TENANT in error.remedy
    assert route.call_count == 1 and tokens.invalidated == 0


@respx.mock
async def test_missing_role_is_fatal_and_says_what_to_grant():
    respx.get(url__startswith=TRACES).mock(return_value=httpx.Response(403, json={"error": {
        "code": "Forbidden", "message": "Missing role permissions on the request."}}))
    c = client()
    with pytest.raises(ApiError) as info:
        await c.page(c.first_page_url(WINDOW))
    assert info.value.fatal and info.value.code == "MissingPermission"
    assert "ExchangeMessageTrace.Read.All (Microsoft Graph, application)" in info.value.remedy
    assert "admin consent" in info.value.remedy


@respx.mock
async def test_an_expired_token_is_renewed_once():
    tokens = FakeTokens()
    route = respx.get(url__startswith=TRACES).mock(side_effect=[
        httpx.Response(401, json={"error": {"code": "InvalidAuthenticationToken", "message": "expired"}}),
        httpx.Response(200, json={"value": rows(1)}),
    ])
    c = client(tokens)
    assert len((await c.page(c.first_page_url(WINDOW))).rows) == 1
    assert tokens.invalidated == 1 and route.calls[1].request.headers["Authorization"] == "Bearer graph-token-1"


@respx.mock
async def test_a_body_that_is_not_a_trace_page_is_an_error_not_an_empty_page():
    respx.get(url__startswith=TRACES).mock(return_value=httpx.Response(200, text="<html>proxy</html>"))
    c = client()
    with pytest.raises(ApiError) as info:
        await c.page(c.first_page_url(WINDOW))
    assert info.value.code == "BadContent"


@respx.mock
async def test_details_by_recipient_escapes_the_address_and_a_missing_row_gives_none():
    route = respx.get(url__startswith=f"{TRACES}/trace-1/").mock(side_effect=[
        httpx.Response(200, json={"value": [{"event": "Receive"}, {"event": "Deliver"}]}),
        httpx.Response(404, json={"error": {"code": "NotFound", "message": "not found"}}),
    ])
    c = client()
    assert await c.details("trace-1", "o'neil@contoso.example") == [{"event": "Receive"}, {"event": "Deliver"}]
    assert await c.details("trace-1", "gone@contoso.example") is None
    path = route.calls[0].request.url.path
    assert path.endswith("/trace-1/getDetailsByRecipient(recipientAddress='o''neil@contoso.example')")


@pytest.mark.parametrize("cloud", ["gcchigh", "dod"])
def test_message_traces_are_refused_at_start_up_where_graph_has_none(cloud):
    with pytest.raises(SettingsError) as info:
        load_settings(env(O365_CLOUD=cloud, O365_MESSAGETRACE_ENABLED="true"))
    text = str(info.value)
    assert "O365_MESSAGETRACE_ENABLED" in text and f"not available in the {cloud} cloud" in text
    assert "GCC High or DoD" in text
    assert load_settings(env(O365_CLOUD=cloud)).messagetrace_enabled is False
