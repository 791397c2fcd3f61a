"""Key Vault through the real azure-keyvault-secrets async client and a managed identity."""

from __future__ import annotations

from collections.abc import Iterator

import msal
import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity.aio import ManagedIdentityCredential
from azure.keyvault.secrets.aio import SecretClient

from m365sim.defaults import split_pem_bundle
from m365sim.testing import Simulator, make_app_certificate, pem_bundle
from tests.sim.support import CLIENT_ID, MANAGE, VAULT, app, client, guid, tenant, token

TENANT = guid("vault-tenant")
MI_CLIENT_ID = guid("vault-managed-identity")
KEY_PEM, CERT_PEM = make_app_certificate("o365ingest-vault")
BUNDLE = pem_bundle(KEY_PEM, CERT_PEM)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = {
        "tenants": [tenant(TENANT, [app(certificates=[CERT_PEM])], records=10)],
        "keyvault": {"secrets": {"o365ingest": {"value": BUNDLE, "contentType": "application/x-pem-file"}}},
        "managed_identity": {"client_id": MI_CLIENT_ID, "header": "let-me-in"},
    }
    with Simulator(config) as simulator:
        yield simulator


@pytest.fixture
def identity_env(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", sim.identity_header)
    for name in ("MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)


def secret_client(sim: Simulator, credential: ManagedIdentityCredential) -> SecretClient:
    # The vault is on loopback, not *.vault.azure.net: the challenge resource cannot match its domain.
    return SecretClient(sim.keyvault_url, credential, verify_challenge_resource=False, connection_verify=sim.ca_bundle)


async def test_managed_identity_reads_the_pem_secret(sim: Simulator, identity_env: None) -> None:
    seq = sim.last_seq()
    async with (
        ManagedIdentityCredential(connection_verify=sim.ca_bundle) as credential,
        secret_client(sim, credential) as secrets,
    ):
        secret = await secrets.get_secret("o365ingest")
    assert secret.value == BUNDLE
    assert secret.properties.content_type == "application/x-pem-file"
    assert secret.id.startswith(f"{sim.keyvault_url}/secrets/o365ingest/")
    services = [(e["service"], e["status"]) for e in sim.ledger(since=seq)]
    assert services == [("keyvault", 401), ("msi", 200), ("keyvault", 200)]


async def test_unknown_secret_is_secret_not_found(sim: Simulator, identity_env: None) -> None:
    async with (
        ManagedIdentityCredential(connection_verify=sim.ca_bundle) as credential,
        secret_client(sim, credential) as secrets,
    ):
        with pytest.raises(ResourceNotFoundError) as raised:
            await secrets.get_secret("does-not-exist")
    assert raised.value.error is not None and raised.value.error.code == "SecretNotFound"
    assert "A secret with (name/id) does-not-exist was not found in this key vault." in str(raised.value)


async def test_caller_without_permission_is_forbidden_by_rbac(sim: Simulator, identity_env: None) -> None:
    sim.set_keyvault_readers([guid("someone-else")])
    try:
        async with (
            ManagedIdentityCredential(connection_verify=sim.ca_bundle) as credential,
            secret_client(sim, credential) as secrets,
        ):
            with pytest.raises(HttpResponseError) as raised:
                await secrets.get_secret("o365ingest")
    finally:
        sim.set_keyvault_readers(None)
    assert raised.value.status_code == 403
    assert "Microsoft.KeyVault/vaults/secrets/getSecret/action" in str(raised.value)
    assert raised.value.response is not None
    assert raised.value.response.json()["error"]["innerError"] == {"code": "ForbiddenByRbac"}


async def test_rotated_secret_keeps_old_versions(sim: Simulator, identity_env: None) -> None:
    sim.set_keyvault_readers([MI_CLIENT_ID])
    try:
        async with (
            ManagedIdentityCredential(connection_verify=sim.ca_bundle) as credential,
            secret_client(sim, credential) as secrets,
        ):
            first = sim.put_secret("rotating", "v1")
            sim.put_secret("rotating", "v2", content_type="text/plain")
            latest = await secrets.get_secret("rotating")
            pinned = await secrets.get_secret("rotating", version=first)
    finally:
        sim.set_keyvault_readers(None)
    assert (latest.value, latest.properties.content_type) == ("v2", "text/plain")
    assert pinned.value == "v1"


def test_vault_rejects_missing_and_foreign_tokens(sim: Simulator) -> None:
    with client(sim) as anonymous:
        challenge = anonymous.get("/secrets/o365ingest", params={"api-version": "7.5"})
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"] == f'Bearer authorization="{sim.url}/{TENANT}", resource="{VAULT}"'
    with client(sim, token(sim, TENANT, MANAGE)) as wrong_audience:
        response = wrong_audience.get("/secrets/o365ingest", params={"api-version": "7.5"})
    assert response.status_code == 401 and "AKV10022" in response.text
    with client(sim, token(sim, TENANT, VAULT)) as app_token:  # Entra-issued vault token also works
        assert app_token.get("/secrets/o365ingest", params={"api-version": "7.5"}).json()["value"] == BUNDLE


def test_managed_identity_endpoint_refusals(sim: Simulator) -> None:
    params = {"api-version": "2019-08-01", "resource": VAULT}
    with client(sim) as http:
        assert http.get("/msi/token", params=params).status_code == 400
        assert http.get("/msi/token", params=params, headers={"X-IDENTITY-HEADER": "nope"}).status_code == 401
        headers = {"X-IDENTITY-HEADER": "let-me-in"}
        assert http.get("/msi/token", params={**params, "client_id": guid("other")}, headers=headers).status_code == 400
        ok = http.get("/msi/token", params={**params, "client_id": MI_CLIENT_ID}, headers=headers).json()
    assert set(ok) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert ok["resource"] == VAULT and ok["client_id"] == MI_CLIENT_ID and ok["expires_on"].isdigit()


def test_certificate_from_the_vault_authenticates_with_msal(sim: Simulator) -> None:
    """End to end: PEM secret -> key + certificate -> MSAL certificate credential -> token."""
    with client(sim, token(sim, TENANT, VAULT)) as http:
        pem = http.get("/secrets/o365ingest", params={"api-version": "7.5"}).json()["value"]
    key_pem, cert_pem = split_pem_bundle(pem)
    with requests.Session() as session:
        session.trust_env = False  # otherwise REQUESTS_CA_BUNDLE overrides Session.verify
        session.verify = sim.ca_bundle
        confidential = msal.ConfidentialClientApplication(
            CLIENT_ID,
            authority=f"{sim.url}/{TENANT}",
            client_credential={"private_key": key_pem, "public_certificate": cert_pem},
            http_client=session,
            instance_discovery=False,
        )
        result = confidential.acquire_token_for_client(scopes=[f"{MANAGE}/.default"])
    assert "access_token" in result, result
