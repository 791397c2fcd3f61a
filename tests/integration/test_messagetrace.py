"""Exchange message traces end to end: the simulator over HTTPS (Graph and the legacy Reporting Web
Service), checkpoints in Azurite or local files, Event Hubs faked at send (or the file sink where the
collector runs as a process)."""

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
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.functions.timer import TimerRequest

from m365sim.testing import Simulator, most_in_any_span
from o365ingest import cli
from o365ingest.messagetrace import MessageTraceStream
from o365ingest.planning import Window
from o365ingest.runner import run_messagetrace
from o365ingest.runtime import Runtime
from o365ingest.settings import load_settings
from o365ingest.status import stream_status
from o365ingest.tracecursor import TraceCursor, row_key
from tests.fakes import EventHubRecorder
from tests.integration.conftest import GRAPH, MANAGE, TenantFactory
from tests.integration.pipeline_support import blob_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
APP = "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"


def trace_env(tenants: TenantFactory, tenant: str, **overrides: Any) -> dict[str, str]:
    """Message traces on; every run re-reads the whole simulated week (status changes happen in it)
    unless an override says otherwise ("<unset>" keeps a setting's default)."""
    defaults: dict[str, Any] = {"O365_MESSAGETRACE_ENABLED": "true", "O365_MESSAGETRACE_LOOKBACK_HOURS": 24 * 8,
                                "O365_MESSAGETRACE_OVERLAP_MINUTES": 8 * 24 * 60,
                                "O365_MESSAGETRACE_MIN_AGE_MINUTES": 0}
    return tenants.env(tenant, **{**defaults, **overrides})


async def run_traces(env: dict[str, str], recorder: EventHubRecorder, **kwargs: Any) -> list[Any]:
    async with Runtime.create(load_settings(env), producer_factory=recorder.factory) as runtime:
        return await run_messagetrace(runtime, **kwargs)


def truth_rows(sim: Simulator, tenant: str) -> dict[str, dict[str, Any]]:
    return {row_key(r["id"], r["recipientAddress"]): r for r in sim.truth(tenant)["messagetrace"]["rows"]}


def received(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["receivedDateTime"].replace("Z", "+00:00"))


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Exactly these settings in the process environment (what the CLI and the Function App read)."""
    for name in list(os.environ):
        if name.startswith("O365_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


async def live_cursor(env: dict[str, str], tenant: str) -> TraceCursor:
    async with Runtime.create(load_settings(env)) as runtime:
        data, _ = await runtime.checkpoints.load(f"messagetrace/{tenant}")
    assert data is not None
    return TraceCursor.from_json(data)


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


async def test_envelope_mode_still_publishes_one_row_per_event_with_its_properties(sim, tenants):
    tenant = tenants(messagetrace={"messages": 150, "days": 5.0, "changing_fraction": 0.4,
                                   "change_delay_seconds": [2.0, 4.0]})
    env = trace_env(tenants, tenant, O365_EVENT_ENVELOPE="records")
    truth = truth_rows(sim, tenant)
    recorder = EventHubRecorder()
    [first] = await run_traces(env, recorder)
    await asyncio.sleep(max(0.0, last_change(truth) - time.time() + 0.2))
    [second] = await run_traces(env, recorder)
    assert first.status == second.status == "ok" and second.stats.updates > 0
    assert len(recorder.events) == first.stats.records + second.stats.records  # one event per row
    for event in recorder.events:
        body, p = orjson.loads(event.body), event.properties
        assert "records" not in body
        assert (p["traceId"], p["recipientAddress"], p["status"]) == (body["id"], body["recipientAddress"],
                                                                       body["status"])
        assert p["tenantId"] == tenant and p["stream"] == "MessageTrace"
        assert p["receivedDateTime"] == body["receivedDateTime"]
    assert sum(e.properties["update"] is True for e in recorder.events) == second.stats.updates
    assert sum(e.properties["update"] is False for e in recorder.events) == len(truth)
    assert {k for k, statuses in published(recorder).items() if statuses[-1][0] == truth[k]["final"]} == set(truth)


async def test_a_backfill_skips_what_the_live_stream_published_and_leaves_its_progress_alone(sim, tenants):
    tenant = tenants(messagetrace={"messages": 150, "days": 5.0, "changing_fraction": 0.0})
    env = trace_env(tenants, tenant)
    recorder = EventHubRecorder()
    [live] = await run_traces(env, recorder)
    assert live.status == "ok" and len(recorder.events) == len(truth_rows(sim, tenant))
    before = await live_cursor(env, tenant)
    now = datetime.now(UTC).replace(microsecond=0)
    [backfill] = await run_traces(env, recorder, backfill=Window(now - timedelta(days=3), now))
    assert backfill.status == "ok" and backfill.stats.records == 0 and backfill.stats.skipped_seen > 0
    after = await live_cursor(env, tenant)
    async with Runtime.create(load_settings(env)) as runtime:
        keys = await runtime.checkpoints.keys("backfill/")
    assert any(k.startswith(f"backfill/{tenant}/MessageTrace/") for k in keys)
    # the live checkpoint's progress is untouched; its quota log now holds the backfill's requests too
    assert (after.watermark, after.memory, after.delivered_records, after.last_run) == (
        before.watermark, before.memory, before.delivered_records, before.last_run)
    assert len(after.quota_log) == len(before.quota_log) + backfill.stats.requests > len(before.quota_log)


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


async def test_a_backfill_and_the_live_stream_stay_within_one_share_of_the_quota(sim, tenants):
    """Each run in a runtime of its own, as separate processes would be: only the checkpoints (and the
    stream locks in them) connect a backfill with the live stream."""
    period = 2.0
    tenant = tenants(graph_quota_window_seconds=period,
                     messagetrace={"messages": 400, "days": 4.0, "changing_fraction": 0.0})
    env = trace_env(tenants, tenant, O365_MESSAGETRACE_QUOTA_SHARE="0.05")  # 5 requests per period
    now = datetime.now(UTC).replace(microsecond=0)
    window = Window(now - timedelta(days=3), now - timedelta(days=1))
    recorder = EventHubRecorder()

    async def run(backfill: Window | None, seconds: float) -> Any:
        async with Runtime.create(load_settings(env), producer_factory=recorder.factory,
                                  graph_quota_period=period) as runtime:
            stream = MessageTraceStream(runtime, runtime.settings.tenants[0], backfill=backfill, page_size=20)
            return await stream.run(time.monotonic() + seconds)

    since = sim.last_seq()
    runs = [await run(None, 1.0), await run(window, 3.5), await run(None, 3.5)]
    runs += await asyncio.gather(run(window, 3.5), run(None, 3.5))  # at the same time
    stamps = [e["ts"] for e in graph_ledger(sim, tenant, since)]
    assert most_in_any_span(stamps, period) <= 5, "together they used more than the share"
    assert len(stamps) >= 15 and sum(r.stats.requests for r in runs[1:3]) >= 8, [r.summary() for r in runs]
    assert all(r.status in ("partial", "skipped") for r in runs), [r.summary() for r in runs]


async def test_a_resumed_short_window_then_a_normal_run_republishes_nothing(sim, tenants):
    """Run 1 reads a 10-day window and stops on quota inside the one-hour window after it; run 2
    finishes that window; run 3 reads the default two-hour overlap again, which reaches back before
    the short window: the rows there are still remembered, so nothing is published again."""
    page = 20
    tenant = tenants(messagetrace={"messages": 150, "days": 0.125, "changing_fraction": 0.0})
    truth = truth_rows(sim, tenant)
    short_start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    in_long = sum(received(r) <= short_start for r in truth.values())
    in_short = len(truth) - in_long
    assert in_short > 3 * page and in_long > page
    requests = math.ceil(in_long / page) + 2  # the long window, then two pages of the short one
    env = trace_env(tenants, tenant, O365_MESSAGETRACE_LOOKBACK_HOURS=24 * 10 + 1,
                    O365_MESSAGETRACE_OVERLAP_MINUTES="<unset>", O365_MESSAGETRACE_QUOTA_SHARE=requests / 100)
    recorder = EventHubRecorder()

    async def run(quota_period: float) -> Any:
        async with Runtime.create(load_settings(env), producer_factory=recorder.factory,
                                  graph_quota_period=quota_period) as runtime:
            return await MessageTraceStream(runtime, runtime.settings.tenants[0], page_size=page).run(
                time.monotonic() + 30)

    first = await run(600.0)  # the share is spent for far longer than the run may take
    stopped = await live_cursor(env, tenant)
    assert first.status == "partial" and "quota" in (first.note or ""), first.summary()
    assert stopped.resume is not None and stopped.resume.window.end - stopped.resume.window.start == timedelta(hours=1)
    await asyncio.sleep(0.6)
    resumed = await run(0.5)  # run 1's requests have aged out of a half-second quota period
    normal = await run(0.5)
    assert resumed.status == normal.status == "ok", (resumed.summary(), normal.summary())
    assert normal.stats.records == 0, "unchanged rows were published again as new"
    assert normal.stats.skipped_seen > in_short  # it did read rows from before the short window
    counts = Counter(row_key(r["id"], r["recipientAddress"]) for r in recorder.records())
    assert set(counts) == set(truth) and max(counts.values()) == 1


async def test_with_the_default_overlap_old_rows_are_forgotten_and_recent_changes_still_published(sim, tenants):
    tenant = tenants(messagetrace={"messages": 400, "days": 1.0, "changing_fraction": 0.3,
                                   "change_delay_seconds": [2.0, 4.0]})
    env = trace_env(tenants, tenant, O365_MESSAGETRACE_LOOKBACK_HOURS=25, O365_MESSAGETRACE_OVERLAP_MINUTES="<unset>")
    truth = truth_rows(sim, tenant)
    recorder = EventHubRecorder()
    [first] = await run_traces(env, recorder)
    await asyncio.sleep(max(0.0, last_change(truth) - time.time() + 0.2))
    [second] = await run_traces(env, recorder)
    [third] = await run_traces(env, recorder)
    assert first.status == second.status == third.status == "ok"
    cursor = await live_cursor(env, tenant)
    assert cursor.watermark is not None
    overlap = timedelta(minutes=120)  # the default
    old = {k for k, r in truth.items() if received(r) < cursor.watermark - overlap - timedelta(minutes=1)}
    recent = {k for k, r in truth.items() if received(r) >= cursor.watermark - overlap + timedelta(minutes=1)}
    assert len(old) > len(truth) / 2 and recent
    assert not old & set(cursor.memory.rows), "rows no run reads again are still remembered"
    assert recent <= set(cursor.memory.rows)
    seen = published(recorder)
    assert set(seen) == set(truth)
    for key in recent:  # a status change within the overlap is published once the row is re-read
        assert seen[key][-1][0] == truth[key]["final"], (truth[key], seen[key])
    for statuses in seen.values():
        assert len(statuses) == len(set(statuses)), f"a status was published twice: {statuses}"
    assert third.stats.records == 0 and third.stats.skipped_seen == third.stats.listed > 0
    assert second.stats.updates > 0 and second.stats.new == 0


def _process_env(env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("O365_")}
    return {**base, **env, "PYTHONPATH": str(ROOT)}


def test_kill_and_resume_without_loss(sim, tenants, tmp_path, azurite):
    """Real processes killed mid-run with checkpoints in Azurite: a killed run leaves its blob lease
    behind (the next run waits for it to expire) and possibly a checkpoint ETag it never used."""
    tenant = tenants(messagetrace={"messages": 6000, "days": 7.0, "changing_fraction": 0.3,
                                   "change_delay_seconds": [0.5, 6.0]})
    out = tmp_path / "out"
    settings_env = trace_env(tenants, tenant, O365_SINK="file", O365_FILE_SINK_DIR=str(out),
                             O365_FILE_SINK_MAX_BYTES=600_000, **blob_env(azurite))
    env = _process_env(settings_env)
    command = [sys.executable, "-m", "o365ingest", "run", "--stream", "messagetrace"]
    truth = truth_rows(sim, tenant)
    rng = random.Random(20261125)
    killed: set[int] = set()
    sim.set_faults({"latency_ms": 300, "apply_to": ["graph"]})  # slower pages: kills land mid-run
    try:
        for attempt in range(4):
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            # once it holds the lease and publishes (a killed predecessor's lease lasts 15 s)
            deadline = time.monotonic() + 40
            while not list(out.rglob(f"*-{process.pid}.jsonl")) and time.monotonic() < deadline:
                time.sleep(0.01)
            # soon (before its first commit) or later (after one, maybe mid-save)
            time.sleep(rng.uniform(0.0, 0.15) if attempt % 2 == 0 else rng.uniform(0.5, 2.5))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            killed.add(process.pid)
    finally:
        sim.clear_faults()
    time.sleep(max(0.0, last_change(truth) - time.time() + 0.2))
    final = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert final.returncode == 0, final.stdout + final.stderr
    assert f"stream {tenant}/MessageTrace: ok" in final.stdout
    assert sum(bool(list(out.rglob(f"*-{pid}.jsonl"))) for pid in killed) >= 2, "kills must land mid-run"

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
    cursor = asyncio.run(live_cursor(settings_env, tenant))  # the checkpoint blob in Azurite
    assert cursor.watermark is not None and len(cursor.memory) == len(truth)


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


async def test_details_enrichment_is_off_by_default_and_spends_no_request(sim, tenants):
    tenant = tenants(messagetrace={"messages": 20, "days": 2.0, "changing_fraction": 0.0})
    env = trace_env(tenants, tenant)
    since = sim.last_seq()
    recorder = EventHubRecorder()
    [result] = await run_traces(env, recorder)
    ledger = graph_ledger(sim, tenant, since)
    assert result.status == "ok" and len(recorder.events) == len(truth_rows(sim, tenant)) > 0
    assert not [e for e in ledger if "getDetailsByRecipient" in e["path"]]
    assert len(ledger) == result.stats.requests == 1 and result.stats.details == 0
    assert all("details" not in row for row in recorder.records())


async def test_the_timer_runs_the_stream_when_message_traces_are_on(sim, tenants, monkeypatch, tmp_path):
    import function_app

    tenant = tenants(messagetrace={"messages": 40, "days": 2.0, "changing_fraction": 0.0})
    use_env(monkeypatch, trace_env(tenants, tenant, O365_SINK="file", O365_FILE_SINK_DIR=str(tmp_path / "out")))
    monkeypatch.setattr(function_app, "_runtime", None)
    since = sim.last_seq()
    try:
        await function_app.messagetrace_timer.build().get_user_function()(TimerRequest(past_due=True))
        [row] = [r for r in await stream_status(function_app.runtime()) if r["stream"] == "MessageTrace"]
    finally:
        if function_app._runtime is not None:
            await function_app._runtime.close()
        monkeypatch.setattr(function_app, "_runtime", None)
    rows = [orjson.loads(line) for path in (tmp_path / "out").rglob("*.jsonl") for line in path.read_bytes().splitlines()]
    truth = truth_rows(sim, tenant)
    assert sorted(row_key(r["id"], r["recipientAddress"]) for r in rows) == sorted(truth)
    assert [e["status"] for e in graph_ledger(sim, tenant, since)] == [200]
    assert row["started"] and row["deliveredRecords"] == len(truth) and row["lastError"] is None


def test_the_cli_backfills_message_traces_and_shows_their_status(sim, tenants, monkeypatch, capsys, tmp_path):
    tenant = tenants(messagetrace={"messages": 120, "days": 4.0, "changing_fraction": 0.0})
    out = tmp_path / "out"
    use_env(monkeypatch, trace_env(tenants, tenant, O365_SINK="file", O365_FILE_SINK_DIR=str(out)))
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now - timedelta(days=3), now - timedelta(days=1)
    expected = {k for k, r in truth_rows(sim, tenant).items() if start <= received(r) <= end}
    assert expected

    assert cli.main(["backfill", "--stream", "messagetrace", "--start", iso(start), "--end", iso(end)]) == 0
    printed = capsys.readouterr().out
    [line] = [x for x in printed.splitlines() if x.startswith(f"stream {tenant}/MessageTrace: ")]
    assert line.startswith(f"stream {tenant}/MessageTrace: ok;") and f"published={len(expected)} " in line
    rows = [orjson.loads(x) for path in out.rglob("*.jsonl") for x in path.read_bytes().splitlines()]
    assert sorted(row_key(r["id"], r["recipientAddress"]) for r in rows) == sorted(expected)

    assert cli.main(["status"]) == 0
    table = capsys.readouterr().out.splitlines()
    # the live stream never ran (the backfill only handed its quota log over to that checkpoint)
    assert len([x for x in table if tenant in x and "MessageTrace" in x and "(never run)" in x]) == 1
    [backfill] = [x for x in table if tenant in x and "MessageTrace" in x and " .. " in x]
    assert f"{start.isoformat()[:16]} .. {end.isoformat()[:16]}" in backfill
    assert "100.0%" in backfill and f" {len(expected)} " in backfill
    assert cli.main(["status", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    [row] = [b for b in document["backfills"] if b["stream"] == "MessageTrace"]
    assert (row["tenant"], row["state"], row["deliveredRecords"]) == (tenant, "complete", len(expected))
    assert row["start"] == start.isoformat() and row["end"] == end.isoformat()


def test_the_cli_caps_backfills_at_what_the_trace_source_keeps(sim, tenants, monkeypatch, capsys, tmp_path):
    tenant = tenants(messagetrace={"messages": 10, "days": 2.0, "changing_fraction": 0.0})
    use_env(monkeypatch, trace_env(tenants, tenant, O365_SINK="file", O365_FILE_SINK_DIR=str(tmp_path / "out"),
                                   O365_MESSAGETRACE_SOURCE="rws"))
    now = datetime.now(UTC).replace(microsecond=0)
    forty_days = ["--start", iso(now - timedelta(days=40)), "--end", iso(now - timedelta(days=39))]
    since = sim.last_seq()
    with pytest.raises(SystemExit) as refused:
        cli.main(["backfill", "--stream", "messagetrace", *forty_days])
    assert refused.value.code == 2
    assert "--start is more than 30 days back: the Reporting Web Service keeps 30 days of traces" in (
        capsys.readouterr().err)
    with pytest.raises(SystemExit):
        cli.main(["backfill", *forty_days])  # audit and traces: the audit limit, with the traces' reach
    assert "more than 7 days back" in (err := capsys.readouterr().err) and "reaches 30 days back" in err
    assert [e for e in sim.ledger(since=since) if e.get("tenant") == tenant] == []
    # Graph keeps 90 days: the same window is read there (the simulator has nothing that old)
    monkeypatch.setenv("O365_MESSAGETRACE_SOURCE", "graph")
    assert cli.main(["backfill", "--stream", "messagetrace", *forty_days]) == 0
    assert f"stream {tenant}/MessageTrace: ok" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["backfill", "--stream", "messagetrace", "--start", iso(now - timedelta(days=91)),
                  "--end", iso(now - timedelta(days=89))])
    assert "--start is more than 90 days back: message traces are kept 90 days" in capsys.readouterr().err


async def test_the_timer_only_logs_while_message_traces_are_off(sim, tenants, monkeypatch, caplog, tmp_path):
    import function_app

    tenant = tenants()
    env = tenants.env(tenant, O365_SINK="file", O365_FILE_SINK_DIR=str(tmp_path / "out"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(function_app, "_runtime", None)
    timer = function_app.messagetrace_timer.build()
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
