"""Client-assertion (private_key_jwt) verification as Entra performs it.

The signing key is looked up among the certificates REGISTERED on the app by the
thumbprint in the JWT header (``x5t#S256`` or ``x5t``); ``x5c`` is never trusted for the
key, so a client cannot authenticate by shipping its own certificate.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import jwt
from aiohttp import web

from m365sim import aaderrors
from m365sim.clock import entra_precise
from m365sim.pki import RegisteredCertificate
from m365sim.state import AppRuntime

CLOCK_SKEW_SECONDS = 300
ALLOWED_ALGORITHMS = ("RS256", "PS256", "RS384", "PS384", "RS512", "PS512")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _thumbprint_hex(value: str) -> str:
    """Upper-case hex of a base64url thumbprint, as Entra prints it."""
    padded = value + "=" * (-len(value) % 4)
    try:
        return base64.urlsafe_b64decode(padded).hex().upper()
    except (ValueError, binascii.Error):
        return value


def _as_time(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(value, UTC)


def verify_client_assertion(
    request: web.Request,
    app: AppRuntime,
    assertion: str,
    client_id: str,
    accepted_audiences: Iterable[str],
) -> str:
    """Return the credential kind (``"2"`` = certificate) or raise an Entra ``ErrorResponse``."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise aaderrors.malformed_assertion(request) from exc
    algorithm = header.get("alg")
    if algorithm not in ALLOWED_ALGORITHMS:
        raise aaderrors.malformed_assertion(request)
    cert: RegisteredCertificate | None = None
    used = ""
    # Thumbprints are base64url; MSAL sends them padded, others unpadded: compare without "=".
    if isinstance(header.get("x5t#S256"), str):
        used = header["x5t#S256"].rstrip("=")
        cert = app.by_x5t_s256.get(used)
    elif isinstance(header.get("x5t"), str):
        used = header["x5t"].rstrip("=")
        cert = app.by_x5t.get(used)
    shown = _thumbprint_hex(used) if used else ""
    if cert is None:
        raise aaderrors.key_not_found(request, app.config.client_id, shown)
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion,
            cert.cert.public_key(),  # type: ignore[arg-type]
            algorithms=[algorithm],
            options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise aaderrors.bad_signature(request, shown, cert.key_window()) from exc
    except jwt.PyJWTError as exc:
        raise aaderrors.malformed_assertion(request) from exc
    now = datetime.now(UTC)
    if now > cert.cert.not_valid_after_utc:
        raise aaderrors.key_expired(request, shown, cert.key_window())
    _check_times(request, claims, now)
    _check_audience(request, claims, accepted_audiences)
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise aaderrors.assertion_subject(request)
    if not claims.get("jti"):
        raise aaderrors.malformed_assertion(request)
    return "2"


def _check_times(request: web.Request, claims: dict[str, Any], now: datetime) -> None:
    exp = _as_time(claims.get("exp"))
    if exp is None:
        raise aaderrors.malformed_assertion(request)
    nbf = _as_time(claims.get("nbf")) or _EPOCH
    current = time.time()
    if current > exp.timestamp() + CLOCK_SKEW_SECONDS or current < nbf.timestamp() - CLOCK_SKEW_SECONDS:
        raise aaderrors.assertion_time(request, entra_precise(now), entra_precise(nbf), entra_precise(exp))


def _check_audience(request: web.Request, claims: dict[str, Any], accepted: Iterable[str]) -> None:
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    wanted = {a.lower() for a in accepted}
    if not any(isinstance(a, str) and a.lower() in wanted for a in audiences):
        raise aaderrors.assertion_audience(request)
