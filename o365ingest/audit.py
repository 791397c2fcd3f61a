"""One audit stream (tenant, content type): list windows, fetch blobs, publish, commit.

Listing, fetching and publishing overlap: a lister walks the planned windows and queues new blobs,
workers fetch and publish them, and a committer moves the checkpoint as the sink acknowledges.
Every listed blob ends in exactly one of: delivered, abandoned (expired, rejected, not found) or
dead-lettered; a blob that failed transiently stays open and holds the watermark back, so the next
run lists it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from .cursor import MAX_FAILED_RUNS, AuditCursor, WatermarkTracker
from .errors import ApiError, BadContentError, CheckpointConflict, O365IngestError, SinkError, UnsafeUrlError
from .management import ContentItem, ManagementClient
from .outcomes import PublishOutcomes
from .planning import Plan, Window, WindowPolicy, plan_windows
from .publisher import StreamPublisher
from .recordids import RecordIds
from .runtime import Runtime
from .settings import TenantConfig
from .sinks import StreamKey

log = logging.getLogger(__name__)

SUBSCRIPTION_START_SPACING = timedelta(minutes=15)
COMMIT_INTERVAL_SECONDS = 2.0
_STOP = object()


async def commit_periodically(commit: Callable[[], Awaitable[None]], done: asyncio.Event, interval: float,
                              on_error: Callable[[O365IngestError], None]) -> None:
    """Save a stream's progress every ``interval`` seconds until ``done`` is set.

    Stopped by the event, never cancelled: a save cancelled after the store applied it would leave
    the run holding the old ETag, and its next save would fail as if another run had written.
    """
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), interval)
        if done.is_set():
            return
        try:
            await commit()
        except O365IngestError as exc:
            on_error(exc)
            return


async def publish_with_commits(work: Awaitable[Any], publisher: StreamPublisher,
                               commit: Callable[[bool], Awaitable[None]],
                               stop: Callable[[O365IngestError], None]) -> None:
    """A stream run's middle, the same for every stream: do the work while progress is saved every
    ``COMMIT_INTERVAL_SECONDS``, let the sink acknowledge everything, then save a last time."""
    done = asyncio.Event()
    commits = asyncio.create_task(commit_periodically(lambda: commit(False), done, COMMIT_INTERVAL_SECONDS, stop))
    try:
        await work
        await publisher.drain()
    finally:
        done.set()
        await commits
    if publisher.error is not None:
        stop(publisher.error)
    try:
        await commit(True)
    except CheckpointConflict as exc:
        stop(exc)


@dataclass
class StreamStats:
    windows: int = 0
    listed: int = 0
    skipped_seen: int = 0
    fetched: int = 0
    delivered: int = 0
    records: int = 0
    duplicates: int = 0
    bytes: int = 0
    dead_lettered_records: int = 0
    abandoned: dict[str, int] = field(default_factory=dict)
    left_open: int = 0
    commits: int = 0


@dataclass
class StreamResult:
    stream: str
    status: str  # "ok", "partial" (time budget), "skipped" (busy), "failed"
    stats: StreamStats
    watermark: datetime | None
    error: str | None = None
    remedy: str | None = None

    def summary(self) -> str:
        s = self.stats
        abandoned = ", ".join(f"{k}={v}" for k, v in sorted(s.abandoned.items())) or "0"
        text = (f"stream {self.stream}: {self.status}; windows={s.windows} listed={s.listed} "
                f"seen={s.skipped_seen} delivered={s.delivered} records={s.records} duplicates={s.duplicates} "
                f"abandoned={abandoned} open={s.left_open} "
                f"watermark={self.watermark.isoformat() if self.watermark else '-'}")
        if self.error:
            text += f"; error: {self.error}"
        if self.remedy:
            text += f"; remedy: {self.remedy}"
        return text


def record_event(record: Mapping[str, Any], item: ContentItem, tenant_id: str) -> tuple[bytes, dict[str, Any]]:
    """One record as an event body (key order kept) and routing/dedupe properties."""
    properties = {
        "Id": str(record.get("Id", "")),
        "contentId": item.content_id,
        "contentType": item.content_type,
        "tenantId": tenant_id,
        "RecordType": record.get("RecordType", -1) if isinstance(record.get("RecordType"), int) else -1,
        "CreationTime": str(record.get("CreationTime", "")),
    }
    return orjson.dumps(record), properties


class AuditStream:
    def __init__(self, runtime: Runtime, tenant: TenantConfig, content_type: str, *,
                 backfill: Window | None = None) -> None:
        self.rt = runtime
        self.settings = runtime.settings
        self.tenant = tenant
        self.content_type = content_type
        self.backfill = backfill
        self.key = StreamKey(tenant.tenant_id, content_type)
        base = f"audit/{tenant.tenant_id}/{content_type}"
        self.checkpoint_key = base if backfill is None else (
            f"backfill/{tenant.tenant_id}/{content_type}/{backfill.start:%Y%m%dT%H%M%S}-{backfill.end:%Y%m%dT%H%M%S}")
        self.live_key = base
        self.attributes = {"tenant": tenant.tenant_id, "stream": content_type}
        self.outcomes = PublishOutcomes(runtime, self.attributes, f"records/{tenant.tenant_id}/{content_type}")
        self.stats = StreamStats()
        self._stop_reason: O365IngestError | None = None

    # --- planning
    def policy(self) -> WindowPolicy:
        s = self.settings
        return WindowPolicy(lookback=timedelta(hours=s.lookback_hours), overlap=timedelta(minutes=s.overlap_minutes),
                            safety_lag=timedelta(minutes=s.safety_lag_minutes))

    def plan(self, cursor: AuditCursor, now: datetime) -> Plan:
        if self.backfill is None:
            return plan_windows(cursor.watermark, now, self.policy())
        # A backfill tiles its own range; its cursor's watermark marks how far it got.
        policy = WindowPolicy(lookback=timedelta(0), overlap=timedelta(0), safety_lag=timedelta(0))
        start = max(cursor.watermark or self.backfill.start, self.backfill.start)
        plan = plan_windows(start, min(now, self.backfill.end + policy.max_age), policy)
        windows = tuple(Window(w.start, min(w.end, self.backfill.end))
                        for w in plan.windows if w.start < self.backfill.end)
        return Plan(windows, plan.lost)

    # --- run
    async def run(self, deadline: float) -> StreamResult:
        started = time.monotonic()
        try:
            async with self.rt.checkpoints.lock(self.checkpoint_key) as lock:
                result = await self._run_locked(deadline, lock.lost)
        except O365IngestError as exc:
            if type(exc).__name__ == "StreamBusy":
                log.warning("stream %s: skipped, another run holds its lock", self.key)
                return StreamResult(str(self.key), "skipped", self.stats, None, exc.message)
            raise
        self.rt.instruments.run_duration.record(time.monotonic() - started, self.attributes)
        return result

    async def _load(self) -> tuple[AuditCursor, str | None]:
        data, etag = await self.rt.checkpoints.load(self.checkpoint_key)
        return (AuditCursor.from_json(data) if data else AuditCursor()), etag

    async def _seen_elsewhere(self) -> AuditCursor | None:
        """A backfill skips blobs the live stream already delivered."""
        if self.backfill is None:
            return None
        data, _ = await self.rt.checkpoints.load(self.live_key)
        return AuditCursor.from_json(data) if data else None

    async def _run_locked(self, deadline: float, lock_lost: asyncio.Event) -> StreamResult:
        rt, s = self.rt, self.settings
        now = rt.clock()
        cursor, etag = await self._load()
        live = await self._seen_elsewhere()
        cursor.prune(now)
        plan = self.plan(cursor, now)
        if plan.lost is not None:
            rt.instruments.lost_ranges.add(1, self.attributes)
            log.warning("stream %s: %s to %s is older than the API's 7-day limit and can no longer be listed; "
                        "blobs in it that were never fetched are lost", self.key, plan.lost.start.isoformat(),
                        plan.lost.end.isoformat())
            cursor.count_abandoned("beyond-7-days")
            cursor.advance(plan.lost.end)
        client = await rt.management(self.tenant, deadline=lambda: deadline, stream=self.content_type)
        tracker = WatermarkTracker(cursor.watermark)
        publisher = StreamPublisher(rt.sink, self.key, envelope=s.envelope == "records", on_oversize=self._oversize,
                                    max_attempts=s.max_attempts, on_sent=self.outcomes.sent,
                                    on_failed=self.outcomes.send_failed)
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(4, 2 * s.fetch_concurrency))
        awaiting: list[tuple[ContentItem, int, str]] = []  # (blob, batch it depends on, outcome)
        seen_ids = RecordIds()
        state = _RunState(cursor=cursor, etag=etag, tracker=tracker, awaiting=awaiting, publisher=publisher)

        def out_of_time() -> bool:
            return time.monotonic() >= deadline or lock_lost.is_set() or self._stop_reason is not None

        async def lister() -> None:
            listed_ids: set[str] = set()
            try:
                for window in plan.windows:
                    if out_of_time():
                        break
                    self.stats.windows += 1
                    async for page in self._list(client, window, cursor):
                        for item in page:
                            self.stats.listed += 1
                            rt.instruments.blobs_listed.add(1, self.attributes)
                            if item.content_id in listed_ids or cursor.is_seen(item.content_id) or (
                                    live is not None and live.is_seen(item.content_id)):
                                self.stats.skipped_seen += 1
                                rt.instruments.blobs_skipped_seen.add(1, self.attributes)
                                continue
                            listed_ids.add(item.content_id)
                            tracker.listed(item.content_id, item.content_created)
                            await queue.put(item)
                    tracker.listed_through(window.end)
            except O365IngestError as exc:
                self._stop(exc)
            finally:
                for _ in range(s.fetch_concurrency):
                    await queue.put(_STOP)

        async def worker() -> None:
            while True:
                item = await queue.get()
                if item is _STOP:
                    return
                if out_of_time():
                    continue  # left open: the watermark stays before it and the next run takes it
                await self._handle(client, item, publisher, seen_ids, state)

        await publish_with_commits(asyncio.gather(lister(), *(worker() for _ in range(s.fetch_concurrency))),
                                   publisher, lambda final: self._commit(state, final), self._stop)
        self.stats.left_open = tracker.outstanding
        status = "ok"
        if self._stop_reason is not None:
            status = "failed"
        elif time.monotonic() >= deadline or lock_lost.is_set() or tracker.outstanding:
            status = "partial"
        watermark = state.cursor.watermark
        if watermark is not None and self.backfill is None:
            rt.instruments.watermark_lag.record((rt.clock() - watermark).total_seconds(), self.attributes)
        reason = self._stop_reason
        return StreamResult(str(self.key), status, self.stats, watermark,
                            error=reason.message if reason else None, remedy=reason.remedy if reason else None)

    def _stop(self, exc: O365IngestError) -> None:
        if self._stop_reason is None:
            self._stop_reason = exc
            log.error("stream %s: stopping: %s", self.key, exc)

    async def _list(self, client: ManagementClient, window: Window, cursor: AuditCursor) -> Any:
        """Pages of one window; starts the subscription when the API says it is missing or disabled."""
        try:
            async for page in client.list_content(self.content_type, window):
                yield page
            return
        except ApiError as exc:
            if exc.code not in ("AF20022", "AF20023"):
                raise
            now = self.rt.clock()
            if cursor.subscription_attempt and now - cursor.subscription_attempt < SUBSCRIPTION_START_SPACING:
                raise ApiError(f"subscription for {self.content_type} is not enabled yet ({exc.code}); it was "
                               f"started at {cursor.subscription_attempt.isoformat()}", status=exc.status,
                               code=exc.code, remedy="Content can take up to 12 hours to appear after a "
                               "subscription starts; the next runs will pick it up.") from exc
            cursor.subscription_attempt = now
            status = await client.start_subscription(self.content_type)
            log.info("stream %s: subscription started (%s); listing again", self.key, status)
        async for page in client.list_content(self.content_type, window):
            yield page

    async def _handle(self, client: ManagementClient, item: ContentItem, publisher: StreamPublisher,
                      seen_ids: RecordIds, state: _RunState) -> None:
        rt = self.rt
        outcome = "delivered"
        try:
            if item.content_expiration <= rt.clock():
                raise ApiError("content expired before it was fetched", status=None, code="AF20051")
            async with rt.pacing(self.tenant).fetch_slots:
                records = await client.fetch_blob(item)
            self.stats.fetched += 1
            rt.instruments.blobs_fetched.add(1, self.attributes)
            await self._publish(records, item, publisher, seen_ids)
            depends_on = publisher.last_seq
        except UnsafeUrlError as exc:
            outcome, depends_on = "rejected", 0
            await self._dead_letter(item, "rejected", exc.message)
        except BadContentError as exc:
            outcome, depends_on = "dead-lettered", 0
            await self._dead_letter(item, "bad-content", exc.message)
        except ApiError as exc:
            if exc.code == "AF20051":
                outcome, depends_on = "expired", 0
                log.warning("stream %s: blob %s expired (%s) before it could be fetched; abandoned", self.key,
                            item.content_id, item.content_expiration.isoformat())
            elif exc.code == "AF20050":
                outcome, depends_on = "not-found", 0
                log.warning("stream %s: blob %s no longer exists (AF20050); abandoned", self.key, item.content_id)
            elif exc.fatal:
                self._stop(exc)
                return
            else:
                entry = state.cursor.note_failure(item.content_id, exc.message)
                if entry.failed_runs < MAX_FAILED_RUNS:
                    log.warning("stream %s: blob %s failed (%s); run %d of %d, it stays open for the next run",
                                self.key, item.content_id, exc.message, entry.failed_runs, MAX_FAILED_RUNS)
                    return
                outcome, depends_on = "dead-lettered", 0
                await self._dead_letter(item, "failed-runs", exc.message)
        except SinkError as exc:
            self._stop(exc)
            return
        state.awaiting.append((item, depends_on, outcome))

    async def _publish(self, records: list[dict[str, Any]], item: ContentItem, publisher: StreamPublisher,
                       seen_ids: RecordIds) -> None:
        """A blob's records, less those this run already published, into the publisher (the hot path).

        Envelopes carry no per-record properties, so in envelope mode only the bodies are built and
        they go to the publisher in one call; a record's properties are made only if it is too large
        for an event and has to be dead-lettered.
        """
        stats = self.stats
        is_new = seen_ids.add
        dumps = orjson.dumps
        published = size = duplicates = 0
        try:
            if publisher.envelope:
                kept: list[dict[str, Any]] = []
                bodies: list[bytes] = []
                for record in records:
                    record_id = record.get("Id")
                    if isinstance(record_id, str) and not is_new(record_id):
                        duplicates += 1
                        continue
                    kept.append(record)
                    bodies.append(dumps(record))
                tenant_id = self.tenant.tenant_id
                published, size = await publisher.add_bodies(
                    bodies, lambda i: record_event(kept[i], item, tenant_id)[1])
            else:
                tenant_id = self.tenant.tenant_id
                for record in records:
                    record_id = record.get("Id")
                    if isinstance(record_id, str) and not is_new(record_id):
                        duplicates += 1
                        continue
                    body, properties = record_event(record, item, tenant_id)
                    if await publisher.add(body, properties):  # 0: too large for an event, dead-lettered
                        published += 1
                        size += len(body)
        finally:
            stats.records += published
            stats.bytes += size
            if duplicates:
                stats.duplicates += duplicates
                self.rt.instruments.duplicates_dropped.add(duplicates, self.attributes)

    async def _dead_letter(self, item: ContentItem, reason: str, detail: str) -> None:
        """Keep a reference to the blob (it can be fetched again until it expires)."""
        reference = orjson.dumps({"contentId": item.content_id, "contentUri": item.content_uri,
                                  "contentType": item.content_type, "contentCreated": item.content_created.isoformat(),
                                  "contentExpiration": item.content_expiration.isoformat(), "reason": reason,
                                  "detail": detail, "tenantId": self.tenant.tenant_id})
        location = await self.rt.deadletters.put(f"blobs/{self.tenant.tenant_id}/{self.content_type}",
                                                 f"{item.content_id}.json", reference,
                                                 {"reason": reason, "contentId": item.content_id})
        log.error("stream %s: blob %s %s: %s (reference kept at %s)", self.key, item.content_id,
                  "rejected" if reason == "rejected" else "dead-lettered", detail, location)
        self.rt.instruments.blobs_dead_lettered.add(1, {**self.attributes, "reason": reason})

    async def _oversize(self, body: bytes, properties: Mapping[str, Any]) -> None:
        """A record bigger than the largest event the hub accepts goes to the dead-letter store whole."""
        location = await self.outcomes.dead_letter_record(
            f"{properties.get('Id') or 'record'}-{len(body)}.json", body,
            {"reason": "larger-than-event-limit", "bytes": len(body),
             "contentId": str(properties.get("contentId", ""))}, "oversize")
        self.stats.dead_lettered_records += 1
        log.error("stream %s: record %s (%d bytes) exceeds the event size limit; dead-lettered at %s",
                  self.key, properties.get("Id"), len(body), location)

    async def _commit(self, state: _RunState, final: bool = False) -> None:
        """Mark blobs whose records the sink acknowledged as handled, move the watermark, save."""
        acked = state.publisher.acked_through
        still: list[tuple[ContentItem, int, str]] = []
        changed = False
        for item, depends_on, outcome in state.awaiting:
            if depends_on > acked:
                still.append((item, depends_on, outcome))
                continue
            changed = True
            state.cursor.mark_handled(item.content_id, item.content_expiration)
            state.tracker.completed(item.content_id)
            if outcome == "delivered":
                self.stats.delivered += 1
                state.cursor.delivered_blobs += 1
                if self.backfill is None:  # contentCreated -> acknowledged by the sink
                    delay = (self.rt.clock() - item.content_created).total_seconds()
                    self.rt.instruments.availability_delay.record(delay, self.attributes)
            else:
                self.stats.abandoned[outcome] = self.stats.abandoned.get(outcome, 0) + 1
                state.cursor.count_abandoned(outcome)
                self.rt.instruments.blobs_abandoned.add(1, {**self.attributes, "reason": outcome})
        state.awaiting[:] = still
        before = state.cursor.watermark
        state.cursor.advance(state.tracker.watermark())
        published = self.stats.records - state.records_committed
        if published and changed:
            self.rt.instruments.records_published.add(published, self.attributes)
        if not (changed or final or state.cursor.watermark != before):
            return
        if changed:
            state.cursor.delivered_records += published
            state.records_committed = self.stats.records
        if final:
            state.cursor.last_run = {"finished": self.rt.clock().isoformat(), "listed": self.stats.listed,
                                     "delivered": self.stats.delivered, "records": self.stats.records,
                                     "duplicates": self.stats.duplicates, "open": state.tracker.outstanding}
            state.cursor.last_error = str(self._stop_reason) if self._stop_reason else None
        state.etag = await self.rt.checkpoints.save(self.checkpoint_key, state.cursor.to_json(), state.etag)
        self.stats.commits += 1


@dataclass
class _RunState:
    cursor: AuditCursor
    etag: str | None
    tracker: WatermarkTracker
    awaiting: list[tuple[ContentItem, int, str]]
    publisher: StreamPublisher
    records_committed: int = 0
