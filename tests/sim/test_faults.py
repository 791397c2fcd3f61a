"""Fault injection: scripted and random faults, latency, and how each looks on the wire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from m365sim.testing import Simulator
from tests.sim.support import MANAGE, client, guid, tenant, tls, token

TENANT = guid("faults-tenant")
CT = "Audit.Exchange"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = {
        "seed": 7,
        "tenants": [tenant(TENANT, records=200, subscriptions={CT: "enabled"}, audit={"records_per_blob": [2, 6]})],
    }
    with Simulator(config) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def api(sim: Simulator) -> Iterator[httpx.Client]:
    with client(sim, token(sim, TENANT, MANAGE)) as http:
        yield http


@pytest.fixture(autouse=True)
def no_faults(sim: Simulator) -> Iterator[None]:
    sim.clear_faults()
    yield
    sim.clear_faults()


@pytest.fixture(scope="module")
def blobs(sim: Simulator) -> list[str]:
    return [b["contentId"] for b in sim.truth(TENANT)["audit"]["content_types"][CT]["blobs"]]


def blob_url(content_id: str) -> str:
    return f"/api/v1.0/{TENANT}/activity/feed/audit/{content_id}"


def test_scripted_kinds_on_blob_gets(sim: Simulator, api: httpx.Client, blobs: list[str]) -> None:
    url = blob_url(blobs[0])
    expectations = {
        "http_500": (500, None),
        "http_503": (503, None),
        "af50000": (500, {"error": {"code": "AF50000", "message": "An internal error occurred. Retry the request."}}),
        "throttle": (
            403,
            {
                "error": {
                    "code": "AF429",
                    "message": "Too many requests. Method=GetBlob, PublisherId=00000000-0000-0000-0000-000000000000",
                }
            },
        ),
        "empty": (200, None),
        "non_array": (200, None),
    }
    for kind, (status, body) in expectations.items():
        sim.script_fault(kind, service="blob")
        response = api.get(url)
        assert response.status_code == status, kind
        if body is not None:
            assert response.json() == body
        if kind == "empty":
            assert response.content == b""
        if kind == "non_array":
            assert isinstance(response.json(), dict)
        if kind == "http_503":
            assert response.headers["Retry-After"] == "1"
    assert isinstance(api.get(url).json(), list)  # the queue is drained


@pytest.mark.parametrize("status", [502, 200])
def test_html_gateway_page(sim: Simulator, api: httpx.Client, blobs: list[str], status: int) -> None:
    sim.script_fault("html", status=status, service="blob")
    response = api.get(blob_url(blobs[0]))
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")


def test_drop_closes_without_response(sim: Simulator, blobs: list[str]) -> None:
    sim.script_fault("drop", service="blob")
    seq = sim.last_seq()
    with client(sim, token(sim, TENANT, MANAGE)) as http, pytest.raises(httpx.RemoteProtocolError):
        http.get(blob_url(blobs[0]))
    entry = sim.ledger(since=seq, service="blob")[-1]
    assert (entry["fault"], entry["status"]) == ("drop", None)


def test_truncate_sends_partial_body(sim: Simulator, blobs: list[str]) -> None:
    sim.script_fault("truncate", service="blob")
    with client(sim, token(sim, TENANT, MANAGE)) as http, http.stream("GET", blob_url(blobs[0])) as response:
        assert response.status_code == 200
        expected = int(response.headers["content-length"])
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_raw():
                received += chunk
    assert 0 < len(received) < expected


def test_script_matches_content_id_and_count(sim: Simulator, api: httpx.Client, blobs: list[str]) -> None:
    target, other = blobs[1], blobs[2]
    sim.script_fault("http_500", count=2, content_id=target)
    assert api.get(blob_url(other)).status_code == 200
    assert [api.get(blob_url(target)).status_code for _ in range(3)] == [500, 500, 200]
    faults = [e["fault"] for e in sim.ledger(service="blob")[-4:]]
    assert faults == [None, "http_500", "http_500", None]


def test_random_rates_apply_only_to_listed_services(sim: Simulator, api: httpx.Client, blobs: list[str]) -> None:
    sim.set_faults({"rates": {"http_500": 1.0}, "apply_to": ["list"]})
    assert (
        api.get(f"/api/v1.0/{TENANT}/activity/feed/subscriptions/content", params={"contentType": CT}).status_code
        == 500
    )
    assert api.get(blob_url(blobs[0])).status_code == 200
    sim.set_faults({"rates": {"http_503": 0.5, "empty": 0.5}, "apply_to": ["blob"]})
    statuses = {api.get(blob_url(blobs[0])).status_code for _ in range(20)}
    assert statuses == {503, 200}


def test_token_endpoint_throttle_fault_is_entra_shaped(sim: Simulator) -> None:
    sim.script_fault("throttle", service="token")
    response = sim.control.post(
        f"/{TENANT}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": guid("x"), "client_secret": "y",
              "scope": f"{MANAGE}/.default"},
    )  # fmt: skip
    assert response.status_code == 429
    assert response.json()["error_codes"] == [50196]


def test_bad_fault_config_is_refused(sim: Simulator) -> None:
    response = sim.control.put("/_sim/faults", json={"rates": {"http_500": 2}})
    assert response.status_code == 400
    assert "within [0, 1]" in response.text
    unknown = sim.control.post("/_sim/faults/next", json={"kind": "meteor"})
    assert unknown.status_code == 400


async def test_latency_is_concurrent(sim: Simulator, blobs: list[str]) -> None:
    sim.set_faults({"latency_ms": 400, "apply_to": ["blob"]})
    bearer = token(sim, TENANT, MANAGE)
    async with httpx.AsyncClient(
        base_url=sim.url, verify=tls(sim), headers={"Authorization": f"Bearer {bearer}"}
    ) as http:
        started = time.monotonic()
        responses = await asyncio.gather(*(http.get(blob_url(b)) for b in blobs[:6]))
        elapsed = time.monotonic() - started
    assert all(r.status_code == 200 for r in responses)
    assert 0.4 <= elapsed < 1.6  # six requests overlapped instead of 2.4 s in series
