"""Unit tests of our own httpx client (respx); end-to-end behaviour is tested against the simulator."""

from datetime import UTC, datetime

import httpx
import pytest
import respx

from o365ingest.errors import ApiError, BadContentError, UnsafeUrlError
from o365ingest.http import Backoff, RateLimiter
from o365ingest.management import ContentItem, ManagementClient, parse_blob
from o365ingest.planning import Window
from o365ingest.tokens import Token
from tests.helpers import TENANT, settings

BASE = "https://manage.office.com"
FEED = f"{BASE}/api/v1.0/{TENANT}/activity/feed"
WINDOW = Window(datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC))


class FakeTokens:
    def __init__(self):
        self.issued = 0
        self.invalidated = 0

    async def get(self, resource):
        self.issued += 1
        return Token(f"token-{self.invalidated}", 3600, ("ActivityFeed.Read",), False)

    async def invalidate(self):
        self.invalidated += 1


def client(tokens=None, **kw):
    tenant = settings().tenants[0]
    return ManagementClient(httpx.AsyncClient(), BASE, tenant, tokens or FakeTokens(), BASE, RateLimiter(60000),
                            backoff=Backoff(base=0.001, cap=0.002), **kw)


def item(uri=f"{FEED}/audit/blob1"):
    return ContentItem("Audit.General", "blob1", uri, WINDOW.start, WINDOW.end)


def listing(n, start=0):
    return [{"contentType": "Audit.General", "contentId": f"b{i}", "contentUri": f"{FEED}/audit/b{i}",
             "contentCreated": "2026-11-24T01:00:00.000Z", "contentExpiration": "2026-12-01T01:00:00.000Z"}
            for i in range(start, start + n)]


@respx.mock
async def test_listing_follows_next_page_uri_in_any_case_and_sends_publisher_id():
    route = respx.get(url__startswith=f"{FEED}/subscriptions/content").mock(side_effect=[
        httpx.Response(200, json=listing(2), headers={"NextPageUri": f"{BASE}/api/v1/{TENANT}/x?nextPage=2"}),
        httpx.Response(200, json=listing(1, 2)),
    ])
    page2 = respx.get(url__startswith=f"{BASE}/api/v1/{TENANT}/x").mock(
        return_value=httpx.Response(200, json=listing(1, 3), headers={"nextpageuri": f"{FEED}/subscriptions/content?nextPage=3"}))
    pages = [p async for p in client().list_content("Audit.General", WINDOW)]
    assert [[i.content_id for i in p] for p in pages] == [["b0", "b1"], ["b3"], ["b2"]]
    requests = [c.request for c in route.calls] + [c.request for c in page2.calls]
    assert all(r.url.params["PublisherIdentifier"] == TENANT for r in requests)
    first = route.calls[0].request.url.params
    assert (first["startTime"], first["endTime"]) == ("2026-11-24T00:00:00", "2026-11-25T00:00:00")


@respx.mock
async def test_next_page_on_another_host_is_never_requested():
    respx.get(url__startswith=FEED).mock(return_value=httpx.Response(
        200, json=listing(1), headers={"NextPageUri": "https://evil.example/next"}))
    evil = respx.get(url__startswith="https://evil.example").mock(return_value=httpx.Response(200, json=[]))
    with pytest.raises(UnsafeUrlError):
        _ = [p async for p in client().list_content("Audit.General", WINDOW)]
    assert not evil.called


@respx.mock
async def test_content_uri_on_another_host_or_port_is_rejected_without_a_request():
    evil = respx.get(url__regex=r".*").mock(return_value=httpx.Response(200, json=[]))
    for uri in ("https://evil.example/api/blob", f"{BASE}:8443/api/blob", "http://manage.office.com/api/blob"):
        with pytest.raises(UnsafeUrlError):
            await client().fetch_blob(item(uri))
    assert not evil.called


@respx.mock
@pytest.mark.parametrize("throttle", [
    httpx.Response(403, json={"error": {"code": "AF429", "message": "Too many requests. Method=GetBlob"}}),
    httpx.Response(429, headers={"Retry-After": "0"}),
])
async def test_throttling_403_af429_and_429_are_retried(throttle):
    route = respx.get(f"{FEED}/audit/blob1").mock(side_effect=[throttle, httpx.Response(200, json=[{"Id": "r1"}])])
    c = client()
    assert await c.fetch_blob(item()) == [{"Id": "r1"}]
    assert route.call_count == 2 and c.throttled == 1 and c.retries == 1


@respx.mock
async def test_5xx_af50000_and_dropped_connections_are_retried_then_raised():
    route = respx.get(f"{FEED}/audit/blob1").mock(side_effect=[
        httpx.Response(500, json={"error": {"code": "AF50000", "message": "internal"}}),
        httpx.ConnectError("reset"),
        httpx.ReadTimeout("slow"),
        httpx.Response(503, text="<html>gateway</html>"),
    ])
    with pytest.raises(ApiError) as info:
        await client(max_attempts=4).fetch_blob(item())
    assert info.value.retryable and route.call_count == 4


@respx.mock
async def test_401_refreshes_the_token_once():
    tokens = FakeTokens()
    route = respx.get(f"{FEED}/audit/blob1").mock(side_effect=[
        httpx.Response(401, json={"error": {"code": "AF10000", "message": "expired"}}),
        httpx.Response(200, json=[]),
    ])
    assert await client(tokens).fetch_blob(item()) == []
    assert tokens.invalidated == 1
    assert route.calls[1].request.headers["Authorization"] == "Bearer token-1"


@respx.mock
async def test_missing_permission_is_fatal_and_names_it():
    respx.get(url__startswith=FEED).mock(return_value=httpx.Response(401, json={"error": {
        "code": "AF10001", "message": "The permission set (ActivityFeed.Read) does not include ActivityFeed.ReadDlp"}}))
    with pytest.raises(ApiError) as info:
        _ = [p async for p in client().list_content("DLP.All", WINDOW)]
    assert info.value.fatal and "ActivityFeed.ReadDlp" in (info.value.remedy or "")


@respx.mock
async def test_audit_logging_off_gets_a_remedy_not_a_generic_error():
    respx.post(url__startswith=FEED).mock(return_value=httpx.Response(400, json={"error": {
        "code": "AF20011", "message": "Microsoft.Office.Compliance.Audit.DataServiceException: Tenant x does not exist."}}))
    with pytest.raises(ApiError) as info:
        await client().start_subscription("Audit.General")
    assert info.value.fatal and "audit logging" in (info.value.remedy or "")


@respx.mock
async def test_already_enabled_subscription_counts_as_success():
    respx.post(url__startswith=FEED).mock(return_value=httpx.Response(400, json={"error": {
        "code": "AF20024", "message": "The subscription is already enabled. No property change."}}))
    assert await client().start_subscription("Audit.General") == "enabled"


@pytest.mark.parametrize("body", [b"", b"<!DOCTYPE html><html>502</html>", b'[{"Id": "a"', b'{"Id": "a"}', b"[1, 2]"])
def test_bad_blob_bodies_are_bad_content(body):
    with pytest.raises(BadContentError):
        parse_blob(body)


@respx.mock
async def test_bad_body_is_retried_then_raised():
    route = respx.get(f"{FEED}/audit/blob1").mock(return_value=httpx.Response(200, text="<html>oops</html>"))
    with pytest.raises(BadContentError):
        await client(max_attempts=3).fetch_blob(item())
    assert route.call_count == 3


@respx.mock
async def test_waiting_past_the_deadline_gives_up_at_once():
    route = respx.get(f"{FEED}/audit/blob1").mock(return_value=httpx.Response(429, headers={"Retry-After": "120"}))
    with pytest.raises(ApiError):
        await client(deadline=lambda: 0.0).fetch_blob(item())
    assert route.call_count == 1


@respx.mock
async def test_no_redirects_are_followed():
    respx.get(f"{FEED}/audit/blob1").mock(return_value=httpx.Response(302, headers={"Location": "https://evil.example/"}))
    evil = respx.get(url__startswith="https://evil.example").mock(return_value=httpx.Response(200, json=[]))
    c = client()
    c.http = httpx.AsyncClient(follow_redirects=False)
    with pytest.raises(ApiError):
        await c.fetch_blob(item())
    assert not evil.called
