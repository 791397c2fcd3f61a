"""The message-trace stream of one tenant: read windows page by page, publish new rows and status
changes, commit as the sink acknowledges.

Pages are read one at a time: the tenant's quota, not the network, is the limit. Every published
row and every finished page becomes an *effect* tagged with the publisher batch it depends on; the
committer applies effects in order once the sink acknowledged that batch. A row goes into the
published-status memory, a finished window moves the watermark. A crash therefore loses nothing: the
next run reads the unfinished window again and publishes only what the memory does not hold.

A run stopped by the quota or its time budget also saves the link of the next unread page, and the
next run continues the window from there, so a window too large for one run still completes. Rows
on the pages it skips keep the status published when they were read until a later run reads them
again within the overlap. A crash saves no such link: the next run re-reads the whole window and so
catches every status change in it.

Rows are always published one per event, whatever ``O365_EVENT_ENVELOPE`` says: an envelope has no
per-row properties, and consumers need each row's trace id, recipient, status and update marker.

A backfill holds the live stream's lock as well as its own, so one trace run per tenant works at a
time; it starts from the live checkpoint's quota log and writes its own requests back into it, so
together they stay within the tenant's share.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from .audit import StreamResult, StreamStats, publish_with_commits
from .cursor import parse_time
from .errors import ApiError, O365IngestError, StreamBusy
from .graphtrace import MAX_TOP, GraphTraceClient, TraceSource
from .outcomes import PublishOutcomes
from .planning import Window
from .publisher import StreamPublisher
from .quota import QuotaExhausted
from .runtime import ApiMetrics, Runtime
from .rwstrace import RwsTraceClient
from .settings import MESSAGETRACE_STREAM, TenantConfig
from .sinks import StreamKey
from .tracecursor import (
    MAX_AGE,
    RWS_MAX_AGE,
    Resume,
    TraceCursor,
    TraceMemory,
    TracePlan,
    TracePolicy,
    classify,
    plan_trace_windows,
    reread_from,
    row_key,
)

log = logging.getLogger(__name__)



def live_checkpoint_key(tenant_id: str) -> str:
    return f"messagetrace/{tenant_id}"


@dataclass
class TraceStats(StreamStats):
    """``listed`` counts rows read, ``skipped_seen`` unchanged repeats, ``records`` rows published."""

    pages: int = 0
    requests: int = 0
    new: int = 0
    updates: int = 0
    details: int = 0
    throttled: int = 0


@dataclass
class TraceResult(StreamResult):
    note: str | None = None  # why a run stopped early without failing (quota, time budget)

    def summary(self) -> str:
        s = self.stats
        extra = (f"pages={s.pages} requests={s.requests} new={s.new} updates={s.updates} details={s.details} "
                 f"throttled={s.throttled} " if isinstance(s, TraceStats) else "")
        text = (f"stream {self.stream}: {self.status}; windows={s.windows} rows={s.listed} {extra}"
                f"unchanged={s.skipped_seen} published={s.records} "
                f"watermark={self.watermark.isoformat() if self.watermark else '-'}")
        for label, value in (("note", self.note), ("error", self.error), ("remedy", self.remedy)):
            if value:
                text += f"; {label}: {value}"
        return text


def trace_event(row: Mapping[str, Any], tenant_id: str, *, update: bool) -> tuple[bytes, dict[str, Any]]:
    """One trace row as an event body (key order kept) and its properties: consumers upsert on them."""
    properties = {
        "traceId": str(row.get("id", "")),
        "recipientAddress": str(row.get("recipientAddress", "")),
        "status": str(row.get("status", "")),
        "tenantId": tenant_id,
        "stream": MESSAGETRACE_STREAM,
        "update": update,
        "receivedDateTime": str(row.get("receivedDateTime", "")),
    }
    return orjson.dumps(row), properties


@dataclass(frozen=True)
class _Published:
    key: str
    status: str
    received: datetime
    update: bool


@dataclass(frozen=True)
class _PageDone:
    window: Window
    next_url: str | None


@dataclass(frozen=True)
class _WindowDone:
    window: Window


_Effect = _Published | _PageDone | _WindowDone


@dataclass
class _RunState:
    cursor: TraceCursor
    etag: str | None
    publisher: StreamPublisher
    lost: Callable[[], bool]  # a lock this run holds was lost: stop taking new work
    effects: deque[tuple[int, _Effect]] = field(default_factory=deque)
    sent: dict[str, str] = field(default_factory=dict)  # published in this run: key -> status
    page_resume: Resume | None = None  # next unread page of the current window, as far as acknowledged
    live: TraceCursor | None = None  # a backfill's view of the live checkpoint (memory, quota log)
    live_etag: str | None = None


async def trace_source(runtime: Runtime, tenant: TenantConfig, deadline: float,
                       page_size: int = MAX_TOP, stats: TraceStats | None = None) -> TraceSource:
    """The configured client (Graph by default), paced by the tenant's quota limiter."""
    s = runtime.settings
    metrics = ApiMetrics(runtime.instruments, {"tenant": tenant.tenant_id, "stream": MESSAGETRACE_STREAM})

    def count(op: str, status: int, code: str | None) -> None:
        metrics.request(op, status, code)
        if stats is not None:
            stats.requests += 1
            stats.throttled += status == 429

    tokens = await runtime.tokens.for_tenant(tenant)
    limiter = runtime.pacing(tenant).graph_limiter
    if s.messagetrace_source == "rws":
        return RwsTraceClient(runtime.http, s.endpoints.reporting_url, tenant, tokens, s.endpoints.reporting_resource,
                              limiter, max_attempts=s.max_attempts, deadline=lambda: deadline, on_request=count,
                              on_retry=metrics.retry)
    return GraphTraceClient(runtime.http, s.endpoints.graph_url, tenant, tokens, s.endpoints.graph_resource,
                            limiter, max_attempts=s.max_attempts, deadline=lambda: deadline, on_request=count,
                            on_retry=metrics.retry, page_size=page_size)


class MessageTraceStream:
    """One tenant's message traces; a backfill reads its own range under its own checkpoint."""

    def __init__(self, runtime: Runtime, tenant: TenantConfig, *, backfill: Window | None = None,
                 page_size: int = MAX_TOP) -> None:
        self.rt = runtime
        self.settings = runtime.settings
        self.tenant = tenant
        self.backfill = backfill
        self.page_size = page_size
        self.content_type = MESSAGETRACE_STREAM
        self.key = StreamKey(tenant.tenant_id, MESSAGETRACE_STREAM)
        self.live_key = live_checkpoint_key(tenant.tenant_id)
        self.checkpoint_key = self.live_key if backfill is None else (
            f"backfill/{tenant.tenant_id}/{MESSAGETRACE_STREAM}/"
            f"{backfill.start:%Y%m%dT%H%M%S}-{backfill.end:%Y%m%dT%H%M%S}")
        self.attributes = {"tenant": tenant.tenant_id, "stream": MESSAGETRACE_STREAM}
        self.outcomes = PublishOutcomes(runtime, self.attributes, f"records/{tenant.tenant_id}/{MESSAGETRACE_STREAM}")
        self.stats = TraceStats()
        self._stop_reason: O365IngestError | None = None
        self._partial_reason: str | None = None

    # --- planning
    def policy(self) -> TracePolicy:
        s = self.settings
        max_age = RWS_MAX_AGE if s.messagetrace_source == "rws" else MAX_AGE
        min_age = timedelta(minutes=s.messagetrace_min_age_minutes)
        if self.backfill is not None:
            return TracePolicy(lookback=timedelta(0), overlap=timedelta(0), min_age=min_age, max_age=max_age)
        return TracePolicy(lookback=timedelta(hours=s.messagetrace_lookback_hours),
                           overlap=timedelta(minutes=s.messagetrace_overlap_minutes), min_age=min_age,
                           max_age=max_age)

    def plan(self, cursor: TraceCursor, now: datetime) -> TracePlan:
        if self.backfill is None:
            return plan_trace_windows(cursor.watermark, now, self.policy(), cursor.resume)
        # A backfill tiles its own range once; its watermark marks how far it got.
        start = max(cursor.watermark or self.backfill.start, self.backfill.start)
        plan = plan_trace_windows(start, now, self.policy(), cursor.resume)
        windows = tuple(Window(w.start, min(w.end, self.backfill.end)) for w in plan.windows
                        if w.start < self.backfill.end)
        resume = plan.resume if plan.resume is not None and windows and windows[0] == plan.resume.window else None
        return TracePlan(windows, resume, plan.lost)

    # --- run
    def lock_keys(self) -> tuple[str, ...]:
        """A backfill also holds the live stream's lock: with one trace run per tenant at a time, the
        quota log handed over in the live checkpoint holds every request either of them made."""
        return (self.checkpoint_key,) if self.backfill is None else (self.checkpoint_key, self.live_key)

    async def run(self, deadline: float) -> StreamResult:
        started = time.monotonic()
        try:
            async with contextlib.AsyncExitStack() as stack:
                locks = [await stack.enter_async_context(self.rt.checkpoints.lock(key)) for key in self.lock_keys()]
                result = await self._run_locked(deadline, lambda: any(lock.lost.is_set() for lock in locks))
        except StreamBusy as exc:
            log.warning("stream %s: skipped, another run holds its lock (%s)", self.key, exc.message)
            return TraceResult(str(self.key), "skipped", self.stats, None, exc.message)
        self.rt.instruments.run_duration.record(time.monotonic() - started, self.attributes)
        return result

    async def _load(self, key: str) -> tuple[TraceCursor, str | None]:
        data, etag = await self.rt.checkpoints.load(key)
        return (TraceCursor.from_json(data) if data else TraceCursor()), etag

    async def _run_locked(self, deadline: float, lock_lost: Callable[[], bool]) -> StreamResult:
        rt, s = self.rt, self.settings
        cursor, etag = await self._load(self.checkpoint_key)
        live, live_etag = await self._load(self.live_key) if self.backfill is not None else (None, None)
        limiter = rt.pacing(self.tenant).graph_limiter
        limiter.merge(cursor.quota_log)
        if live is not None:
            limiter.merge(live.quota_log)  # the live stream's requests count against the same share
        plan = self.plan(cursor, rt.clock())
        if plan.lost is not None:
            cursor.lost_ranges += 1
            rt.instruments.lost_ranges.add(1, self.attributes)
            log.warning("stream %s: %s to %s is older than the API keeps and can no longer be read; traces in it "
                        "that were never read are lost", self.key, plan.lost.start.isoformat(),
                        plan.lost.end.isoformat())
            cursor.advance(plan.lost.end)
        forget_before = reread_from(cursor.watermark, self.policy().overlap, plan.windows)
        if forget_before is not None:
            cursor.memory.prune(forget_before)
        source = await trace_source(rt, self.tenant, deadline, self.page_size, self.stats)
        # One row per event, whatever O365_EVENT_ENVELOPE says: an envelope drops the per-row properties.
        publisher = StreamPublisher(rt.sink, self.key, envelope=False, on_oversize=self._oversize,
                                    max_attempts=s.max_attempts, on_sent=self.outcomes.sent,
                                    on_failed=self.outcomes.send_failed)
        state = _RunState(cursor=cursor, etag=etag, publisher=publisher, lost=lock_lost, live=live,
                          live_etag=live_etag)
        await publish_with_commits(self._read(plan, source, state, deadline), publisher,
                                   lambda final: self._commit(state, final), self._stop)
        status = "ok"
        if self._stop_reason is not None:
            status = "failed"
        elif self._partial_reason is not None or lock_lost() or state.effects:
            status = "partial"
        if cursor.watermark is not None and self.backfill is None:  # a backfill's is old on purpose
            rt.instruments.watermark_lag.record((rt.clock() - cursor.watermark).total_seconds(), self.attributes)
        reason = self._stop_reason
        return TraceResult(str(self.key), status, self.stats, cursor.watermark,
                           error=reason.message if reason else None, remedy=reason.remedy if reason else None,
                           note=self._partial_reason)

    async def _read(self, plan: TracePlan, source: TraceSource, state: _RunState, deadline: float) -> None:
        """Every planned window, page by page, until done, out of time or out of quota."""
        live = state.live.memory if state.live is not None else None
        try:
            for index, window in enumerate(plan.windows):
                resumed = plan.resume is not None and index == 0
                url: str | None = plan.resume.next_url if plan.resume is not None and resumed else (
                    source.first_page_url(window))
                self.stats.windows += 1
                while url is not None:
                    if time.monotonic() >= deadline or state.lost() or self._stop_reason is not None:
                        self._partial("the run's time budget is used up; the next run continues")
                        return
                    try:
                        page = await source.page(url)
                    except ApiError as exc:
                        if not (resumed and exc.status == 400):
                            raise
                        log.warning("stream %s: the saved next-page link was refused (%s); reading window %s to %s "
                                    "again from its start", self.key, exc.message, window.start.isoformat(),
                                    window.end.isoformat())
                        resumed, url = False, source.first_page_url(window)
                        continue
                    resumed = False
                    self.stats.pages += 1
                    for row in page.rows:
                        await self._row(row, source, state, live)
                    state.effects.append((state.publisher.last_seq, _PageDone(window, page.next_url)))
                    url = page.next_url
                state.effects.append((state.publisher.last_seq, _WindowDone(window)))
        except QuotaExhausted as exc:
            self._partial(exc.message)
        except ApiError as exc:
            if exc.status == 429:  # the tenant's quota is spent by others too; honouring it overran the budget
                self._partial(f"Microsoft throttled the tenant's message-trace quota ({exc.message})")
            else:
                self._stop(exc)
        except O365IngestError as exc:
            self._stop(exc)

    async def _row(self, row: dict[str, Any], source: TraceSource, state: _RunState,
                   live: TraceMemory | None) -> None:
        """Publish a row that is new or whose status changed; an unchanged repeat is skipped."""
        self.stats.listed += 1
        trace_id, recipient, status = row.get("id"), row.get("recipientAddress"), row.get("status")
        received = _received(row)
        if not (isinstance(trace_id, str) and trace_id and isinstance(recipient, str) and recipient and received):
            await self._malformed(row)
            return
        status = status if isinstance(status, str) else ""
        key = row_key(trace_id, recipient)
        change = classify(key, status, state.sent, state.cursor.memory, *((live,) if live is not None else ()))
        if change == "unchanged":
            self.stats.skipped_seen += 1
            return
        if self.settings.messagetrace_details and source.supports_details:
            details = await source.details(trace_id, recipient)
            self.stats.details += 1
            if details is not None:
                row = {**row, "details": details}
        update = change == "update"
        body, properties = trace_event(row, self.tenant.tenant_id, update=update)
        await state.publisher.add(body, properties)
        state.sent[key] = status
        self.stats.records += 1
        self.stats.bytes += len(body)
        if update:
            self.stats.updates += 1
        else:
            self.stats.new += 1
        state.effects.append((state.publisher.last_seq, _Published(key, status, received, update)))

    def _stop(self, exc: O365IngestError) -> None:
        if self._stop_reason is None:
            self._stop_reason = exc
            log.error("stream %s: stopping: %s", self.key, exc)

    def _partial(self, reason: str) -> None:
        if self._partial_reason is None:
            self._partial_reason = reason
            log.info("stream %s: stopping early: %s", self.key, reason)

    # --- commit
    async def _commit(self, state: _RunState, final: bool = False) -> None:
        """Apply the effects the sink acknowledged, in order, and save (with the quota log)."""
        acked = state.publisher.acked_through
        cursor = state.cursor
        published = 0
        changed = False
        while state.effects and state.effects[0][0] <= acked:
            _, effect = state.effects.popleft()
            changed = True
            if isinstance(effect, _Published):
                cursor.memory.remember(effect.key, effect.status, effect.received)
                cursor.delivered_records += 1
                cursor.updates += int(effect.update)
                published += 1
            elif isinstance(effect, _PageDone):
                state.page_resume = Resume(effect.window, effect.next_url) if effect.next_url else None
            else:
                state.page_resume = cursor.resume = None
                cursor.advance(effect.window.end)
        if final and self._partial_reason is not None and self._stop_reason is None and state.page_resume:
            cursor.resume = state.page_resume  # stopped by quota or time: continue this window next run
            changed = True
        history = self.rt.pacing(self.tenant).graph_limiter.history()
        if history != cursor.quota_log:
            cursor.quota_log = history
            changed = True
        if published:
            self.rt.instruments.records_published.add(published, self.attributes)
        if not (changed or final):
            return
        if final:
            s = self.stats
            cursor.last_run = {"finished": self.rt.clock().isoformat(), "pages": s.pages, "rows": s.listed,
                               "new": s.new, "updates": s.updates, "unchanged": s.skipped_seen,
                               "requests": s.requests}
            cursor.last_error = str(self._stop_reason) if self._stop_reason else None
        state.etag = await self.rt.checkpoints.save(self.checkpoint_key, cursor.to_json(), state.etag)
        self.stats.commits += 1
        await self._hand_over_quota_log(state, history)

    async def _hand_over_quota_log(self, state: _RunState, history: list[float]) -> None:
        """A backfill writes its requests into the live checkpoint (it holds that lock too), so the
        live stream's next run, in any process, counts them; nothing else there changes."""
        live = state.live
        if live is None or live.quota_log == history:
            return
        live.quota_log = history
        state.live_etag = await self.rt.checkpoints.save(self.live_key, live.to_json(), state.live_etag)

    # --- what cannot be published
    async def _malformed(self, row: Mapping[str, Any]) -> None:
        """A row without id, recipient or a readable receivedDateTime cannot be tracked: kept, not published."""
        body = orjson.dumps(row)
        location = await self.outcomes.dead_letter_record(
            f"malformed-{hashlib.blake2b(body, digest_size=8).hexdigest()}.json", body,
            {"reason": "malformed-trace-row"}, "malformed")
        self.stats.dead_lettered_records += 1
        log.error("stream %s: a trace row without id, recipientAddress or receivedDateTime was dead-lettered at %s",
                  self.key, location)

    async def _oversize(self, body: bytes, properties: Mapping[str, Any]) -> None:
        location = await self.outcomes.dead_letter_record(
            f"{properties.get('traceId') or 'trace'}-{len(body)}.json", body,
            {"reason": "larger-than-event-limit", "bytes": len(body)}, "oversize")
        self.stats.dead_lettered_records += 1
        log.error("stream %s: trace %s (%d bytes) exceeds the event size limit; dead-lettered at %s",
                  self.key, properties.get("traceId"), len(body), location)


def _received(row: Mapping[str, Any]) -> datetime | None:
    value = row.get("receivedDateTime")
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


async def trace_status(runtime: Runtime, tenant: TenantConfig) -> dict[str, Any]:
    """The trace stream's row for ``status``, in the audit rows' shape plus its own fields."""
    data, _ = await runtime.checkpoints.load(live_checkpoint_key(tenant.tenant_id))
    cursor = TraceCursor.from_json(data) if data else None
    if cursor is not None and cursor.watermark is None and not cursor.last_run:
        cursor = None  # only a backfill's quota log is in it: the live stream never ran
    row: dict[str, Any] = {"tenant": tenant.tenant_id, "stream": MESSAGETRACE_STREAM, "started": cursor is not None}
    if cursor is not None:
        now = runtime.clock()
        row.update({
            "watermark": cursor.watermark.isoformat() if cursor.watermark else None,
            "lagSeconds": round((now - cursor.watermark).total_seconds()) if cursor.watermark else None,
            "seenBlobs": len(cursor.memory),  # rows whose published status is remembered
            "openRetries": 0,
            "deliveredBlobs": 0,
            "deliveredRecords": cursor.delivered_records,
            "updates": cursor.updates,
            "resumeAt": cursor.resume.window.start.isoformat() if cursor.resume else None,
            "abandoned": {"beyond-retention": cursor.lost_ranges} if cursor.lost_ranges else {},
            "lastRun": cursor.last_run,
            "lastError": cursor.last_error,
        })
    return row
