"""Simulator configuration schema (``--config`` file and the control API share it).

Every section is a dataclass; :meth:`SimConfig.from_dict` / :meth:`TenantConfig.from_dict`
reject unknown keys with the exact JSON path so typos in test scenarios cannot silently
fall back to defaults.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from m365sim.configschema import ConfigError, build, convert, to_dict
from m365sim.dataset import CONTENT_TYPES, AuditConfig
from m365sim.resources import MANAGE_COMMERCIAL, MANAGEMENT_RESOURCES
from m365sim.tracedata import TraceConfig

THROTTLE_STATUSES = (403, 429)
RWS_PAGING_FORMS = ("__next", "odata.nextLink", "skiptoken")
RWS_DATE_STYLES = ("msdate", "iso")
SUBSCRIPTION_STATES = ("enabled", "disabled")
FAULT_KINDS = (
    "http_500",
    "http_503",
    "af50000",
    "throttle",
    "drop",
    "truncate",
    "html",
    "empty",
    "non_array",
)
FAULT_SERVICES = ("blob", "list", "subscriptions", "graph", "rws", "token", "keyvault", "msi")

DEFAULT_MI_CLIENT_ID = "6a1f3c9e-2b4d-4e8f-9a0b-7c5d3e1f2a4b"
DEFAULT_MI_HEADER = "sim-identity-header"


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def canonical_content_type(name: str) -> str:
    """Microsoft's spelling of a content type given in any letter case."""
    for known in CONTENT_TYPES:
        if known.lower() == name.lower():
            return known
    raise ConfigError(f"unknown content type {name!r}; known: {', '.join(CONTENT_TYPES)}")


def derived_object_id(namespace: str, client_id: str) -> str:
    """Stable service-principal object id for an app (tokens carry it as ``oid``)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"m365sim:{namespace}:{client_id.lower()}"))


@dataclass
class AppConfig:
    """An app registration plus its service principal in one tenant."""

    client_id: str
    client_secret: str | None = None
    certificates: list[str] = field(default_factory=list)
    roles: dict[str, list[str]] = field(default_factory=dict)
    consented: bool = True
    enabled: bool = True
    display_name: str = "o365ingest"
    object_id: str | None = None

    def __post_init__(self) -> None:
        if not _is_guid(self.client_id):
            raise ConfigError(f"client_id {self.client_id!r} is not a GUID")
        if self.object_id is None:
            self.object_id = derived_object_id("sp", self.client_id)


@dataclass
class TenantConfig:
    """One Microsoft 365 tenant: apps, audit/trace data and per-API behaviour switches."""

    tenant_id: str
    apps: list[AppConfig] = field(default_factory=list)
    audit_enabled: bool = True
    subscriptions: dict[str, str] = field(default_factory=dict)
    audit: AuditConfig = field(default_factory=AuditConfig)
    messagetrace: TraceConfig = field(default_factory=TraceConfig)
    messagetrace_sp_provisioned: bool = True
    request_budget_per_minute: int = 2000
    request_budget_window_seconds: float = 60.0
    throttle_status: int = 403
    page_size: int = 100
    next_page_header: str = "NextPageUri"
    graph_quota_per_5min: int = 100
    graph_quota_window_seconds: float = 300.0
    rws_paging: str = "__next"
    rws_date_style: str = "msdate"
    rws_page_size: int = 2000
    display_name: str = "Contoso"
    management_resource: str = MANAGE_COMMERCIAL

    def __post_init__(self) -> None:
        if not _is_guid(self.tenant_id):
            raise ConfigError(f"tenant_id {self.tenant_id!r} is not a GUID")
        self.tenant_id = self.tenant_id.lower()
        self.validate()

    def validate(self) -> None:
        """Check the enumerated/limited fields (also after a PATCH)."""
        if self.throttle_status not in THROTTLE_STATUSES:
            raise ConfigError(f"throttle_status must be one of {THROTTLE_STATUSES}")
        if self.rws_paging not in RWS_PAGING_FORMS:
            raise ConfigError(f"rws_paging must be one of {RWS_PAGING_FORMS}")
        if self.rws_date_style not in RWS_DATE_STYLES:
            raise ConfigError(f"rws_date_style must be one of {RWS_DATE_STYLES}")
        for name in ("request_budget_per_minute", "page_size", "graph_quota_per_5min", "rws_page_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.request_budget_window_seconds <= 0 or self.graph_quota_window_seconds <= 0:
            raise ConfigError("request_budget_window_seconds/graph_quota_window_seconds must be > 0")
        if self.management_resource not in MANAGEMENT_RESOURCES:
            raise ConfigError(f"management_resource must be one of {MANAGEMENT_RESOURCES}")
        if self.next_page_header.lower() != "nextpageuri":
            raise ConfigError("next_page_header must be a casing of 'NextPageUri'")
        for ct, state in self.subscriptions.items():
            if state not in SUBSCRIPTION_STATES:
                raise ConfigError(f"subscriptions.{ct} must be one of {SUBSCRIPTION_STATES}")
        self.subscriptions = {canonical_content_type(ct): state for ct, state in self.subscriptions.items()}
        seen: set[str] = set()
        for app in self.apps:
            if app.client_id.lower() in seen:
                raise ConfigError(f"duplicate app client_id {app.client_id}")
            seen.add(app.client_id.lower())

    @classmethod
    def from_dict(cls, data: Any, path: str = "tenant") -> TenantConfig:
        return build(cls, data, path)


@dataclass
class SecretConfig:
    """A Key Vault secret's current value."""

    value: str
    contentType: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    enabled: bool = True


@dataclass
class KeyVaultConfig:
    """The single simulated vault: secrets and who may read them (None = everyone)."""

    secrets: dict[str, SecretConfig] = field(default_factory=dict)
    readers: list[str] | None = None
    tenant_id: str | None = None


@dataclass
class ManagedIdentityConfig:
    """The App Service managed identity the Function App would run as."""

    client_id: str = DEFAULT_MI_CLIENT_ID
    header: str = DEFAULT_MI_HEADER
    object_id: str | None = None

    def __post_init__(self) -> None:
        if not _is_guid(self.client_id):
            raise ConfigError(f"managed_identity.client_id {self.client_id!r} is not a GUID")
        if self.object_id is None:
            self.object_id = derived_object_id("mi", self.client_id)


@dataclass
class FaultRates:
    """Probability per request of each injected fault kind."""

    http_500: float = 0.0
    http_503: float = 0.0
    af50000: float = 0.0
    throttle: float = 0.0
    drop: float = 0.0
    truncate: float = 0.0
    html: float = 0.0
    empty: float = 0.0
    non_array: float = 0.0

    def __post_init__(self) -> None:
        total = 0.0
        for kind in FAULT_KINDS:
            rate = getattr(self, kind)
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"faults.rates.{kind} must be within [0, 1]")
            total += rate
        if total > 1.0:
            raise ConfigError("faults.rates must add up to at most 1")


@dataclass
class FaultConfig:
    """Random faults (seeded) and latency applied to the listed services."""

    latency_ms: int = 0
    jitter_ms: int = 0
    rates: FaultRates = field(default_factory=FaultRates)
    apply_to: list[str] = field(default_factory=lambda: ["blob", "list", "graph", "rws", "token", "keyvault"])

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ConfigError("faults.latency_ms/jitter_ms must be >= 0")
        bad = [s for s in self.apply_to if s not in FAULT_SERVICES]
        if bad:
            raise ConfigError(f"faults.apply_to: unknown service(s) {bad}; allowed: {FAULT_SERVICES}")

    @classmethod
    def from_dict(cls, data: Any, path: str = "faults") -> FaultConfig:
        return build(cls, data, path)


@dataclass
class SimConfig:
    """Top-level simulator configuration."""

    seed: int = 1
    token_lifetime_seconds: int = 3599
    clock_skew_seconds: float = 0.0
    anchor: str | None = None
    tenants: list[TenantConfig] = field(default_factory=list)
    keyvault: KeyVaultConfig = field(default_factory=KeyVaultConfig)
    managed_identity: ManagedIdentityConfig = field(default_factory=ManagedIdentityConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        if self.token_lifetime_seconds < 1:
            raise ConfigError("token_lifetime_seconds must be >= 1")
        if self.anchor is not None:
            parse_anchor(self.anchor)
        ids = [t.tenant_id for t in self.tenants]
        if len(ids) != len(set(ids)):
            raise ConfigError("duplicate tenant_id in tenants")

    @classmethod
    def from_dict(cls, data: Any, path: str = "config") -> SimConfig:
        return build(cls, data, path)

    def anchor_time(self, default: datetime) -> datetime:
        """The dataset anchor: configured instant or ``default`` (server start)."""
        return parse_anchor(self.anchor) if self.anchor else default

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = to_dict(self)
        return result


def parse_anchor(text: str) -> datetime:
    """ISO-8601 instant; naive values are UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"anchor {text!r} is not an ISO-8601 datetime") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


__all__ = [
    "AppConfig",
    "ConfigError",
    "FaultConfig",
    "FaultRates",
    "KeyVaultConfig",
    "ManagedIdentityConfig",
    "SecretConfig",
    "SimConfig",
    "TenantConfig",
    "convert",
    "parse_anchor",
]
