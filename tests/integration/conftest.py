"""Integration fixtures: the simulator (real HTTPS, its own CA) and Azurite (real Blob API).

Each test gets its own simulated tenant, so tests share one simulator process without
interfering; settings are built exactly as a deployment would set them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from m365sim.testing import Simulator, make_app_certificate, pem_bundle
from tests.azurite import Azurite

CLIENT_SECRET = "integration-secret-not-for-production"
MANAGE = "https://manage.office.com"
GRAPH = "https://graph.microsoft.com"
EXCHANGE = "https://outlook.office365.com"
ALL_ROLES = {
    MANAGE: ["ActivityFeed.Read", "ActivityFeed.ReadDlp"],
    GRAPH: ["ExchangeMessageTrace.Read.All"],
    EXCHANGE: ["ReportingWebService.Read.All"],
}


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with Simulator({"seed": 11, "tenants": []}, state_dir=tmp_path_factory.mktemp("sim")) as simulator:
        yield simulator


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    instance = Azurite()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def app_cert() -> tuple[str, str]:
    return make_app_certificate(common_name="o365ingest-tests")


class TenantFactory:
    """Adds a fresh tenant (and optionally a Key Vault secret) to the simulator per test."""

    def __init__(self, sim: Simulator, cert: tuple[str, str], tmp: Path) -> None:
        self.sim = sim
        self.key_pem, self.cert_pem = cert
        self.tmp = tmp

    def __call__(self, *, records: int = 300, days: float = 2.0, roles: dict[str, list[str]] | None = None,
                 certificates: list[str] | None = None, consented: bool = True, audit: dict[str, Any] | None = None,
                 **tenant_overrides: Any) -> str:
        tenant_id = str(uuid.uuid4())
        self.client_id = str(uuid.uuid4())
        self.sim.add_tenant({
            "tenant_id": tenant_id,
            "apps": [{"client_id": self.client_id, "client_secret": CLIENT_SECRET,
                      "certificates": [self.cert_pem] if certificates is None else certificates,
                      "roles": ALL_ROLES if roles is None else roles, "consented": consented}],
            "audit": {"records": records, "days": days, "large_records": 0, **(audit or {})},
            "messagetrace": {"messages": 50, "days": 7.0},
            **tenant_overrides,
        })
        return tenant_id

    def secret_name(self, content: str | None = None, content_type: str = "application/x-pem-file") -> str:
        name = f"cert-{uuid.uuid4().hex[:10]}"
        self.sim.put_secret(name, content if content is not None else pem_bundle(self.key_pem, self.cert_pem),
                            content_type)
        return name

    def env(self, tenant_id: str, **overrides: Any) -> dict[str, str]:
        """Settings for the collector pointed at the simulator (secret credential unless overridden)."""
        values = {
            "O365_TENANTS": tenant_id,
            "O365_CLIENT_ID": self.client_id,
            "O365_CREDENTIAL": "client-secret",
            "O365_CLIENT_SECRET": CLIENT_SECRET,
            "O365_KEYVAULT_URL": self.sim.keyvault_url,
            "O365_LOGIN_URL": self.sim.url,
            "O365_MANAGEMENT_URL": self.sim.url,
            "O365_GRAPH_URL": self.sim.url,
            "O365_REPORTING_URL": self.sim.url,
            "O365_CA_BUNDLE": str(self.sim.ca_bundle),
            "O365_SINK": "eventhub",
            "O365_EVENTHUB_NAMESPACE": "evhns-test.servicebus.windows.net",
            "O365_CHECKPOINT_STORE": "local",
            "O365_CHECKPOINT_DIR": str(self.tmp / "state"),
            "O365_LOOKBACK_HOURS": "100",
            "O365_SAFETY_LAG_MINUTES": "0",
        }
        values.update({k: str(v) for k, v in overrides.items()})
        return {k: v for k, v in values.items() if v != "<unset>"}


@pytest.fixture
def tenants(sim: Simulator, app_cert: tuple[str, str], tmp_path: Path) -> TenantFactory:
    return TenantFactory(sim, app_cert, tmp_path)


@pytest.fixture
def managed_identity(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Functions host provides: the App Service managed-identity endpoint."""
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", sim.identity_header)
