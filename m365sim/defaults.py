"""The default scenario (no ``--config``): what ``make run`` serves.

One tenant, one app holding every role with both a client secret and a certificate whose
PEM (key + certificate) sits in Key Vault as secret ``o365ingest`` and in
``STATE_DIR/app-cert.pem``; subscriptions not started; ~20,000 audit records over 3 days
and a week of message traces.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from m365sim.config import AppConfig, KeyVaultConfig, SecretConfig, SimConfig, TenantConfig
from m365sim.dataset import AuditConfig
from m365sim.pki import make_app_certificate, pem_bundle
from m365sim.resources import all_roles
from m365sim.tracedata import TraceConfig

DEFAULT_TENANT_ID = "5f0c1c2e-8b1a-4c4e-9a57-1d2b3c4d5e6f"
DEFAULT_CLIENT_ID = "0b7c6f52-3d0e-4a8e-b5c1-2f6a9d8e7c41"
DEFAULT_CLIENT_SECRET = "sim-secret-not-for-production"
DEFAULT_SECRET_NAME = "o365ingest"
PEM_CONTENT_TYPE = "application/x-pem-file"
APP_CERT_FILE = "app-cert.pem"

_KEY_RE = re.compile(r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----.+?-----END (?:RSA |EC )?PRIVATE KEY-----\s*", re.S)
_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.S)


def split_pem_bundle(bundle: str) -> tuple[str, str]:
    """``(key_pem, first_cert_pem)`` of a Key Vault style PEM bundle."""
    key = _KEY_RE.search(bundle)
    cert = _CERT_RE.search(bundle)
    if key is None or cert is None:
        raise ValueError("PEM bundle needs a private key and a certificate")
    return key.group(0).strip() + "\n", cert.group(0).strip() + "\n"


def app_certificate(state_dir: Path) -> tuple[str, str]:
    """Reuse ``app-cert.pem`` across restarts so the registered cert matches the vault copy."""
    path = state_dir / APP_CERT_FILE
    if path.exists():
        return split_pem_bundle(path.read_text())
    key_pem, cert_pem = make_app_certificate("o365ingest", days=365)
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(pem_bundle(key_pem, cert_pem))
    return key_pem, cert_pem


def default_config(state_dir: Path) -> SimConfig:
    key_pem, cert_pem = app_certificate(state_dir)
    tenant = TenantConfig(
        tenant_id=DEFAULT_TENANT_ID,
        apps=[
            AppConfig(
                client_id=DEFAULT_CLIENT_ID,
                client_secret=DEFAULT_CLIENT_SECRET,
                certificates=[cert_pem],
                roles=all_roles(),
            )
        ],
        audit=AuditConfig(records=20_000, days=3.0),
        messagetrace=TraceConfig(days=7.0),
    )
    vault = KeyVaultConfig(
        secrets={DEFAULT_SECRET_NAME: SecretConfig(value=pem_bundle(key_pem, cert_pem), contentType=PEM_CONTENT_TYPE)}
    )
    return SimConfig(tenants=[tenant], keyvault=vault)
