"""A collection cycle: every stream of every tenant, concurrently, within one time budget.

Shared by the timer trigger and the CLI, so a manual run is exactly what the timer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from .audit import AuditStream, StreamResult, StreamStats
from .errors import O365IngestError
from .logcontext import install as install_log_context
from .logcontext import log_context
from .messagetrace import MessageTraceStream
from .planning import Window
from .runtime import Runtime
from .settings import TenantConfig
from .sinks import StreamKey

log = logging.getLogger(__name__)


class Stream(Protocol):
    """What a run needs of a stream: audit (tenant, content type) or message traces (tenant)."""

    @property
    def key(self) -> StreamKey: ...
    @property
    def tenant(self) -> TenantConfig: ...
    @property
    def content_type(self) -> str: ...
    @property
    def attributes(self) -> dict[str, str]: ...
    @property
    def stats(self) -> StreamStats: ...
    async def run(self, deadline: float) -> StreamResult: ...


def select_tenants(runtime: Runtime, tenant_ids: Iterable[str] | None) -> list[TenantConfig]:
    wanted = {t.lower() for t in tenant_ids} if tenant_ids else None
    tenants = [t for t in runtime.settings.tenants if wanted is None or t.tenant_id in wanted]
    if wanted and len(tenants) != len(wanted):
        unknown = wanted - {t.tenant_id for t in tenants}
        raise O365IngestError(f"tenant(s) {', '.join(sorted(unknown))} are not in O365_TENANTS")
    return tenants


async def _guarded(stream: Stream, deadline: float) -> StreamResult:
    """One stream failing never stops the others. Runs in its own task, so its log context is its own."""
    with log_context(tenant=stream.tenant.tenant_id, stream=stream.content_type):
        return await _run_stream(stream, deadline)


async def _run_stream(stream: Stream, deadline: float) -> StreamResult:
    try:
        return await stream.run(deadline)
    except O365IngestError as exc:
        log.error("stream %s: %s", stream.key, exc)
        return StreamResult(str(stream.key), "failed", stream.stats, None, exc.message, exc.remedy)
    except Exception as exc:
        log.exception("stream %s: unexpected error", stream.key)
        return StreamResult(str(stream.key), "failed", StreamStats(), None, f"{type(exc).__name__}: {exc}")


async def run_audit(runtime: Runtime, *, budget_seconds: float | None = None,
                    tenant_ids: Iterable[str] | None = None, content_types: Iterable[str] | None = None,
                    backfill: Window | None = None,
                    progress: Callable[[list[StreamStats]], None] | None = None) -> list[StreamResult]:
    """Run (or backfill) the audit streams once; returns one result per stream."""
    types = list(content_types) if content_types else list(runtime.settings.content_types)
    streams = [AuditStream(runtime, tenant, ct, backfill=backfill)
               for tenant in select_tenants(runtime, tenant_ids) for ct in types]
    return await _run_streams(runtime, streams, "backfill" if backfill else "run", budget_seconds, progress)


async def run_messagetrace(runtime: Runtime, *, budget_seconds: float | None = None,
                           tenant_ids: Iterable[str] | None = None, backfill: Window | None = None,
                           progress: Callable[[list[StreamStats]], None] | None = None) -> list[StreamResult]:
    """Run (or backfill) each tenant's message-trace stream once; nothing while message traces are off."""
    if not runtime.settings.messagetrace_enabled:
        log.info("message traces are off (O365_MESSAGETRACE_ENABLED=false); nothing to do")
        return []
    streams = [MessageTraceStream(runtime, tenant, backfill=backfill)
               for tenant in select_tenants(runtime, tenant_ids)]
    return await _run_streams(runtime, streams, "backfill" if backfill else "run", budget_seconds, progress)


async def _run_streams(runtime: Runtime, streams: Sequence[Stream], kind: str, budget_seconds: float | None,
                       progress: Callable[[list[StreamStats]], None] | None) -> list[StreamResult]:
    """Every stream concurrently within one time budget, each guarded; one summary line per stream."""
    run_id = uuid.uuid4().hex[:12]
    budget = budget_seconds if budget_seconds is not None else runtime.settings.run_budget_seconds
    deadline = time.monotonic() + budget
    install_log_context()
    with log_context(run_id=run_id):
        log.info("%s %s: %d stream(s), budget %.0fs", kind, run_id, len(streams), budget)
        ticker = asyncio.create_task(_tick(progress, [s.stats for s in streams])) if progress else None
        try:
            results = await asyncio.gather(*(_guarded(s, deadline) for s in streams))
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
        for stream, result in zip(streams, results, strict=True):
            runtime.instruments.runs.add(1, {**stream.attributes, "status": result.status, "kind": kind})
            level = logging.INFO if result.status in ("ok", "partial", "skipped") else logging.ERROR
            with log_context(tenant=stream.tenant.tenant_id, stream=stream.content_type):
                log.log(level, "%s %s %s", kind, run_id, result.summary())
    return list(results)


async def _tick(progress: Callable[[list[StreamStats]], None], stats: list[StreamStats]) -> None:
    while True:
        progress(stats)
        await asyncio.sleep(1.0)
