"""Per-stream status from the checkpoints: one implementation for the CLI and the admin function."""

from __future__ import annotations

from typing import Any

from .cursor import AuditCursor
from .runtime import Runtime


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
