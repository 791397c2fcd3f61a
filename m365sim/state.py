"""Runtime state of the simulator: tenants, their datasets and mutable API state.

Config dataclasses describe what a tenant *is*; this module holds what happens to it
while the simulator runs (subscriptions started, budgets consumed, blobs expired).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from m365sim.clock import DateHeader, utcnow
from m365sim.config import AppConfig, ConfigError, ManagedIdentityConfig, SecretConfig, SimConfig, TenantConfig
from m365sim.configschema import to_dict
from m365sim.dataset import AuditDataset, tenant_domain
from m365sim.faults import FaultEngine
from m365sim.ledger import Ledger
from m365sim.pki import RegisteredCertificate
from m365sim.throttle import SlidingWindow
from m365sim.tokens import TokenService
from m365sim.tracedata import TraceDataset

ZERO_GUID = "00000000-0000-0000-0000-000000000000"


@dataclass
class Subscription:
    """One content type's subscription as ``subscriptions/list`` shows it."""

    status: str
    webhook: dict[str, Any] | None = None
    started_at: float | None = None


class AppRuntime:
    """An app registration with its certificates indexed by thumbprint (both SHA forms)."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.by_x5t: dict[str, RegisteredCertificate] = {}
        self.by_x5t_s256: dict[str, RegisteredCertificate] = {}
        for pem in config.certificates:
            try:
                cert = RegisteredCertificate.from_pem(pem)
            except ValueError as exc:
                raise ConfigError(f"app {config.client_id}: certificate is not a PEM X.509 certificate") from exc
            self.by_x5t[cert.x5t] = cert
            self.by_x5t_s256[cert.x5t_s256] = cert


class TenantRuntime:
    """A tenant plus its datasets and the mutable state of its APIs."""

    def __init__(self, config: TenantConfig, seed: int, anchor: datetime, started_at: datetime) -> None:
        self.config = config
        self.tenant_id = config.tenant_id
        self.domain = tenant_domain(config.tenant_id)
        self.audit = AuditDataset(config.tenant_id, config.audit, seed, anchor, started_at)
        self.traces = TraceDataset(config.tenant_id, config.messagetrace, seed, anchor, started_at)
        self.subscriptions: dict[str, Subscription] = {
            ct: Subscription(status=status) for ct, status in config.subscriptions.items()
        }
        self.budgets: dict[str, SlidingWindow] = {}
        self.graph_quota = SlidingWindow(config.graph_quota_per_5min, config.graph_quota_window_seconds)
        self.apps: dict[str, AppRuntime] = {}
        self.content_uri_base: dict[str, str] = {}
        self.expired_at: dict[str, datetime] = {}
        self.listing_items: dict[str, bytes] = {}
        self.trace_index: dict[tuple[str, str], dict[str, Any]] | None = None
        self.reload_apps()

    def reload_apps(self) -> None:
        self.apps = {app.client_id.lower(): AppRuntime(app) for app in self.config.apps}

    def app(self, client_id: str) -> AppRuntime | None:
        return self.apps.get(client_id.lower())

    def budget(self, publisher: str) -> SlidingWindow:
        window = self.budgets.get(publisher)
        if window is None:
            window = self.budgets[publisher] = SlidingWindow(
                self.config.request_budget_per_minute, self.config.request_budget_window_seconds
            )
        return window

    def apply_limits(self) -> None:
        """Propagate changed limits (after a PATCH) to the live counters."""
        for window in self.budgets.values():
            window.limit = self.config.request_budget_per_minute
            window.window = self.config.request_budget_window_seconds
        self.graph_quota.limit = self.config.graph_quota_per_5min
        self.graph_quota.window = self.config.graph_quota_window_seconds
        self.listing_items.clear()

    def summary(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "tenant_id": self.tenant_id,
            "domain": self.domain,
            "audit_enabled": self.config.audit_enabled,
            "subscriptions": {
                ct: {"status": s.status, "webhook": s.webhook, "started_at": s.started_at}
                for ct, s in self.subscriptions.items()
            },
            "blobs": len(self.audit.blobs),
            "trace_rows": self.traces.row_count,
            "budget_used": {pub: w.used(now) for pub, w in self.budgets.items()},
            "graph_quota_used": self.graph_quota.used(now),
            "apps": [app.client_id for app in self.config.apps],
        }


@dataclass
class VaultSecretVersion:
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str]
    enabled: bool
    created: int


@dataclass
class VaultState:
    """The single simulated Key Vault: secret versions and the reader allow-list."""

    tenant_id: str
    readers: list[str] | None = None
    secrets: dict[str, list[VaultSecretVersion]] = field(default_factory=dict)

    def put(self, name: str, secret: SecretConfig) -> VaultSecretVersion:
        version = VaultSecretVersion(
            version=secrets.token_hex(16),
            value=secret.value,
            content_type=secret.contentType,
            tags=dict(secret.tags),
            enabled=secret.enabled,
            created=int(time.time()),
        )
        self.secrets.setdefault(name.lower(), []).append(version)
        return version

    def get(self, name: str, version: str | None) -> VaultSecretVersion | None:
        versions = self.secrets.get(name.lower())
        if not versions:
            return None
        if not version:
            return versions[-1]
        return next((v for v in versions if v.version == version.lower()), None)

    def may_read(self, claims: dict[str, Any]) -> bool:
        if self.readers is None:
            return True
        allowed = {r.lower() for r in self.readers}
        return str(claims.get("appid", "")).lower() in allowed or str(claims.get("oid", "")).lower() in allowed


class SimState:
    """Everything the request handlers share."""

    def __init__(self, config: SimConfig, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self.started_at = utcnow()
        self.anchor = config.anchor_time(self.started_at)
        self.base_url = ""
        self.tokens = TokenService(state_dir, config.token_lifetime_seconds)
        self.ledger = Ledger()
        self.faults = FaultEngine(config.faults, config.seed)
        self.date = DateHeader(config.clock_skew_seconds)
        self.managed_identity: ManagedIdentityConfig = config.managed_identity
        self.tenants: dict[str, TenantRuntime] = {}
        self._by_domain: dict[str, str] = {}
        # The vault (and the managed identity) live in the configured tenant, else the first tenant,
        # which may only be added at runtime (POST /_sim/tenants).
        self._vault_tenant_fixed = config.keyvault.tenant_id is not None
        self.vault = VaultState(
            tenant_id=(config.keyvault.tenant_id or ZERO_GUID).lower(), readers=config.keyvault.readers
        )
        for tenant in config.tenants:
            self.add_tenant(tenant, now=self.started_at)
        for name, secret in config.keyvault.secrets.items():
            self.vault.put(name, secret)

    def add_tenant(self, config: TenantConfig, now: datetime | None = None) -> TenantRuntime:
        if config.tenant_id in self.tenants:
            raise ConfigError(f"tenant {config.tenant_id} already exists")
        started = now or utcnow()
        anchor = self.config.anchor_time(started)
        try:
            runtime = TenantRuntime(config, self.config.seed, anchor, started)
        except ValueError as exc:  # dataset parameters out of range
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"tenant {config.tenant_id}: {exc}") from exc
        self.tenants[config.tenant_id] = runtime
        self._by_domain[runtime.domain] = config.tenant_id
        if not self._vault_tenant_fixed and self.vault.tenant_id == ZERO_GUID:
            self.vault.tenant_id = config.tenant_id
        return runtime

    def tenant(self, ident: str | None) -> TenantRuntime | None:
        """Tenant by GUID or by its ``*.onmicrosoft.com`` domain (as Entra accepts both)."""
        if not ident:
            return None
        key = ident.lower()
        runtime = self.tenants.get(key)
        if runtime is None and key in self._by_domain:
            runtime = self.tenants.get(self._by_domain[key])
        return runtime

    def summary(self) -> dict[str, Any]:
        return {
            "url": self.base_url,
            "started_at": self.started_at.isoformat(),
            "anchor": self.anchor.isoformat(),
            "tenants": {tid: t.summary() for tid, t in self.tenants.items()},
            "keyvault": {
                "tenant_id": self.vault.tenant_id,
                "readers": self.vault.readers,
                "secrets": {name: len(v) for name, v in self.vault.secrets.items()},
            },
            "managed_identity": {
                "client_id": self.managed_identity.client_id,
                "object_id": self.managed_identity.object_id,
            },
            "faults": {
                "config": to_dict(self.faults.config),
                "scripted": [{"kind": f.kind, "count": f.count, "match": f.match} for f in self.faults.script],
            },
            "ledger": {"entries": len(self.ledger), "last_seq": self.ledger.last_seq, "trimmed": self.ledger.trimmed},
        }
