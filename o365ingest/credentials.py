"""Load the app registration's credential: a certificate from Key Vault or a PEM file, or a secret.

Key Vault holds a certificate's private key and chain in the certificate's *secret* (PEM or PKCS#12,
per the certificate policy). MSAL gets ``{"private_key", "public_certificate"}`` without a SHA-1
thumbprint, so it signs the client assertion with PS256 and ``x5t#S256``.
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from .errors import CredentialError
from .settings import Settings, TenantConfig, is_loopback_host

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s+.*?-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class ClientCredential:
    """What MSAL needs, plus facts about the certificate for health checks."""

    msal_credential: str | dict[str, str] = field(repr=False)
    kind: str
    certificate_not_after: datetime | None = None
    certificate_sha256: str | None = None
    source: str = ""


def credential_from_pem(pem: str, source: str) -> ClientCredential:
    """Split a PEM bundle (key + chain, any order) into what MSAL takes; validate it on the way."""
    key_pem: str | None = None
    certs: list[str] = []
    for match in _PEM_BLOCK.finditer(pem):
        label = match.group(1)
        if label.endswith("PRIVATE KEY"):
            key_pem = match.group(0)
        elif label == "CERTIFICATE":
            certs.append(match.group(0))
    if key_pem is None or not certs:
        missing = "private key" if key_pem is None else "certificate"
        raise CredentialError(
            f"{source} holds no {missing} in PEM form.",
            "Import the certificate with its private key and content type application/x-pem-file "
            "(see docs/deploy.md), or point O365_CERTIFICATE_PATH at a PEM with key and certificate.",
        )
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        leaf = _leaf_for_key(key, [x509.load_pem_x509_certificate(c.encode()) for c in certs])
    except (ValueError, TypeError) as exc:
        raise CredentialError(f"{source}: the PEM could not be read ({exc}).",
                              "Re-export the certificate as unencrypted PEM (key + certificate).") from exc
    if leaf is None:
        raise CredentialError(f"{source}: no certificate in the PEM matches its private key.",
                              "Export the key and certificate of the same Key Vault certificate version.")
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM).decode()
    return ClientCredential(
        msal_credential={"private_key": key_pem, "public_certificate": leaf_pem},
        kind="certificate",
        certificate_not_after=leaf.not_valid_after_utc,
        certificate_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        source=source,
    )


def _leaf_for_key(key: Any, certs: list[x509.Certificate]) -> x509.Certificate | None:
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    for cert in certs:
        if cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo) == public:
            return cert
    return None


def credential_from_pkcs12(value: str, source: str) -> ClientCredential:
    """Key Vault returns PKCS#12 certificates base64-encoded, without a password."""
    try:
        key, cert, _chain = pkcs12.load_key_and_certificates(base64.b64decode(value), None)
    except ValueError as exc:
        raise CredentialError(f"{source}: the PKCS#12 secret could not be read ({exc}).",
                              "Re-import the certificate with content type application/x-pem-file.") from exc
    if key is None or cert is None:
        raise CredentialError(f"{source}: the PKCS#12 secret has no private key.",
                              "Import the certificate with its private key.")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return credential_from_pem(key_pem + cert.public_bytes(serialization.Encoding.PEM).decode(), source)


def keyvault_connection_options(settings: Settings) -> dict[str, Any]:
    """Transport options for Key Vault clients.

    The SDK checks that the vault's host name is a sub-domain of the challenge resource; a vault
    on a loopback address (the simulator) cannot satisfy that, so only there the check is skipped.
    TLS verification itself is never relaxed; the simulator's CA is passed as a bundle.
    """
    options: dict[str, Any] = {}
    if settings.ca_bundle is not None:
        options["connection_verify"] = str(settings.ca_bundle)
    if settings.keyvault_url and is_loopback_host(urlsplit(settings.keyvault_url).hostname):
        options["verify_challenge_resource"] = False
    return options


async def load_from_keyvault(settings: Settings, certificate_name: str) -> ClientCredential:
    """Read the certificate's secret with the app's Azure identity (managed identity in Azure)."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
    from azure.identity.aio import DefaultAzureCredential
    from azure.keyvault.secrets.aio import SecretClient

    assert settings.keyvault_url is not None
    source = f"Key Vault {settings.keyvault_url} certificate {certificate_name!r}"
    options = keyvault_connection_options(settings)
    identity_options = {k: v for k, v in options.items() if k == "connection_verify"}
    async with DefaultAzureCredential(**identity_options) as identity, \
            SecretClient(settings.keyvault_url, identity, **options) as client:
        try:
            secret = await client.get_secret(certificate_name)
        except ResourceNotFoundError as exc:
            raise CredentialError(
                f"{source} was not found.",
                f"Create or import the certificate named {certificate_name!r} in the vault (docs/deploy.md), "
                "or set O365_CERTIFICATE_NAME to its name.") from exc
        except ClientAuthenticationError as exc:
            raise CredentialError(
                f"{source}: no Azure identity could get a token for Key Vault ({_first_line(exc)}).",
                "In Azure, attach the user-assigned managed identity and set AZURE_CLIENT_ID to its client ID; "
                "locally, sign in with `az login`.") from exc
        except HttpResponseError as exc:
            if exc.status_code == 403:
                raise CredentialError(
                    f"{source}: the app's identity may not read the certificate's secret (HTTP 403).",
                    "Assign the role 'Key Vault Secrets User' on the vault to the Function App's managed "
                    "identity (Microsoft.KeyVault/vaults/secrets/getSecret/action).") from exc
            raise CredentialError(f"{source}: Key Vault answered HTTP {exc.status_code}.",
                                  "Retry; check the vault's firewall and private endpoint settings.") from exc
    value = secret.value or ""
    if (secret.properties.content_type or "").lower() == "application/x-pkcs12":
        return credential_from_pkcs12(value, source)
    return credential_from_pem(value, source)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


async def load_credential(settings: Settings, tenant: TenantConfig) -> ClientCredential:
    """The credential for one tenant, from the source its settings name."""
    if tenant.credential == "keyvault-certificate":
        return await load_from_keyvault(settings, tenant.certificate_name)
    if tenant.credential == "certificate-file":
        assert tenant.certificate_path is not None
        path = Path(tenant.certificate_path)
        try:
            pem = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except OSError as exc:
            raise CredentialError(f"Certificate file {path} could not be read ({exc.strerror}).",
                                  "Set O365_CERTIFICATE_PATH to a readable PEM file.") from exc
        return credential_from_pem(pem, f"certificate file {path}")
    if not settings.client_secret:
        raise CredentialError("O365_CLIENT_SECRET is empty.", "Set O365_CLIENT_SECRET or use a certificate.")
    return ClientCredential(msal_credential=settings.client_secret, kind="secret", source="client secret")


def days_left(credential: ClientCredential, now: datetime | None = None) -> float | None:
    if credential.certificate_not_after is None:
        return None
    now = now or datetime.now(UTC)
    return (credential.certificate_not_after - now).total_seconds() / 86400
