"""Small aiohttp helpers shared by every simulated service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
from aiohttp import web

JSON_UTF8 = "application/json; charset=utf-8"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Any])

# Request-scoped keys (aiohttp request mapping).
SERVICE = "sim_service"
ERROR_CODE = "sim_error_code"
REQUEST_ID = "sim_request_id"
CLIENT_REQUEST_ID = "sim_client_request_id"


class ErrorResponse(Exception):
    """Raise from a handler to answer with ``response``; ``code`` goes to the ledger."""

    def __init__(self, response: web.StreamResponse, code: str | None = None) -> None:
        super().__init__(code or str(response.status))
        self.response = response
        self.code = code


def service(name: str) -> Callable[[H], H]:
    """Tag a handler with the ledger/fault service it belongs to."""

    def mark(fn: H) -> H:
        fn.sim_service = name  # type: ignore[attr-defined]
        return fn

    return mark


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)


def json_response(
    data: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = JSON_UTF8,
) -> web.Response:
    """JSON via orjson (fast path) with Microsoft's ``application/json; charset=utf-8``."""
    return raw_json(orjson.dumps(data), status, headers, content_type)


def raw_json(
    body: bytes, status: int = 200, headers: Mapping[str, str] | None = None, content_type: str = JSON_UTF8
) -> web.Response:
    response = web.Response(body=body, status=status, headers=headers)
    response.headers["Content-Type"] = content_type
    return response


def query_param(request: web.Request, name: str) -> str | None:
    """Query value by case-insensitive name (PublisherIdentifier, $filter, ...)."""
    value = request.query.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, val in request.query.items():
        if key.lower() == lowered:
            return val
    return None


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
