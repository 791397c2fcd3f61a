"""Assemble the aiohttp application: every service on one port, routed by path like Microsoft's hosts."""

from __future__ import annotations

from aiohttp import web

from m365sim import aaderrors, activity, graph
from m365sim.activity import ActivityApi
from m365sim.control import ControlApi
from m365sim.entra import EntraApi
from m365sim.faults import FaultDecision, generic_fault_response
from m365sim.graph import GraphApi
from m365sim.httputil import ErrorResponse, json_response
from m365sim.keyvault import KeyVaultApi
from m365sim.middleware import FaultResponder, build_middleware, build_response_headers
from m365sim.msi import ManagedIdentityApi
from m365sim.rws import ReportingApi
from m365sim.state import SimState

STATE_KEY = web.AppKey("sim_state", SimState)
MANAGEMENT_SERVICES = frozenset({"list", "blob", "subscriptions"})


def fault_responder(state: SimState) -> FaultResponder:
    """Render a fault decision in the shape the affected service would really use."""

    def respond(request: web.Request, service: str, decision: FaultDecision) -> web.StreamResponse | None:
        kind = decision.kind
        if kind == "throttle":
            return _throttle(state, request, service).response
        if kind == "af50000" and service in MANAGEMENT_SERVICES:
            return activity.internal_error().response
        if kind == "af50000":
            kind = "http_500"
        return generic_fault_response(kind, decision.status)

    return respond


def _throttle(state: SimState, request: web.Request, service: str) -> ErrorResponse:
    if service in MANAGEMENT_SERVICES:
        tenant = state.tenants.get(request.match_info.get("tenant", "").lower())
        name = getattr(request.match_info.handler, "sim_method", "Unknown")
        return activity.throttled(tenant, request, name)
    if service in ("graph", "rws"):
        return graph.throttled(request, 1)
    if service == "token":
        return aaderrors.throttled(request)
    body = {
        "error": {
            "code": "Throttled",
            "message": "Request was not processed because too many requests were received. Reason: "
            "VaultRequestTypeLimitReached",
        }
    }
    return ErrorResponse(json_response(body, status=429, headers={"Retry-After": "1"}), "Throttled")


def build_app(state: SimState) -> web.Application:
    control = ControlApi(state)
    app = web.Application(
        middlewares=[control.loopback_only, build_middleware(state, fault_responder(state))],
        client_max_size=64 * 1024 * 1024,
    )
    app[STATE_KEY] = state
    app.on_response_prepare.append(build_response_headers(state))
    # Fixed prefixes first: tenant GUIDs cannot collide with them, but "common" etc. must win.
    app.add_routes(control.routes())
    app.add_routes(ManagedIdentityApi(state).routes())
    app.add_routes(KeyVaultApi(state).routes())
    app.add_routes(ActivityApi(state).routes())
    app.add_routes(GraphApi(state).routes())
    app.add_routes(ReportingApi(state).routes())
    app.add_routes(EntraApi(state).routes())
    return app
