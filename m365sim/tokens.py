"""Access tokens: the simulator's signing key, issuing Entra-shaped JWTs and validating them.

Every simulated API validates the bearer token it receives (signature, expiry, audience,
tenant), so a client bug such as sending a Graph token to the Management API fails here
exactly as it would against Microsoft.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from m365sim.pki import b64url

_CACHE_LIMIT = 20_000


class InvalidToken(Exception):
    """A bearer token was rejected; ``reason`` picks the API-specific error text."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason  # "missing" | "malformed" | "signature" | "expired" | "not_yet_valid"
        self.detail = detail


@dataclass(frozen=True)
class TokenGrant:
    """Who a token is for: the subject principal and what it may do."""

    tenant_id: str
    app_id: str
    object_id: str
    resource: str
    roles: tuple[str, ...] | None
    appidacr: str = "1"
    display_name: str = ""


class TokenService:
    """Signs and verifies RS256 access tokens with a key persisted in the state dir.

    The key survives restarts so tokens issued before a simulator restart (kill tests)
    remain valid, as Entra's would.
    """

    def __init__(self, state_dir: Path, lifetime_seconds: int) -> None:
        self.lifetime_seconds = lifetime_seconds
        self._key, self._cert = _load_or_create_signing_key(state_dir)
        der = self._cert.public_bytes(serialization.Encoding.DER)
        self.kid = b64url(self._cert.fingerprint(hashes.SHA1()))  # noqa: S303 - x5t is SHA-1 by spec
        self._x5c = base64.b64encode(der).decode()
        self._public = self._key.public_key()
        self._cache: dict[str, dict[str, Any]] = {}

    def jwks(self) -> dict[str, Any]:
        """The ``discovery/v2.0/keys`` document."""
        numbers = self._public.public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "kid": self.kid,
                    "x5t": self.kid,
                    "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                    "e": b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
                    "x5c": [self._x5c],
                }
            ]
        }

    def issue(self, grant: TokenGrant, *, lifetime_seconds: int | None = None) -> tuple[str, int]:
        """Sign a v1-style app-only token; returns ``(jwt, lifetime)``."""
        lifetime = self.lifetime_seconds if lifetime_seconds is None else lifetime_seconds
        now = int(time.time())
        issuer = f"https://sts.windows.net/{grant.tenant_id}/"
        claims: dict[str, Any] = {
            "aud": grant.resource,
            "iss": issuer,
            "iat": now,
            "nbf": min(now, now + lifetime),
            "exp": now + lifetime,
            "aio": b64url(os.urandom(24)),
            "app_displayname": grant.display_name,
            "appid": grant.app_id,
            "appidacr": grant.appidacr,
            "idp": issuer,
            "idtyp": "app",
            "oid": grant.object_id,
            "rh": b64url(os.urandom(16)) + ".",
            "sub": grant.object_id,
            "tid": grant.tenant_id,
            "uti": b64url(os.urandom(16)),
            "ver": "1.0",
        }
        if grant.roles:
            claims["roles"] = list(grant.roles)
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "x5t": self.kid})
        return token, lifetime

    def validate(self, token: str) -> dict[str, Any]:
        """Verified claims of ``token``; raises :class:`InvalidToken`.

        Signature checks are cached per token string: the hot path (blob GETs) then costs a
        dict lookup plus the expiry comparison.
        """
        claims = self._cache.get(token)
        if claims is None:
            claims = self._verify(token)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = claims
        now = time.time()
        if now >= claims["exp"]:
            raise InvalidToken("expired", f"token expired at {claims['exp']}")
        if now < claims.get("nbf", 0):
            raise InvalidToken("not_yet_valid", f"token not valid before {claims['nbf']}")
        return claims

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed", str(exc)) from exc
        if header.get("kid") != self.kid:
            raise InvalidToken("signature", "token was not signed by this issuer")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken("signature", str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed", str(exc)) from exc
        if not isinstance(claims.get("exp"), int) or "tid" not in claims or "aud" not in claims:
            raise InvalidToken("malformed", "token lacks exp/tid/aud")
        return claims


def _load_or_create_signing_key(state_dir: Path) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key_path = state_dir / "token-signing-key.pem"
    cert_path = state_dir / "token-signing-cert.pem"
    if key_path.exists() and cert_path.exists():
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{key_path}: expected an RSA key")
        return loaded, x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.accesscontrol.windows.net")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def new_guid() -> str:
    return str(uuid.uuid4())
