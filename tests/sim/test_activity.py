"""Management Activity API rules (m365-apis.md A.4-A.12), over real HTTPS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from m365sim.testing import Simulator
from tests.sim.support import GRAPH, MANAGE, af_code, app, client, guid, tenant, token

MAIN = guid("activity-main")
LOWER = guid("activity-lowercase-header")
THROTTLED = guid("activity-throttled")
DISABLED = guid("activity-audit-off")
LIMITED_APP = guid("activity-app-no-dlp")
NO_ROLES_APP = guid("activity-app-no-roles")
PUBLISHER = guid("publisher")

STABLE_AUDIT = {"late_blob_fraction": 0.0, "records_per_blob": [1, 12], "near_expiry_blobs": 0}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = {
        "tenants": [
            tenant(
                MAIN,
                [
                    app(),
                    app(LIMITED_APP, roles={MANAGE: ["ActivityFeed.Read"]}),
                    app(NO_ROLES_APP, roles={}),
                ],
                records=240,
                audit=STABLE_AUDIT,
                page_size=4,
            ),
            tenant(
                LOWER,
                records=240,
                audit=STABLE_AUDIT,
                page_size=4,
                next_page_header="Nextpageuri",
                subscriptions={"Audit.AzureActiveDirectory": "enabled"},
            ),
            tenant(
                THROTTLED,
                records=20,
                request_budget_per_minute=5,
                request_budget_window_seconds=0.8,
                subscriptions={"Audit.General": "enabled"},
            ),
            tenant(DISABLED, records=20, audit_enabled=False),
        ]
    }
    with Simulator(config) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def api(sim: Simulator) -> Iterator[httpx.Client]:
    with client(sim, token(sim, MAIN, MANAGE)) as http:
        yield http


def feed(tenant_id: str) -> str:
    return f"/api/v1.0/{tenant_id}/activity/feed"


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S")


def start(api: httpx.Client, tenant_id: str, content_type: str) -> httpx.Response:
    return api.post(f"{feed(tenant_id)}/subscriptions/start", params={"contentType": content_type})


# ---------------------------------------------------------------------- subscriptions


def test_start_returns_documented_body_and_repeat_is_af20024(sim: Simulator, api: httpx.Client) -> None:
    first = start(api, MAIN, "Audit.Exchange")
    assert first.status_code == 200
    assert first.json() == {"contentType": "Audit.Exchange", "status": "enabled", "webhook": None}
    again = start(api, MAIN, "Audit.Exchange")
    assert again.status_code == 400
    assert again.json() == {
        "error": {"code": "AF20024", "message": "The subscription is already enabled. No property change."}
    }
    listed = api.get(f"{feed(MAIN)}/subscriptions/list").json()
    assert {"contentType": "Audit.Exchange", "status": "enabled", "webhook": None} in listed
    starts = [e for e in sim.ledger(service="subscriptions") if e["path"].endswith("/subscriptions/start")]
    assert [e["status"] for e in starts][-2:] == [200, 400]
    assert starts[-1]["error_code"] == "AF20024"


def test_unknown_content_type_is_af20020(api: httpx.Client) -> None:
    response = start(api, MAIN, "Audit.Teams")
    assert response.status_code == 400
    assert af_code(response) == "AF20020"


def test_listing_without_subscription_is_af20022_and_stopped_is_af20023(api: httpx.Client) -> None:
    content = f"{feed(MAIN)}/subscriptions/content"
    missing = api.get(content, params={"contentType": "Audit.SharePoint"})
    assert (missing.status_code, af_code(missing)) == (400, "AF20022")
    assert start(api, MAIN, "Audit.SharePoint").status_code == 200
    assert api.post(f"{feed(MAIN)}/subscriptions/stop", params={"contentType": "Audit.SharePoint"}).status_code == 200
    stopped = api.get(content, params={"contentType": "Audit.SharePoint"})
    assert (stopped.status_code, af_code(stopped)) == (400, "AF20023")
    assert start(api, MAIN, "Audit.SharePoint").status_code == 200  # re-enables a stopped subscription


# ---------------------------------------------------------------------- time windows


@pytest.fixture(scope="module")
def general(api: httpx.Client) -> str:
    response = start(api, MAIN, "Audit.General")
    assert response.status_code == 200
    return f"{feed(MAIN)}/subscriptions/content"


NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"startTime": iso(NOW - timedelta(hours=25)), "endTime": iso(NOW)}, "AF20030"),
        ({"startTime": iso(NOW - timedelta(days=7, minutes=5)), "endTime": iso(NOW - timedelta(days=6, hours=12))}, "AF20030"),
        ({"startTime": iso(NOW - timedelta(hours=2))}, "AF20030"),
        ({"endTime": iso(NOW)}, "AF20030"),
        ({"startTime": iso(NOW - timedelta(hours=1)), "endTime": iso(NOW - timedelta(hours=1))}, "AF20055"),
        ({"startTime": iso(NOW), "endTime": iso(NOW - timedelta(hours=1))}, "AF20055"),
        ({"startTime": "yesterday", "endTime": iso(NOW)}, "AF20002"),
    ],
    ids=["span-over-24h", "start-over-7-days-ago", "start-only", "end-only", "start-equals-end", "start-after-end",
         "unparsable"],
)  # fmt: skip
def test_window_violations_are_refused(api: httpx.Client, general: str, params: dict[str, str], code: str) -> None:
    response = api.get(general, params={"contentType": "Audit.General", **params})
    assert response.status_code == 400
    assert af_code(response) == code
    if code == "AF20030":
        assert "must be less than or equal to 24 hours apart" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "fmt",
    ["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"],
)
def test_documented_time_formats_are_accepted(api: httpx.Client, general: str, fmt: str) -> None:
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    begin = end - timedelta(days=1)
    response = api.get(
        general, params={"contentType": "Audit.General", "startTime": begin.strftime(fmt), "endTime": end.strftime(fmt)}
    )
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), list)


def test_no_bounds_means_last_24_hours(api: httpx.Client, general: str) -> None:
    response = api.get(general, params={"contentType": "Audit.General"})
    assert response.status_code == 200
    now = datetime.now(UTC)
    for item in response.json():
        created = datetime.fromisoformat(item["contentCreated"].replace("Z", "+00:00"))
        assert now - timedelta(hours=24, minutes=1) <= created <= now


# ---------------------------------------------------------------------- paging


def collect(http: httpx.Client, tenant_id: str, content_type: str, begin: datetime, end: datetime,
            header: str) -> tuple[list[dict[str, str]], list[int]]:  # fmt: skip
    """Follow the next-page header verbatim until absent; return items and page sizes."""
    url = f"{feed(tenant_id)}/subscriptions/content"
    params: dict[str, str] | None = {"contentType": content_type, "startTime": iso(begin), "endTime": iso(end)}
    items: list[dict[str, str]] = []
    sizes: list[int] = []
    while True:
        response = http.get(url, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page
        sizes.append(len(page))
        names = [name.decode() for name, _ in response.headers.raw]
        next_names = [n for n in names if n.lower() == "nextpageuri"]
        if not next_names:
            created = [i["contentCreated"] for i in items]
            assert created == sorted(created)
            return items, sizes
        assert next_names == [header]
        url, params = response.headers[header], None
        parts = urlsplit(url)
        assert parts.path == f"/api/v1/{tenant_id}/activity/feed/subscriptions/content"
        assert set(parse_qs(parts.query)) == {"contentType", "startTime", "endTime", "nextPage"}


@pytest.mark.parametrize(("tenant_id", "header"), [(MAIN, "NextPageUri"), (LOWER, "Nextpageuri")])
def test_paging_returns_exactly_the_listable_blobs(sim: Simulator, tenant_id: str, header: str) -> None:
    ct = "Audit.AzureActiveDirectory"
    with client(sim, token(sim, tenant_id, MANAGE)) as http:
        if tenant_id == MAIN:
            assert start(http, MAIN, ct).status_code == 200
        truth = sim.truth(tenant_id)["audit"]["content_types"][ct]["blobs"]
        now = datetime.now(UTC).replace(microsecond=0)
        seen: list[dict[str, str]] = []
        for day in range(3):
            end = now - timedelta(days=day)
            items, sizes = collect(http, tenant_id, ct, end - timedelta(days=1), end, header)
            assert all(size == 4 for size in sizes[:-1]) and sizes[-1] <= 4
            seen += items
    expected = {b["contentId"] for b in truth}
    assert len(expected) > 8  # more than two pages worth
    assert len(seen) == len({i["contentId"] for i in seen}) == len(expected)
    assert {i["contentId"] for i in seen} == expected
    sample = seen[0]
    assert list(sample) == ["contentType", "contentId", "contentUri", "contentCreated", "contentExpiration"]
    assert sample["contentUri"] == f"{sim.url}/api/v1.0/{tenant_id}/activity/feed/audit/{sample['contentId']}"
    assert sample["contentCreated"].endswith("Z") and len(sample["contentCreated"]) == 24


def test_invalid_next_page_is_af20031(api: httpx.Client, general: str) -> None:
    end = datetime.now(UTC)
    response = api.get(
        general,
        params={"contentType": "Audit.General", "startTime": iso(end - timedelta(hours=3)), "endTime": iso(end),
                "nextPage": "not-a-page"},
    )  # fmt: skip
    assert (response.status_code, af_code(response)) == (400, "AF20031")


# ---------------------------------------------------------------------- blobs


def test_blob_body_matches_truth_and_expiry_is_af20051(sim: Simulator, api: httpx.Client, general: str) -> None:
    blobs = sim.truth(MAIN)["audit"]["content_types"]["Audit.General"]["blobs"]
    blob = blobs[-1]
    response = api.get(f"{feed(MAIN)}/audit/{blob['contentId']}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert [r["Id"] for r in response.json()] == blob["recordIds"]
    sim.expire(MAIN, blob["contentId"])
    expired = api.get(f"{feed(MAIN)}/audit/{blob['contentId']}")
    assert expired.status_code == 400
    assert af_code(expired) == "AF20051"
    assert blob["contentId"] in expired.json()["error"]["message"]


def test_unknown_blob_is_af20050(api: httpx.Client) -> None:
    response = api.get(f"{feed(MAIN)}/audit/20990101000000000000000$nope$audit_general$Audit_General$x0001")
    assert af_code(response) == "AF20050"


def test_content_uri_base_override_points_elsewhere(sim: Simulator, api: httpx.Client) -> None:
    assert start(api, MAIN, "DLP.All").status_code == 200
    created = datetime.now(UTC) - timedelta(minutes=1)
    content_id = sim.add_blob(
        MAIN,
        "DLP.All",
        [{"Id": guid("injected-record"), "RecordType": 11, "CreationTime": iso(created)}],
        content_created=created.isoformat(),
        content_uri_base="https://collector-must-not-send-token-here.example",
    )
    listing = api.get(f"{feed(MAIN)}/subscriptions/content", params={"contentType": "DLP.All"}).json()
    item = next(i for i in listing if i["contentId"] == content_id)
    assert item["contentUri"].startswith("https://collector-must-not-send-token-here.example/api/v1.0/")
    body = api.get(f"{feed(MAIN)}/audit/{content_id}").json()
    assert body == [{"Id": guid("injected-record"), "RecordType": 11, "CreationTime": iso(created)}]


# ---------------------------------------------------------------------- throttling and publisher id


def test_publisher_identifier_is_recorded(sim: Simulator, api: httpx.Client) -> None:
    seq = sim.last_seq()
    api.get(f"{feed(MAIN)}/subscriptions/list", params={"publisheridentifier": PUBLISHER})
    api.get(f"{feed(MAIN)}/subscriptions/list")
    entries = sim.ledger(since=seq)
    assert [e["publisher_identifier"] for e in entries] == [PUBLISHER, None]
    assert all(e["authorization"] is True and e["tenant"] == MAIN for e in entries)
    assert "Bearer" not in str(entries)


@pytest.mark.parametrize("status", [403, 429])
def test_budget_throttles_with_af429_and_recovers(sim: Simulator, status: int) -> None:
    sim.patch_tenant(THROTTLED, throttle_status=status)
    time.sleep(0.9)  # let earlier requests age out of the 0.8 s window
    with client(sim, token(sim, THROTTLED, MANAGE)) as http:
        url = f"{feed(THROTTLED)}/subscriptions/content"
        params = {"contentType": "Audit.General", "PublisherIdentifier": PUBLISHER}
        seq = sim.last_seq()
        codes = [http.get(url, params=params).status_code for _ in range(5)]
        assert codes == [200] * 5
        throttled = http.get(url, params=params)
        assert throttled.status_code == status
        assert throttled.json() == {
            "error": {"code": "AF429", "message": f"Too many requests. Method=ListContent, PublisherId={PUBLISHER}"}
        }
        anonymous = http.get(url, params={"contentType": "Audit.General"})
        assert anonymous.status_code == 200  # separate pool without PublisherIdentifier
        time.sleep(0.9)
        assert http.get(url, params=params).status_code == 200
    recorded = [e for e in sim.ledger(since=seq) if e["error_code"] == "AF429"]
    assert len(recorded) == 1 and recorded[0]["status"] == status


def test_blob_gets_count_against_the_budget(sim: Simulator) -> None:
    sim.patch_tenant(THROTTLED, throttle_status=403)
    time.sleep(0.9)
    blob = sim.truth(THROTTLED)["audit"]["content_types"]["Audit.General"]["blobs"][0]["contentId"]
    with client(sim, token(sim, THROTTLED, MANAGE)) as http:
        statuses = [http.get(f"{feed(THROTTLED)}/audit/{blob}").status_code for _ in range(6)]
        assert statuses == [200] * 5 + [403]
        last = http.get(f"{feed(THROTTLED)}/audit/{blob}")
        assert last.json()["error"]["message"].endswith(
            "Method=GetBlob, PublisherId=00000000-0000-0000-0000-000000000000"
        )


# ---------------------------------------------------------------------- authorization


def test_missing_or_wrong_token_is_401(sim: Simulator) -> None:
    with client(sim) as anonymous:
        response = anonymous.get(f"{feed(MAIN)}/subscriptions/list")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    with client(sim, token(sim, MAIN, GRAPH)) as graph_token:
        assert graph_token.get(f"{feed(MAIN)}/subscriptions/list").status_code == 401
    expired = sim.mint_token(MAIN, MANAGE, roles=["ActivityFeed.Read"], lifetime_seconds=-60)
    with client(sim, expired) as http:
        assert http.get(f"{feed(MAIN)}/subscriptions/list").status_code == 401


def test_token_for_other_tenant_is_af20010(sim: Simulator, api: httpx.Client) -> None:
    response = api.get(f"{feed(LOWER)}/subscriptions/list")
    assert (response.status_code, af_code(response)) == (401, "AF20010")
    assert f"({LOWER}) does not match the tenant ID passed in the access token ({MAIN})" in response.text


def test_missing_roles_is_af10001(sim: Simulator) -> None:
    with client(sim, token(sim, MAIN, MANAGE, client_id=NO_ROLES_APP)) as http:
        response = http.get(f"{feed(MAIN)}/subscriptions/list")
    assert (response.status_code, af_code(response)) == (401, "AF10001")
    assert "ActivityFeed.Read" in response.json()["error"]["message"]


def test_dlp_needs_read_dlp(sim: Simulator) -> None:
    with client(sim, token(sim, MAIN, MANAGE, client_id=LIMITED_APP)) as http:
        response = start(http, MAIN, "DLP.All")
        assert (response.status_code, af_code(response)) == (401, "AF10001")
        assert "ActivityFeed.ReadDlp" in response.json()["error"]["message"]
        assert http.get(f"{feed(MAIN)}/subscriptions/list").status_code == 200


def test_audit_disabled_tenant_does_not_exist_error(sim: Simulator) -> None:
    with client(sim, token(sim, DISABLED, MANAGE)) as http:
        response = start(http, DISABLED, "Audit.Exchange")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"].startswith("StartSubscription [CorrId=")
    assert (
        f"Microsoft.Office.Compliance.Audit.DataServiceException: Tenant {DISABLED} does not exist." in error["message"]
    )


def test_notifications_and_friendly_names(api: httpx.Client, general: str) -> None:
    notifications = api.get(f"{feed(MAIN)}/subscriptions/notifications", params={"contentType": "Audit.General"})
    assert (notifications.status_code, notifications.json()) == (200, [])
    names = api.get(f"{feed(MAIN)}/resources/dlpSensitiveTypes")
    assert {"id": "50842eb7-edc8-4019-85dd-5a5c1f2bb085", "name": "CreditCardNumber"} in names.json()
    two = api.get(f"{feed(MAIN)}/resources/dlpSensitiveTypes", headers={"Accept-Language": "en-US,fr-FR"})
    assert af_code(two) == "AF20053"


def test_v1_alias_path_serves_the_same_api(api: httpx.Client) -> None:
    assert (
        api.get(f"/api/v1/{MAIN}/activity/feed/subscriptions/list").json()
        == api.get(f"{feed(MAIN)}/subscriptions/list").json()
    )
