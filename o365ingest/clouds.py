"""Microsoft 365 national clouds: which hosts and token resources each one uses.

The values come from Microsoft's Management Activity API reference (hosts per plan) and the
national-cloud deployment tables for Entra ID and Microsoft Graph.
"""

from __future__ import annotations

from dataclasses import dataclass

MANAGEMENT_ROLE = "ActivityFeed.Read"
MANAGEMENT_DLP_ROLE = "ActivityFeed.ReadDlp"
MESSAGETRACE_ROLE = "ExchangeMessageTrace.Read.All"
REPORTING_ROLE = "ReportingWebService.Read.All"
MESSAGETRACE_FIRST_PARTY_APP_ID = "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"


@dataclass(frozen=True)
class Cloud:
    """Endpoints of one Microsoft 365 cloud.

    ``*_resource`` is the token audience (scope = resource + ``/.default``); ``*_url`` is where
    requests go. They are equal in Azure; an endpoint override (the simulator) changes only the URL.
    """

    name: str
    login_url: str
    management_resource: str
    graph_resource: str
    reporting_resource: str
    messagetrace_available: bool

    @property
    def management_url(self) -> str:
        return self.management_resource

    @property
    def graph_url(self) -> str:
        return self.graph_resource

    @property
    def reporting_url(self) -> str:
        return "https://reports.office365.com"


CLOUDS: dict[str, Cloud] = {
    "commercial": Cloud(
        name="commercial",
        login_url="https://login.microsoftonline.com",
        management_resource="https://manage.office.com",
        graph_resource="https://graph.microsoft.com",
        reporting_resource="https://outlook.office365.com",
        messagetrace_available=True,
    ),
    # GCC uses the worldwide Entra ID and Graph endpoints; only the Management API host differs.
    "gcc": Cloud(
        name="gcc",
        login_url="https://login.microsoftonline.com",
        management_resource="https://manage-gcc.office.com",
        graph_resource="https://graph.microsoft.com",
        reporting_resource="https://outlook.office365.com",
        messagetrace_available=True,
    ),
    # Graph message trace is a global-service-only API: not in GCC High (L4) nor DoD (L5).
    "gcchigh": Cloud(
        name="gcchigh",
        login_url="https://login.microsoftonline.us",
        management_resource="https://manage.office365.us",
        graph_resource="https://graph.microsoft.us",
        reporting_resource="https://outlook.office365.us",
        messagetrace_available=False,
    ),
    "dod": Cloud(
        name="dod",
        login_url="https://login.microsoftonline.us",
        management_resource="https://manage.protection.apps.mil",
        graph_resource="https://dod-graph.microsoft.us",
        reporting_resource="https://outlook-dod.office365.us",
        messagetrace_available=False,
    ),
}

WELL_KNOWN_LOGIN_HOSTS = frozenset(
    {"login.microsoftonline.com", "login.microsoftonline.us", "login.windows.net", "login.chinacloudapi.cn"}
)
