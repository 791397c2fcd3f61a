"""``check``: can this configuration get a token for every API it will call, in every tenant?"""

from __future__ import annotations

from dataclasses import dataclass

from .clouds import MANAGEMENT_DLP_ROLE, MANAGEMENT_ROLE, MESSAGETRACE_ROLE, REPORTING_ROLE
from .errors import O365IngestError
from .settings import Settings
from .tokens import TokenRegistry


@dataclass(frozen=True)
class CheckResult:
    tenant_id: str
    api: str
    ok: bool
    detail: str
    remedy: str | None = None


def required_apis(settings: Settings) -> list[tuple[str, str, tuple[str, ...]]]:
    """(label, token resource, roles the token must carry) for each API this configuration uses."""
    roles = [MANAGEMENT_ROLE]
    if "DLP.All" in settings.content_types:
        roles.append(MANAGEMENT_DLP_ROLE)
    apis = [("Management Activity API", settings.endpoints.management_resource, tuple(roles))]
    if settings.messagetrace_enabled:
        if settings.messagetrace_source == "graph":
            apis.append(("Microsoft Graph message trace", settings.endpoints.graph_resource, (MESSAGETRACE_ROLE,)))
        else:
            apis.append(("Reporting Web Service", settings.endpoints.reporting_resource, (REPORTING_ROLE,)))
    return apis


async def check_tokens(settings: Settings, registry: TokenRegistry) -> list[CheckResult]:
    results: list[CheckResult] = []
    for tenant in settings.tenants:
        for label, resource, roles in required_apis(settings):
            try:
                token = await registry.token(tenant, resource)
            except O365IngestError as exc:
                results.append(CheckResult(tenant.tenant_id, label, False, exc.message, exc.remedy))
                continue
            missing = [r for r in roles if r not in token.roles]
            if missing:
                results.append(CheckResult(
                    tenant.tenant_id, label, False,
                    f"token issued, but it lacks the application permission(s) {', '.join(missing)}",
                    f"Add {', '.join(missing)} (application) to the app registration and grant admin consent "
                    f"in tenant {tenant.tenant_id}."))
            else:
                shown = ", ".join(token.roles) or "none"
                results.append(CheckResult(tenant.tenant_id, label, True,
                                           f"token issued ({tenant.credential}); roles: {shown}"))
    return results
