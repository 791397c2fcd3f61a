"""Per-stream status from the checkpoints: one implementation for the CLI and the admin function."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .cursor import AuditCursor
from .messagetrace import trace_status
from .runtime import Runtime
from .settings import MESSAGETRACE_STREAM
from .tracecursor import TraceCursor

BACKFILL_PREFIX = "backfill/"
_KEY_TIME = "%Y%m%dT%H%M%S"


async def stream_status(runtime: Runtime) -> list[dict[str, Any]]:
    now = runtime.clock()
    rows: list[dict[str, Any]] = []
    for tenant in runtime.settings.tenants:
        for content_type in runtime.settings.content_types:
            key = f"audit/{tenant.tenant_id}/{content_type}"
            data, _ = await runtime.checkpoints.load(key)
            cursor = AuditCursor.from_json(data) if data else None
            row: dict[str, Any] = {"tenant": tenant.tenant_id, "stream": content_type, "started": cursor is not None}
            if cursor is not None:
                row.update({
                    "watermark": cursor.watermark.isoformat() if cursor.watermark else None,
                    "lagSeconds": round((now - cursor.watermark).total_seconds()) if cursor.watermark else None,
                    "seenBlobs": len(cursor.seen),
                    "openRetries": len(cursor.retries),
                    "deliveredBlobs": cursor.delivered_blobs,
                    "deliveredRecords": cursor.delivered_records,
                    "abandoned": dict(cursor.abandoned),
                    "lastRun": cursor.last_run,
                    "lastError": cursor.last_error,
                })
            rows.append(row)
    if runtime.settings.messagetrace_enabled:
        rows += [await trace_status(runtime, tenant) for tenant in runtime.settings.tenants]
    return rows


def format_status(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'tenant':36}  {'stream':26}  {'watermark':25}  {'lag':>8}  {'seen':>6}  {'records':>9}  "
             "abandoned / error"]
    for r in rows:
        if not r["started"]:
            lines.append(f"{r['tenant']:36}  {r['stream']:26}  {'(never run)':25}")
            continue
        lag = f"{r['lagSeconds'] // 60}m" if r["lagSeconds"] is not None else "-"
        abandoned = ",".join(f"{k}={v}" for k, v in sorted(r["abandoned"].items())) or "-"
        error = f"  last error: {r['lastError']}" if r["lastError"] else ""
        lines.append(f"{r['tenant']:36}  {r['stream']:26}  {r['watermark'] or '-':25}  {lag:>8}  "
                     f"{r['seenBlobs']:>6}  {r['deliveredRecords']:>9}  {abandoned}{error}")
    return "\n".join(lines)


async def backfill_status(runtime: Runtime) -> list[dict[str, Any]]:
    """Every backfill with a checkpoint (``backfill/<tenant>/<stream>/<start>-<end>``): how far it got."""
    rows: list[dict[str, Any]] = []
    for key in sorted(await runtime.checkpoints.keys(BACKFILL_PREFIX)):
        parts = key.split("/")
        try:
            tenant, stream, span = parts[1], parts[2], parts[3]
            start, end = (datetime.strptime(t, _KEY_TIME).replace(tzinfo=UTC) for t in span.split("-"))
        except (IndexError, ValueError):
            continue  # not a checkpoint this version writes
        data, _ = await runtime.checkpoints.load(key)
        if not data:
            continue
        cursor: AuditCursor | TraceCursor
        if stream == MESSAGETRACE_STREAM:
            cursor = TraceCursor.from_json(data)
            extra: dict[str, Any] = {"deliveredBlobs": 0, "openRetries": 0,
                                     "abandoned": {"beyond-retention": cursor.lost_ranges} if cursor.lost_ranges
                                     else {}}
        else:
            cursor = AuditCursor.from_json(data)
            extra = {"deliveredBlobs": cursor.delivered_blobs, "openRetries": len(cursor.retries),
                     "abandoned": dict(cursor.abandoned)}
        reached = min(cursor.watermark, end) if cursor.watermark else start
        rows.append({
            "key": key, "tenant": tenant, "stream": stream, "start": start.isoformat(), "end": end.isoformat(),
            "state": "complete" if reached >= end else "incomplete",
            "progressPercent": round(100 * max(0.0, (reached - start) / (end - start)), 1),
            "watermark": cursor.watermark.isoformat() if cursor.watermark else None,
            "deliveredRecords": cursor.delivered_records, **extra,
            "lastRun": cursor.last_run, "lastError": cursor.last_error,
        })
    return rows


async def status_document(runtime: Runtime, tenant: str | None = None, stream: str | None = None) -> dict[str, Any]:
    """Live streams and backfills, optionally for one tenant and/or stream: `status --json` and the
    ops status function return exactly this."""

    def wanted(row: dict[str, Any]) -> bool:
        return (tenant is None or row["tenant"] == tenant) and (stream is None or row["stream"] == stream)

    return {
        "generated": runtime.clock().isoformat(),
        "streams": [r for r in await stream_status(runtime) if wanted(r)],
        "backfills": [r for r in await backfill_status(runtime) if wanted(r)],
    }


def format_backfills(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'tenant':36}  {'stream':26}  {'window':36}  {'done':>6}  {'records':>9}  error"]
    for r in rows:
        window = f"{r['start'][:16]} .. {r['end'][:16]}"
        error = r["lastError"] or "-"
        lines.append(f"{r['tenant']:36}  {r['stream']:26}  {window:36}  {r['progressPercent']:>5}%  "
                     f"{r['deliveredRecords']:>9}  {error}")
    return "\n".join(lines)
