"""Entra ID: OIDC discovery, JWKS and the client-credentials token endpoints (v2 and v1).

The authority is the simulator URL itself (``{url}/{tenant}``), so MSAL runs unchanged
with ``instance_discovery=False``; tokens carry the real Microsoft resource URIs.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from aiohttp import web

from m365sim import aaderrors
from m365sim.assertion import verify_client_assertion
from m365sim.httputil import json_response, service
from m365sim.resources import canonical_resource
from m365sim.state import SimState, TenantRuntime
from m365sim.tokens import TokenGrant

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLAIMS_SUPPORTED = (
    "sub",
    "iss",
    "cloud_instance_name",
    "cloud_instance_host_name",
    "cloud_graph_host_name",
    "msgraph_host",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "acr",
    "nonce",
    "preferred_username",
    "name",
    "tid",
    "ver",
    "at_hash",
    "c_hash",
    "email",
)
_IGNORED_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})


class EntraApi:
    """Handlers for ``/{tenant}/...`` identity endpoints."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/common/discovery/instance", self.instance_discovery),
            web.get("/{tenant}/v2.0/.well-known/openid-configuration", self.openid_v2),
            web.get("/{tenant}/.well-known/openid-configuration", self.openid_v1),
            web.get("/{tenant}/discovery/v2.0/keys", self.keys),
            web.get("/{tenant}/discovery/keys", self.keys),
            web.post("/{tenant}/oauth2/v2.0/token", self.token_v2),
            web.post("/{tenant}/oauth2/token", self.token_v1),
        ]

    # ------------------------------------------------------------------ discovery

    def _tenant_or_error(self, request: web.Request) -> TenantRuntime:
        ident = request.match_info["tenant"]
        tenant = self.state.tenant(ident)
        if tenant is None:
            raise aaderrors.tenant_not_found(request, ident)
        return tenant

    @service("token")
    async def openid_v2(self, request: web.Request) -> web.Response:
        tenant = self._tenant_or_error(request)
        base = f"{self.state.base_url}/{tenant.tenant_id}"
        return json_response(_openid_document(base, f"{base}/v2.0", "v2.0/", tenant.tenant_id))

    @service("token")
    async def openid_v1(self, request: web.Request) -> web.Response:
        tenant = self._tenant_or_error(request)
        base = f"{self.state.base_url}/{tenant.tenant_id}"
        return json_response(
            _openid_document(base, f"https://sts.windows.net/{tenant.tenant_id}/", "", tenant.tenant_id)
        )

    @service("token")
    async def keys(self, request: web.Request) -> web.Response:
        ident = request.match_info["tenant"]
        if ident.lower() not in ("common", "organizations"):
            self._tenant_or_error(request)
        return json_response(self.state.tokens.jwks())

    @service("token")
    async def instance_discovery(self, request: web.Request) -> web.Response:
        endpoint = request.query.get("authorization_endpoint", "")
        parts = [p for p in urlsplit(endpoint).path.split("/") if p]
        tenant = parts[0] if parts else "common"
        host = urlsplit(self.state.base_url).netloc
        return json_response(
            {
                "tenant_discovery_endpoint": f"{self.state.base_url}/{tenant}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            }
        )

    # ------------------------------------------------------------------ token

    @service("token")
    async def token_v2(self, request: web.Request) -> web.Response:
        return await self._token(request, v1=False)

    @service("token")
    async def token_v1(self, request: web.Request) -> web.Response:
        return await self._token(request, v1=True)

    async def _token(self, request: web.Request, *, v1: bool) -> web.Response:
        tenant = self._tenant_or_error(request)
        form = await request.post()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        basic_id, basic_secret = _basic_credentials(request)
        grant_type = fields.get("grant_type")
        if not grant_type:
            raise aaderrors.missing_parameter(request, "grant_type")
        if grant_type != "client_credentials":
            raise aaderrors.unsupported_grant(request, grant_type)
        client_id = fields.get("client_id") or basic_id
        if not client_id:
            raise aaderrors.missing_parameter(request, "client_id")
        app = tenant.app(client_id)
        if app is None:
            raise aaderrors.app_not_found(request, client_id, tenant.tenant_id)
        if not app.config.enabled:
            raise aaderrors.app_disabled(request, app.config.client_id, app.config.display_name)
        appidacr = self._authenticate_client(request, tenant, app, fields, basic_secret)
        resource = self._resource(request, tenant, fields, v1=v1)
        roles = None
        if app.config.consented:
            roles = tuple(app.config.roles.get(resource, ()))
        grant = TokenGrant(
            tenant_id=tenant.tenant_id,
            app_id=app.config.client_id,
            object_id=str(app.config.object_id),
            resource=resource,
            roles=roles,
            appidacr=appidacr,
            display_name=app.config.display_name,
        )
        token, lifetime = self.state.tokens.issue(grant)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }
        if v1:
            now = int(time.time())
            body = {
                "token_type": "Bearer",
                "expires_in": str(lifetime),
                "ext_expires_in": str(lifetime),
                "expires_on": str(now + lifetime),
                "not_before": str(now),
                "resource": resource,
                "access_token": token,
            }
        response = json_response(body)
        response.headers["Cache-Control"] = "no-store, no-cache"
        response.headers["Pragma"] = "no-cache"
        return response

    def _authenticate_client(
        self,
        request: web.Request,
        tenant: TenantRuntime,
        app: Any,
        fields: dict[str, str],
        basic_secret: str | None,
    ) -> str:
        """Check the secret or the signed assertion; returns the token's ``appidacr``."""
        assertion = fields.get("client_assertion")
        secret = fields.get("client_secret") or basic_secret
        if assertion:
            if fields.get("client_assertion_type") != ASSERTION_TYPE:
                raise aaderrors.malformed_assertion(request)
            audiences = self._token_endpoints(request, tenant)
            return verify_client_assertion(request, app, assertion, app.config.client_id, audiences)
        if secret is None:
            raise aaderrors.credential_missing(request)
        expected = app.config.client_secret
        if expected is None or not hmac.compare_digest(secret.encode(), expected.encode()):
            raise aaderrors.bad_secret(request, app.config.client_id)
        return "1"

    def _token_endpoints(self, request: web.Request, tenant: TenantRuntime) -> list[str]:
        """Accepted assertion audiences: the v2 and v1 token URLs for this tenant on any loopback name."""
        port = urlsplit(self.state.base_url).port
        hosts = {urlsplit(self.state.base_url).netloc, request.host, f"localhost:{port}", f"127.0.0.1:{port}"}
        names = {tenant.tenant_id, tenant.domain, request.match_info["tenant"].lower()}
        return [
            f"https://{host}/{name}/{path}"
            for host in hosts
            for name in names
            for path in ("oauth2/v2.0/token", "oauth2/token")
        ]

    def _resource(self, request: web.Request, tenant: TenantRuntime, fields: dict[str, str], *, v1: bool) -> str:
        if v1:
            raw = fields.get("resource")
            if not raw:
                raise aaderrors.missing_parameter(request, "resource")
            resource = canonical_resource(raw)
            if resource is None:
                raise aaderrors.resource_not_found(request, raw, tenant.tenant_id)
            return resource
        scope = fields.get("scope")
        if not scope:
            raise aaderrors.missing_parameter(request, "scope")
        wanted = [s for s in scope.split() if s.lower() not in _IGNORED_SCOPES]
        if len(wanted) != 1 or not wanted[0].endswith("/.default"):
            raise aaderrors.invalid_scope(request, scope)
        identifier = wanted[0][: -len("/.default")]
        resource = canonical_resource(identifier)
        if resource is None:
            raise aaderrors.resource_not_found(request, identifier, tenant.tenant_id)
        return resource


def _basic_credentials(request: web.Request) -> tuple[str | None, str | None]:
    """``client_secret_basic``: RFC 6749 form-encoded id:secret in an Authorization header."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None, None
    return unquote_plus(client_id), unquote_plus(secret)


def _openid_document(base: str, issuer: str, version: str, tenant_id: str) -> dict[str, Any]:
    """The tenant's OpenID configuration, pointing every endpoint at the simulator."""
    suffix = "v2.0/" if version else ""
    return {
        "token_endpoint": f"{base}/oauth2/{suffix}token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/discovery/{suffix}keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base}/openid/userinfo",
        "authorization_endpoint": f"{base}/oauth2/{suffix}authorize",
        "device_authorization_endpoint": f"{base}/oauth2/{suffix}devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/oauth2/{suffix}logout",
        "claims_supported": list(CLAIMS_SUPPORTED),
        "kerberos_endpoint": f"{base}/kerberos",
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
        "tenant_id": tenant_id,
    }

