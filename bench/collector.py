"""One collection run of the real pipeline, measured from inside its own process.

``python -m bench.collector SPEC.json`` prints one JSON line (prefixed ``BENCH-RESULT``). The spec
holds the collector's settings (environment variables, exactly as a deployment sets them), the
sink (``eventhub`` -> the counting fake, ``file`` -> the real file sink) and the run budget.

Run as its own process so that its CPU time (``getrusage(RUSAGE_SELF)``, every thread) and its
peak RSS (``ru_maxrss``) are the collector's alone: the simulator is another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import io
import json
import logging
import pstats
import resource
import sys
import time
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH-RESULT "


def rss_now_kb() -> int:
    """Current resident set size (not the peak), from /proc; 0 where that is not available."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * resource.getpagesize() // 1024


class RssSampler:
    """Samples current RSS every ``interval`` seconds while the run goes (peak and a short series)."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        start = time.monotonic()
        while True:
            self.samples.append((round(time.monotonic() - start, 3), rss_now_kb()))
            if len(self.samples) > 2000:
                self.samples[:] = self.samples[::2]
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def count_lines(directory: Path) -> tuple[int, int, int]:
    """(files, bytes, lines) of the file sink's JSON Lines output, read in chunks."""
    files = list(directory.rglob("*.jsonl"))
    lines = size = 0
    for path in files:
        with open(path, "rb") as handle:
            while chunk := handle.read(8 * 1024 * 1024):
                size += len(chunk)
                lines += chunk.count(b"\n")
    return len(files), size, lines


class GcTimer:
    """A ``gc.callbacks`` entry: CPU time spent in the cyclic collector, and its passes per generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.passes = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started
            self.passes[info["generation"]] += 1


def cpu_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.counting import CountingHub
    from o365ingest.process import tune_garbage_collector
    from o365ingest.runner import run_audit
    from o365ingest.runtime import Runtime
    from o365ingest.settings import load_settings

    settings = load_settings(spec["env"])
    hub = CountingHub(send_latency=spec.get("send_latency_ms", 0) / 1000.0, envelope=settings.envelope == "records")
    runtime = Runtime.create(settings, producer_factory=hub.factory if settings.sink == "eventhub" else None)
    sampler = RssSampler()
    gc.collect()
    tune_garbage_collector()  # as the CLI and the Functions app do at start-up
    gc_timer = GcTimer()
    gc.callbacks.append(gc_timer)
    rss_before = rss_now_kb()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    profiler = cProfile.Profile() if spec.get("profile") else None
    sampler.start()
    wall_clock_start = time.time()
    started = time.monotonic()
    if profiler is not None:
        profiler.enable()
    try:
        async with runtime:
            results = await run_audit(runtime, budget_seconds=spec.get("budget_seconds", 3600.0))
    finally:
        if profiler is not None:
            profiler.disable()
    wall = time.monotonic() - started
    await sampler.stop()
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    counts = hub.counts
    streams = []
    totals: dict[str, int] = {"records": 0, "duplicates": 0, "bytes": 0, "fetched": 0, "delivered": 0,
                              "listed": 0, "left_open": 0, "dead_lettered_records": 0}
    for result in results:
        s = result.stats
        streams.append({"stream": result.stream, "status": result.status, "records": s.records,
                        "duplicates": s.duplicates, "fetched": s.fetched, "delivered": s.delivered,
                        "left_open": s.left_open, "error": result.error})
        for key in totals:
            totals[key] += int(getattr(s, key))
    out: dict[str, Any] = {
        "wall_seconds": wall,
        "wall_clock_start": wall_clock_start,
        "cpu_seconds": cpu_seconds(usage1) - cpu_seconds(usage0),
        "cpu_user_seconds": usage1.ru_utime - usage0.ru_utime,
        "cpu_system_seconds": usage1.ru_stime - usage0.ru_stime,
        "peak_rss_kb": usage1.ru_maxrss,  # Linux: kilobytes; the process's lifetime peak
        "rss_before_run_kb": rss_before,
        "rss_samples": sampler.samples[:: max(1, len(sampler.samples) // 200)],
        "streams": streams,
        "totals": totals,
        "status": sorted({r.status for r in results}),
        "gc_seconds": gc_timer.seconds,
        "gc_passes": gc_timer.passes,
    }
    if settings.sink == "eventhub":
        out["sink"] = counts.as_dict()
        if counts.first_send is not None:
            out["sink"]["first_send_offset"] = counts.first_send - started
            out["sink"]["last_send_offset"] = (counts.last_send or started) - started
        out["sink"]["timeline"] = [(round(t - started, 3), n) for t, n in counts.timeline[:: max(
            1, len(counts.timeline) // 300)]]
    else:
        files, size, lines = await asyncio.to_thread(count_lines, Path(str(settings.file_sink_dir)))
        out["sink"] = {"files": files, "bytes": size, "records": lines, "events": lines}
    if profiler is not None:
        path = Path(spec["profile"])
        profiler.dump_stats(str(path))
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
        path.with_suffix(".txt").write_text(text.getvalue())
        out["profile"] = str(path)
    return out


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads(Path(argv[0]).read_text())
    result = asyncio.run(run(spec))
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
