"""Telemetry set-up: once per process, never twice, with the app's identity when local auth is off."""

from __future__ import annotations

import logging
from typing import Any

import azure.identity
import pytest
from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk.metrics import MeterProvider

from o365ingest import appinsights

CONNECTION = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://x.in.applicationinsights.azure.com/"
UAMI = "6b1e4c2a-9f3d-4e8b-a7c5-2d1f0e9b8a76"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


class FakeIdentity:
    def __init__(self, client_id: str | None = None) -> None:
        self.client_id = client_id


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(appinsights, "_state", {})
    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", FakeIdentity)
    logger = logging.getLogger("o365ingest")
    propagate = logger.propagate
    yield
    logger.propagate = propagate


def test_without_a_connection_string_nothing_is_configured():
    configure = Recorder()
    assert appinsights.configure_telemetry({}, configure) == "disabled"
    assert configure.calls == []


def test_the_workers_own_exporter_is_not_doubled():
    configure = Recorder()
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION, "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "True"}
    assert appinsights.configure_telemetry(env, configure) == "worker"
    assert configure.calls == []


def test_an_installed_sdk_provider_is_not_replaced(monkeypatch):
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: MeterProvider())
    configure = Recorder()
    assert appinsights.configure_telemetry({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION}, configure) \
        == "existing"
    assert configure.calls == []


def test_configured_once_with_the_managed_identity_and_our_logger_only():
    configure = Recorder()
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION,
           "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": f"ClientId={UAMI};Authorization=AAD"}
    assert appinsights.configure_telemetry(env, configure) == "configured"
    assert appinsights.configure_telemetry(env, configure) == "already"
    [call] = configure.calls
    assert call["connection_string"] == CONNECTION
    assert isinstance(call["credential"], FakeIdentity) and call["credential"].client_id == UAMI
    assert call["logger_name"] == "o365ingest"
    assert call["instrumentation_options"]["httpx"] == {"enabled": False}
    assert all(v == {"enabled": False} for v in call["instrumentation_options"].values())
    assert logging.getLogger("o365ingest").propagate is False, "the host would write every line a second time"


def test_key_authentication_when_local_auth_is_on_and_client_id_fallback():
    assert appinsights.monitor_credential({}) is None
    assert appinsights.monitor_credential({"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=key"}) is None
    credential = appinsights.monitor_credential({"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD",
                                                 "AZURE_CLIENT_ID": UAMI})
    assert isinstance(credential, FakeIdentity) and credential.client_id == UAMI


def test_flush_forces_every_provider_and_never_raises(monkeypatch):
    flushed: list[str] = []

    class Provider:
        def __init__(self, name: str, fails: bool = False) -> None:
            self.name, self.fails = name, fails

        def force_flush(self, timeout_millis: int) -> bool:
            flushed.append(self.name)
            if self.fails:
                raise RuntimeError("exporter down")
            return True

    monkeypatch.setattr(metrics, "get_meter_provider", lambda: Provider("metrics"))
    monkeypatch.setattr(_logs, "get_logger_provider", lambda: Provider("logs", fails=True))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: object())  # a proxy without force_flush
    appinsights.flush()
    assert flushed == ["metrics", "logs"]
