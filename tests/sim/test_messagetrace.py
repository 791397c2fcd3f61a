"""Graph message traces (B.3) and the legacy Reporting Web Service (B.2), over real HTTPS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from m365sim.testing import Simulator
from tests.sim.support import EXCHANGE, GRAPH, MANAGE, app, client, guid, tenant, token

MAIN = guid("trace-main")
QUOTA = guid("trace-quota")
NO_SP = guid("trace-no-sp")
CHANGING = guid("trace-changing")
RWS_NEXT = guid("rws-next")
RWS_ODATA = guid("rws-odata")
RWS_SKIP = guid("rws-skiptoken")
NO_ROLE_APP = guid("trace-app-without-roles")
TRACES = "/v1.0/admin/exchange/tracing/messageTraces"
RWS = "/ecp/reportingwebservice/reporting.svc/MessageTrace"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    apps = [app(), app(NO_ROLE_APP, roles={MANAGE: ["ActivityFeed.Read"]})]
    config = {
        "tenants": [
            tenant(MAIN, apps, messages=150, graph_quota_per_5min=1000),
            tenant(QUOTA, messages=10),
            tenant(NO_SP, messages=10, messagetrace_sp_provisioned=False),
            tenant(CHANGING, messages=40, messagetrace={"changing_fraction": 0.5, "change_delay_seconds": [0.2, 0.6]}),
            tenant(RWS_NEXT, apps, messages=150, rws_page_size=40),
            tenant(RWS_ODATA, messages=150, rws_page_size=40, rws_paging="odata.nextLink", rws_date_style="iso"),
            tenant(RWS_SKIP, messages=150, rws_page_size=40, rws_paging="skiptoken"),
        ]
    }
    with Simulator(config) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def graph(sim: Simulator) -> Iterator[httpx.Client]:
    with client(sim, token(sim, MAIN, GRAPH)) as http:
        yield http


def window(days: float = 7.0) -> tuple[datetime, datetime]:
    end = datetime.now(UTC).replace(microsecond=0)
    return end - timedelta(days=days), end


def between(begin: datetime, end: datetime) -> str:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return f"receivedDateTime ge {begin.strftime(fmt)} and receivedDateTime le {end.strftime(fmt)}"


def expected_rows(sim: Simulator, tenant_id: str, begin: datetime, end: datetime) -> set[tuple[str, str]]:
    rows = sim.truth(tenant_id)["messagetrace"]["rows"]
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return {
        (r["id"], r["recipientAddress"])
        for r in rows
        if begin.strftime(fmt) <= r["receivedDateTime"] <= end.strftime(fmt)
    }


# ---------------------------------------------------------------------- Graph


def test_next_link_paging_returns_the_whole_window(sim: Simulator, graph: httpx.Client) -> None:
    begin, end = window(6)
    url: str | None = TRACES
    params: dict[str, Any] | None = {"$filter": between(begin, end), "$top": 25}
    rows: list[dict[str, Any]] = []
    pages = 0
    while url is not None:
        page = graph.get(url, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["@odata.context"] == f"{sim.url}/v1.0/$metadata#admin/exchange/tracing/messageTraces"
        assert len(body["value"]) <= 25
        rows += body["value"]
        pages += 1
        url, params = body.get("@odata.nextLink"), None
        if url is not None:
            assert url.startswith(f"{sim.url}{TRACES}?")
            assert parse_qs(urlsplit(url).query)["$filter"] == [between(begin, end)]
    expected = expected_rows(sim, MAIN, begin, end)
    assert pages > 2
    assert {(r["id"], r["recipientAddress"]) for r in rows} == expected
    assert len(rows) == len(expected)
    assert set(rows[0]) == {
        "id", "senderAddress", "recipientAddress", "messageId", "receivedDateTime", "subject", "size", "fromIP",
        "toIP", "status",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("filter_text", "fragment"),
    [
        ("receivedDateTime ge 2026-01-01T00:00:00Z", "Both a start"),
        ("receivedDateTime le {now}", "Both a start"),
        ("receivedDateTime ge {eleven_days_ago} and receivedDateTime le {now}", "can't exceed 10 days"),
        ("receivedDateTime ge {old} and receivedDateTime le {old_end}", "older than 90 days"),
        ("receivedDateTime ge {now} and receivedDateTime le {future}", "later than the current time"),
        ("receivedDateTime ge {now} and receivedDateTime le {hour_ago}", "earlier than the end date"),
        ("colour eq 'blue'", "Could not find a property"),
    ],
)
def test_graph_window_rules(graph: httpx.Client, filter_text: str, fragment: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    values = {
        "now": now.strftime(fmt),
        "eleven_days_ago": (now - timedelta(days=11)).strftime(fmt),
        "old": (now - timedelta(days=95)).strftime(fmt),
        "old_end": (now - timedelta(days=90)).strftime(fmt),
        "future": (now + timedelta(hours=1)).strftime(fmt),
        "hour_ago": (now - timedelta(hours=1)).strftime(fmt),
    }
    response = graph.get(TRACES, params={"$filter": filter_text.format(**values)})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert fragment in error["message"]
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}


@pytest.mark.parametrize("top", ["0", "5001", "ten"])
def test_top_must_be_1_to_5000(graph: httpx.Client, top: str) -> None:
    assert graph.get(TRACES, params={"$top": top}).status_code == 400


def test_eq_filters_and_details(sim: Simulator, graph: httpx.Client) -> None:
    begin, end = window(7)
    first = graph.get(TRACES, params={"$filter": between(begin, end), "$top": 1}).json()["value"][0]
    query = f"{between(begin, end)} and id eq '{first['id']}' and recipientAddress eq '{first['recipientAddress']}'"
    only = graph.get(TRACES, params={"$filter": query}).json()["value"]
    assert only == [first]
    details = graph.get(f"{TRACES}/{first['id']}/getDetailsByRecipient(recipientAddress='{first['recipientAddress']}')")
    assert details.status_code == 200
    events = details.json()["value"]
    assert events[0]["event"] == "Receive"
    assert all(e["id"] == first["id"] and e["messageId"] == first["messageId"] for e in events)
    missing = graph.get(f"{TRACES}/{guid('nope')}/getDetailsByRecipient(recipientAddress='x@example.com')")
    assert missing.status_code == 404


def test_status_changes_over_time(sim: Simulator) -> None:
    rows = sim.truth(CHANGING)["messagetrace"]["rows"]
    changing = [r for r in rows if len(r["timeline"]) > 1]
    assert changing
    last_change = max(datetime.fromisoformat(r["timeline"][-1][0].replace("Z", "+00:00")) for r in changing)
    time.sleep(max(0.0, (last_change - datetime.now(UTC)).total_seconds()) + 0.3)
    begin, end = window(7)
    with client(sim, token(sim, CHANGING, GRAPH)) as http:
        served = http.get(TRACES, params={"$filter": between(begin, end)}).json()["value"]
    final = {(r["id"], r["recipientAddress"]): r["final"] for r in rows}
    assert {(r["id"], r["recipientAddress"]): r["status"] for r in served} == final


def test_quota_is_100_per_5_minutes_with_retry_after(sim: Simulator) -> None:
    with client(sim, token(sim, QUOTA, GRAPH)) as http:
        codes = [http.get(TRACES).status_code for _ in range(99)]
        detail = http.get(f"{TRACES}/{guid('x')}/getDetailsByRecipient(recipientAddress='a@b.example')")
        assert codes == [200] * 99 and detail.status_code == 404  # details share the quota
        throttled = http.get(TRACES)
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["Retry-After"]) <= 300
    assert throttled.json()["error"]["code"] == "TooManyRequests"


def test_missing_service_principal_is_401(sim: Simulator) -> None:
    with client(sim, token(sim, NO_SP, GRAPH)) as http:
        response = http.get(TRACES)
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith(
        "Service principal-less Authentication failed: the service principal for App ID "
        "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373 was not found"
    )


def test_missing_role_is_403_and_bad_token_is_401(sim: Simulator) -> None:
    with client(sim, token(sim, MAIN, GRAPH, client_id=NO_ROLE_APP)) as http:
        forbidden = http.get(TRACES)
    assert (forbidden.status_code, forbidden.json()["error"]["code"]) == (403, "Forbidden")
    with client(sim) as anonymous:
        empty = anonymous.get(TRACES)
    assert (empty.status_code, empty.json()["error"]["code"]) == (401, "InvalidAuthenticationToken")
    with client(sim, token(sim, MAIN, MANAGE)) as wrong_audience:
        assert wrong_audience.get(TRACES).json()["error"]["message"].endswith("Invalid audience.")


# ---------------------------------------------------------------------- Reporting Web Service


def rws_filter(begin: datetime, end: datetime) -> str:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return f"StartDate eq datetime'{begin.strftime(fmt)}' and EndDate eq datetime'{end.strftime(fmt)}'"


@pytest.mark.parametrize("tenant_id", [RWS_NEXT, RWS_ODATA, RWS_SKIP])
def test_rws_paging_forms(sim: Simulator, tenant_id: str) -> None:
    begin, end = window(7)
    rows: list[dict[str, Any]] = []
    with client(sim, token(sim, tenant_id, EXCHANGE)) as http:
        url = RWS
        params: dict[str, Any] | None = {"$filter": rws_filter(begin, end), "$format": "json"}
        offset = 0
        while True:
            response = http.get(url, params=params)
            assert response.status_code == 200, response.text
            data = response.json()["d"]
            rows += data["results"]
            if tenant_id == RWS_SKIP:
                assert "__next" not in data and "@odata.nextLink" not in data
                if not data["results"]:
                    break
                offset += 40
                params = {"$filter": rws_filter(begin, end), "$format": "json", "$skiptoken": offset}
                continue
            key = "__next" if tenant_id == RWS_NEXT else "@odata.nextLink"
            if key not in data:
                break
            url, params = data[key], None
            assert url.startswith(sim.url)
    expected = expected_rows(sim, tenant_id, begin, end)
    assert {(r["MessageTraceId"], r["RecipientAddress"]) for r in rows} == expected
    assert len(rows) == len(expected) > 40
    assert [r["Index"] for r in rows] == list(range(len(rows)))
    first = rows[0]
    assert first["__metadata"]["uri"].startswith(f"{sim.url}/ecp/ReportingWebService/Reporting.svc/MessageTrace(")
    if tenant_id == RWS_ODATA:
        assert not first["Received"].startswith("/Date(")
    else:
        assert first["Received"].startswith("/Date(")


def test_rws_refusals(sim: Simulator) -> None:
    begin, end = window(1)
    with client(sim, token(sim, RWS_NEXT, EXCHANGE)) as http:
        assert (
            http.get(RWS.upper().replace("MESSAGETRACE", "MessageTrace"), params={"$format": "json"}).status_code == 200
        )
        assert http.get(RWS, params={"$filter": rws_filter(begin, end)}).status_code == 400  # no $format=json
        one_bound = http.get(
            RWS, params={"$filter": f"StartDate eq datetime'{begin:%Y-%m-%dT%H:%M:%SZ}'", "$format": "json"}
        )
        assert one_bound.status_code == 400
    with client(sim, token(sim, RWS_NEXT, EXCHANGE, client_id=NO_ROLE_APP)) as http:
        forbidden = http.get(RWS, params={"$format": "json"})
    assert forbidden.status_code == 403
    assert forbidden.json() == {"ErrorCode": "", "Message": "No permission to access the report for the organization ."}
