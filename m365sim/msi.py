"""App Service managed-identity endpoint (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``).

azure-identity's ``ManagedIdentityCredential`` uses this protocol when both environment
variables are set: ``GET {endpoint}?api-version=2019-08-01&resource=...`` with header
``X-IDENTITY-HEADER``; the answer carries ``expires_on`` as epoch seconds in a string.
"""

from __future__ import annotations

import hmac
import time

from aiohttp import web

from m365sim.httputil import ErrorResponse, json_response, service
from m365sim.resources import canonical_resource
from m365sim.state import SimState
from m365sim.tokens import TokenGrant

API_VERSION = "2019-08-01"


def msi_error(status: int, message: str, code: str) -> ErrorResponse:
    return ErrorResponse(json_response({"statusCode": status, "message": message}, status=status), code)


class ManagedIdentityApi:
    """``GET /msi/token``."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/msi/token", self.token)]

    @service("msi")
    async def token(self, request: web.Request) -> web.Response:
        identity = self.state.managed_identity
        header = request.headers.get("X-IDENTITY-HEADER")
        if header is None:
            raise msi_error(400, "The request is missing the X-IDENTITY-HEADER header.", "MissingIdentityHeader")
        if not hmac.compare_digest(header.encode(), identity.header.encode()):
            raise msi_error(401, "Unauthorized: the X-IDENTITY-HEADER value is not valid.", "BadIdentityHeader")
        if request.query.get("api-version") != API_VERSION:
            raise msi_error(400, f"api-version must be {API_VERSION}.", "BadApiVersion")
        raw = request.query.get("resource")
        if not raw:
            raise msi_error(400, "Required query parameter 'resource' is missing.", "MissingResource")
        selectors = {
            k: v.lower()
            for k, v in request.query.items()
            if k in ("client_id", "object_id", "principal_id", "mi_res_id")
        }
        known = {str(identity.client_id).lower(), str(identity.object_id).lower()}
        if any(value not in known for value in selectors.values()):
            raise msi_error(
                400, "No Managed Identity found for specified ClientId/ResourceId/PrincipalId.", "UnknownIdentity"
            )
        resource = canonical_resource(raw.removesuffix("/.default"))
        if resource is None:
            raise msi_error(
                400,
                f"AADSTS500011: The resource principal named {raw} was not found in the tenant named "
                f"{self.state.vault.tenant_id}.",
                "AADSTS500011",
            )
        grant = TokenGrant(
            tenant_id=self.state.vault.tenant_id,
            app_id=identity.client_id,
            object_id=str(identity.object_id),
            resource=resource,
            roles=None,
            appidacr="2",
            display_name="func-o365ingest",
        )
        token, lifetime = self.state.tokens.issue(grant)
        return json_response(
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + lifetime),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": identity.client_id,
            }
        )
