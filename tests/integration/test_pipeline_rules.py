"""Audit pipeline rules beyond completeness: subscriptions, 7-day edge, time budget, event shape, routing."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from azure.functions.timer import TimerRequest

from o365ingest.cursor import AuditCursor
from o365ingest.runtime import Runtime
from o365ingest.settings import load_settings
from tests.fakes import EventHubRecorder
from tests.integration.pipeline_support import expected_duplicates, run_once, truth_ids

ALL = ["Audit.AzureActiveDirectory", "Audit.Exchange", "Audit.SharePoint", "Audit.General", "DLP.All"]


async def test_subscriptions_are_started_once_and_already_enabled_counts_as_success(sim, tenants):
    tenant = tenants(records=300, days=1.0, audit={"late_blob_fraction": 0.0})
    env = tenants.env(tenant)
    since = sim.last_seq()
    first = await run_once(env, EventHubRecorder())
    assert all(r.status == "ok" for r in first), [r.summary() for r in first]
    starts = [r for r in sim.ledger(since=since) if r["tenant"] == tenant and r["path"].endswith("/subscriptions/start")]
    assert sorted(r["query"]["contentType"] for r in starts) == sorted(ALL)
    # an administrator disables one subscription: the next run may not start it again within 15 minutes
    sim.patch_tenant(tenant, subscriptions={"Audit.Exchange": "disabled"})
    since = sim.last_seq()
    second = await run_once(env, EventHubRecorder())
    exchange = next(r for r in second if r.stream.endswith("Audit.Exchange"))
    assert exchange.status == "failed" and "12 hours" in (exchange.remedy or "")
    assert not [r for r in sim.ledger(since=since) if r["path"].endswith("/subscriptions/start")]
    assert all(r.status == "ok" for r in second if r is not exchange)


async def test_dlp_without_its_permission_names_it_and_other_streams_go_on(sim, tenants):
    tenant = tenants(records=300, days=1.0, roles={"https://manage.office.com": ["ActivityFeed.Read"]},
                     audit={"late_blob_fraction": 0.0})
    recorder = EventHubRecorder()
    results = {r.stream.split("/")[1]: r for r in await run_once(tenants.env(tenant), recorder)}
    assert results["DLP.All"].status == "failed"
    assert "ActivityFeed.ReadDlp" in (results["DLP.All"].remedy or "")
    assert all(results[ct].status == "ok" for ct in ALL if ct != "DLP.All")
    truth = truth_ids(sim, tenant)
    assert set(recorder.record_ids()) == set().union(*(truth[ct] for ct in ALL if ct != "DLP.All"))


async def test_a_stream_behind_the_7_day_edge_warns_counts_and_goes_on(sim, tenants, caplog):
    tenant = tenants(records=200, days=1.0, audit={"late_blob_fraction": 0.0})
    env = tenants.env(tenant, O365_CONTENT_TYPES="Audit.General")
    settings = load_settings(env)
    stale = AuditCursor(watermark=datetime.now(UTC) - timedelta(days=9))
    async with Runtime.create(settings) as runtime:
        await runtime.checkpoints.save(f"audit/{tenant}/Audit.General", stale.to_json(), None)
    caplog.set_level(logging.WARNING)
    recorder = EventHubRecorder()
    [result] = await run_once(env, recorder)
    assert result.status == "ok"
    assert "older than the API's 7-day limit" in caplog.text and tenant in caplog.text
    async with Runtime.create(settings) as runtime:
        data, _ = await runtime.checkpoints.load(f"audit/{tenant}/Audit.General")
    assert AuditCursor.from_json(data).abandoned.get("beyond-7-days") == 1
    assert set(recorder.record_ids()) == truth_ids(sim, tenant)["Audit.General"]
    assert not [r for r in sim.ledger() if r.get("error_code") in ("AF20030", "AF20055")]


async def test_time_budget_stops_new_work_commits_and_the_next_run_continues(sim, tenants):
    tenant = tenants(records=3000, days=2.0, audit={"late_blob_fraction": 0.0, "records_per_blob": [10, 40]})
    env = tenants.env(tenant, O365_CONTENT_TYPES="Audit.AzureActiveDirectory", O365_FETCH_CONCURRENCY=2)
    sim.set_faults({"latency_ms": 150, "jitter_ms": 10, "apply_to": ["blob"]})
    recorder = EventHubRecorder()
    try:
        [partial] = await run_once(env, recorder, budget_seconds=1.5)
    finally:
        sim.clear_faults()
    assert partial.status == "partial" and partial.stats.delivered > 0 and partial.stats.left_open > 0
    [rest] = await run_once(env, recorder)
    assert rest.status == "ok" and rest.stats.delivered >= partial.stats.left_open
    counts = Counter(recorder.record_ids())
    assert set(counts) == truth_ids(sim, tenant)["Audit.AzureActiveDirectory"]
    assert {i for i, n in counts.items() if n > 1} <= expected_duplicates(sim, tenant)


async def test_events_carry_ids_for_dedupe_and_routing_and_hubs_per_stream(sim, tenants):
    tenant = tenants(records=400, days=1.0, audit={"late_blob_fraction": 0.0})
    env = tenants.env(tenant, O365_EVENTHUB_HUBS="Audit.Exchange=exchange,DLP.All=dlp",
                      O365_EVENTHUB_PARTITION_KEY="stream")
    recorder = EventHubRecorder()
    await run_once(env, recorder)
    hubs = {e.properties["contentType"]: e.hub for e in recorder.events}
    assert hubs["Audit.Exchange"] == "exchange" and hubs["DLP.All"] == "dlp"
    assert hubs["Audit.General"] == "o365-audit"
    for event in recorder.events:
        body = orjson.loads(event.body)
        assert event.properties["Id"] == body["Id"]
        assert event.properties["RecordType"] == body["RecordType"]
        assert event.properties["CreationTime"] == body["CreationTime"]
        assert event.properties["tenantId"] == tenant and event.properties["contentId"]
        assert event.partition_key == f"{tenant}/{event.properties['contentType']}"
    sample = next(e for e in recorder.events if e.properties["contentType"] == "Audit.AzureActiveDirectory")
    assert list(orjson.loads(sample.body))[:1] != []  # key order of the record is preserved by orjson


async def test_envelope_mode_sends_far_fewer_events_with_every_record(sim, tenants):
    tenant = tenants(records=4000, days=1.0, audit={"late_blob_fraction": 0.0})
    one, many = EventHubRecorder(), EventHubRecorder()
    await run_once(tenants.env(tenant, O365_CHECKPOINT_DIR=tenants.tmp / "a"), one)
    await run_once(tenants.env(tenant, O365_CHECKPOINT_DIR=tenants.tmp / "b", O365_EVENT_ENVELOPE="records"), many)
    assert sorted(one.record_ids()) == sorted(many.record_ids())
    assert len(many.events) * 10 <= len(one.events)
    assert all(set(orjson.loads(e.body)) == {"records"} for e in many.events)


async def test_timer_function_runs_the_same_cycle(sim, tenants, monkeypatch, tmp_path):
    tenant = tenants(records=300, days=1.0, audit={"late_blob_fraction": 0.0})
    for key, value in tenants.env(tenant, O365_SINK="file", O365_FILE_SINK_DIR=tmp_path / "out").items():
        monkeypatch.setenv(key, value)
    import function_app

    monkeypatch.setattr(function_app, "_runtime", None)
    try:
        await function_app.audit_timer.build().get_user_function()(TimerRequest(past_due=True))
    finally:
        if function_app._runtime is not None:
            await function_app._runtime.close()
        monkeypatch.setattr(function_app, "_runtime", None)
    lines = [orjson.loads(line) for p in (tmp_path / "out").rglob("*.jsonl") for line in p.read_bytes().splitlines()]
    assert {r["Id"] for r in lines} == set().union(*truth_ids(sim, tenant).values())


async def test_timer_function_fails_the_invocation_when_a_stream_fails(sim, tenants, monkeypatch):
    tenant = tenants(records=50, days=1.0, audit_enabled=False)
    for key, value in tenants.env(tenant, O365_SINK="file", O365_FILE_SINK_DIR=tenants.tmp / "o").items():
        monkeypatch.setenv(key, value)
    import function_app

    monkeypatch.setattr(function_app, "_runtime", None)
    try:
        with pytest.raises(RuntimeError, match="audit logging"):
            await function_app.audit_timer.build().get_user_function()(TimerRequest())
    finally:
        if function_app._runtime is not None:
            await function_app._runtime.close()
        monkeypatch.setattr(function_app, "_runtime", None)
