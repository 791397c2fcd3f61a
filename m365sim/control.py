"""Control API under ``/_sim/`` (loopback only, no auth): scenario changes and assertions.

Tests use it to read the ledger and ground truth, flip tenant switches, inject blobs,
expire content, script faults and edit Key Vault secrets while the simulator runs.
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from m365sim.clock import utcnow
from m365sim.config import (
    SUBSCRIPTION_STATES,
    AppConfig,
    ConfigError,
    FaultConfig,
    SecretConfig,
    TenantConfig,
    canonical_content_type,
    derived_object_id,
    parse_anchor,
)
from m365sim.configschema import build, convert, to_dict
from m365sim.dataset import format_listing_time
from m365sim.faults import ScriptedFault
from m365sim.httputil import json_response, raw_json
from m365sim.resources import canonical_resource
from m365sim.state import AppRuntime, SimState, Subscription, TenantRuntime
from m365sim.tokens import TokenGrant

LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
PATCHABLE = frozenset(
    {
        "audit_enabled",
        "subscriptions",
        "apps",
        "messagetrace_sp_provisioned",
        "request_budget_per_minute",
        "request_budget_window_seconds",
        "throttle_status",
        "page_size",
        "next_page_header",
        "graph_quota_per_5min",
        "graph_quota_window_seconds",
        "rws_paging",
        "rws_date_style",
        "rws_page_size",
        "display_name",
        "management_resource",
    }
)


def _bad(message: str, status: int = 400) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 404: web.HTTPNotFound, 409: web.HTTPConflict}.get(status, web.HTTPBadRequest)
    return cls(body=orjson.dumps({"error": message}), content_type="application/json")


async def _json(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise _bad(f"request body is not JSON: {exc}") from None


def _time(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise _bad(f"{name} must be an ISO-8601 string")
    try:
        return parse_anchor(value)
    except ConfigError as exc:
        raise _bad(f"{name}: {exc}") from None


class ControlApi:
    """Handlers for ``/_sim/...``."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_sim/ledger", self.get_ledger),
            web.delete("/_sim/ledger", self.clear_ledger),
            web.get("/_sim/state", self.get_state),
            web.get("/_sim/truth/{tenant}", self.truth),
            web.put("/_sim/faults", self.put_faults),
            web.post("/_sim/faults/next", self.script_fault),
            web.post("/_sim/tenants", self.add_tenant),
            web.patch("/_sim/tenants/{tenant}", self.patch_tenant),
            web.post("/_sim/tenants/{tenant}/blobs", self.add_blob),
            web.post("/_sim/tenants/{tenant}/expire", self.expire),
            web.put("/_sim/keyvault/secrets/{name}", self.put_secret),
            web.patch("/_sim/keyvault", self.patch_keyvault),
            web.post("/_sim/tokens", self.mint_token),
        ]

    @web.middleware
    async def loopback_only(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Refuse control calls that do not come from this machine."""
        if request.path.startswith("/_sim/") and request.remote not in LOOPBACK:
            raise web.HTTPForbidden(text="the control API is loopback-only")
        response: web.StreamResponse = await handler(request)
        return response

    def _tenant(self, request: web.Request) -> TenantRuntime:
        tenant = self.state.tenant(request.match_info["tenant"])
        if tenant is None:
            raise _bad(f"unknown tenant {request.match_info['tenant']}", 404)
        return tenant

    # ------------------------------------------------------------------ observation

    async def get_ledger(self, request: web.Request) -> web.Response:
        raw_since = request.query.get("since", "0")
        if not raw_since.isdigit():
            raise _bad("since must be a non-negative integer")
        entries = self.state.ledger.since(int(raw_since), request.query.get("service"))
        return json_response({"entries": entries, "last_seq": self.state.ledger.last_seq})

    async def clear_ledger(self, request: web.Request) -> web.Response:
        self.state.ledger.clear()
        return json_response({"last_seq": self.state.ledger.last_seq})

    async def get_state(self, request: web.Request) -> web.Response:
        return json_response(self.state.summary())

    async def truth(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        return raw_json(orjson.dumps({"audit": tenant.audit.truth(), "messagetrace": tenant.traces.truth()}))

    # ------------------------------------------------------------------ faults

    async def put_faults(self, request: web.Request) -> web.Response:
        """Replace the random-fault configuration and clear the script queue."""
        try:
            config = FaultConfig.from_dict(await _json(request), "faults")
        except ConfigError as exc:
            raise _bad(str(exc)) from None
        self.state.faults.configure(config)
        self.state.faults.script.clear()
        return json_response(to_dict(config))

    async def script_fault(self, request: web.Request) -> web.Response:
        try:
            fault = ScriptedFault.from_dict(await _json(request))
        except ConfigError as exc:
            raise _bad(str(exc)) from None
        self.state.faults.push(fault)
        return json_response({"queued": len(self.state.faults.script)})

    # ------------------------------------------------------------------ tenants

    async def add_tenant(self, request: web.Request) -> web.Response:
        try:
            config = TenantConfig.from_dict(await _json(request), "tenant")
            tenant = self.state.add_tenant(config)
        except ConfigError as exc:
            raise _bad(str(exc), 409 if "already exists" in str(exc) else 400) from None
        return json_response(tenant.summary(), status=201)

    async def patch_tenant(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        changes = await _json(request)
        if not isinstance(changes, dict):
            raise _bad("expected a JSON object")
        unknown = sorted(set(changes) - PATCHABLE)
        if unknown:
            raise _bad(f"cannot patch {unknown}; patchable: {sorted(PATCHABLE)}")
        try:
            _apply_patch(tenant, changes)
        except ConfigError as exc:
            raise _bad(str(exc)) from None
        return json_response(tenant.summary())

    async def add_blob(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        body = await _json(request)
        if not isinstance(body, dict):
            raise _bad("expected a JSON object")
        unknown = set(body) - {"contentType", "records", "contentCreated", "visibleAt", "contentUriBase"}
        if unknown:
            raise _bad(f"unknown key(s) {sorted(unknown)}")
        records = body.get("records")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise _bad("records must be a list of objects")
        created = _time(body["contentCreated"], "contentCreated") if "contentCreated" in body else utcnow()
        visible = _time(body["visibleAt"], "visibleAt") if "visibleAt" in body else None
        try:
            meta = tenant.audit.add_blob(str(body.get("contentType")), records, created, visible)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        base = body.get("contentUriBase")
        if isinstance(base, str) and base:
            tenant.content_uri_base[meta.content_id] = base.rstrip("/")
        return json_response(
            {
                "contentId": meta.content_id,
                "contentType": meta.content_type,
                "contentCreated": format_listing_time(meta.content_created),
                "visibleAt": format_listing_time(meta.visible_at),
                "contentExpiration": format_listing_time(meta.content_expiration),
            },
            status=201,
        )

    async def expire(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        body = await _json(request)
        content_id = body.get("contentId") if isinstance(body, dict) else None
        if not isinstance(content_id, str) or tenant.audit.blob(content_id) is None:
            raise _bad(f"unknown contentId {content_id!r}", 404)
        tenant.expired_at[content_id] = utcnow()
        tenant.listing_items.pop(content_id, None)
        return json_response({"contentId": content_id, "expired": True})

    # ------------------------------------------------------------------ key vault, tokens

    async def put_secret(self, request: web.Request) -> web.Response:
        try:
            secret = build(SecretConfig, await _json(request), "secret")
        except ConfigError as exc:
            raise _bad(str(exc)) from None
        version = self.state.vault.put(request.match_info["name"], secret)
        return json_response({"name": request.match_info["name"], "version": version.version})

    async def patch_keyvault(self, request: web.Request) -> web.Response:
        body = await _json(request)
        if not isinstance(body, dict) or set(body) - {"readers"}:
            raise _bad("only 'readers' can be patched")
        readers = body.get("readers")
        if readers is not None and (not isinstance(readers, list) or not all(isinstance(r, str) for r in readers)):
            raise _bad("readers must be null or a list of strings")
        self.state.vault.readers = readers
        return json_response({"readers": readers})

    async def mint_token(self, request: web.Request) -> web.Response:
        """Issue an arbitrary access token (expired, foreign tenant, missing roles...) for tests."""
        body = await _json(request)
        if not isinstance(body, dict):
            raise _bad("expected a JSON object")
        unknown = set(body) - {"tenant_id", "client_id", "resource", "roles", "lifetime_seconds"}
        if unknown:
            raise _bad(f"unknown key(s) {sorted(unknown)}")
        resource = canonical_resource(str(body.get("resource", "")))
        tenant_id = str(body.get("tenant_id", "")).lower()
        if resource is None or not tenant_id:
            raise _bad("tenant_id and a known resource are required")
        client_id = str(body.get("client_id") or "11111111-1111-1111-1111-111111111111")
        roles = body.get("roles")
        grant = TokenGrant(
            tenant_id=tenant_id,
            app_id=client_id,
            object_id=derived_object_id("sp", client_id),
            resource=resource,
            roles=tuple(roles) if isinstance(roles, list) else None,
        )
        lifetime = body.get("lifetime_seconds")
        token, seconds = self.state.tokens.issue(
            grant, lifetime_seconds=lifetime if isinstance(lifetime, int) else None
        )
        return json_response({"access_token": token, "expires_in": seconds})


def _apply_patch(tenant: TenantRuntime, changes: dict[str, Any]) -> None:
    """Apply a PATCH to a live tenant; validates everything before changing anything."""
    hints = typing.get_type_hints(TenantConfig)
    updates: dict[str, Any] = {}
    for key, value in changes.items():
        if key in ("subscriptions", "apps"):
            continue
        updates[key] = convert(hints[key], value, f"tenant.{key}")
    apps = _merge_apps(tenant.config.apps, changes["apps"]) if "apps" in changes else tenant.config.apps
    subs = changes.get("subscriptions") or {}
    if not isinstance(subs, dict):
        raise ConfigError("subscriptions must be an object")
    for ct, status in subs.items():
        if status is not None and status not in SUBSCRIPTION_STATES:
            raise ConfigError(f"subscriptions.{ct} must be one of {SUBSCRIPTION_STATES} or null")
    subs = {canonical_content_type(ct): status for ct, status in subs.items()}
    candidate = dataclasses.replace(tenant.config, **updates, apps=apps)
    runtimes = {app.client_id.lower(): AppRuntime(app) for app in candidate.apps}  # validates certificates
    tenant.config = candidate
    tenant.apps = runtimes
    for ct, status in subs.items():
        if status is None:
            tenant.subscriptions.pop(ct, None)
            candidate.subscriptions.pop(ct, None)
        else:
            tenant.subscriptions.setdefault(ct, Subscription(status=status)).status = status
            candidate.subscriptions[ct] = status
    tenant.apply_limits()


def _merge_apps(current: list[AppConfig], entries: Any) -> list[AppConfig]:
    """Merge app entries by client_id (partial updates), appending new apps."""
    if not isinstance(entries, list):
        raise ConfigError("apps must be a list")
    merged = {app.client_id.lower(): to_dict(app) for app in current}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("client_id"), str):
            raise ConfigError(f"apps[{i}] needs a client_id")
        key = entry["client_id"].lower()
        merged[key] = {**merged.get(key, {}), **entry}
    return [build(AppConfig, data, f"apps[{i}]") for i, data in enumerate(merged.values())]
