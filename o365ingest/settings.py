"""The one settings object, read from environment variables.

Every setting has one name, used unchanged in Function App settings, ``local.settings.json.example``,
the CLI (``--env-file`` / environment) and the Bicep outputs. ``SETTINGS`` is the single list of
those names; the infrastructure tests check the templates against it in both directions.

Validation collects every problem before failing, so an operator fixes a deployment in one pass.
Secret values are never echoed in messages.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from .clouds import CLOUDS, Cloud

CONTENT_TYPES: tuple[str, ...] = (
    "Audit.AzureActiveDirectory",
    "Audit.Exchange",
    "Audit.SharePoint",
    "Audit.General",
    "DLP.All",
)
MESSAGETRACE_STREAM = "MessageTrace"

CredentialKind = Literal["keyvault-certificate", "certificate-file", "client-secret"]
CREDENTIAL_KINDS: tuple[str, ...] = ("keyvault-certificate", "certificate-file", "client-secret")


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its name, default, meaning, and where it is set."""

    name: str
    default: str | None
    help: str
    secret: bool = False
    # True when the Bicep templates set it on the Function App. Local-only settings (simulator
    # endpoints, file sink, local checkpoints) and secrets are never deployed.
    deployed: bool = True


SETTINGS: tuple[SettingSpec, ...] = (
    # --- tenants and credentials
    SettingSpec("O365_TENANTS", None, "Tenant GUIDs to collect, comma-separated; or a JSON array of objects "
                "{tenantId, clientId?, credential?, certificateName?, certificatePath?, publisherId?} "
                "to override the defaults below per tenant."),
    SettingSpec("O365_CLIENT_ID", None, "Application (client) ID of the app registration."),
    SettingSpec("O365_CREDENTIAL", "keyvault-certificate",
                "How the app proves its identity: keyvault-certificate, certificate-file or client-secret."),
    SettingSpec("O365_KEYVAULT_URL", None, "Key Vault URL holding the app certificate (keyvault-certificate)."),
    SettingSpec("O365_CERTIFICATE_NAME", "o365ingest",
                "Name of the Key Vault certificate; its secret (PEM: key + chain) is read."),
    SettingSpec("O365_CERTIFICATE_PATH", None,
                "PEM file with private key and certificate (certificate-file).", deployed=False),
    SettingSpec("O365_CLIENT_SECRET", None, "Client secret (client-secret; fallback only).",
                secret=True, deployed=False),
    SettingSpec("O365_PUBLISHER_ID", None,
                "PublisherIdentifier sent on every Management API call; defaults to each tenant's GUID."),
    SettingSpec("O365_CLOUD", "commercial", "National cloud: commercial, gcc, gcchigh or dod."),
    SettingSpec("O365_CONTENT_TYPES", ",".join(CONTENT_TYPES), "Audit content types to collect."),
    # --- endpoint overrides (the simulator, private links)
    SettingSpec("O365_LOGIN_URL", None, "Override of the Entra ID authority host.", deployed=False),
    SettingSpec("O365_MANAGEMENT_URL", None, "Override of the Management Activity API base URL.",
                deployed=False),
    SettingSpec("O365_GRAPH_URL", None, "Override of the Microsoft Graph base URL.", deployed=False),
    SettingSpec("O365_REPORTING_URL", None, "Override of the legacy Reporting Web Service base URL.",
                deployed=False),
    SettingSpec("O365_CA_BUNDLE", None, "Extra CA bundle (PEM) to trust, e.g. the simulator's CA.",
                deployed=False),
    # --- sink
    SettingSpec("O365_SINK", "eventhub", "Where records go: eventhub or file."),
    SettingSpec("O365_EVENTHUB_NAMESPACE", None,
                "Event Hubs namespace host name, e.g. evhns-x.servicebus.windows.net (identity auth)."),
    SettingSpec("O365_EVENTHUB_CONNECTION_STRING", None,
                "Event Hubs connection string, instead of identity auth.", secret=True, deployed=False),
    SettingSpec("O365_EVENTHUB_NAME", "o365-audit", "Event hub that receives every stream by default."),
    SettingSpec("O365_EVENTHUB_HUBS", "",
                "Per-stream hubs, e.g. Audit.Exchange=exchange,MessageTrace=traces; others use the default."),
    SettingSpec("O365_EVENTHUB_PARTITION_KEY", "none",
                "Partition key: none (spread evenly), tenant, or stream (tenant and content type)."),
    SettingSpec("O365_EVENT_ENVELOPE", "record",
                "record: one record per event; records: {\"records\": [...]} filled up to the batch limit."),
    SettingSpec("O365_FILE_SINK_DIR", "output", "Directory of the file sink (JSON Lines).", deployed=False),
    SettingSpec("O365_FILE_SINK_MAX_BYTES", "104857600", "Rotate a JSON Lines file past this size.",
                deployed=False),
    # --- checkpoints
    SettingSpec("O365_CHECKPOINT_STORE", "blob", "Where checkpoints live: blob or local."),
    SettingSpec("O365_STORAGE_ACCOUNT_URL", None,
                "Blob endpoint of the checkpoint storage account (identity auth)."),
    SettingSpec("O365_STORAGE_CONNECTION_STRING", None,
                "Storage connection string instead of identity auth (Azurite, local use).",
                secret=True, deployed=False),
    SettingSpec("O365_CHECKPOINT_CONTAINER", "checkpoints", "Blob container for checkpoints and locks."),
    SettingSpec("O365_DEADLETTER_CONTAINER", "deadletter", "Blob container for dead-lettered data."),
    SettingSpec("O365_CHECKPOINT_DIR", ".state", "Directory of the local checkpoint store.", deployed=False),
    # --- audit runs
    SettingSpec("O365_AUDIT_SCHEDULE", "0 */5 * * * *", "NCRONTAB schedule of the audit timer (UTC)."),
    SettingSpec("O365_LOOKBACK_HOURS", "24", "First run of a stream starts this far back (at most 167)."),
    SettingSpec("O365_OVERLAP_MINUTES", "60", "Each run re-lists this much before the watermark (late blobs)."),
    SettingSpec("O365_SAFETY_LAG_MINUTES", "1", "Windows end this long before now."),
    SettingSpec("O365_FETCH_CONCURRENCY", "16", "Blob downloads in flight per tenant."),
    SettingSpec("O365_REQUESTS_PER_MINUTE", "1200",
                "Client-side Management API budget per tenant (Microsoft's baseline is 2,000)."),
    SettingSpec("O365_RUN_BUDGET_FRACTION", "0.8",
                "Stop taking new work at this fraction of the function timeout, then commit."),
    SettingSpec("O365_FUNCTION_TIMEOUT_SECONDS", "600",
                "Function timeout the run budget is taken from (host.json functionTimeout)."),
    SettingSpec("O365_HTTP_TIMEOUT_SECONDS", "60", "Per-request timeout for Microsoft APIs."),
    SettingSpec("O365_MAX_ATTEMPTS", "6", "Attempts per request before a blob is dead-lettered."),
    # --- message traces
    SettingSpec("O365_MESSAGETRACE_ENABLED", "false", "Collect Exchange message traces."),
    SettingSpec("O365_MESSAGETRACE_SOURCE", "graph",
                "graph (Microsoft Graph messageTraces) or rws (legacy Reporting Web Service)."),
    SettingSpec("O365_MESSAGETRACE_SCHEDULE", "0 */5 * * * *", "NCRONTAB schedule of the message-trace timer."),
    SettingSpec("O365_MESSAGETRACE_LOOKBACK_HOURS", "24", "First run of the trace stream starts this far back."),
    SettingSpec("O365_MESSAGETRACE_OVERLAP_MINUTES", "120",
                "Each trace run re-reads this much before the watermark (status changes)."),
    SettingSpec("O365_MESSAGETRACE_MIN_AGE_MINUTES", "10", "Trace windows end this long before now."),
    SettingSpec("O365_MESSAGETRACE_QUOTA_SHARE", "0.5",
                "Share of the tenant's 100 requests / 5 minutes this collector may use."),
    SettingSpec("O365_MESSAGETRACE_DETAILS", "false",
                "Also fetch getDetailsByRecipient per trace (spends the same quota)."),
    # --- telemetry
    SettingSpec("O365_LOG_LEVEL", "INFO", "Log level of the collector's own loggers."),
)

SETTING_NAMES: frozenset[str] = frozenset(s.name for s in SETTINGS)
SPECS: dict[str, SettingSpec] = {s.name: s for s in SETTINGS}

# Settings that Azure or the Functions host read, which the templates must also set.
PLATFORM_SETTINGS: tuple[str, ...] = (
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
)


class SettingsError(ValueError):
    """Raised once with every problem found, one line per setting."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} setting(s) need attention:\n{lines}")


@dataclass(frozen=True)
class TenantConfig:
    tenant_id: str
    client_id: str
    credential: CredentialKind
    certificate_name: str
    certificate_path: Path | None
    publisher_id: str


@dataclass(frozen=True)
class Endpoints:
    """Resolved endpoints: where requests go and which audience tokens are for."""

    login_url: str
    management_url: str
    graph_url: str
    reporting_url: str
    management_resource: str
    graph_resource: str
    reporting_resource: str
    login_overridden: bool


@dataclass(frozen=True)
class Settings:
    tenants: tuple[TenantConfig, ...]
    cloud: Cloud
    endpoints: Endpoints
    content_types: tuple[str, ...]
    keyvault_url: str | None
    client_secret: str | None = field(repr=False)
    ca_bundle: Path | None
    sink: Literal["eventhub", "file"]
    eventhub_namespace: str | None
    eventhub_connection_string: str | None = field(repr=False)
    eventhub_name: str
    eventhub_hubs: dict[str, str]
    partition_key: Literal["none", "tenant", "stream"]
    envelope: Literal["record", "records"]
    file_sink_dir: Path
    file_sink_max_bytes: int
    checkpoint_store: Literal["blob", "local"]
    storage_account_url: str | None
    storage_connection_string: str | None = field(repr=False)
    checkpoint_container: str
    deadletter_container: str
    checkpoint_dir: Path
    audit_schedule: str
    lookback_hours: float
    overlap_minutes: float
    safety_lag_minutes: float
    fetch_concurrency: int
    requests_per_minute: int
    run_budget_fraction: float
    function_timeout_seconds: float
    http_timeout_seconds: float
    max_attempts: int
    messagetrace_enabled: bool
    messagetrace_source: Literal["graph", "rws"]
    messagetrace_schedule: str
    messagetrace_lookback_hours: float
    messagetrace_overlap_minutes: float
    messagetrace_min_age_minutes: float
    messagetrace_quota_share: float
    messagetrace_details: bool
    log_level: str

    @property
    def run_budget_seconds(self) -> float:
        return self.function_timeout_seconds * self.run_budget_fraction

    def hub_for(self, stream: str) -> str:
        return self.eventhub_hubs.get(stream, self.eventhub_name)


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NCRONTAB = re.compile(r"^\S+ \S+ \S+ \S+ \S+ \S+$")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def is_guid(value: str) -> bool:
    return bool(_GUID.match(value)) and uuid.UUID(value).int != 0


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Reader:
    """Reads raw values by name and records problems instead of raising at the first one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        spec = SPECS[name]
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return spec.default
        return value.strip()

    def problem(self, name: str, message: str) -> None:
        self.problems.append(f"{name}: {message}")

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = (self.raw(name) or "").lower()
        if value not in choices:
            self.problem(name, f"expected one of {', '.join(choices)}; got {self._show(name, value)}")
            return choices[0]
        return value

    def number(self, name: str, low: float, high: float, integer: bool = False) -> float:
        value = self.raw(name) or ""
        default = float(SPECS[name].default or low)
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            self.problem(name, f"expected {kind} from {low:g} to {high:g}; got {self._show(name, value)}")
            return default
        if not low <= number <= high:
            self.problem(name, f"expected a value from {low:g} to {high:g}; got {number:g}")
            return default
        return number

    def flag(self, name: str) -> bool:
        value = (self.raw(name) or "").lower()
        if value in ("true", "1", "yes", "on"):
            return True
        if value in ("false", "0", "no", "off"):
            return False
        self.problem(name, f"expected true or false; got {self._show(name, value)}")
        return False

    def url(self, name: str, required: bool = False, why: str = "") -> str | None:
        value = self.raw(name)
        if value is None:
            if required:
                self.problem(name, f"required{why}; expected an https:// URL")
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            self.problem(name, f"expected an https:// URL; got {self._show(name, value)}")
            return None
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            self.problem(name, "plain http:// is accepted only for loopback addresses; use https://")
            return None
        return value.rstrip("/")

    def _show(self, name: str, value: str) -> str:
        return "(hidden)" if SPECS[name].secret else repr(value)


def _parse_tenants(r: _Reader) -> list[dict[str, str]]:
    raw = r.raw("O365_TENANTS")
    if raw is None:
        r.problem("O365_TENANTS", "required; expected tenant GUIDs separated by commas, or a JSON array")
        return []
    if raw.startswith("["):
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as exc:
            r.problem("O365_TENANTS", f"not valid JSON ({exc.msg} at position {exc.pos})")
            return []
        allowed = {"tenantId", "clientId", "credential", "certificateName", "certificatePath", "publisherId"}
        entries: list[dict[str, str]] = []
        for i, item in enumerate(items if isinstance(items, list) else [None]):
            if not isinstance(item, dict) or not isinstance(item.get("tenantId"), str):
                r.problem("O365_TENANTS", f"entry {i}: expected an object with a \"tenantId\" string")
                continue
            unknown = sorted(set(item) - allowed)
            if unknown:
                r.problem("O365_TENANTS", f"entry {i}: unknown key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(allowed))}")
            entries.append({k: str(v) for k, v in item.items() if k in allowed})
        return entries
    return [{"tenantId": part.strip()} for part in raw.split(",") if part.strip()]


def _tenants(r: _Reader, client_id: str | None, credential: str, cert_name: str,
             cert_path: str | None, publisher: str | None) -> tuple[TenantConfig, ...]:
    tenants: list[TenantConfig] = []
    seen: set[str] = set()
    for entry in _parse_tenants(r):
        tid = entry["tenantId"]
        label = f"tenant {tid!r}"
        if not is_guid(tid):
            r.problem("O365_TENANTS", f"{tid!r} is not a tenant GUID (find it in Entra ID > Overview)")
            continue
        tid = tid.lower()
        if tid in seen:
            r.problem("O365_TENANTS", f"{label} is listed twice")
            continue
        seen.add(tid)
        cid = entry.get("clientId", client_id)
        if not cid:
            r.problem("O365_CLIENT_ID", f"required for {label}; expected the app registration's client ID")
        elif not is_guid(cid):
            r.problem("O365_CLIENT_ID", f"{cid!r} is not a GUID (Entra ID > App registrations > Overview)")
        kind = entry.get("credential", credential)
        if kind not in CREDENTIAL_KINDS:
            r.problem("O365_TENANTS", f"{label}: credential {kind!r} is not one of {', '.join(CREDENTIAL_KINDS)}")
        pub = entry.get("publisherId", publisher) or tid
        if not is_guid(pub):
            r.problem("O365_PUBLISHER_ID", f"{pub!r} is not a GUID; use your own tenant's GUID")
        path = entry.get("certificatePath", cert_path)
        tenants.append(TenantConfig(
            tenant_id=tid,
            client_id=(cid or "").lower(),
            credential=kind,  # type: ignore[arg-type]
            certificate_name=entry.get("certificateName", cert_name),
            certificate_path=Path(path) if path else None,
            publisher_id=pub.lower(),
        ))
    return tuple(tenants)


def _endpoints(r: _Reader, cloud: Cloud) -> Endpoints:
    login = r.url("O365_LOGIN_URL")
    return Endpoints(
        login_url=login or cloud.login_url,
        management_url=r.url("O365_MANAGEMENT_URL") or cloud.management_url,
        graph_url=r.url("O365_GRAPH_URL") or cloud.graph_url,
        reporting_url=r.url("O365_REPORTING_URL") or cloud.reporting_url,
        management_resource=cloud.management_resource,
        graph_resource=cloud.graph_resource,
        reporting_resource=cloud.reporting_resource,
        login_overridden=login is not None,
    )


def _hub_map(r: _Reader, content_types: tuple[str, ...]) -> dict[str, str]:
    raw = r.raw("O365_EVENTHUB_HUBS") or ""
    hubs: dict[str, str] = {}
    streams = (*CONTENT_TYPES, MESSAGETRACE_STREAM)
    for part in filter(None, (p.strip() for p in raw.split(","))):
        stream, sep, hub = part.partition("=")
        stream, hub = stream.strip(), hub.strip()
        if not sep or stream not in streams:
            r.problem("O365_EVENTHUB_HUBS", f"{part!r}: expected STREAM=HUB with STREAM one of {', '.join(streams)}")
        elif not _HUB_NAME.match(hub):
            r.problem("O365_EVENTHUB_HUBS", f"{hub!r} is not a valid event hub name")
        else:
            hubs[stream] = hub
    return hubs


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build the settings from a mapping of names to values; raise SettingsError listing every problem."""
    r = _Reader(env)
    unknown = sorted(k for k in env if k.startswith("O365_") and k not in SETTING_NAMES)
    for name in unknown:
        r.problems.append(f"{name}: not a setting of o365ingest (check the spelling; see README)")

    cloud = CLOUDS[r.choice("O365_CLOUD", tuple(CLOUDS))]
    credential = r.choice("O365_CREDENTIAL", CREDENTIAL_KINDS)
    tenants = _tenants(r, r.raw("O365_CLIENT_ID"), credential, r.raw("O365_CERTIFICATE_NAME") or "o365ingest",
                       r.raw("O365_CERTIFICATE_PATH"), r.raw("O365_PUBLISHER_ID"))

    content_types: list[str] = []
    for ct in (c.strip() for c in (r.raw("O365_CONTENT_TYPES") or "").split(",")):
        match = next((known for known in CONTENT_TYPES if known.lower() == ct.lower()), None)
        if match is None:
            r.problem("O365_CONTENT_TYPES", f"{ct!r} is not a content type; expected {', '.join(CONTENT_TYPES)}")
        elif match not in content_types:
            content_types.append(match)

    kinds = {t.credential for t in tenants}
    keyvault_url = r.url("O365_KEYVAULT_URL", required="keyvault-certificate" in kinds,
                         why=" for O365_CREDENTIAL=keyvault-certificate")
    if "certificate-file" in kinds:
        for t in tenants:
            if t.credential == "certificate-file" and (t.certificate_path is None or not t.certificate_path.is_file()):
                shown = t.certificate_path or "(not set)"
                r.problem("O365_CERTIFICATE_PATH", f"certificate-file needs a readable PEM file; {shown} is not one")
    client_secret = r.raw("O365_CLIENT_SECRET")
    if "client-secret" in kinds and not client_secret:
        r.problem("O365_CLIENT_SECRET", "required for O365_CREDENTIAL=client-secret")

    ca_raw = r.raw("O365_CA_BUNDLE")
    ca_bundle = Path(ca_raw) if ca_raw else None
    if ca_bundle is not None and not ca_bundle.is_file():
        r.problem("O365_CA_BUNDLE", f"{ca_bundle} is not a readable file (expected a PEM CA bundle)")

    sink = r.choice("O365_SINK", ("eventhub", "file"))
    namespace = r.raw("O365_EVENTHUB_NAMESPACE")
    eh_conn = r.raw("O365_EVENTHUB_CONNECTION_STRING")
    if sink == "eventhub":
        if not namespace and not eh_conn:
            r.problem("O365_EVENTHUB_NAMESPACE", "required for O365_SINK=eventhub (or set "
                      "O365_EVENTHUB_CONNECTION_STRING); expected e.g. evhns-x.servicebus.windows.net")
        elif namespace and ("/" in namespace or "." not in namespace):
            r.problem("O365_EVENTHUB_NAMESPACE", f"expected a host name like evhns-x.servicebus.windows.net; "
                      f"got {namespace!r}")
        if eh_conn and "Endpoint=sb://" not in eh_conn:
            r.problem("O365_EVENTHUB_CONNECTION_STRING", "expected an Event Hubs connection string "
                      "(Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...)")
    eventhub_name = r.raw("O365_EVENTHUB_NAME") or ""
    if not _HUB_NAME.match(eventhub_name):
        r.problem("O365_EVENTHUB_NAME", f"{eventhub_name!r} is not a valid event hub name")

    store = r.choice("O365_CHECKPOINT_STORE", ("blob", "local"))
    account_url = r.url("O365_STORAGE_ACCOUNT_URL")
    storage_conn = r.raw("O365_STORAGE_CONNECTION_STRING")
    if store == "blob" and not account_url and not storage_conn:
        r.problem("O365_STORAGE_ACCOUNT_URL", "required for O365_CHECKPOINT_STORE=blob (or set "
                  "O365_STORAGE_CONNECTION_STRING); expected e.g. https://stx.blob.core.windows.net")
    for name in ("O365_CHECKPOINT_CONTAINER", "O365_DEADLETTER_CONTAINER"):
        value = r.raw(name) or ""
        if not re.match(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$", value):
            r.problem(name, f"{value!r} is not a valid container name (3-63 lower-case letters, digits, hyphens)")

    schedules = {}
    for name in ("O365_AUDIT_SCHEDULE", "O365_MESSAGETRACE_SCHEDULE"):
        schedules[name] = r.raw(name) or ""
        if not _NCRONTAB.match(schedules[name]):
            r.problem(name, f"expected a six-field NCRONTAB expression like '0 */5 * * * *'; got {schedules[name]!r}")

    trace_enabled = r.flag("O365_MESSAGETRACE_ENABLED")
    trace_source = r.choice("O365_MESSAGETRACE_SOURCE", ("graph", "rws"))
    if trace_enabled and not cloud.messagetrace_available:
        r.problem("O365_MESSAGETRACE_ENABLED", f"message traces are not available in the {cloud.name} cloud: "
                  "Microsoft Graph message trace is a global-service API (not GCC High or DoD); set it to false")

    log_level = (r.raw("O365_LOG_LEVEL") or "").upper()
    if log_level not in _LOG_LEVELS:
        r.problem("O365_LOG_LEVEL", f"expected one of {', '.join(_LOG_LEVELS)}; got {log_level!r}")

    settings = Settings(
        tenants=tenants,
        cloud=cloud,
        endpoints=_endpoints(r, cloud),
        content_types=tuple(content_types),
        keyvault_url=keyvault_url,
        client_secret=client_secret,
        ca_bundle=ca_bundle,
        sink=sink,  # type: ignore[arg-type]
        eventhub_namespace=namespace,
        eventhub_connection_string=eh_conn,
        eventhub_name=eventhub_name,
        eventhub_hubs=_hub_map(r, tuple(content_types)),
        partition_key=r.choice("O365_EVENTHUB_PARTITION_KEY", ("none", "tenant", "stream")),  # type: ignore[arg-type]
        envelope=r.choice("O365_EVENT_ENVELOPE", ("record", "records")),  # type: ignore[arg-type]
        file_sink_dir=Path(r.raw("O365_FILE_SINK_DIR") or "output"),
        file_sink_max_bytes=int(r.number("O365_FILE_SINK_MAX_BYTES", 1024, 2**40, integer=True)),
        checkpoint_store=store,  # type: ignore[arg-type]
        storage_account_url=account_url,
        storage_connection_string=storage_conn,
        checkpoint_container=r.raw("O365_CHECKPOINT_CONTAINER") or "checkpoints",
        deadletter_container=r.raw("O365_DEADLETTER_CONTAINER") or "deadletter",
        checkpoint_dir=Path(r.raw("O365_CHECKPOINT_DIR") or ".state"),
        audit_schedule=schedules["O365_AUDIT_SCHEDULE"],
        lookback_hours=r.number("O365_LOOKBACK_HOURS", 0.1, 167),
        overlap_minutes=r.number("O365_OVERLAP_MINUTES", 0, 24 * 60),
        safety_lag_minutes=r.number("O365_SAFETY_LAG_MINUTES", 0, 120),
        fetch_concurrency=int(r.number("O365_FETCH_CONCURRENCY", 1, 256, integer=True)),
        requests_per_minute=int(r.number("O365_REQUESTS_PER_MINUTE", 1, 60000, integer=True)),
        run_budget_fraction=r.number("O365_RUN_BUDGET_FRACTION", 0.1, 0.95),
        function_timeout_seconds=r.number("O365_FUNCTION_TIMEOUT_SECONDS", 10, 86400),
        http_timeout_seconds=r.number("O365_HTTP_TIMEOUT_SECONDS", 1, 600),
        max_attempts=int(r.number("O365_MAX_ATTEMPTS", 1, 20, integer=True)),
        messagetrace_enabled=trace_enabled,
        messagetrace_source=trace_source,  # type: ignore[arg-type]
        messagetrace_schedule=schedules["O365_MESSAGETRACE_SCHEDULE"],
        messagetrace_lookback_hours=r.number("O365_MESSAGETRACE_LOOKBACK_HOURS", 0.1, 24 * 90),
        messagetrace_overlap_minutes=r.number("O365_MESSAGETRACE_OVERLAP_MINUTES", 0, 24 * 60 * 10),
        messagetrace_min_age_minutes=r.number("O365_MESSAGETRACE_MIN_AGE_MINUTES", 0, 24 * 60),
        messagetrace_quota_share=r.number("O365_MESSAGETRACE_QUOTA_SHARE", 0.01, 1.0),
        messagetrace_details=r.flag("O365_MESSAGETRACE_DETAILS"),
        log_level=log_level,
    )
    if r.problems:
        raise SettingsError(r.problems)
    return settings


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file (for the CLI) without touching ``os.environ``."""
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}
