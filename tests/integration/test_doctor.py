"""`python -m o365ingest doctor` against the simulator: one misconfiguration per test, each printing its
exact remedy and exiting non-zero; a healthy setup exits 0."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.eventhub import EventDataBatch

from m365sim.testing import Simulator, make_app_certificate
from o365ingest.cli import main
from o365ingest.doctor import exit_code, report, run_doctor
from o365ingest.runtime import Runtime
from o365ingest.settings import CONTENT_TYPES, load_settings
from tests.fakes import EventHubRecorder, FakeProducer
from tests.integration.conftest import MANAGE, TenantFactory
from tests.integration.pipeline_support import blob_env

ENABLED = {ct: "enabled" for ct in CONTENT_TYPES}
BASIC_TIER_MAX_MESSAGE = 256 * 1024


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str]) -> tuple[
        int, list[str]]:
    for name in list(os.environ):
        if name.startswith("O365_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["doctor"])
    return code, capsys.readouterr().out.splitlines()


def pem_file(tmp_path: Path, key_pem: str, cert_pem: str, name: str = "app.pem") -> str:
    path = tmp_path / name
    path.write_text(key_pem + cert_pem)
    return str(path)


def healthy_env(tenants: TenantFactory, tenant: str, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A certificate file, the file sink and local checkpoints: everything doctor checks, locally."""
    values = {"O365_CREDENTIAL": "certificate-file",
              "O365_CERTIFICATE_PATH": pem_file(tmp_path, tenants.key_pem, tenants.cert_pem),
              "O365_SINK": "file", "O365_FILE_SINK_DIR": str(tmp_path / "out"), **overrides}
    return tenants.env(tenant, **values)


def remedies(lines: list[str]) -> list[str]:
    return [line.strip().removeprefix("remedy: ") for line in lines if line.strip().startswith("remedy: ")]


def test_healthy_setup_exits_zero(tenants, tmp_path, monkeypatch, capsys):
    tenant = tenants(subscriptions=ENABLED)
    code, lines = run_cli(monkeypatch, capsys, healthy_env(tenants, tenant, tmp_path))
    assert code == 0, "\n".join(lines)
    text = "\n".join(lines)
    for expected in ("credential: certificate loaded from certificate file", "certificate:", "valid until",
                     "Management Activity API token: token issued", "ActivityFeed.ReadDlp",
                     "unified audit logging: the Management Activity API answers",
                     f"subscriptions: all {len(CONTENT_TYPES)} enabled", "clock: local clock is",
                     "file sink:", "checkpoints: local directory"):
        assert expected in text, f"{expected!r} missing from:\n{text}"
    assert not remedies(lines)
    assert lines[-1].startswith("doctor: ") and "0 failed" in lines[-1]


def test_missing_role(tenants, tmp_path, monkeypatch, capsys):
    tenant = tenants(roles={MANAGE: ["ActivityFeed.Read"]}, subscriptions=ENABLED)
    code, lines = run_cli(monkeypatch, capsys, healthy_env(tenants, tenant, tmp_path))
    assert code == 1
    assert any("[FAIL]" in line and "lacks the application permission(s) ActivityFeed.ReadDlp" in line
               for line in lines), lines
    assert remedies(lines) == [f"Add ActivityFeed.ReadDlp (application) to the app registration and grant admin "
                               f"consent in tenant {tenant}."]


def test_missing_message_trace_role(tenants, tmp_path, monkeypatch, capsys):
    tenant = tenants(roles={MANAGE: ["ActivityFeed.Read", "ActivityFeed.ReadDlp"]}, subscriptions=ENABLED)
    env = healthy_env(tenants, tenant, tmp_path, O365_MESSAGETRACE_ENABLED="true")
    code, lines = run_cli(monkeypatch, capsys, env)
    assert code == 1
    assert any(line.startswith(f"[FAIL] tenant {tenant} - Microsoft Graph message trace token:") for line in lines)
    assert remedies(lines) == [f"Add ExchangeMessageTrace.Read.All (application) to the app registration and grant "
                               f"admin consent in tenant {tenant}."]


def test_auditing_off(tenants, tmp_path, monkeypatch, capsys):
    tenant = tenants(audit_enabled=False)
    code, lines = run_cli(monkeypatch, capsys, healthy_env(tenants, tenant, tmp_path))
    assert code == 1
    assert f"[FAIL] tenant {tenant} - unified audit logging: the API answered 'Tenant ... does not exist': " \
           "unified audit logging is off" in lines
    assert remedies(lines) == [
        "Unified audit logging looks off for this tenant: turn it on in Microsoft Purview > Audit (or "
        "Set-AdminAuditLogConfig -UnifiedAuditLogIngestionEnabled $true); it can take 60 minutes to take effect."]


def test_disabled_subscription(tenants, tmp_path, monkeypatch, capsys):
    tenant = tenants(subscriptions={**ENABLED, "Audit.Exchange": "disabled"})
    code, lines = run_cli(monkeypatch, capsys, healthy_env(tenants, tenant, tmp_path))
    assert code == 1
    assert f"[FAIL] tenant {tenant} - subscription Audit.Exchange: subscription is disabled" in lines
    [remedy] = remedies(lines)
    assert remedy.startswith(f"Start it: `python -m o365ingest run --tenant {tenant} --content-type Audit.Exchange` "
                             "restarts it (or POST ")
    assert remedy.endswith("/subscriptions/start?contentType=Audit.Exchange); content created while it was off "
                           "cannot be collected.")


def test_wrong_certificate(tenants, tmp_path, monkeypatch, capsys):
    tenant = tenants(subscriptions=ENABLED)
    other_key, other_cert = make_app_certificate(common_name="not-registered")
    env = healthy_env(tenants, tenant, tmp_path,
                      O365_CERTIFICATE_PATH=pem_file(tmp_path, other_key, other_cert, "other.pem"))
    code, lines = run_cli(monkeypatch, capsys, env)
    assert code == 1
    assert any(line.startswith(f"[FAIL] tenant {tenant} - Management Activity API token:") and "AADSTS700027" in line
               for line in lines), lines
    assert remedies(lines) == ["Upload the certificate (.cer, public part only) to the app registration under "
                               "Certificates & secrets; it must be the same certificate version that Key Vault holds."]
    assert f"[skip] tenant {tenant} - Management Activity API: not checked without a usable token" in lines


def test_expiring_certificate(tenants, tmp_path, monkeypatch, capsys):
    key_pem, cert_pem = make_app_certificate(common_name="expiring", days=10)
    tenant = tenants(certificates=[cert_pem], subscriptions=ENABLED)
    path = pem_file(tmp_path, key_pem, cert_pem, "expiring.pem")
    code, lines = run_cli(monkeypatch, capsys, healthy_env(tenants, tenant, tmp_path, O365_CERTIFICATE_PATH=path))
    assert code == 3, "warnings only"
    assert any(line.startswith("[WARN] certificate: certificate ") and "expires in 9 day(s)" in line
               for line in lines), lines
    assert remedies(lines) == [f"Renew the certificate (certificate file {path}), upload the new public certificate "
                               "(.cer) to the app registration under Certificates & secrets, then restart the "
                               "Function App so it loads the new version."]


def test_expired_certificate(tenants, tmp_path, monkeypatch, capsys):
    key_pem, cert_pem = make_app_certificate(common_name="expired", days=30,
                                             not_before=datetime.now(UTC) - timedelta(days=40))
    tenant = tenants(certificates=[cert_pem], subscriptions=ENABLED)
    path = pem_file(tmp_path, key_pem, cert_pem, "expired.pem")
    code, lines = run_cli(monkeypatch, capsys, healthy_env(tenants, tenant, tmp_path, O365_CERTIFICATE_PATH=path))
    assert code == 1
    assert any(line.startswith("[FAIL] certificate: certificate ") and " expired on " in line for line in lines), lines
    # one cause, one remedy: Entra's AADSTS700027 for the expired key is not shown as "upload the certificate"
    assert remedies(lines) == [f"Renew the certificate (certificate file {path}), upload the new public certificate "
                               "(.cer) to the app registration under Certificates & secrets, then restart the "
                               "Function App so it loads the new version."]
    assert not any("AADSTS" in line for line in lines), lines
    assert f"[skip] tenant {tenant} - Management Activity API: not checked without a usable token" in lines


def test_clock_skew(app_cert, tmp_path, monkeypatch, capsys):
    with Simulator({"seed": 5, "tenants": [], "clock_skew_seconds": 900}, state_dir=tmp_path / "skewed") as skewed:
        factory = TenantFactory(skewed, app_cert, tmp_path)
        tenant = factory(records=10, days=1.0, subscriptions=ENABLED)
        code, lines = run_cli(monkeypatch, capsys, healthy_env(factory, tenant, tmp_path))
    assert code == 1
    assert any(line.startswith(f"[FAIL] tenant {tenant} - clock: local clock is") and "s behind the API's Date header"
               in line for line in lines), lines
    assert remedies(lines) == ["Synchronize this machine's clock with NTP: Entra ID rejects client assertions about "
                               "5 minutes off and listing windows are computed from the local clock."]


def test_unreadable_key_vault_secret(sim, tenants, tmp_path, managed_identity, monkeypatch, capsys):
    tenant = tenants(subscriptions=ENABLED)
    env = healthy_env(tenants, tenant, tmp_path, O365_CREDENTIAL="keyvault-certificate",
                      O365_CERTIFICATE_NAME=tenants.secret_name())
    sim.set_keyvault_readers(["00000000-0000-0000-0000-00000000beef"])
    try:
        code, lines = run_cli(monkeypatch, capsys, env)
    finally:
        sim.set_keyvault_readers(None)
    assert code == 1
    assert any(line.startswith("[FAIL] Key Vault secret:") and "(HTTP 403)" in line for line in lines), lines
    assert remedies(lines) == ["Assign the role 'Key Vault Secrets User' on the vault to the Function App's managed "
                               "identity (Microsoft.KeyVault/vaults/secrets/getSecret/action)."]
    # readable again: the same settings pass, and the certificate's expiry is reported
    code, lines = run_cli(monkeypatch, capsys, env)
    assert code == 0, lines
    assert any(line.startswith("[ok  ] Key Vault secret: certificate loaded from Key Vault") for line in lines)


async def test_event_hubs_batch_size_and_blob_checkpoints(tenants, azurite):
    tenant = tenants(records=10, days=1.0, subscriptions=ENABLED)
    env = tenants.env(tenant, **blob_env(azurite), O365_EVENTHUB_HUBS="Audit.Exchange=exchange")
    async with Runtime.create(load_settings(env), producer_factory=EventHubRecorder().factory) as runtime:
        checks = {c.name: c for c in await run_doctor(runtime)}
    assert checks["Event Hubs o365-audit"].status == "ok"
    assert checks["Event Hubs exchange"].detail == "reachable; maximum batch 1048576 bytes"
    assert checks["checkpoints"].status == "ok" and env["O365_CHECKPOINT_CONTAINER"] in checks["checkpoints"].detail


async def test_unreachable_event_hub_and_unwritable_checkpoints(tenants, tmp_path):
    tenant = tenants(records=10, days=1.0, subscriptions=ENABLED)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = tenants.env(tenant, O365_CHECKPOINT_DIR=str(blocker / "state"))

    def refused(hub: str) -> object:
        class Producer:
            async def create_batch(self, **_: object) -> object:
                raise ConnectionRefusedError("amqp connection refused")

            async def close(self) -> None:
                return None

        return Producer()

    async with Runtime.create(load_settings(env), producer_factory=refused) as runtime:
        checks = {c.name: c for c in await run_doctor(runtime)}
    hub = checks["Event Hubs o365-audit"]
    assert hub.status == "fail" and "ConnectionRefusedError" in hub.detail
    assert "'Azure Event Hubs Data Sender'" in (hub.remedy or "")
    assert checks["checkpoints"].status == "fail"
    assert checks["checkpoints"].remedy == f"Make {blocker / 'state'} writable by this user, or set O365_CHECKPOINT_DIR."


class BasicTierProducer(FakeProducer):
    """An Event Hubs Basic namespace: the link negotiates 256 KB messages, not Standard's 1 MB."""

    async def create_batch(self, *, partition_key: str | None = None, partition_id: str | None = None,
                           max_size_in_bytes: int | None = None) -> EventDataBatch:
        if max_size_in_bytes and max_size_in_bytes > BASIC_TIER_MAX_MESSAGE:
            raise ValueError("max_size_in_bytes is larger than the link's maximum message size")
        return EventDataBatch(max_size_in_bytes=max_size_in_bytes or BASIC_TIER_MAX_MESSAGE,
                              partition_key=partition_key)


async def test_event_hub_with_a_maximum_batch_under_1_mb_warns(tenants):
    tenant = tenants(records=10, days=1.0, subscriptions=ENABLED)
    recorder = EventHubRecorder()
    async with Runtime.create(load_settings(tenants.env(tenant)),
                              producer_factory=lambda hub: BasicTierProducer(hub, recorder)) as runtime:
        checks = await run_doctor(runtime)
    hub = next(c for c in checks if c.name == "Event Hubs o365-audit")
    assert hub.status == "warn"
    assert hub.detail == f"reachable; maximum batch only {BASIC_TIER_MAX_MESSAGE} bytes"
    assert hub.remedy == "Use the Standard tier or higher (1 MB events): larger records are dead-lettered."
    assert [c.name for c in checks if c.status in ("warn", "fail")] == ["Event Hubs o365-audit"]
    assert exit_code(checks) == 3, "warnings only"
    assert f"       remedy: {hub.remedy}" in report(checks).splitlines()
    assert recorder.events == [], "doctor probes the hub without sending"
