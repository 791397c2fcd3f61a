"""The Management API client reuses its bearer token between requests, within limits."""

import time

import httpx
import respx

from o365ingest import apiclient
from o365ingest.tokens import Token
from tests.unit.test_management import FEED, FakeTokens, client, item


@respx.mock
async def test_one_token_serves_many_requests():
    tokens = FakeTokens()
    route = respx.get(f"{FEED}/audit/blob1").mock(return_value=httpx.Response(200, json=[]))
    c = client(tokens)
    for _ in range(20):
        assert await c.fetch_blob(item()) == []
    assert tokens.issued == 1
    assert {call.request.headers["Authorization"] for call in route.calls} == {"Bearer token-0"}


@respx.mock
async def test_a_401_drops_the_reused_token_and_the_next_requests_use_the_new_one():
    tokens = FakeTokens()
    route = respx.get(f"{FEED}/audit/blob1").mock(side_effect=[
        httpx.Response(200, json=[]),
        httpx.Response(401, json={"error": {"code": "AF10000", "message": "expired"}}),
        httpx.Response(200, json=[]),
        httpx.Response(200, json=[]),
    ])
    c = client(tokens)
    for _ in range(3):
        await c.fetch_blob(item())
    assert tokens.invalidated == 1
    assert [call.request.headers["Authorization"] for call in route.calls] == \
        ["Bearer token-0", "Bearer token-0", "Bearer token-1", "Bearer token-1"]


@respx.mock
async def test_a_token_near_its_expiry_or_older_than_a_minute_is_asked_for_again():
    class ShortTokens(FakeTokens):
        async def get(self, resource):
            self.issued += 1
            return Token(f"token-{self.issued}", 200, (), False)  # inside MSAL's renewal margin

    tokens = ShortTokens()
    respx.get(f"{FEED}/audit/blob1").mock(return_value=httpx.Response(200, json=[]))
    c = client(tokens)
    await c.fetch_blob(item())
    await c.fetch_blob(item())
    assert tokens.issued == 2  # never reused

    fresh = FakeTokens()
    c = client(fresh)
    await c.fetch_blob(item())
    assert c._bearer_until - time.monotonic() <= apiclient.TOKEN_REUSE_SECONDS
    c._bearer_until = time.monotonic() - 1  # a minute later
    await c.fetch_blob(item())
    assert fresh.issued == 2
