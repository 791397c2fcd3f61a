"""The request pipeline around every simulated service: ids, faults, latency and the ledger."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from m365sim.faults import FaultDecision, drop_connection, truncated
from m365sim.httputil import (
    CLIENT_REQUEST_ID,
    ERROR_CODE,
    REQUEST_ID,
    SERVICE,
    ErrorResponse,
    Handler,
    bearer_token,
    query_param,
)
from m365sim.ledger import scrub_query
from m365sim.state import SimState
from m365sim.tokens import InvalidToken

TENANT = "sim_tenant"
CONTROL_PREFIX = "/_sim/"

FaultResponder = Callable[[web.Request, str, FaultDecision], web.StreamResponse | None]


def _tenant_hint(request: web.Request, state: SimState) -> str | None:
    """Tenant for ledger/fault matching: from the URL, else from a (cached) valid token."""
    tenant = request.match_info.get("tenant")
    if tenant:
        return tenant.lower()
    token = bearer_token(request)
    if token is not None:
        try:
            return str(state.tokens.validate(token).get("tid", "")).lower() or None
        except InvalidToken:
            return None
    return None


def build_middleware(state: SimState, respond_fault: FaultResponder) -> Middleware:
    """Create the single middleware; ``respond_fault`` renders service-specific fault bodies."""

    @web.middleware
    async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = str(uuid.uuid4())
        request[CLIENT_REQUEST_ID] = request.headers.get("client-request-id") or request[REQUEST_ID]
        if request.path.startswith(CONTROL_PREFIX):
            request[SERVICE] = "control"
            return await handler(request)
        svc = getattr(request.match_info.handler, "sim_service", "other")
        request[SERVICE] = svc
        request[ERROR_CODE] = None
        started = time.time()
        tenant = _tenant_hint(request, state)
        decision = None
        if svc != "other":
            decision = state.faults.decide(request, svc, tenant, request.match_info.get("content_id"))
        status: int | None = None
        try:
            if svc != "other":
                await state.faults.delay(svc)
            if decision is not None and decision.kind != "truncate":
                response = respond_fault(request, svc, decision)
                if response is None:  # drop
                    await drop_connection(request)
                    return web.Response(status=499)
            else:
                try:
                    response = await handler(request)
                except ErrorResponse as exc:
                    response = exc.response
                    request[ERROR_CODE] = exc.code
                if decision is not None:
                    response = await truncated(request, response)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            state.ledger.append(
                {
                    "ts": started,
                    "method": request.method,
                    "path": request.path,
                    "query": scrub_query(request.query),
                    "service": svc,
                    "tenant": request.get(TENANT) or tenant,
                    "publisher_identifier": query_param(request, "PublisherIdentifier"),
                    "status": status,
                    "error_code": request.get(ERROR_CODE),
                    "authorization": "Authorization" in request.headers,
                    "fault": decision.kind if decision is not None else None,
                    "duration_ms": round((time.time() - started) * 1000, 3),
                }
            )

    return pipeline


def build_response_headers(
    state: SimState,
) -> Callable[[web.Request, web.StreamResponse], Coroutine[Any, Any, None]]:
    """``on_response_prepare`` hook: skewed ``Date`` and Microsoft-style request ids on every response."""

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = state.date.value()
        request_id = request.get(REQUEST_ID)
        if request_id:
            response.headers.setdefault("request-id", request_id)
            response.headers.setdefault("client-request-id", request.get(CLIENT_REQUEST_ID, request_id))
            response.headers.setdefault("x-ms-request-id", request_id)

    return add_headers
