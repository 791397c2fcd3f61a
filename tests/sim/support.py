"""Shared scenario builders and HTTP helpers for the simulator tests."""

from __future__ import annotations

import ssl
import uuid
from typing import Any

import httpx

from m365sim.testing import Simulator

CLIENT_ID = "0b7c6f52-3d0e-4a8e-b5c1-2f6a9d8e7c41"
CLIENT_SECRET = "sim-secret-not-for-production"
MANAGE = "https://manage.office.com"
GRAPH = "https://graph.microsoft.com"
EXCHANGE = "https://outlook.office365.com"
VAULT = "https://vault.azure.net"

ALL_ROLES = {
    MANAGE: ["ActivityFeed.Read", "ActivityFeed.ReadDlp", "ServiceHealth.Read"],
    GRAPH: ["ExchangeMessageTrace.Read.All"],
    EXCHANGE: ["ReportingWebService.Read.All"],
}


def guid(label: str) -> str:
    """Deterministic GUID per label, so tests read like prose but ids stay valid."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"m365sim-test-{label}"))


def app(
    client_id: str = CLIENT_ID,
    *,
    secret: str | None = CLIENT_SECRET,
    certificates: list[str] | None = None,
    roles: dict[str, list[str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "client_id": client_id,
        "certificates": certificates or [],
        "roles": ALL_ROLES if roles is None else roles,
        **extra,
    }
    if secret is not None:
        data["client_secret"] = secret
    return data


def tenant(
    tenant_id: str,
    apps: list[dict[str, Any]] | None = None,
    *,
    records: int = 200,
    days: float = 2.0,
    messages: int = 60,
    audit: dict[str, Any] | None = None,
    messagetrace: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A small tenant (fast to generate) with the default app."""
    return {
        "tenant_id": tenant_id,
        "apps": apps if apps is not None else [app()],
        "audit": {"records": records, "days": days, "large_records": 0, **(audit or {})},
        "messagetrace": {"messages": messages, "days": 7.0, **(messagetrace or {})},
        **overrides,
    }


def token(
    sim: Simulator,
    tenant_id: str,
    resource: str,
    *,
    client_id: str = CLIENT_ID,
    secret: str = CLIENT_SECRET,
) -> str:
    response = sim.control.post(
        f"/{tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": f"{resource}/.default",
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def tls(sim: Simulator) -> ssl.SSLContext:
    """TLS context trusting only the simulator CA (verification stays on)."""
    return ssl.create_default_context(cafile=sim.ca_bundle)


def client(sim: Simulator, bearer: str | None = None) -> httpx.Client:
    """HTTPS client trusting only the simulator CA (certificate verification always on)."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.Client(base_url=sim.url, verify=tls(sim), headers=headers, timeout=30.0)


def af_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])
