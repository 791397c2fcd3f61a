"""Azure Key Vault secrets data plane, with the real challenge-based authentication.

``azure.keyvault.secrets.SecretClient`` first sends an unauthenticated request, reads the
``WWW-Authenticate`` challenge (authority + resource), gets a token for that resource and
retries. The challenge's authority is ``{sim url}/{tenant}``; because the vault runs on a
loopback address rather than ``*.vault.azure.net``, clients must be created with
``verify_challenge_resource=False`` (the SDK otherwise insists the resource's domain
matches the vault's).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from m365sim.auth import authenticate
from m365sim.config import SecretConfig
from m365sim.httputil import ErrorResponse, json_response, query_param, service
from m365sim.resources import KEY_VAULT
from m365sim.state import SimState, VaultSecretVersion
from m365sim.tokens import InvalidToken

SERVICE_VERSION = "1.9.2164.1"
NOT_FOUND_HELP = (
    "If you recently deleted this secret you may be able to recover it using the correct recovery command. "
    "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)
_TOKEN_MESSAGES = {
    "missing": "AKV10000: Request is missing a Bearer or PoP token.",
    "malformed": "AKV10000: Request is missing a Bearer or PoP token.",
    "signature": "AKV10031: Invalid token signature.",
    "expired": "AKV10021: Invalid token lifetime. The token is expired.",
    "not_yet_valid": "AKV10021: Invalid token lifetime. The token is not yet valid.",
}


def kv_error(status: int, code: str, message: str, inner: str | None = None) -> ErrorResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner is not None:
        error["innerError"] = {"code": inner}
    return ErrorResponse(json_response({"error": error}, status=status), inner or code)


class KeyVaultApi:
    """``/secrets/{name}[/{version}]`` of the single simulated vault."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/secrets/{name}", self.get_secret),
            web.get("/secrets/{name}/", self.get_secret),
            web.get("/secrets/{name}/{version}", self.get_secret),
            web.put("/secrets/{name}", self.set_secret),
        ]

    def _challenge(self) -> str:
        return f'Bearer authorization="{self.state.base_url}/{self.state.vault.tenant_id}", resource="{KEY_VAULT}"'

    def _unauthorized(self, message: str, reason: str) -> ErrorResponse:
        error = kv_error(401, "Unauthorized", message)
        error.response.headers["WWW-Authenticate"] = self._challenge()
        error.code = f"token_{reason}"
        return error

    def _begin(self, request: web.Request) -> dict[str, Any]:
        if not query_param(request, "api-version"):
            raise kv_error(400, "BadParameter", "The request URI must contain an api-version query parameter.")
        try:
            claims = authenticate(request, self.state.tokens, (KEY_VAULT,))
        except InvalidToken as exc:
            if exc.reason == "audience":
                message = f"AKV10022: Invalid audience. Expected {KEY_VAULT}, found: {exc.detail}."
            else:
                message = _TOKEN_MESSAGES.get(exc.reason, "AKV10000: Request is missing a Bearer or PoP token.")
            raise self._unauthorized(message, exc.reason) from exc
        expected = f"https://sts.windows.net/{self.state.vault.tenant_id}/"
        if claims.get("iss") != expected:
            raise self._unauthorized(
                f"AKV10032: Invalid issuer. Expected one of {expected}, found {claims.get('iss')}.", "issuer"
            )
        return claims

    def _forbidden(self, claims: dict[str, Any], action: str, name: str) -> ErrorResponse:
        message = (
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or "
            "role definitions were changed recently, please observe propagation time.\r\n"
            f"Caller: appid={claims.get('appid')};oid={claims.get('oid')};iss={claims.get('iss')}\r\n"
            f"Action: '{action}'\r\n"
            f"Resource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-sim/providers/"
            f"microsoft.keyvault/vaults/kv-sim/secrets/{name.lower()}'\r\n"
            "Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\n"
            "Vault: kv-sim;location=westeurope\r\n"
        )
        return kv_error(403, "Forbidden", message, inner="ForbiddenByRbac")

    @service("keyvault")
    async def get_secret(self, request: web.Request) -> web.Response:
        claims = self._begin(request)
        name = request.match_info["name"]
        version = request.match_info.get("version") or None
        if not self.state.vault.may_read(claims):
            raise self._forbidden(claims, "Microsoft.KeyVault/vaults/secrets/getSecret/action", name)
        secret = self.state.vault.get(name, version)
        if secret is None:
            shown = f"{name}/{version}" if version else name
            raise kv_error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {shown} was not found in this key vault. {NOT_FOUND_HELP}",
            )
        if not secret.enabled:
            raise kv_error(
                403, "Forbidden", "Operation get is not allowed on a disabled secret.", inner="SecretDisabled"
            )
        return self._bundle(name, secret)

    @service("keyvault")
    async def set_secret(self, request: web.Request) -> web.Response:
        claims = self._begin(request)
        name = request.match_info["name"]
        if not self.state.vault.may_read(claims):
            raise self._forbidden(claims, "Microsoft.KeyVault/vaults/secrets/setSecret/action", name)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise kv_error(400, "BadParameter", "The request body is not valid JSON.") from None
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise kv_error(400, "BadParameter", "Property 'value' is required.")
        raw_attributes, raw_tags = body.get("attributes"), body.get("tags")
        attributes: dict[str, Any] = raw_attributes if isinstance(raw_attributes, dict) else {}
        tags: dict[str, Any] = raw_tags if isinstance(raw_tags, dict) else {}
        secret = self.state.vault.put(
            name,
            SecretConfig(
                value=body["value"],
                contentType=body.get("contentType"),
                tags={str(k): str(v) for k, v in tags.items()},
                enabled=bool(attributes.get("enabled", True)),
            ),
        )
        return self._bundle(name, secret)

    def _bundle(self, name: str, secret: VaultSecretVersion) -> web.Response:
        bundle: dict[str, Any] = {
            "value": secret.value,
            "id": f"{self.state.base_url}/secrets/{name}/{secret.version}",
            "attributes": {
                "enabled": secret.enabled,
                "created": secret.created,
                "updated": secret.created,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": secret.tags,
        }
        if secret.content_type is not None:
            bundle["contentType"] = secret.content_type
        response = json_response(bundle)
        response.headers["x-ms-keyvault-service-version"] = SERVICE_VERSION
        response.headers["x-ms-keyvault-region"] = "westeurope"
        return response
