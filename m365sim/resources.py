"""The Microsoft resources (token audiences) the simulator knows, and their app roles.

Tokens carry the REAL resource URIs so the product's scope strings are tested exactly as
they will be sent to Entra in production.
"""

from __future__ import annotations

MANAGE_COMMERCIAL = "https://manage.office.com"
MANAGE_GCC = "https://manage-gcc.office.com"
MANAGE_GCC_HIGH = "https://manage.office365.us"
MANAGE_DOD = "https://manage.protection.apps.mil"
GRAPH = "https://graph.microsoft.com"
EXCHANGE = "https://outlook.office365.com"
KEY_VAULT = "https://vault.azure.net"

MANAGEMENT_RESOURCES = (MANAGE_COMMERCIAL, MANAGE_GCC, MANAGE_GCC_HIGH, MANAGE_DOD)

ROLE_ACTIVITY_FEED = "ActivityFeed.Read"
ROLE_ACTIVITY_FEED_DLP = "ActivityFeed.ReadDlp"
ROLE_SERVICE_HEALTH = "ServiceHealth.Read"
ROLE_MESSAGE_TRACE = "ExchangeMessageTrace.Read.All"
ROLE_RWS = "ReportingWebService.Read.All"

# Application permissions each resource can grant (what "the app holds all roles" means).
RESOURCE_ROLES: dict[str, tuple[str, ...]] = {
    **{r: (ROLE_ACTIVITY_FEED, ROLE_ACTIVITY_FEED_DLP, ROLE_SERVICE_HEALTH) for r in MANAGEMENT_RESOURCES},
    GRAPH: (ROLE_MESSAGE_TRACE,),
    EXCHANGE: (ROLE_RWS,),
    KEY_VAULT: (),
}

# First-party application IDs, accepted in scopes as "<appId>/.default".
RESOURCE_APP_IDS: dict[str, str] = {
    "c5393580-f805-4401-95e8-94b7a6ef2fc2": MANAGE_COMMERCIAL,
    "00000003-0000-0000-c000-000000000000": GRAPH,
    "00000002-0000-0ff1-ce00-000000000000": EXCHANGE,
    "cfa8b339-82a2-471a-a3c9-0fc0be7a4093": KEY_VAULT,
}

# The Exchange "Transport Data Platform" app whose service principal Graph message trace needs.
MESSAGE_TRACE_SP_APP_ID = "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"


def canonical_resource(identifier: str) -> str | None:
    """Map a requested resource identifier to a known resource URI (or None)."""
    ident = identifier.strip().rstrip("/")
    lowered = ident.lower()
    if lowered in RESOURCE_APP_IDS:
        return RESOURCE_APP_IDS[lowered]
    for known in RESOURCE_ROLES:
        if known == lowered:
            return known
    return None


def all_roles() -> dict[str, list[str]]:
    """Every role for every resource: the default app's admin-consented permissions."""
    return {resource: list(roles) for resource, roles in RESOURCE_ROLES.items() if roles}
