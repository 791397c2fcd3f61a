"""Certificates: the simulator's private CA, its TLS certificate and app credentials.

Clients must verify TLS against ``ca.pem`` (never disable verification), so the server
certificate is a proper CA-issued leaf (SAN, AKI/SKI, serverAuth EKU) that also passes
OpenSSL's strict X.509 checks used by newer Pythons.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=397)
SERVER_RENEW_BEFORE = timedelta(days=30)
SERVER_SANS: tuple[x509.GeneralName, ...] = (
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
)


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files the server and its clients need."""

    ca_bundle: Path
    server_cert: Path
    server_key: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "m365sim"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _create_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = _name("m365sim local CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _create_server_cert(
    ca_key: CertificateIssuerPrivateKeyTypes, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(list(SERVER_SANS)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _server_cert_usable(cert_path: Path, ca_cert: x509.Certificate) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # unreadable, foreign or InvalidSignature: just issue a new one
        return False
    if cert.not_valid_after_utc - datetime.now(UTC) < SERVER_RENEW_BEFORE:
        return False
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return all(san in sans for san in SERVER_SANS)


def ensure_tls(state_dir: Path) -> TlsFiles:
    """Create (first start) or reuse the CA and server certificate under ``state_dir``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(state_dir / "ca.pem", state_dir / "server.pem", state_dir / "server-key.pem")
    ca_key_path = state_dir / "ca-key.pem"
    if files.ca_bundle.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(files.ca_bundle.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{ca_key_path}: unsupported CA key type")
        ca_key: CertificateIssuerPrivateKeyTypes = loaded
    else:
        ca_key, ca_cert = _create_ca()
        _write_private(ca_key_path, _key_pem(ca_key))
        files.ca_bundle.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    if not (files.server_key.exists() and _server_cert_usable(files.server_cert, ca_cert)):
        key, cert = _create_server_cert(ca_key, ca_cert)
        _write_private(files.server_key, _key_pem(key))
        files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def make_app_certificate(
    common_name: str = "o365ingest", days: int = 365, key_size: int = 2048, *, not_before: datetime | None = None
) -> tuple[str, str]:
    """Self-signed RSA certificate like the one uploaded to an app registration.

    Returns ``(key_pem, cert_pem)``; ``not_before`` lets tests build already-expired ones.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    start = not_before or (datetime.now(UTC) - timedelta(minutes=5))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key).decode(), cert.public_bytes(serialization.Encoding.PEM).decode()


def pem_bundle(key_pem: str, cert_pem: str) -> str:
    """What Key Vault returns for a PEM certificate's secret: private key, then certificate."""
    return key_pem.rstrip("\n") + "\n" + cert_pem.rstrip("\n") + "\n"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class RegisteredCertificate:
    """A public certificate registered on an app, indexed by both thumbprint forms."""

    cert: x509.Certificate
    sha1_hex: str
    x5t: str
    x5t_s256: str

    @classmethod
    def from_pem(cls, pem: str) -> RegisteredCertificate:
        cert = x509.load_pem_x509_certificate(pem.encode())
        der = cert.public_bytes(serialization.Encoding.DER)
        sha1 = hashlib.sha1(der, usedforsecurity=False).digest()
        return cls(
            cert=cert,
            sha1_hex=sha1.hex().upper(),
            x5t=b64url(sha1),
            x5t_s256=b64url(hashlib.sha256(der).digest()),
        )

    def key_window(self) -> str:
        """Entra's "Found key 'Start=..., End=...'" text."""
        fmt = "%m/%d/%Y %H:%M:%S"
        return f"Start={self.cert.not_valid_before_utc:{fmt}}, End={self.cert.not_valid_after_utc:{fmt}}"
