"""Fault injection: seeded random faults, a deterministic script queue, and latency.

Faults model what sits between a client and Microsoft (gateways, flaky connections,
overloaded backends), so the generic kinds are produced here; ``throttle`` and
``af50000`` need each API's own error shape and are delegated to per-service hooks.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from m365sim.config import FAULT_KINDS, FAULT_SERVICES, ConfigError, FaultConfig
from m365sim.httputil import JSON_UTF8, dumps

ServiceHook = Callable[[web.Request, str], web.StreamResponse | None]

_MATCH_KEYS = ("service", "tenant", "content_id", "method", "path_contains")

GATEWAY_HTML = (
    b"<!DOCTYPE html>\r\n<html><head><title>502 - Web server received an invalid response while acting "
    b'as a gateway or proxy server.</title></head>\r\n<body><div id="header"><h1>Server Error</h1></div>'
    b'<div id="content"><h2>502 - Web server received an invalid response while acting as a gateway or '
    b"proxy server.</h2><h3>There is a problem with the page you are looking for, and it cannot be "
    b"displayed. When the Web server (while acting as a gateway or proxy) contacted the upstream content "
    b"server, it received an invalid response from the content server.</h3></div></body></html>\r\n"
)


@dataclass
class ScriptedFault:
    """``count`` next requests matching ``match`` get fault ``kind``."""

    kind: str
    count: int = 1
    match: dict[str, str] = field(default_factory=dict)
    status: int | None = None

    @classmethod
    def from_dict(cls, data: Any) -> ScriptedFault:
        if not isinstance(data, dict):
            raise ConfigError("fault script: expected an object")
        unknown = set(data) - {"kind", "count", "match", "status"}
        if unknown:
            raise ConfigError(f"fault script: unknown key(s) {sorted(unknown)}")
        kind = data.get("kind")
        if kind not in FAULT_KINDS:
            raise ConfigError(f"fault script: kind must be one of {FAULT_KINDS}")
        count = data.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError("fault script: count must be a positive integer")
        match = data.get("match") or {}
        if not isinstance(match, dict) or set(match) - set(_MATCH_KEYS):
            raise ConfigError(f"fault script: match keys must be among {_MATCH_KEYS}")
        if "service" in match and match["service"] not in FAULT_SERVICES:
            raise ConfigError(f"fault script: match.service must be one of {FAULT_SERVICES}")
        status = data.get("status")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
            raise ConfigError("fault script: status must be an integer")
        return cls(kind=kind, count=count, match={k: str(v) for k, v in match.items()}, status=status)

    def matches(self, request: web.Request, service: str, tenant: str | None, content_id: str | None) -> bool:
        for key, want in self.match.items():
            if key == "service" and want != service:
                return False
            if key == "tenant" and (tenant or "").lower() != want.lower():
                return False
            if key == "content_id" and content_id != want:
                return False
            if key == "method" and request.method != want.upper():
                return False
            if key == "path_contains" and want not in request.path:
                return False
        return True


@dataclass(frozen=True)
class FaultDecision:
    kind: str
    status: int | None = None


class FaultEngine:
    """Decides, per request, whether and how to misbehave."""

    def __init__(self, config: FaultConfig, seed: int) -> None:
        self._rng = random.Random(seed)
        self.script: list[ScriptedFault] = []
        self.configure(config)

    def configure(self, config: FaultConfig) -> None:
        self.config = config
        self._apply_to = frozenset(config.apply_to)
        self._cumulative: list[tuple[float, str]] = []
        total = 0.0
        for kind in FAULT_KINDS:
            rate = getattr(config.rates, kind)
            if rate > 0:
                total += rate
                self._cumulative.append((total, kind))

    def push(self, fault: ScriptedFault) -> None:
        self.script.append(fault)

    def decide(
        self, request: web.Request, service: str, tenant: str | None, content_id: str | None
    ) -> FaultDecision | None:
        """Scripted faults first (any service), then the random rates (``apply_to`` only)."""
        for i, scripted in enumerate(self.script):
            if scripted.matches(request, service, tenant, content_id):
                scripted.count -= 1
                if scripted.count <= 0:
                    del self.script[i]
                return FaultDecision(scripted.kind, scripted.status)
        if not self._cumulative or service not in self._apply_to:
            return None
        roll = self._rng.random()
        for bound, kind in self._cumulative:
            if roll < bound:
                status = self._rng.choice((502, 200)) if kind == "html" else None
                return FaultDecision(kind, status)
        return None

    async def delay(self, service: str) -> None:
        """Configured latency (+ jitter) before answering, so concurrency is real."""
        cfg = self.config
        if (cfg.latency_ms or cfg.jitter_ms) and service in self._apply_to:
            ms = cfg.latency_ms + (self._rng.uniform(0, cfg.jitter_ms) if cfg.jitter_ms else 0.0)
            await asyncio.sleep(ms / 1000.0)


def generic_fault_response(kind: str, status: int | None) -> web.StreamResponse | None:
    """Service-independent fault responses; None for ``drop``/``truncate`` (handled by the caller)."""
    if kind == "http_500":
        return web.Response(
            status=500, body=dumps({"Message": "An error has occurred."}), content_type="application/json"
        )
    if kind == "http_503":
        response = web.Response(status=503, body=b"Service Unavailable", content_type="text/plain")
        response.headers["Retry-After"] = "1"
        return response
    if kind == "html":
        return web.Response(status=status or 502, body=GATEWAY_HTML, content_type="text/html")
    if kind == "empty":
        response = web.Response(status=200, body=b"")
        response.headers["Content-Type"] = JSON_UTF8
        return response
    if kind == "non_array":
        response = web.Response(status=200, body=dumps({"unexpected": "object instead of an array"}))
        response.headers["Content-Type"] = JSON_UTF8
        return response
    return None


async def drop_connection(request: web.Request) -> None:
    """Close the TCP connection without sending any response bytes."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def truncated(request: web.Request, full: web.StreamResponse) -> web.StreamResponse:
    """Send the real response headers with the full Content-Length, then only half the body."""
    body = getattr(full, "body", None)
    data = body if isinstance(body, bytes | bytearray) else b""
    response = web.StreamResponse(status=full.status, headers=full.headers)
    response.content_length = len(data)
    await response.prepare(request)
    await response.write(bytes(data[: len(data) // 2]))
    transport = request.transport
    if transport is not None:
        await asyncio.sleep(0)
        transport.close()
    return response
