"""Exchange message traces end to end: the simulator over HTTPS (Graph and the legacy Reporting Web
Service), checkpoints in Azurite or local files, Event Hubs faked at send."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from m365sim.testing import Simulator
from o365ingest import cli
from o365ingest.messagetrace import MessageTraceStream
from o365ingest.planning import Window
from o365ingest.runner import run_messagetrace
from o365ingest.runtime import Runtime
from o365ingest.settings import load_settings
from o365ingest.status import stream_status
from o365ingest.tracecursor import row_key
from tests.fakes import EventHubRecorder
from tests.integration.conftest import GRAPH, MANAGE, TenantFactory
from tests.integration.pipeline_support import blob_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
APP = "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"


def trace_env(tenants: TenantFactory, tenant: str, **overrides: Any) -> dict[str, str]:
    """Message traces on; every run re-reads the whole simulated week (status changes happen in it)."""
    return tenants.env(tenant, O365_MESSAGETRACE_ENABLED="true", O365_MESSAGETRACE_LOOKBACK_HOURS=24 * 8,
                       O365_MESSAGETRACE_OVERLAP_MINUTES=8 * 24 * 60, O365_MESSAGETRACE_MIN_AGE_MINUTES=0,
                       **overrides)


async def run_traces(env: dict[str, str], recorder: EventHubRecorder, **kwargs: Any) -> list[Any]:
    async with Runtime.create(load_settings(env), producer_factory=recorder.factory) as runtime:
        return await run_messagetrace(runtime, **kwargs)


def truth_rows(sim: Simulator, tenant: str) -> dict[str, dict[str, Any]]:
    return {row_key(r["id"], r["recipientAddress"]): r for r in sim.truth(tenant)["messagetrace"]["rows"]}


def last_change(rows: dict[str, dict[str, Any]]) -> float:
    return max(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
               for r in rows.values() for t, _ in r["timeline"])


def published(recorder: EventHubRecorder) -> dict[str, list[tuple[str, bool]]]:
    """(status, update flag) per row, in publication order."""
    out: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for event in recorder.events:
        p = event.properties
        out[row_key(p["traceId"], p["recipientAddress"])].append((p["status"], p["update"]))
    return out


def most_in_any_span(moments: list[float], span: float) -> int:
    moments = sorted(moments)
    best, start = 0, 0
    for end, moment in enumerate(moments):
        while moment - moments[start] >= span:
            start += 1
        best = max(best, end - start + 1)
    return best


def graph_ledger(sim: Simulator, tenant: str, since: int) -> list[dict[str, Any]]:
    return [e for e in sim.ledger(since=since, service="graph") if e.get("tenant") == tenant]


async def test_a_week_of_traces_with_status_changes_reaches_the_sink_once_per_status(sim, tenants, azurite):
    tenant = tenants(messagetrace={"messages": 1500, "days": 7.0, "changing_fraction": 0.3,
                                   "change_delay_seconds": [1.5, 5.0]})
    env = trace_env(tenants, tenant, **blob_env(azurite), O365_EVENTHUB_HUBS="MessageTrace=traces")
    truth = truth_rows(sim, tenant)
    changes_done = last_change(truth)
    recorder = EventHubRecorder()
    history = []
    while True:  # like the timer: run, pause, run, until a run started after the last status change
        started = time.time()
        [result] = await run_traces(env, recorder)
        history.append(result)
        assert result.status == "ok", result.summary()
        if started > changes_done + 0.2:
            break
        await asyncio.sleep(0.8)
    [quiet] = await run_traces(env, recorder)

    seen = published(recorder)
    assert set(seen) == set(truth), "rows missing from (or unknown to) the sink"
    for key, row in truth.items():
        statuses = [status for status, _ in seen[key]]
        timeline = [status for _, status in row["timeline"]]
        assert statuses[-1] == row["final"], (row, statuses)
        assert len(statuses) == len(set(statuses)), f"a status was published twice: {statuses}"
        assert statuses == [s for s in dict.fromkeys(timeline) if s in statuses], "out of timeline order"
        assert [update for _, update in seen[key]] == [False] + [True] * (len(statuses) - 1)
    intermediate = sum(len(v) - 1 for v in seen.values())
    assert len(history) >= 2 and intermediate > 50, "the scenario must publish status changes as updates"
    assert quiet.stats.records == 0 and quiet.stats.skipped_seen == len(truth)  # unchanged repeats: nothing
    assert {e.hub for e in recorder.events} == {"traces"}
    event = recorder.events[0]
    body = orjson.loads(event.body)
    assert event.properties["tenantId"] == tenant and event.properties["stream"] == "MessageTrace"
    assert event.properties["receivedDateTime"] == body["receivedDateTime"] and body["id"] == event.properties["traceId"]
    async with Runtime.create(load_settings(env)) as runtime:
        [row] = [r for r in await stream_status(runtime) if r["stream"] == "MessageTrace"]
    assert row["deliveredRecords"] == len(recorder.events) and row["updates"] == intermediate
    assert row["seenBlobs"] == len(truth) and row["lastError"] is None


async def test_envelope_mode_and_a_backfill_that_skips_what_the_live_stream_published(sim, tenants):
    tenant = tenants(messagetrace={"messages": 150, "days": 5.0, "changing_fraction": 0.0})
    env = trace_env(tenants, tenant, O365_EVENT_ENVELOPE="records")
    recorder = EventHubRecorder()
    [live] = await run_traces(env, recorder)
    rows = recorder.records()
    assert live.status == "ok" and len(rows) == len(truth_rows(sim, tenant)) and len(recorder.events) < len(rows)
    assert {row_key(r["id"], r["recipientAddress"]) for r in rows} == set(truth_rows(sim, tenant))
    async with Runtime.create(load_settings(env)) as runtime:
        before, _ = await runtime.checkpoints.load(f"messagetrace/{tenant}")
    now = datetime.now(UTC).replace(microsecond=0)
    [backfill] = await run_traces(env, recorder, backfill=Window(now - timedelta(days=3), now))
    assert backfill.status == "ok" and backfill.stats.records == 0 and backfill.stats.skipped_seen > 0
    async with Runtime.create(load_settings(env)) as runtime:
        after, _ = await runtime.checkpoints.load(f"messagetrace/{tenant}")
        keys = await runtime.checkpoints.keys("backfill/")
    assert before == after and any(k.startswith(f"backfill/{tenant}/MessageTrace/") for k in keys)


async def test_draining_a_backlog_never_exceeds_the_share_of_the_quota(sim, tenants):
    period = 2.0  # the simulator's quota window and the collector's, shortened alike from 300 s
    tenant = tenants(graph_quota_per_5min=100, graph_quota_window_seconds=period,
                     messagetrace={"messages": 700, "days": 4.0, "changing_fraction": 0.0})
    env = trace_env(tenants, tenant, O365_MESSAGETRACE_QUOTA_SHARE="0.1")  # 10 requests per period
    truth = truth_rows(sim, tenant)
    since = sim.last_seq()
    recorder = EventHubRecorder()
    results = []
    for _ in range(10):  # each run a new process's runtime: only the checkpoint carries the quota log
        async with Runtime.create(load_settings(env), producer_factory=recorder.factory,
                                  graph_quota_period=period) as runtime:
            stream = MessageTraceStream(runtime, runtime.settings.tenants[0], page_size=50)
            results.append(await stream.run(time.monotonic() + 1.5 * period))
        if results[-1].status == "ok":
            break
    ledger = graph_ledger(sim, tenant, since)
    stamps = [e["ts"] for e in ledger]
    pages = math.ceil(len(truth) / 50)
    assert len(stamps) >= pages
    assert most_in_any_span(stamps, period) <= 10, "the share of the quota was exceeded"
    assert most_in_any_span(stamps, period) >= 8, "the share was not used"
    assert not [e for e in ledger if e["status"] == 429]
    assert [r.status for r in results][-1] == "ok" and "partial" in [r.status for r in results]
    assert any("quota" in (r.note or "") for r in results)
    keys = [row_key(r["id"], r["recipientAddress"]) for r in recorder.records()]
    assert sorted(keys) == sorted(truth), "a row was lost or published twice across the partial runs"


async def test_throttling_from_a_quota_others_spent_is_honoured(sim, tenants):
    tenant = tenants(graph_quota_per_5min=3, graph_quota_window_seconds=1.5,
                     messagetrace={"messages": 120, "days": 3.0, "changing_fraction": 0.0})
    env = trace_env(tenants, tenant, O365_MESSAGETRACE_QUOTA_SHARE="1.0")
    since = sim.last_seq()
    recorder = EventHubRecorder()
    async with Runtime.create(load_settings(env), producer_factory=recorder.factory) as runtime:
        result = await MessageTraceStream(runtime, runtime.settings.tenants[0], page_size=50).run(
            time.monotonic() + 30)
    assert result.status == "ok", result.summary()
    statuses = [e["status"] for e in graph_ledger(sim, tenant, since)]
    assert statuses.count(429) >= 1 and result.stats.throttled == statuses.count(429)
    assert all(b == 200 for a, b in itertools.pairwise(statuses) if a == 429), \
        f"a request went before Retry-After had passed: {statuses}"
    assert len(recorder.events) == len(truth_rows(sim, tenant))


def _process_env(env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("O365_")}
    return {**base, **env, "PYTHONPATH": str(ROOT)}


def test_kill_and_resume_without_loss(sim, tenants, tmp_path):
    tenant = tenants(messagetrace={"messages": 6000, "days": 7.0, "changing_fraction": 0.3,
                                   "change_delay_seconds": [0.5, 6.0]})
    out = tmp_path / "out"
    env = _process_env(trace_env(tenants, tenant, O365_SINK="file", O365_FILE_SINK_DIR=str(out),
                                 O365_FILE_SINK_MAX_BYTES=600_000, O365_CHECKPOINT_STORE="local",
                                 O365_CHECKPOINT_DIR=str(tmp_path / "state")))
    command = [sys.executable, "-m", "o365ingest", "run", "--stream", "messagetrace"]
    truth = truth_rows(sim, tenant)
    rng = random.Random(20261125)
    killed: set[int] = set()
    sim.set_faults({"latency_ms": 300, "apply_to": ["graph"]})  # slower pages: kills land mid-run
    try:
        for attempt in range(4):
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            if attempt % 2 == 0:  # soon after it starts writing, before it can have committed
                deadline = time.monotonic() + 10
                while not list(out.rglob(f"*-{process.pid}.jsonl")) and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.15))
            else:  # anywhere: before any request, mid-page, or after the commit
                time.sleep(rng.uniform(0.2, 1.2))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            killed.add(process.pid)
    finally:
        sim.clear_faults()
    time.sleep(max(0.0, last_change(truth) - time.time() + 0.2))
    final = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert final.returncode == 0, final.stdout + final.stderr
    assert f"stream {tenant}/MessageTrace: ok" in final.stdout

    published: list[tuple[str, str]] = []
    for path in sorted(out.rglob("*.jsonl")):
        lines = path.read_bytes().split(b"\n")
        if lines.pop():  # not a complete last line: only a killed process may leave one
            assert int(path.stem.rsplit("-", 1)[1]) in killed, f"{path} ends mid-line"
        for line in lines:
            row = orjson.loads(line)  # every complete line is a whole record
            published.append((row_key(row["id"], row["recipientAddress"]), row["status"]))
    statuses: dict[str, set[str]] = defaultdict(set)
    for key, status in published:
        statuses[key].add(status)
    missing = [r for k, r in truth.items() if r["final"] not in statuses.get(k, set())]
    assert not missing, f"{len(missing)} final statuses never reached the sink, e.g. {missing[:2]}"
    # a killed run had written records it never committed (at-least-once, not at-most-once)
    assert len(published) > len(set(published))


def test_setup_errors_print_their_remedies(sim, tenants, tmp_path):
    no_sp = tenants(messagetrace_sp_provisioned=False)
    no_sp_client = tenants.client_id
    no_role = tenants(roles={MANAGE: ["ActivityFeed.Read"], GRAPH: []})
    no_role_client = tenants.client_id
    env = _process_env(trace_env(tenants, no_role, O365_TENANTS=json.dumps([
        {"tenantId": no_sp, "clientId": no_sp_client}, {"tenantId": no_role, "clientId": no_role_client}])))
    since = sim.last_seq()
    done = subprocess.run([sys.executable, "-m", "o365ingest", "run", "--stream", "messagetrace"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    [sp_line] = [line for line in lines if line.startswith(f"stream {no_sp}/MessageTrace: failed")]
    assert f"az ad sp create --id {APP}" in sp_line and f"New-MgServicePrincipal -AppId {APP}" in sp_line
    assert "several hours" in sp_line
    [role_line] = [line for line in lines if line.startswith(f"stream {no_role}/MessageTrace: failed")]
    assert "ExchangeMessageTrace.Read.All (Microsoft Graph, application)" in role_line
    assert "grant admin consent" in role_line
    # a setup error is not retried, nor is the token renewed: one request per tenant
    assert len(graph_ledger(sim, no_sp, since)) == 1 and len(graph_ledger(sim, no_role, since)) == 1


@pytest.mark.parametrize("cloud", ["gcchigh", "dod"])
def test_message_traces_in_gcc_high_or_dod_are_refused_at_start_up(tenants, monkeypatch, capsys, cloud):
    for name, value in trace_env(tenants, tenants(), O365_CLOUD=cloud).items():
        monkeypatch.setenv(name, value)
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err
    assert "O365_MESSAGETRACE_ENABLED" in err and f"not available in the {cloud} cloud" in err


@pytest.mark.parametrize(("paging", "dates"), [("__next", "msdate"), ("odata.nextLink", "iso"),
                                               ("skiptoken", "msdate"), ("skiptoken", "iso")])
async def test_the_legacy_service_is_paged_through_every_form_and_published_like_graph(sim, tenants, paging,
                                                                                      dates):
    tenant = tenants(rws_paging=paging, rws_date_style=dates, rws_page_size=60,
                     messagetrace={"messages": 100, "days": 5.0, "changing_fraction": 0.0})
    env = trace_env(tenants, tenant, O365_MESSAGETRACE_SOURCE="rws")
    since = sim.last_seq()
    recorder = EventHubRecorder()
    [result] = await run_traces(env, recorder)
    assert result.status == "ok", result.summary()
    truth = truth_rows(sim, tenant)
    rows = recorder.records()
    assert sorted(row_key(r["id"], r["recipientAddress"]) for r in rows) == sorted(truth)
    for row in rows:
        expected = truth[row_key(row["id"], row["recipientAddress"])]
        assert row["receivedDateTime"] == expected["receivedDateTime"] and row["status"] == expected["final"]
        assert row["original"]["MessageTraceId"] == row["id"]
        assert row["original"]["Received"].startswith("/Date(") == (dates == "msdate")
    requests = [e for e in sim.ledger(since=since, service="rws") if e.get("tenant") == tenant]
    pages = math.ceil(len(truth) / 60)
    assert len(requests) == pages + (paging == "skiptoken")  # bare offsets end on an empty page
    assert all(e["status"] == 200 for e in requests)


async def test_details_enrichment_spends_the_same_quota(sim, tenants):
    tenant = tenants(messagetrace={"messages": 4, "days": 2.0, "changing_fraction": 0.0})
    env = trace_env(tenants, tenant, O365_MESSAGETRACE_DETAILS="true")
    since = sim.last_seq()
    recorder = EventHubRecorder()
    async with Runtime.create(load_settings(env), producer_factory=recorder.factory) as runtime:
        [result] = await run_messagetrace(runtime)
        limiter = runtime.pacing(runtime.settings.tenants[0]).graph_limiter
        assert limiter.requests == result.stats.requests == 1 + len(recorder.events)
    rows = recorder.records()
    assert rows and all(isinstance(r["details"], list) and r["details"] for r in rows)
    details = [e for e in graph_ledger(sim, tenant, since) if "getDetailsByRecipient" in e["path"]]
    assert len(details) == len(rows)


async def test_the_timer_only_logs_while_message_traces_are_off(sim, tenants, monkeypatch, caplog, tmp_path):
    import function_app

    tenant = tenants()
    env = tenants.env(tenant, O365_SINK="file", O365_FILE_SINK_DIR=str(tmp_path / "out"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(function_app, "_runtime", None)
    timer = next(f for f in function_app.app.get_functions() if f.get_function_name() == "messagetrace_timer")
    since = sim.last_seq()
    caplog.set_level(logging.INFO)

    class Timer:
        past_due = False

    try:
        await timer.get_user_function()(Timer())
    finally:
        if function_app._runtime is not None:
            await function_app._runtime.close()
    assert "message traces are off" in caplog.text
    assert [e for e in sim.ledger(since=since) if e.get("tenant") == tenant] == []
    assert not (tmp_path / "out").exists()
