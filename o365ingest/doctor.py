"""``doctor``: every precondition of a run, each with one line of detail and, when it is not met, one
line saying exactly what to do.

It builds on ``check`` (a token per API per tenant, with the roles it must carry) and adds what
operators actually trip over: the Key Vault secret, certificate expiry, unified audit logging (the
API's misleading "Tenant ... does not exist"), subscriptions per content type, clock skew against
the API's ``Date`` header, Event Hubs (with the negotiated maximum batch size) and a write to the
checkpoint store. It changes nothing in Microsoft 365: subscriptions are reported, not started.
The Function App logs the compact form (:func:`log_summary`) at the first run of each instance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import orjson

from .check import check_tokens, required_apis
from .credentials import ClientCredential, days_left
from .errors import ApiError, O365IngestError
from .runtime import Runtime
from .settings import MESSAGETRACE_STREAM, Settings, TenantConfig
from .sinks import EventHubBatch, EventHubSink, FileSink, StreamKey

log = logging.getLogger(__name__)

CERT_WARN_DAYS = 30
SKEW_WARN_SECONDS = 60.0
SKEW_FAIL_SECONDS = 300.0  # Entra ID rejects client assertions about five minutes off
EVENT_LIMIT_STANDARD = 1024 * 1024
PROBE_KEY = "doctor/probe"
AUDIT_OFF_CODES = ("AuditDisabled", "AF20011", "AF20012")
MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn, fail, skip
    detail: str
    remedy: str | None = None
    tenant: str | None = None

    def line(self) -> str:
        where = f"tenant {self.tenant} - " if self.tenant else ""
        return f"[{MARKS[self.status]}] {where}{self.name}: {self.detail}"


def one_line(text: str, limit: int = 300) -> str:
    first = " ".join(text.split())
    return first if len(first) <= limit else first[: limit - 3] + "..."


def certificate_check(credential: ClientCredential, now: datetime) -> Check | None:
    """Fail when expired, warn under 30 days; None for a client secret (its expiry is not visible)."""
    left = days_left(credential, now)
    if left is None or credential.certificate_not_after is None:
        return None
    when = credential.certificate_not_after.strftime("%Y-%m-%d %H:%M UTC")
    thumb = (credential.certificate_sha256 or "")[:16]
    renew = (f"Renew the certificate ({credential.source}), upload the new public certificate (.cer) to the app "
             "registration under Certificates & secrets, then restart the Function App so it loads the new version.")
    if left <= 0:
        return Check("certificate", "fail", f"certificate {thumb} expired on {when}", renew)
    if left < CERT_WARN_DAYS:
        return Check("certificate", "warn", f"certificate {thumb} expires in {int(left)} day(s), on {when}", renew)
    return Check("certificate", "ok", f"certificate {thumb} valid until {when} ({int(left)} days)")


def clock_check(server_date: str | None, local: datetime, tenant: str) -> Check:
    if not server_date:
        return Check("clock", "warn", "the API sent no Date header; skew not measured", None, tenant)
    try:
        server = parsedate_to_datetime(server_date)
    except (TypeError, ValueError):
        return Check("clock", "warn", f"unreadable Date header {server_date!r}", None, tenant)
    skew = (local - server).total_seconds()
    detail = f"local clock is {abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} the API's Date header"
    remedy = ("Synchronize this machine's clock with NTP: Entra ID rejects client assertions about 5 minutes off "
              "and listing windows are computed from the local clock.")
    if abs(skew) > SKEW_FAIL_SECONDS:
        return Check("clock", "fail", detail, remedy, tenant)
    if abs(skew) > SKEW_WARN_SECONDS:
        return Check("clock", "warn", detail, remedy, tenant)
    return Check("clock", "ok", detail, None, tenant)


def subscription_checks(listed: object, content_types: Sequence[str], tenant: str, feed: str) -> list[Check]:
    states = {str(s.get("contentType", "")).lower(): str(s.get("status", "")).lower()
              for s in (listed if isinstance(listed, list) else []) if isinstance(s, dict)}
    checks: list[Check] = []
    missing = [ct for ct in content_types if ct.lower() not in states]
    if missing:
        checks.append(Check("subscriptions", "warn", f"not started yet: {', '.join(missing)}",
                            "The first run starts them (the timer, or `python -m o365ingest run`); content can "
                            "take up to 12 hours to appear after that.", tenant))
    for ct in content_types:
        state = states.get(ct.lower())
        if state is not None and state != "enabled":
            checks.append(Check(f"subscription {ct}", "fail", f"subscription is {state}",
                                f"Start it: `python -m o365ingest run --tenant {tenant} --content-type {ct}` restarts "
                                f"it (or POST {feed}/subscriptions/start?contentType={ct}); content created while "
                                "it was off cannot be collected.", tenant))
    if not checks:
        checks.append(Check("subscriptions", "ok", f"all {len(content_types)} enabled: {', '.join(content_types)}",
                            None, tenant))
    return checks


def _credential_key(tenant: TenantConfig) -> tuple[str, str]:
    return (tenant.credential, tenant.certificate_name if tenant.credential == "keyvault-certificate"
            else str(tenant.certificate_path))


async def _credentials(runtime: Runtime, checks: list[Check]) -> list[TenantConfig]:
    """Load each credential source once; returns the tenants whose credential loaded and has not expired.

    An expired certificate is left out of the token checks: Entra ID answers it with AADSTS700027,
    whose usual remedy (upload the certificate) would send the operator the wrong way, and one cause
    should give one remedy.
    """
    usable: list[TenantConfig] = []
    results: dict[tuple[str, str], bool] = {}  # credential source -> usable
    for tenant in runtime.settings.tenants:
        key = _credential_key(tenant)
        if key not in results:
            name = "Key Vault secret" if tenant.credential == "keyvault-certificate" else "credential"
            try:
                credential = (await runtime.tokens.for_tenant(tenant)).credential
            except O365IngestError as exc:
                checks.append(Check(name, "fail", one_line(exc.message), exc.remedy))
                results[key] = False
            else:
                checks.append(Check(name, "ok", f"{credential.kind} loaded from {credential.source}"))
                expiry = certificate_check(credential, runtime.clock())
                if expiry is not None:
                    checks.append(expiry)
                results[key] = expiry is None or expiry.status != "fail"
        if results[key]:
            usable.append(tenant)
    return usable


async def _tokens(runtime: Runtime, tenants: list[TenantConfig], checks: list[Check]) -> list[TenantConfig]:
    """check's token-and-roles results; returns the tenants whose Management API token is usable."""
    settings = dataclasses.replace(runtime.settings, tenants=tuple(tenants))
    management = required_apis(settings)[0][0]
    usable: set[str] = set()
    for r in await check_tokens(settings, runtime.tokens):
        checks.append(Check(f"{r.api} token", "ok" if r.ok else "fail", one_line(r.detail), r.remedy, r.tenant_id))
        if r.ok and r.api == management:
            usable.add(r.tenant_id)
    return [t for t in tenants if t.tenant_id in usable]


async def _management(runtime: Runtime, tenant: TenantConfig, checks: list[Check]) -> None:
    """One ListSubscriptions call answers three questions: audit logging, subscriptions and clock."""
    tid = tenant.tenant_id
    # An empty stream: the doctor's calls belong to no stream, and a made-up one ("doctor") would show
    # up as a stream of its own in the per-stream dashboards and alert splits (infra/app/kql).
    client = await runtime.management(tenant, stream="")
    url = f"{client.feed}/subscriptions/list"
    sent = time.time()
    try:
        response = await client.request("GET", url, op="ListSubscriptions")
    except ApiError as exc:
        name = "unified audit logging" if exc.code in AUDIT_OFF_CODES else "Management Activity API"
        detail = ("the API answered 'Tenant ... does not exist': unified audit logging is off"
                  if exc.code == "AuditDisabled" else one_line(exc.message))
        checks.append(Check(name, "fail", detail, exc.remedy, tid))
        return
    local = datetime.fromtimestamp((sent + time.time()) / 2, UTC)
    checks.append(Check("unified audit logging", "ok", "the Management Activity API answers for this tenant",
                        None, tid))
    try:
        listed = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        listed = None
    checks.extend(subscription_checks(listed, runtime.settings.content_types, tid, client.feed))
    checks.append(clock_check(response.headers.get("Date"), local, tid))


def _streams(settings: Settings) -> list[str]:
    return [*settings.content_types, *([MESSAGETRACE_STREAM] if settings.messagetrace_enabled else [])]


async def _sink(runtime: Runtime, checks: list[Check]) -> None:
    settings, sink = runtime.settings, runtime.sink
    if isinstance(sink, FileSink):
        _probe_directory(settings.file_sink_dir, "file sink", "O365_FILE_SINK_DIR", checks)
        return
    if not isinstance(sink, EventHubSink) or not settings.tenants:
        return
    hubs: dict[str, str] = {}
    for stream in _streams(settings):
        hubs.setdefault(settings.hub_for(stream), stream)
    for hub, stream in sorted(hubs.items()):
        name = f"Event Hubs {hub}"
        remedy = (f"Check O365_EVENTHUB_NAMESPACE and that event hub {hub!r} exists; give the app's identity "
                  "'Azure Event Hubs Data Sender' on it; allow outbound TCP 5671 (AMQP) to the namespace.")
        try:
            batch = await sink.new_batch(StreamKey(settings.tenants[0].tenant_id, stream))
        except O365IngestError as exc:
            checks.append(Check(name, "fail", one_line(exc.message), remedy))
            continue
        size = int(batch.batch.max_size_in_bytes) if isinstance(batch, EventHubBatch) else 0
        if size < EVENT_LIMIT_STANDARD:
            checks.append(Check(name, "warn", f"reachable; maximum batch only {size} bytes",
                                "Use the Standard tier or higher (1 MB events): larger records are dead-lettered."))
        else:
            checks.append(Check(name, "ok", f"reachable; maximum batch {size} bytes"))


def _probe_directory(directory: Path, name: str, setting: str, checks: list[Check]) -> None:
    probe = directory / ".doctor-probe"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as exc:
        checks.append(Check(name, "fail", f"{directory} is not writable ({exc.strerror})",
                            f"Make {directory} writable by this user, or point {setting} elsewhere."))
        return
    checks.append(Check(name, "ok", f"{directory} is writable"))


async def _checkpoints(runtime: Runtime, checks: list[Check]) -> None:
    settings = runtime.settings
    if settings.checkpoint_store == "local":
        where = f"local directory {settings.checkpoint_dir}"
        remedy = f"Make {settings.checkpoint_dir} writable by this user, or set O365_CHECKPOINT_DIR."
    else:
        where = f"container {settings.checkpoint_container!r}"
        remedy = (f"Give the app's identity 'Storage Blob Data Contributor' on container "
                  f"{settings.checkpoint_container!r}; check O365_STORAGE_ACCOUNT_URL and the storage firewall.")
    try:
        _, etag = await runtime.checkpoints.load(PROBE_KEY)
        await runtime.checkpoints.save(PROBE_KEY, orjson.dumps({"probe": runtime.clock().isoformat()}), etag)
    except Exception as exc:  # any storage error means the same thing here: runs cannot commit
        checks.append(Check("checkpoints", "fail", f"{where} is not writable: {type(exc).__name__}: "
                            f"{one_line(str(exc), 160)}", remedy))
        return
    checks.append(Check("checkpoints", "ok", f"{where} is writable"))


async def _bounded(step: Awaitable[None], name: str, seconds: float, checks: list[Check],
                   tenant: str | None = None) -> None:
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        checks.append(Check(name, "fail", f"no answer within {seconds:.0f}s",
                            "Check network access from this machine to the endpoint, then run doctor again.", tenant))


async def run_doctor(runtime: Runtime, *, step_seconds: float = 30.0) -> list[Check]:
    """Every check, in the order a fix is usually needed; each step is bounded by ``step_seconds``."""
    checks: list[Check] = []
    usable: list[TenantConfig] = []

    async def credentials_and_tokens() -> None:
        usable.extend(await _tokens(runtime, await _credentials(runtime, checks), checks))

    await _bounded(credentials_and_tokens(), "credentials and tokens", step_seconds, checks)
    for tenant in runtime.settings.tenants:
        if tenant in usable:
            await _bounded(_management(runtime, tenant, checks), "Management Activity API", step_seconds, checks,
                           tenant.tenant_id)
        else:
            checks.append(Check("Management Activity API", "skip", "not checked without a usable token",
                                None, tenant.tenant_id))
    await _bounded(_sink(runtime, checks), "sink", step_seconds, checks)
    await _bounded(_checkpoints(runtime, checks), "checkpoints", step_seconds, checks)
    return checks


def exit_code(checks: Sequence[Check]) -> int:
    """0 healthy, 1 at least one failure, 3 warnings only (2 stays 'bad settings or usage')."""
    if any(c.status == "fail" for c in checks):
        return 1
    return 3 if any(c.status == "warn" for c in checks) else 0


def summary(checks: Sequence[Check]) -> str:
    counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail", "skip")}
    return (f"doctor: {counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failed"
            + (f", {counts['skip']} skipped" if counts["skip"] else ""))


def report(checks: Sequence[Check]) -> str:
    lines: list[str] = []
    for c in checks:
        lines.append(c.line())
        if c.remedy and c.status in ("warn", "fail"):
            lines.append(f"       remedy: {c.remedy}")
    lines.append(summary(checks))
    return "\n".join(lines)


def log_summary(checks: Sequence[Check], logger: logging.Logger = log) -> None:
    """The compact form: one summary line, then one line per problem with its remedy."""
    worst = exit_code(checks)
    logger.log(logging.ERROR if worst == 1 else logging.WARNING if worst == 3 else logging.INFO, summary(checks))
    for c in checks:
        if c.status in ("warn", "fail"):
            remedy = f" Remedy: {c.remedy}" if c.remedy else ""
            logger.log(logging.ERROR if c.status == "fail" else logging.WARNING, "doctor %s%s", c.line(), remedy)


async def first_run_doctor(runtime: Runtime, seconds: float) -> None:
    """Log the compact doctor; never raises and never takes longer than ``seconds``."""
    try:
        checks = await asyncio.wait_for(run_doctor(runtime, step_seconds=seconds / 2), seconds)
    except TimeoutError:
        log.warning("doctor: did not finish within %.0fs; run `python -m o365ingest doctor` for details", seconds)
        return
    except Exception as exc:  # a broken self-test must not stop collection
        log.warning("doctor: could not run (%s); run `python -m o365ingest doctor` for details", type(exc).__name__)
        return
    log_summary(checks)
