"""The raw limit: the pipeline's per-record work in a tight loop, with no HTTP and no asyncio.

``python -m bench.rawlimit SPEC.json`` first downloads the workload's blobs from the simulator
with the collector's own client (untimed) and keeps their bodies in memory. It then times, per
sink mode, exactly what the pipeline does with them -- parse each blob, dedupe record Ids, build
each event (body + properties), add it to a real ``EventDataBatch`` (or a JSON Lines batch) and
roll batches when full -- calling the pipeline's own functions, so the loop changes when they do.
What is left out is what the pipeline adds on top: HTTP, TLS, asyncio, listing and checkpoints.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import hotpath

RESULT_PREFIX = "BENCH-RESULT "


async def fetch_bodies(env: dict[str, str], max_records: int) -> list[tuple[Any, bytes]]:
    """(ContentItem, body) for the workload's blobs, in listing order, up to ``max_records`` records."""
    from datetime import UTC, datetime, timedelta

    from o365ingest.planning import WindowPolicy, plan_windows
    from o365ingest.runtime import Runtime
    from o365ingest.settings import load_settings

    settings = load_settings(env)
    tenant = settings.tenants[0]
    policy = WindowPolicy(lookback=timedelta(hours=settings.lookback_hours), overlap=timedelta(0),
                          safety_lag=timedelta(0))
    plan = plan_windows(None, datetime.now(UTC), policy)
    items = []
    async with Runtime.create(settings) as runtime:
        client = await runtime.management(tenant)
        for content_type in settings.content_types:
            for window in plan.windows:
                async for page in client.list_content(content_type, window):
                    items.extend(page)
        items.sort(key=lambda i: i.content_created)
        out: list[tuple[Any, bytes]] = []
        records = 0
        slots = asyncio.Semaphore(8)

        async def get(item: Any) -> tuple[Any, bytes]:
            async with slots:
                response = await client.request("GET", item.content_uri, op="GetBlob")
                return item, response.content

        for start in range(0, len(items), 64):
            chunk = await asyncio.gather(*(get(i) for i in items[start:start + 64]))
            for item, body in chunk:
                out.append((item, body))
                records += body.count(b'"Id":')  # close enough to stop fetching; counted exactly later
            if records >= max_records:
                break
    return out


def measure(mode: str, blobs: list[tuple[Any, bytes]], tenant_id: str) -> dict[str, Any]:
    directory = tempfile.mkdtemp(prefix="bench-raw-")
    gc.collect()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    counts = hotpath.run(mode, blobs, tenant_id, Path(directory))
    wall = time.perf_counter() - started
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    for path in Path(directory).glob("*"):
        path.unlink()
    os.rmdir(directory)
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    return {"mode": mode, "wall_seconds": wall, "cpu_seconds": cpu, **counts}


def main(argv: list[str]) -> int:
    from o365ingest.process import tune_garbage_collector

    spec = json.loads(Path(argv[0]).read_text())
    tune_garbage_collector()  # the same process tuning as the collector: the limit is the best the loop can do
    blobs = asyncio.run(fetch_bodies(spec["env"], int(spec.get("max_records", 100_000))))
    tenant_id = spec["env"]["O365_TENANTS"]
    results = {}
    for mode in spec.get("modes", ["record", "records", "file"]):
        best = None
        for _ in range(int(spec.get("repeat", 1))):
            result = measure(mode, blobs, tenant_id)
            if best is None or result["wall_seconds"] < best["wall_seconds"]:
                best = result
        results[mode] = best
    out = {"blobs": len(blobs), "blob_bytes": sum(len(b) for _, b in blobs), "modes": results,
           "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    sys.stdout.write(RESULT_PREFIX + json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
