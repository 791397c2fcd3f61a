"""Small helpers shared by tests."""

from __future__ import annotations

from typing import Any

from o365ingest.settings import Settings, load_settings

TENANT = "5f0c1c2e-8b1a-4c4e-9a57-1d2b3c4d5e6f"
CLIENT = "0b7c6f52-3d0e-4a8e-b5c1-2f6a9d8e7c41"


def env(**overrides: Any) -> dict[str, str]:
    base = {
        "O365_TENANTS": TENANT,
        "O365_CLIENT_ID": CLIENT,
        "O365_CREDENTIAL": "client-secret",
        "O365_CLIENT_SECRET": "sim-secret-not-for-production",
        "O365_SINK": "eventhub",
        "O365_EVENTHUB_NAMESPACE": "evhns-test.servicebus.windows.net",
        "O365_CHECKPOINT_STORE": "local",
    }
    base.update({k: str(v) for k, v in overrides.items() if v is not None})
    return {k: v for k, v in base.items() if v != "<unset>"}


def settings(**overrides: Any) -> Settings:
    return load_settings(env(**overrides))
