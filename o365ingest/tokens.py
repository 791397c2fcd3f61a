"""App-only tokens from Entra ID through MSAL, one confidential client per tenant per process.

MSAL is synchronous, so every call runs in a worker thread to keep the event loop free. MSAL's
in-memory cache returns a token until shortly before it expires; keeping the same application
object on a warm Functions instance means timer runs reuse tokens instead of asking Entra again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .clouds import WELL_KNOWN_LOGIN_HOSTS
from .credentials import ClientCredential, load_credential
from .errors import AuthError
from .settings import Settings, TenantConfig

log = logging.getLogger(__name__)

_AADSTS = re.compile(r"AADSTS(\d+)")

# What to do for the Entra ID errors operators actually meet. Keys are AADSTS numbers.
REMEDIES: dict[int, str] = {
    700027: "Upload the certificate (.cer, public part only) to the app registration under "
            "Certificates & secrets; it must be the same certificate version that Key Vault holds.",
    700024: "The client assertion is outside its validity window: check this machine's clock (NTP).",
    700016: "Check O365_CLIENT_ID. For a multi-tenant app, an administrator of this tenant must grant "
            "admin consent first, which creates the app's service principal there.",
    7000215: "The client secret is wrong: create a new secret and set O365_CLIENT_SECRET to its Value "
             "(not its Secret ID). Prefer a certificate (O365_CREDENTIAL=keyvault-certificate).",
    7000222: "The client secret has expired: create a new one, or switch to a certificate.",
    90002: "The tenant was not found: check the GUIDs in O365_TENANTS (Entra ID > Overview > Tenant ID) "
           "and O365_CLOUD.",
    900023: "The tenant identifier is malformed: check O365_TENANTS.",
    500011: "The API's service principal is missing in this tenant or O365_CLOUD names the wrong cloud: "
            "check O365_CLOUD, and that the Office 365 Management APIs / Microsoft Graph permissions "
            "were added and consented.",
    7000112: "The application is disabled in this tenant: enable it under Enterprise applications.",
    65001: "Admin consent is missing: grant admin consent for the app's API permissions.",
    700021: "The client assertion names another application: the certificate's assertion must be "
            "issued for O365_CLIENT_ID.",
    1002012: "The requested scope is malformed; check O365_CLOUD and the endpoint overrides.",
    50049: "The authority is unknown: check O365_LOGIN_URL and O365_CLOUD.",
}


@dataclass(frozen=True)
class Token:
    access_token: str
    expires_in: int
    roles: tuple[str, ...]
    from_cache: bool


def token_roles(access_token: str) -> tuple[str, ...]:
    """Read the ``roles`` claim (no signature check: the token came to us from Entra over TLS)."""
    try:
        payload = access_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return ()
    roles = claims.get("roles", ())
    return tuple(roles) if isinstance(roles, list) else ()


class _CaBundleSession(requests.Session):
    """A session whose configured CA bundle wins over ``REQUESTS_CA_BUNDLE`` in the environment
    (requests otherwise lets the environment override ``Session.verify``)."""

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        merged["verify"] = self.verify
        return merged


def _msal_session(settings: Settings) -> requests.Session:
    """MSAL's transport: our CA bundle, and retries on connection errors and 5xx, which MSAL
    does not do itself once it is handed a session."""
    session = _CaBundleSession() if settings.ca_bundle else requests.Session()
    if settings.ca_bundle:
        session.verify = str(settings.ca_bundle)
    retry = Retry(total=3, connect=3, read=2, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=None, respect_retry_after_header=True, raise_on_status=False)
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


class TenantTokens:
    """Tokens for one tenant's app registration, for any resource (Management API, Graph...)."""

    def __init__(self, settings: Settings, tenant: TenantConfig, credential: ClientCredential) -> None:
        self.settings = settings
        self.tenant = tenant
        self.credential = credential
        self._app: Any = None
        self._lock = asyncio.Lock()

    def _build_app(self) -> Any:
        import msal

        login = self.settings.endpoints.login_url
        known = urlsplit(login).hostname in WELL_KNOWN_LOGIN_HOSTS
        return msal.ConfidentialClientApplication(
            client_id=self.tenant.client_id,
            authority=f"{login}/{self.tenant.tenant_id}",
            client_credential=self.credential.msal_credential,
            http_client=_msal_session(self.settings),
            # Instance discovery asks login.microsoftonline.com about the authority; a
            # private authority (the simulator) is not in that list, so only known hosts use it.
            instance_discovery=known,
            validate_authority=known,
        )

    async def get(self, resource: str) -> Token:
        async with self._lock:
            if self._app is None:
                try:
                    self._app = await asyncio.to_thread(self._build_app)
                except (ValueError, requests.RequestException) as exc:
                    raise await asyncio.to_thread(self._discovery_error, exc) from exc
        scope = f"{resource}/.default"
        try:
            result = await asyncio.to_thread(self._app.acquire_token_for_client, scopes=[scope])
        except requests.RequestException as exc:
            raise AuthError(f"Entra ID could not be reached for tenant {self.tenant.tenant_id} ({type(exc).__name__}).",
                            "Check network access to the login endpoint; the run will retry.") from exc
        if "access_token" not in result:
            raise self._error(result, resource)
        token = result["access_token"]
        return Token(access_token=token, expires_in=int(result.get("expires_in", 0)),
                     roles=token_roles(token), from_cache=result.get("token_source") == "cache")

    def _discovery_error(self, exc: Exception) -> AuthError:
        """MSAL hides why authority discovery failed; ask once more to read Entra's AADSTS code."""
        url = f"{self.settings.endpoints.login_url}/{self.tenant.tenant_id}/v2.0/.well-known/openid-configuration"
        try:
            body = _msal_session(self.settings).get(url, timeout=15).json()
        except (requests.RequestException, ValueError):
            return AuthError(f"Entra ID at {self.settings.endpoints.login_url} could not be reached for tenant "
                             f"{self.tenant.tenant_id} ({type(exc).__name__}).", REMEDIES[50049])
        error = self._error(body if isinstance(body, dict) else {}, "authority discovery")
        if error.code in (None, "None", "unknown"):
            error.remedy = REMEDIES[90002]
        return error

    async def invalidate(self) -> None:
        """Drop cached tokens (after a 401) so the next ``get`` asks Entra ID for a fresh one."""
        if self._app is not None:
            await asyncio.to_thread(self._app.remove_tokens_for_client)

    def _error(self, result: dict[str, Any], resource: str) -> AuthError:
        description = str(result.get("error_description", ""))
        codes = result.get("error_codes") or [int(m) for m in _AADSTS.findall(description)[:1]]
        code = int(codes[0]) if codes else None
        first = description.splitlines()[0] if description else str(result.get("error", "unknown error"))
        remedy = REMEDIES.get(code) if code is not None else None
        return AuthError(
            f"Entra ID refused a token for {resource} in tenant {self.tenant.tenant_id} "
            f"(app {self.tenant.client_id}, {self.credential.kind}): {first}",
            remedy or "See the AADSTS code in Microsoft's error reference.",
            code=f"AADSTS{code}" if code is not None else str(result.get("error")),
        )


class TokenRegistry:
    """One ``TenantTokens`` per tenant, created on first use and kept for the process's lifetime.

    Credentials are loaded once per source (one Key Vault read serves every tenant that shares
    the certificate).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tenants: dict[str, TenantTokens] = {}
        self._credentials: dict[tuple[str, str], ClientCredential] = {}
        self._lock = asyncio.Lock()

    async def for_tenant(self, tenant: TenantConfig) -> TenantTokens:
        async with self._lock:
            tokens = self._tenants.get(tenant.tenant_id)
            if tokens is None:
                key = (tenant.credential, tenant.certificate_name if tenant.credential == "keyvault-certificate"
                       else str(tenant.certificate_path))
                credential = self._credentials.get(key)
                if credential is None:
                    credential = await load_credential(self.settings, tenant)
                    self._credentials[key] = credential
                tokens = TenantTokens(self.settings, tenant, credential)
                self._tenants[tenant.tenant_id] = tokens
            return tokens

    async def token(self, tenant: TenantConfig, resource: str) -> Token:
        return await (await self.for_tenant(tenant)).get(resource)
