"""Entra ID token endpoint: secret and certificate auth through real MSAL, and every refusal."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import msal
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from m365sim.pki import b64url
from m365sim.testing import Simulator, make_app_certificate
from tests.sim.support import CLIENT_ID, CLIENT_SECRET, GRAPH, MANAGE, VAULT, app, client, guid, tenant

TENANT = guid("entra-tenant")
DISABLED_APP = guid("entra-disabled-app")
UNCONSENTED_APP = guid("entra-unconsented-app")
KEY_PEM, CERT_PEM = make_app_certificate("o365ingest-test")
OTHER_KEY_PEM, OTHER_CERT_PEM = make_app_certificate("not-registered")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = {
        "token_lifetime_seconds": 1800,
        "tenants": [
            tenant(
                TENANT,
                [
                    app(certificates=[CERT_PEM]),
                    app(DISABLED_APP, enabled=False, display_name="old-collector"),
                    app(UNCONSENTED_APP, consented=False),
                ],
                records=10,
            )
        ],
    }
    with Simulator(config) as simulator:
        yield simulator


@pytest.fixture
def session(sim: Simulator) -> Iterator[requests.Session]:
    with requests.Session() as http:
        # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override Session.verify unless trust_env is off.
        http.trust_env = False
        http.verify = sim.ca_bundle
        yield http


def msal_app(sim: Simulator, session: requests.Session, credential: Any, tenant_id: str = TENANT) -> Any:
    return msal.ConfidentialClientApplication(
        CLIENT_ID,
        authority=f"{sim.url}/{tenant_id}",
        client_credential=credential,
        http_client=session,
        instance_discovery=False,
    )


def post_token(sim: Simulator, **fields: str) -> httpx.Response:
    data = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "scope": f"{MANAGE}/.default", **fields}
    return sim.control.post(f"/{TENANT}/oauth2/v2.0/token", data=data, headers={"client-request-id": "corr-123"})


def assert_aad(response: httpx.Response, status: int, error: str, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
        "error_uri",
    }
    assert body["error"] == error
    assert body["error_codes"] == [code]
    description = body["error_description"]
    assert description.startswith(f"AADSTS{code}: ")
    assert f"Trace ID: {body['trace_id']} Correlation ID: {body['correlation_id']} Timestamp: " in description
    return body


def assertion(
    key_pem: str, cert_pem: str, *, alg: str = "PS256", aud: str | None = None, exp_offset: int = 600,
    iss: str = CLIENT_ID, sha1: bool = False, sim: Simulator | None = None, jti: bool = True,
) -> str:  # fmt: skip
    """A client assertion built by hand (what MSAL does), to test the refusals."""
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    headers = (
        {"x5t": b64url(hashlib.sha1(der, usedforsecurity=False).digest())}
        if sha1
        else {"x5t#S256": b64url(hashlib.sha256(der).digest())}
    )
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": aud or f"{sim.url if sim else ''}/{TENANT}/oauth2/v2.0/token",
        "iss": iss,
        "sub": iss,
        "nbf": now - 60,
        "exp": now + exp_offset,
    }
    if jti:
        claims["jti"] = str(uuid.uuid4())
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    return jwt.encode(claims, key, algorithm=alg, headers=headers)  # type: ignore[arg-type]


ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


# ---------------------------------------------------------------------- success paths


def test_openid_configuration_points_at_the_simulator(sim: Simulator) -> None:
    doc = sim.control.get(f"/{TENANT}/v2.0/.well-known/openid-configuration").json()
    assert doc["token_endpoint"] == f"{sim.url}/{TENANT}/oauth2/v2.0/token"
    assert doc["jwks_uri"] == f"{sim.url}/{TENANT}/discovery/v2.0/keys"
    assert doc["issuer"] == f"{sim.url}/{TENANT}/v2.0"
    assert doc["authorization_endpoint"].startswith(sim.url)
    discovery = sim.control.get(
        "/common/discovery/instance",
        params={"api-version": "1.1", "authorization_endpoint": f"{sim.url}/{TENANT}/oauth2/v2.0/authorize"},
    ).json()
    assert discovery["tenant_discovery_endpoint"] == f"{sim.url}/{TENANT}/v2.0/.well-known/openid-configuration"


def test_secret_token_has_entra_claims_and_verifies_with_jwks(sim: Simulator) -> None:
    response = post_token(sim, client_secret=CLIENT_SECRET)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 1800
    jwks = jwt.PyJWKSet.from_dict(sim.control.get(f"/{TENANT}/discovery/v2.0/keys").json())
    claims = jwt.decode(body["access_token"], jwks.keys[0].key, algorithms=["RS256"], audience=MANAGE)
    assert claims["iss"] == f"https://sts.windows.net/{TENANT}/"
    assert claims["tid"] == TENANT and claims["appid"] == CLIENT_ID and claims["appidacr"] == "1"
    assert claims["roles"] == ["ActivityFeed.Read", "ActivityFeed.ReadDlp", "ServiceHealth.Read"]
    assert claims["exp"] - claims["iat"] == 1800
    assert uuid.UUID(claims["oid"])


def test_msal_certificate_ps256_with_x5t_s256(sim: Simulator, session: requests.Session) -> None:
    confidential = msal_app(sim, session, {"private_key": KEY_PEM, "public_certificate": CERT_PEM})
    result = confidential.acquire_token_for_client(scopes=[f"{GRAPH}/.default"])
    assert "access_token" in result, result
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["aud"] == GRAPH
    assert claims["roles"] == ["ExchangeMessageTrace.Read.All"]
    assert claims["appidacr"] == "2"
    again = confidential.acquire_token_for_client(scopes=[f"{GRAPH}/.default"])
    assert again["token_source"] == "cache"


def test_msal_certificate_rs256_with_sha1_thumbprint(sim: Simulator, session: requests.Session) -> None:
    der = x509.load_pem_x509_certificate(CERT_PEM.encode()).public_bytes(serialization.Encoding.DER)
    thumbprint = hashlib.sha1(der, usedforsecurity=False).hexdigest()
    confidential = msal_app(sim, session, {"private_key": KEY_PEM, "thumbprint": thumbprint})
    result = confidential.acquire_token_for_client(scopes=[f"{VAULT}/.default"])
    assert "access_token" in result, result


def test_v1_endpoint_with_resource(sim: Simulator) -> None:
    response = sim.control.post(
        f"/{TENANT}/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
              "resource": MANAGE},
    )  # fmt: skip
    assert response.status_code == 200
    assert response.json()["resource"] == MANAGE
    assert int(response.json()["expires_on"]) > time.time()


def test_unconsented_app_gets_token_without_roles(sim: Simulator) -> None:
    response = post_token(sim, client_id=UNCONSENTED_APP, client_secret=CLIENT_SECRET)
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert "roles" not in claims
    with client(sim, response.json()["access_token"]) as http:
        denied = http.get(f"/api/v1.0/{TENANT}/activity/feed/subscriptions/list")
    assert denied.json()["error"]["code"] == "AF10001"


# ---------------------------------------------------------------------- refusals


def test_unknown_tenant_is_90002(sim: Simulator, session: requests.Session) -> None:
    unknown = guid("no-such-tenant")
    response = sim.control.get(f"/{unknown}/v2.0/.well-known/openid-configuration")
    body = assert_aad(response, 400, "invalid_tenant", 90002)
    assert f"Tenant '{unknown}' not found." in body["error_description"]
    with pytest.raises(ValueError, match="Unable to get authority configuration") as raised:
        msal_app(sim, session, CLIENT_SECRET, tenant_id=unknown)
    assert "AADSTS90002" in str(raised.value.__cause__ or raised.value.__context__)
    token = sim.control.post(f"/{unknown}/oauth2/v2.0/token", data={"grant_type": "client_credentials"})
    assert_aad(token, 400, "invalid_tenant", 90002)


def test_unknown_client_is_700016(sim: Simulator) -> None:
    stranger = guid("stranger")
    body = assert_aad(post_token(sim, client_id=stranger, client_secret="x"), 400, "unauthorized_client", 700016)
    assert f"Application with identifier '{stranger}' was not found in the directory" in body["error_description"]


def test_wrong_secret_is_7000215_and_echoes_correlation(sim: Simulator) -> None:
    body = assert_aad(post_token(sim, client_secret="wrong"), 401, "invalid_client", 7000215)
    assert body["correlation_id"] == "corr-123"
    assert body["error_uri"] == "https://login.microsoftonline.com/error?code=7000215"
    assert "wrong" not in str(sim.ledger(service="token"))


def test_no_credential_is_7000218(sim: Simulator) -> None:
    assert_aad(post_token(sim), 401, "invalid_client", 7000218)


def test_unregistered_certificate_is_700027_even_with_x5c(sim: Simulator, session: requests.Session) -> None:
    confidential = msal_app(sim, session, {"private_key": OTHER_KEY_PEM, "public_certificate": OTHER_CERT_PEM})
    result = confidential.acquire_token_for_client(scopes=[f"{MANAGE}/.default"])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [700027]
    assert "is not registered on application" in result["error_description"]


def test_signature_by_other_key_is_700027(sim: Simulator) -> None:
    forged = assertion(OTHER_KEY_PEM, CERT_PEM, sim=sim)  # registered thumbprint, wrong key
    body = assert_aad(
        post_token(sim, client_assertion_type=ASSERTION_TYPE, client_assertion=forged), 401, "invalid_client", 700027
    )
    assert "use of the key to verify the signature failed" in body["error_description"]


def test_expired_assertion_is_700024(sim: Simulator) -> None:
    stale = assertion(KEY_PEM, CERT_PEM, sim=sim, exp_offset=-900)
    body = assert_aad(
        post_token(sim, client_assertion_type=ASSERTION_TYPE, client_assertion=stale), 401, "invalid_client", 700024
    )
    assert "Client assertion is not within its valid time range." in body["error_description"]


def test_wrong_audience_is_700023(sim: Simulator) -> None:
    wrong = assertion(KEY_PEM, CERT_PEM, aud="https://login.microsoftonline.com/common/oauth2/v2.0/token")
    assert_aad(
        post_token(sim, client_assertion_type=ASSERTION_TYPE, client_assertion=wrong), 401, "invalid_client", 700023
    )


def test_v1_audience_and_rs256_x5t_are_accepted(sim: Simulator) -> None:
    v1 = assertion(KEY_PEM, CERT_PEM, alg="RS256", sha1=True, aud=f"{sim.url}/{TENANT}/oauth2/token")
    assert post_token(sim, client_assertion_type=ASSERTION_TYPE, client_assertion=v1).status_code == 200


def test_issuer_mismatch_is_700021(sim: Simulator) -> None:
    other = assertion(KEY_PEM, CERT_PEM, sim=sim, iss=UNCONSENTED_APP)
    assert_aad(
        post_token(sim, client_assertion_type=ASSERTION_TYPE, client_assertion=other), 401, "invalid_client", 700021
    )


def test_missing_jti_and_garbage_are_50027(sim: Simulator) -> None:
    no_jti = assertion(KEY_PEM, CERT_PEM, sim=sim, jti=False)
    assert_aad(
        post_token(sim, client_assertion_type=ASSERTION_TYPE, client_assertion=no_jti), 400, "invalid_request", 50027
    )
    assert_aad(
        post_token(sim, client_assertion_type=ASSERTION_TYPE, client_assertion="abc"), 400, "invalid_request", 50027
    )


def test_unknown_resource_is_500011(sim: Simulator) -> None:
    response = post_token(sim, client_secret=CLIENT_SECRET, scope="https://manage.contoso.example/.default")
    body = assert_aad(response, 400, "invalid_resource", 500011)
    assert "The resource principal named https://manage.contoso.example was not found" in body["error_description"]


@pytest.mark.parametrize("scope", [f"{MANAGE}/ActivityFeed.Read", MANAGE, f"{MANAGE}/.default {GRAPH}/.default"])
def test_invalid_scope_is_1002012(sim: Simulator, scope: str) -> None:
    body = assert_aad(post_token(sim, client_secret=CLIENT_SECRET, scope=scope), 400, "invalid_scope", 1002012)
    assert "Client credential flows must have a scope value with /.default" in body["error_description"]


def test_disabled_app_is_7000112(sim: Simulator) -> None:
    body = assert_aad(
        post_token(sim, client_id=DISABLED_APP, client_secret=CLIENT_SECRET), 400, "unauthorized_client", 7000112
    )
    assert f"Application '{DISABLED_APP}'(old-collector) is disabled." in body["error_description"]


def test_expired_registered_certificate_is_refused(sim: Simulator) -> None:
    old_key, old_cert = make_app_certificate("expired", days=1, not_before=datetime.now(UTC) - timedelta(days=3))
    sim.patch_tenant(TENANT, apps=[{"client_id": CLIENT_ID, "certificates": [CERT_PEM, old_cert]}])
    stale = assertion(old_key, old_cert, sim=sim)
    body = assert_aad(
        post_token(sim, client_assertion_type=ASSERTION_TYPE, client_assertion=stale), 401, "invalid_client", 700027
    )
    assert "The key used is expired." in body["error_description"]


def test_token_requests_are_in_the_ledger_without_secrets(sim: Simulator) -> None:
    entries = sim.ledger(service="token")
    assert entries and all(e["tenant"] for e in entries if "/common/" not in e["path"])
    text = str(entries)
    assert CLIENT_SECRET not in text and "eyJ" not in text
