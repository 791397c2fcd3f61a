"""The simulator process: default scenario, sim.json, TLS material reuse, headers, control API."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from m365sim.defaults import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TENANT_ID
from m365sim.testing import Simulator, SimulatorError
from tests.sim.support import GRAPH, MANAGE, VAULT, client, guid, tenant, token


@pytest.fixture(scope="module")
def default_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with Simulator(state_dir=tmp_path_factory.mktemp("default-state")) as simulator:
        yield simulator


def test_ready_info_and_sim_json(default_sim: Simulator) -> None:
    info = json.loads((default_sim.state_dir / "sim.json").read_text())
    assert info == default_sim.info
    assert info["url"].startswith("https://127.0.0.1:")
    assert info["tenants"] == [DEFAULT_TENANT_ID]
    assert info["keyvault_url"] == info["url"]
    assert info["identity_endpoint"] == f"{info['url']}/msi/token"
    assert Path(info["ca_bundle"]).is_absolute() and Path(info["ca_bundle"]).exists()
    assert info["pid"] == default_sim.process.pid if default_sim.process else False


def test_default_scenario(default_sim: Simulator) -> None:
    sim = default_sim
    state = sim.state()["tenants"][DEFAULT_TENANT_ID]
    assert state["subscriptions"] == {}
    truth = sim.truth(DEFAULT_TENANT_ID)
    records = sum(len(v["record_ids"]) for v in truth["audit"]["content_types"].values())
    assert 19_000 <= records <= 20_000  # duplicates share ids
    assert len(truth["messagetrace"]["rows"]) > 1000
    for resource in (MANAGE, GRAPH, VAULT):
        token(sim, DEFAULT_TENANT_ID, resource, client_id=DEFAULT_CLIENT_ID, secret=DEFAULT_CLIENT_SECRET)
    with client(sim, token(sim, DEFAULT_TENANT_ID, VAULT)) as http:
        secret = http.get("/secrets/o365ingest", params={"api-version": "7.5"}).json()
    assert secret["contentType"] == "application/x-pem-file"
    assert secret["value"] == (sim.state_dir / "app-cert.pem").read_text()
    assert "-----BEGIN PRIVATE KEY-----" in secret["value"] and "-----BEGIN CERTIFICATE-----" in secret["value"]


def test_tls_certificate_names_and_localhost(default_sim: Simulator) -> None:
    pem = ssl.get_server_certificate(("127.0.0.1", int(default_sim.url.rsplit(":", 1)[1])))
    sans = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    names = {str(n.value) for n in sans.value}
    assert {"localhost", "127.0.0.1", "::1"} <= names
    port = default_sim.url.rsplit(":", 1)[1]
    context = ssl.create_default_context(cafile=default_sim.ca_bundle)
    with httpx.Client(verify=context) as http:
        assert http.get(f"https://localhost:{port}/_sim/state").status_code == 200


def test_microsoft_style_headers(default_sim: Simulator) -> None:
    response = default_sim.control.get(
        f"/{DEFAULT_TENANT_ID}/v2.0/.well-known/openid-configuration", headers={"client-request-id": "abc-123"}
    )
    assert response.headers["client-request-id"] == "abc-123"
    assert response.headers["request-id"] == response.headers["x-ms-request-id"]
    date = parsedate_to_datetime(response.headers["Date"])
    assert abs((date - datetime.now(UTC)).total_seconds()) < 5


def test_control_api_adds_and_patches_tenants(default_sim: Simulator) -> None:
    sim = default_sim
    added = guid("process-added-tenant")
    sim.add_tenant(tenant(added, records=30))
    with client(sim, token(sim, added, MANAGE)) as http:
        feed = f"/api/v1.0/{added}/activity/feed"
        assert http.get(f"{feed}/subscriptions/content", params={"contentType": "Audit.General"}).status_code == 400
        sim.patch_tenant(added, subscriptions={"Audit.General": "enabled"}, page_size=1)
        listing = http.get(f"{feed}/subscriptions/content", params={"contentType": "Audit.General"})
        assert listing.status_code == 200 and len(listing.json()) <= 1
    with pytest.raises(SimulatorError, match="cannot patch"):
        sim.patch_tenant(added, tenant_id=guid("other"))
    with pytest.raises(SimulatorError, match="unknown key"):
        sim.add_tenant({**tenant(guid("typo-tenant")), "page_sise": 3})
    with pytest.raises(SimulatorError, match="already exists"):
        sim.add_tenant(tenant(added))


def test_bad_config_fails_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(SimulatorError, match=r"tenants\[0\]: unknown key\(s\) 'page_sise'"):
        Simulator({"tenants": [{**tenant(guid("bad")), "page_sise": 3}]}, state_dir=tmp_path).start()


def test_restart_reuses_ca_and_signing_key_and_sigterm_is_clean(tmp_path: Path) -> None:
    tenant_id = guid("restart-tenant")
    config = {"tenants": [tenant(tenant_id, records=20)], "clock_skew_seconds": 3600}
    first = Simulator(config, state_dir=tmp_path).start()
    try:
        ca_before = Path(first.ca_bundle).read_bytes()
        bearer = token(first, tenant_id, MANAGE)
        date = parsedate_to_datetime(first.control.get("/_sim/state").headers["Date"])
        assert 3590 < (date - datetime.now(UTC)).total_seconds() < 3610
    finally:
        process = first.process
        first.stop()
    assert process is not None and process.returncode == 0
    second = Simulator(config, state_dir=tmp_path).start()
    try:
        assert Path(second.ca_bundle).read_bytes() == ca_before
        with client(second, bearer) as http:
            assert http.get(f"/api/v1.0/{tenant_id}/activity/feed/subscriptions/list").status_code == 200
    finally:
        second.close()


def test_sigint_also_stops(tmp_path: Path) -> None:
    sim = Simulator({"tenants": [tenant(guid("sigint"), records=5)]}, state_dir=tmp_path).start()
    assert sim.process is not None
    started = time.monotonic()
    sim.process.send_signal(signal.SIGINT)
    try:
        assert sim.process.wait(timeout=10) == 0
    except subprocess.TimeoutExpired:
        sim.kill()
        raise
    assert time.monotonic() - started < 10
    sim.close()
