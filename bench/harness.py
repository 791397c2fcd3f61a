"""Drives the simulator and the measured processes; turns their output into figures and targets."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.workloads import (
    NO_FAULTS,
    REALISTIC_FAULTS,
    TENANT_BUDGET_PER_MINUTE,
    UNLIMITED_CLIENT_RATE,
    Scale,
    Workload,
)
from m365sim.testing import Simulator, most_in_any_span

SCHEMA = "o365ingest-bench/1"
ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "BENCH-RESULT "
CLIENT_SECRET = "bench-secret-not-for-production"
MANAGE = "https://manage.office.com"
ROLES = {MANAGE: ["ActivityFeed.Read", "ActivityFeed.ReadDlp"]}
API_SERVICES = ("list", "blob", "subscriptions")
CONTENT_TYPES = ("Audit.AzureActiveDirectory", "Audit.Exchange", "Audit.SharePoint", "Audit.General", "DLP.All")

Log = Callable[[str], None]


def _mb(n_bytes: float) -> float:
    return n_bytes / 1_000_000


class Bench:
    """One benchmark run: a simulator, tenants added per workload, collectors run one at a time."""

    def __init__(self, scale: Scale, *, workdir: Path, log: Log = print, profile_dir: Path | None = None) -> None:
        self.scale = scale
        self.workdir = workdir
        self.log = log
        self.profile_dir = profile_dir
        self.sim: Simulator | None = None
        self.client_id = str(uuid.uuid4())
        self.raw: dict[str, Any] = {}
        self.runs: list[dict[str, Any]] = []
        self.sweep: list[dict[str, Any]] = []
        self.memory: list[dict[str, Any]] = []
        self.latency: dict[str, Any] = {}
        self.workloads: dict[str, dict[str, Any]] = {}

    # --- simulator and tenants
    def __enter__(self) -> Bench:
        self.sim = Simulator({"seed": 20261125, "tenants": []}, state_dir=self.workdir / "sim")
        self.sim.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sim is not None:
            self.sim.close()

    def tenant(self, workload: Workload) -> str:
        assert self.sim is not None
        tenant_id = str(uuid.uuid4())
        self.sim.add_tenant({
            "tenant_id": tenant_id,
            "apps": [{"client_id": self.client_id, "client_secret": CLIENT_SECRET, "roles": ROLES,
                      "consented": True}],
            "subscriptions": {ct: "enabled" for ct in CONTENT_TYPES},
            "audit": workload.audit_config(),
            "request_budget_per_minute": workload.budget_per_minute,
        })
        self.workloads[workload.name] = {**asdict(workload), "records_per_blob": list(workload.records_per_blob)}
        return tenant_id

    def env(self, tenant_id: str, **overrides: Any) -> dict[str, str]:
        assert self.sim is not None
        state = self.workdir / "state" / uuid.uuid4().hex[:8]
        values = {
            "O365_TENANTS": tenant_id,
            "O365_CLIENT_ID": self.client_id,
            "O365_CREDENTIAL": "client-secret",
            "O365_CLIENT_SECRET": CLIENT_SECRET,
            "O365_LOGIN_URL": self.sim.url,
            "O365_MANAGEMENT_URL": self.sim.url,
            "O365_CA_BUNDLE": str(self.sim.ca_bundle),
            "O365_SINK": "eventhub",
            "O365_EVENTHUB_NAMESPACE": "evhns-bench.servicebus.windows.net",
            "O365_CHECKPOINT_STORE": "local",
            "O365_CHECKPOINT_DIR": str(state / "checkpoints"),
            "O365_FILE_SINK_DIR": str(state / "output"),
            "O365_LOOKBACK_HOURS": "30",
            "O365_SAFETY_LAG_MINUTES": "0",
            "O365_FUNCTION_TIMEOUT_SECONDS": "86400",
            "O365_REQUESTS_PER_MINUTE": str(UNLIMITED_CLIENT_RATE),
            "O365_FETCH_CONCURRENCY": "16",
            "O365_LOG_LEVEL": "WARNING",
        }
        values.update({k: str(v) for k, v in overrides.items()})
        return values

    # --- measured processes
    def _child(self, module: str, spec: dict[str, Any]) -> dict[str, Any]:
        path = self.workdir / f"spec-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(spec))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        proc = subprocess.run([sys.executable, "-m", module, str(path)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=3600, check=False)
        for line in proc.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX):])
                return result
        raise RuntimeError(f"{module} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")

    def collect(self, env: dict[str, str], *, budget: float = 3600.0, send_latency_ms: float = 0.0,
                profile: str | None = None) -> dict[str, Any]:
        """Run the collector once; adds the simulator's view (requests, throttling) to its own."""
        assert self.sim is not None
        since = self.sim.last_seq()
        spec: dict[str, Any] = {"env": env, "budget_seconds": budget, "send_latency_ms": send_latency_ms}
        if profile and self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            spec["profile"] = str(self.profile_dir / f"{profile}.pstats")
        result = self._child("bench.collector", spec)
        ledger = [e for e in self.sim.ledger(since=since)
                  if e.get("tenant") == env["O365_TENANTS"] and e["service"] in API_SERVICES]
        stamps = sorted(e["ts"] for e in ledger)
        wall_start = result["wall_clock_start"]  # when the collector started its run (after imports)
        result["api"] = {
            "requests": len(ledger),
            "throttled": sum(1 for e in ledger if e.get("error_code") == "AF429" or e.get("status") == 429),
            "errors": sum(1 for e in ledger if (e.get("status") or 0) >= 400),
            "first": (stamps[0] - wall_start) if stamps else None,
            "last": (stamps[-1] - wall_start) if stamps else None,
            "max_in_60s": most_in_any_span(stamps, 60.0),
        }
        result["api"]["stamps"] = [round(s - wall_start, 3) for s in stamps]
        return result

    # --- figures
    @staticmethod
    def figures(result: dict[str, Any]) -> dict[str, Any]:
        wall = result["wall_seconds"]
        records = result["totals"]["records"]
        sink = result["sink"]
        events = sink.get("events", records)
        return {
            "records": records,
            "records_per_s": records / wall if wall else 0.0,
            "mb_per_s": _mb(result["totals"]["bytes"]) / wall if wall else 0.0,
            "api_requests_per_s": result["api"]["requests"] / wall if wall else 0.0,
            "cpu_s_per_100k": result["cpu_seconds"] / records * 100_000 if records else None,
            "gc_s_per_100k": result.get("gc_seconds", 0.0) / records * 100_000 if records else None,
            "peak_rss_mb": result["peak_rss_kb"] / 1024,
            "rss_before_run_mb": result["rss_before_run_kb"] / 1024,
            "wall_s": wall,
            "cpu_s": result["cpu_seconds"],
            "events": events,
            "billable_events": sink.get("billable_events", events),
            "batches": sink.get("batches"),
            "records_per_event": records / events if events else None,
            "throttled": result["api"]["throttled"],
        }

    def ratios(self, mode: str, figures: dict[str, Any]) -> dict[str, float | None]:
        raw = self.raw.get("modes", {}).get(mode)
        if not raw:
            return {}
        raw_fig = raw_figures(raw)

        def ratio(a: float | None, b: float | None) -> float | None:
            return a / b if a is not None and b else None

        return {
            "records_per_s": ratio(figures["records_per_s"], raw_fig["records_per_s"]),
            "mb_per_s": ratio(figures["mb_per_s"], raw_fig["mb_per_s"]),
            "cpu_s_per_100k": ratio(figures["cpu_s_per_100k"], raw_fig["cpu_s_per_100k"]),
        }

    def add_run(self, name: str, workload: str, mode: str, sink: str, result: dict[str, Any],
                expected_records: int | None) -> dict[str, Any]:
        figures = self.figures(result)
        complete = result["status"] == ["ok"] and result["totals"]["left_open"] == 0
        counts = {
            "records_out": result["sink"]["records"],
            "records_published": result["totals"]["records"],
            "duplicates_dropped": result["totals"]["duplicates"],
            "expected_unique": expected_records if complete else None,
            "complete": complete,
        }
        counts["ok"] = counts["records_out"] == counts["records_published"] and (
            expected_records is None or not complete or counts["records_out"] == expected_records)
        entry = {"name": name, "workload": workload, "mode": mode, "sink": sink, "figures": figures,
                 "ratios": self.ratios("file" if sink == "file" else mode, figures), "counts": counts,
                 "status": result["status"], "rss_samples": result.get("rss_samples", []),
                 "profile": result.get("profile")}
        self.runs.append(entry)
        self.log(format_run(entry))
        return entry

    # --- parts
    def part_cpu(self) -> None:
        s = self.scale
        workload = Workload("cpu", s.cpu_records, s.records_per_blob)
        tenant = self.tenant(workload)
        self.log(f"cpu: {s.cpu_records:,} records, raw limit over the first {s.raw_records:,}")
        self.raw = self._child("bench.rawlimit", {"env": self.env(tenant), "max_records": s.raw_records,
                                                  "repeat": s.raw_repeat,
                                                  "modes": ["record", "records", "file"]})
        for mode, raw in self.raw["modes"].items():
            f = raw_figures(raw)
            self.log(f"  raw limit {mode:8s}: {f['records_per_s']:>10,.0f} records/s  {f['mb_per_s']:7.1f} MB/s  "
                     f"{f['cpu_s_per_100k']:6.2f} CPU s/100k  ({raw['records']:,} records)")
        for mode, sink, name in (("record", "eventhub", "cpu/record/eventhub"),
                                 ("records", "eventhub", "cpu/envelope/eventhub"),
                                 ("record", "file", "cpu/record/file")):
            env = self.env(tenant, O365_EVENT_ENVELOPE=mode, O365_SINK=sink)
            result = self.collect(env, profile=name.replace("/", "-"))
            self.add_run(name, "cpu", mode, sink, result, s.cpu_records)

    def part_latency(self) -> None:
        assert self.sim is not None
        s = self.scale
        workload = Workload("latency", s.latency_records, s.latency_records_per_blob,
                            budget_per_minute=TENANT_BUDGET_PER_MINUTE, faults=REALISTIC_FAULTS)
        tenant = self.tenant(workload)
        env = self.env(tenant, O365_REQUESTS_PER_MINUTE=TENANT_BUDGET_PER_MINUTE, O365_FETCH_CONCURRENCY=16)
        self.log(f"latency: 150 +- 50 ms per request, budget {TENANT_BUDGET_PER_MINUTE}/min, "
                 f"{s.latency_seconds:.0f} s run, backlog {s.latency_records:,} records")
        self.sim.set_faults(REALISTIC_FAULTS)
        try:
            result = self.collect(env, budget=s.latency_seconds, send_latency_ms=20)
        finally:
            self.sim.set_faults(NO_FAULTS)
        entry = self.add_run("latency/record/eventhub", "latency", "record", "eventhub", result, None)
        stamps = result["api"]["stamps"]
        first = stamps[0] if stamps else 0.0
        deadline = s.latency_seconds  # the collector stops taking new blobs then
        in_run = [t for t in stamps if t <= deadline]
        span = max(1e-9, min(deadline, in_run[-1] if in_run else deadline) - first)
        allowed = span * TENANT_BUDGET_PER_MINUTE / 60.0
        backlog_left = result["totals"]["left_open"] > 0 or result["totals"]["listed"] > result["totals"]["fetched"]
        self.latency = {
            "requests": len(in_run),
            "span_seconds": span,
            "requests_per_minute": len(in_run) / span * 60.0,
            "budget_per_minute": TENANT_BUDGET_PER_MINUTE,
            "budget_used": len(in_run) / allowed,
            "max_in_any_60s": result["api"]["max_in_60s"],
            "throttled": result["api"]["throttled"],
            "backlog_remained": backlog_left,
            "records_per_s": entry["figures"]["records_per_s"],
            "per_second": per_second(stamps),
        }
        self.log(f"  budget used {self.latency['budget_used']:.1%} ({self.latency['requests_per_minute']:.0f}/min "
                 f"over {span:.1f} s), max in any 60 s: {self.latency['max_in_any_60s']}, "
                 f"throttled: {self.latency['throttled']}, backlog remained: {backlog_left}")

    def part_memory(self) -> None:
        s = self.scale
        for mode, sizes in (("record", s.memory_record_sizes), ("records", s.memory_envelope_sizes)):
            for size in sizes:
                workload = Workload(f"memory-{size}", size, s.records_per_blob)
                tenant = self.tenant(workload)
                result = self.collect(self.env(tenant, O365_EVENT_ENVELOPE=mode))
                label = "record" if mode == "record" else "envelope"
                entry = self.add_run(f"memory/{label}/{size}", workload.name, mode, "eventhub", result, size)
                self.memory.append({"mode": mode, "records": size, "peak_rss_mb": entry["figures"]["peak_rss_mb"],
                                    "rss_before_run_mb": entry["figures"]["rss_before_run_mb"],
                                    "records_per_s": entry["figures"]["records_per_s"],
                                    "rss_samples": result.get("rss_samples", [])})

    def part_sweep(self) -> None:
        assert self.sim is not None
        s = self.scale
        for curve, faults in (("zero latency", NO_FAULTS), ("150 +- 50 ms latency", REALISTIC_FAULTS)):
            workload = Workload(f"sweep-{curve.split()[0]}", s.sweep_records, s.records_per_blob)
            tenant = self.tenant(workload)
            self.sim.set_faults(faults)
            try:
                for concurrency in s.sweep_concurrency:
                    env = self.env(tenant, O365_FETCH_CONCURRENCY=concurrency)
                    result = self.collect(env, budget=s.sweep_seconds)
                    rate = timeline_rate(result["sink"].get("timeline", []), s.sweep_seconds)
                    point = {"curve": curve, "concurrency": concurrency, "records_per_s": rate,
                             "api_requests_per_s": result["api"]["requests"] / max(1e-9, result["wall_seconds"]),
                             "cpu_s_per_100k": (result["cpu_seconds"] / result["totals"]["records"] * 100_000
                                                if result["totals"]["records"] else None)}
                    self.sweep.append(point)
                    self.log(f"  sweep {curve:22s} concurrency {concurrency:3d}: {rate:>9,.0f} records/s")
            finally:
                self.sim.set_faults(NO_FAULTS)


def raw_figures(raw: dict[str, Any]) -> dict[str, Any]:
    wall, records = raw["wall_seconds"], raw["records"]
    return {
        "records": records,
        "records_per_s": records / wall if wall else 0.0,
        "mb_per_s": _mb(raw["record_bytes"]) / wall if wall else 0.0,
        "cpu_s_per_100k": raw["cpu_seconds"] / records * 100_000 if records else None,
        "events": raw["events"],
        "records_per_event": records / raw["events"] if raw["events"] else None,
        "wall_s": wall,
        "cpu_s": raw["cpu_seconds"],
    }


def per_second(stamps: list[float]) -> list[int]:
    if not stamps:
        return []
    buckets = [0] * (int(max(stamps)) + 1)
    for t in stamps:
        if t >= 0:
            buckets[int(t)] += 1
    return buckets


def timeline_rate(timeline: list[list[float]], horizon: float) -> float:
    """Records/s between the first acknowledged batch and the run's deadline (ramp-up excluded)."""
    points = [(t, n) for t, n in timeline if t <= horizon]
    if len(points) < 2:
        return points[0][1] / horizon if points else 0.0
    (t0, n0), (t1, n1) = points[0], points[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def format_run(entry: dict[str, Any]) -> str:
    f, r = entry["figures"], entry["ratios"]

    def pct(key: str) -> str:
        value = r.get(key)
        return f"{value:5.2f}x" if value is not None else "   -  "

    return (f"  {entry['name']:26s} {f['records_per_s']:>9,.0f} rec/s ({pct('records_per_s')})  "
            f"{f['mb_per_s']:6.1f} MB/s  {f['api_requests_per_s']:6.1f} req/s  "
            f"{(f['cpu_s_per_100k'] or 0):6.2f} CPU s/100k ({pct('cpu_s_per_100k')})  "
            f"RSS {f['peak_rss_mb']:6.1f} MB  events {f['events']:,}  "
            f"{'ok' if entry['counts']['ok'] else 'COUNT MISMATCH'}")


# --- targets
def evaluate(bench: Bench) -> list[dict[str, Any]]:
    runs = {r["name"]: r for r in bench.runs}
    targets: list[dict[str, Any]] = []

    def add(name: str, target: str, value: float | None, met: bool | None, detail: str = "") -> None:
        targets.append({"name": name, "target": target, "value": value, "met": met, "detail": detail})

    rec = runs.get("cpu/record/eventhub")
    env = runs.get("cpu/envelope/eventhub")
    if rec and rec["ratios"].get("records_per_s") is not None:
        value = rec["ratios"]["records_per_s"]
        add("cpu-bound record mode vs raw limit", ">= 0.70", value, value >= 0.70)
    if rec and env:
        speed = env["figures"]["records_per_s"] / rec["figures"]["records_per_s"]
        add("envelope throughput vs record mode", ">= 3x", speed, speed >= 3.0)
        fewer = rec["figures"]["events"] / max(1, env["figures"]["events"])
        add("envelope events vs record mode", ">= 10x fewer", fewer, fewer >= 10.0)
    if bench.latency:
        used = bench.latency["budget_used"]
        add("latency-bound budget use", ">= 0.90 while a backlog remains", used,
            used >= 0.90 and bench.latency["backlog_remained"],
            "" if bench.latency["backlog_remained"] else "the backlog ran out")
        add("latency-bound throttling", "0 throttled requests", bench.latency["throttled"],
            bench.latency["throttled"] == 0)
    record_memory = sorted((m for m in bench.memory if m["mode"] == "record"), key=lambda m: m["records"])
    big = [m for m in record_memory if m["records"] >= 1_000_000]
    if big:
        add("peak RSS, 1,000,000-record backlog", "< 300 MB", big[-1]["peak_rss_mb"], big[-1]["peak_rss_mb"] < 300)
    if len(record_memory) >= 2:
        small = next((m for m in record_memory if m["records"] == 100_000), record_memory[0])
        large = record_memory[-1]
        growth = large["peak_rss_mb"] / small["peak_rss_mb"]
        add(f"peak RSS {large['records']:,} vs {small['records']:,} records", "<= 1.3x", growth, growth <= 1.3)
    counts_ok = all(r["counts"]["ok"] for r in bench.runs)
    add("records in == records out (every run)", "equal", None, counts_ok)
    return targets


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        info["memory_gb"] = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--", "o365ingest"))}


def run_bench(scale: Scale, parts: tuple[str, ...], *, label: str = "", quick: bool = False, log: Log = print,
              profile_dir: Path | None = None, workdir: Path | None = None) -> dict[str, Any]:
    own_tmp = workdir is None
    work = workdir or Path(tempfile.mkdtemp(prefix="o365bench-"))
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    try:
        with Bench(scale, workdir=work, log=log, profile_dir=profile_dir) as bench:
            for part in parts:
                getattr(bench, f"part_{part}")()
            targets = evaluate(bench)
    finally:
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)
    raw_modes = {mode: {**raw_figures(raw), "duplicates": raw["duplicates"]}
                 for mode, raw in bench.raw.get("modes", {}).items()}
    return {
        "schema": SCHEMA,
        "label": label,
        "quick": quick,
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "parts": list(parts),
        "scale": asdict(scale),
        "machine": {**machine_info(), "load_before": load_before, "load_after": os.getloadavg()},
        "git": git_info(),
        "workloads": bench.workloads,
        "raw_limit": {"blobs": bench.raw.get("blobs"), "blob_bytes": bench.raw.get("blob_bytes"),
                      "modes": raw_modes},
        "runs": bench.runs,
        "latency": bench.latency,
        "memory": bench.memory,
        "sweep": bench.sweep,
        "targets": targets,
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = ["", "targets:"]
    for t in result["targets"]:
        value = t["value"]
        shown = "-" if value is None else (f"{value:.3g}" if isinstance(value, float) and not math.isnan(value)
                                           else str(value))
        state = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        detail = f" - {t['detail']}" if t["detail"] else ""
        lines.append(f"  [{state:6s}] {t['name']}: {shown} (target {t['target']}){detail}")
    return lines
