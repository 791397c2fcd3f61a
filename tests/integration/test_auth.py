"""Authentication end to end over HTTPS: Key Vault (real SecretClient), MSAL, Entra errors with remedies."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key, pkcs12
from cryptography.x509 import load_pem_x509_certificate

from m365sim.testing import make_app_certificate
from o365ingest.check import check_tokens
from o365ingest.settings import load_settings
from o365ingest.tokens import TokenRegistry

MANAGE = "https://manage.office.com"


async def check(env):
    settings = load_settings(env)
    return await check_tokens(settings, TokenRegistry(settings))


async def test_certificate_from_key_vault_through_managed_identity_and_msal(tenants, managed_identity, sim):
    tenant = tenants()
    env = tenants.env(tenant, O365_CREDENTIAL="keyvault-certificate", O365_CERTIFICATE_NAME=tenants.secret_name(),
                      O365_CLIENT_SECRET="<unset>")
    settings = load_settings(env)
    registry = TokenRegistry(settings)
    first = await registry.token(settings.tenants[0], MANAGE)
    second = await registry.token(settings.tenants[0], MANAGE)
    assert "ActivityFeed.Read" in first.roles
    assert not first.from_cache and second.from_cache  # one MSAL app per tenant: the cache is reused
    tokens = await registry.for_tenant(settings.tenants[0])
    assert tokens.credential.kind == "certificate" and tokens.credential.certificate_not_after is not None
    requests = sim.ledger(service="keyvault")
    assert any(r["status"] == 401 and not r["authorization"] for r in requests)  # the challenge flow ran
    assert any(r["status"] == 200 and r["authorization"] for r in requests)
    token_requests = [r for r in sim.ledger(service="token") if r["tenant"] == tenant and r["method"] == "POST"]
    assert len(token_requests) == 1


async def test_pkcs12_certificate_secret_is_accepted(tenants, managed_identity):
    tenant = tenants()
    key = load_pem_private_key(tenants.key_pem.encode(), None)
    cert = load_pem_x509_certificate(tenants.cert_pem.encode())
    from cryptography.hazmat.primitives.serialization import NoEncryption

    pfx = base64.b64encode(pkcs12.serialize_key_and_certificates(b"app", key, cert, None, NoEncryption())).decode()
    name = tenants.secret_name(pfx, "application/x-pkcs12")
    results = await check(tenants.env(tenant, O365_CREDENTIAL="keyvault-certificate", O365_CERTIFICATE_NAME=name))
    assert [r.ok for r in results] == [True], results


async def test_client_secret_and_certificate_file(tenants, tmp_path):
    tenant = tenants()
    assert [r.ok for r in await check(tenants.env(tenant))] == [True]
    pem = tmp_path / "app.pem"
    pem.write_text(tenants.cert_pem + tenants.key_pem)  # order does not matter
    results = await check(tenants.env(tenant, O365_CREDENTIAL="certificate-file", O365_CERTIFICATE_PATH=pem))
    assert [r.ok for r in results] == [True], results


@pytest.mark.parametrize(("case", "code", "remedy"), [
    ("wrong-secret", "AADSTS7000215", "O365_CLIENT_SECRET"),
    ("unknown-tenant", "AADSTS90002", "O365_TENANTS"),
    ("unknown-client", "AADSTS700016", "admin consent"),
    ("certificate-not-uploaded", "AADSTS700027", "Upload the certificate"),
])
async def test_entra_failures_come_with_a_remedy(tenants, tmp_path, case, code, remedy):
    tenant = tenants()
    env = tenants.env(tenant)
    if case == "wrong-secret":
        env["O365_CLIENT_SECRET"] = "not-the-secret"
    elif case == "unknown-tenant":
        env["O365_TENANTS"] = "0f0f0f0f-1111-2222-3333-444444444444"
    elif case == "unknown-client":
        env["O365_CLIENT_ID"] = "0e0e0e0e-1111-2222-3333-444444444444"
    else:
        other_key, other_cert = make_app_certificate(common_name="not-registered")
        pem = tmp_path / "other.pem"
        pem.write_text(other_key + other_cert)
        env.update(O365_CREDENTIAL="certificate-file", O365_CERTIFICATE_PATH=str(pem))
    [result] = await check(env)
    assert not result.ok
    assert code in result.detail or code in (result.remedy or "") or remedy in (result.remedy or "")
    assert remedy in (result.remedy or ""), result


async def test_missing_admin_consent_names_the_permission(tenants):
    tenant = tenants(consented=False)
    [result] = await check(tenants.env(tenant))
    assert not result.ok
    assert "ActivityFeed.Read" in result.detail and "admin consent" in (result.remedy or "")


async def test_missing_dlp_permission_is_reported(tenants):
    tenant = tenants(roles={MANAGE: ["ActivityFeed.Read"]})
    [result] = await check(tenants.env(tenant))
    assert not result.ok and "ActivityFeed.ReadDlp" in result.detail
    # without DLP.All configured, the same app is fine
    [result] = await check(tenants.env(tenant, O365_CONTENT_TYPES="Audit.Exchange"))
    assert result.ok


async def test_key_vault_forbidden_names_the_missing_role(tenants, managed_identity, sim):
    tenant = tenants()
    name = tenants.secret_name()
    sim.set_keyvault_readers(["00000000-0000-0000-0000-00000000beef"])
    try:
        [result] = await check(tenants.env(tenant, O365_CREDENTIAL="keyvault-certificate", O365_CERTIFICATE_NAME=name))
    finally:
        sim.set_keyvault_readers(None)
    assert not result.ok and "Key Vault Secrets User" in (result.remedy or "")


async def test_missing_certificate_in_key_vault(tenants, managed_identity):
    tenant = tenants()
    [result] = await check(tenants.env(tenant, O365_CREDENTIAL="keyvault-certificate",
                                       O365_CERTIFICATE_NAME="no-such-cert"))
    assert not result.ok and "not found" in result.detail and "O365_CERTIFICATE_NAME" in (result.remedy or "")


async def test_no_azure_identity_available(tenants, monkeypatch):
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")
    tenant = tenants()
    [result] = await check(tenants.env(tenant, O365_CREDENTIAL="keyvault-certificate",
                                       O365_CERTIFICATE_NAME=tenants.secret_name()))
    assert not result.ok and "AZURE_CLIENT_ID" in (result.remedy or "")
