"""Bearer-token checks shared by the resource APIs (each formats its own error)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from m365sim.httputil import bearer_token
from m365sim.tokens import InvalidToken, TokenService


def authenticate(request: web.Request, tokens: TokenService, audiences: Iterable[str]) -> dict[str, Any]:
    """Validated claims of the request's bearer token for one of ``audiences``.

    Raises :class:`InvalidToken` with reason ``missing``/``malformed``/``signature``/
    ``expired``/``not_yet_valid``/``audience``.
    """
    token = bearer_token(request)
    if token is None:
        raise InvalidToken("missing", "no bearer token")
    claims = tokens.validate(token)
    aud = str(claims.get("aud", "")).rstrip("/")
    if aud not in audiences:
        raise InvalidToken("audience", f"audience {aud!r} is not accepted here")
    return claims


def roles_of(claims: dict[str, Any]) -> list[str]:
    roles = claims.get("roles")
    return [str(r) for r in roles] if isinstance(roles, list) else []
