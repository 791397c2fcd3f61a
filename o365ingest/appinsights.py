"""Application Insights through ``azure-monitor-opentelemetry``: configured once per process, flushed
at the end of every run.

The Function App calls :func:`configure_telemetry` at import. It does nothing when there is no
connection string (local runs, tests), and it stands aside when something already exports: the
Functions Python worker configures Azure Monitor itself when ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY``
is true, and a second exporter would send every metric and log twice.

With ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING=ClientId=<id>;Authorization=AAD`` (the component
has local authentication off) the exporter authenticates with the app's managed identity, which
holds Monitoring Metrics Publisher on the component.

Only the ``o365ingest`` loggers are exported, and they stop propagating to the root logger: the
Functions worker forwards root-logger records to the host, which would write each line to
``traces`` a second time, without the tenant / stream / run id dimensions. The bundled HTTP and
Azure SDK instrumentations stay off: one dependency span per blob download would cost more than
the metrics that already count them. (OpenCensus, retired in 2024, is not used.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

LOGGER_NAME = "o365ingest"
WORKER_TELEMETRY = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
INSTRUMENTATIONS = ("azure_sdk", "django", "fastapi", "flask", "httpx", "httpx2", "psycopg2", "requests",
                    "urllib", "urllib3")

_state: dict[str, str] = {}


def _auth_parts(value: str) -> dict[str, str]:
    parts = (item.partition("=") for item in value.split(";") if item.strip())
    return {key.strip().lower(): val.strip() for key, _, val in parts}


def monitor_credential(env: Mapping[str, str]) -> Any:
    """The managed identity named by the authentication string (or AZURE_CLIENT_ID); None for key auth."""
    parts = _auth_parts(env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", ""))
    if parts.get("authorization", "").lower() != "aad":
        return None
    from azure.identity import ManagedIdentityCredential

    client_id = parts.get("clientid") or env.get("AZURE_CLIENT_ID") or None
    return ManagedIdentityCredential(client_id=client_id)


def _sdk_provider_installed() -> bool:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider

    return isinstance(metrics.get_meter_provider(), MeterProvider)


def configure_telemetry(env: Mapping[str, str], configure: Callable[..., None] | None = None) -> str:
    """Configure export once; returns what happened: configured, worker, existing, disabled or already."""
    if _state:
        return "already"
    connection_string = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if not connection_string:
        outcome = "disabled"
    elif env.get(WORKER_TELEMETRY, "").strip().lower() == "true":
        outcome = "worker"  # the worker's exporter already carries our meters and loggers
    elif _sdk_provider_installed():
        outcome = "existing"
    else:
        if configure is None:
            from azure.monitor.opentelemetry import configure_azure_monitor

            configure = configure_azure_monitor
        configure(
            connection_string=connection_string,
            credential=monitor_credential(env),
            logger_name=LOGGER_NAME,
            instrumentation_options={name: {"enabled": False} for name in INSTRUMENTATIONS},
            enable_live_metrics=False,
        )
        logging.getLogger(LOGGER_NAME).propagate = False
        outcome = "configured"
    _state["outcome"] = outcome
    log.info("telemetry: %s", outcome)
    return outcome


def flush(timeout_millis: int = 10_000) -> None:
    """Export what is buffered now: a scale-to-zero instance may be stopped before the next interval."""
    from opentelemetry import _logs, metrics, trace

    for provider in (metrics.get_meter_provider(), _logs.get_logger_provider(), trace.get_tracer_provider()):
        force_flush = getattr(provider, "force_flush", None)
        if callable(force_flush):
            try:
                force_flush(timeout_millis)
            except Exception as exc:  # telemetry must never fail a run
                log.warning("telemetry flush failed: %s", type(exc).__name__)
