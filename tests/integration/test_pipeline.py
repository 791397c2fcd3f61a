"""The audit pipeline end to end: simulator over HTTPS, checkpoints in Azurite, Event Hubs faked at send."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from m365sim.testing import Simulator, most_in_any_span
from o365ingest.audit import AuditStream
from o365ingest.cursor import AuditCursor
from o365ingest.errors import CheckpointConflict, StreamBusy
from o365ingest.runtime import Runtime
from o365ingest.settings import load_settings
from o365ingest.stores import BlobCheckpointStore
from tests.fakes import EventHubRecorder, failing_sends
from tests.integration.pipeline_support import (
    blob_env,
    expected_duplicates,
    id_counts,
    run_once,
    run_until_caught_up,
    truth_ids,
)

pytestmark = pytest.mark.slow


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def window_refusals(sim: Simulator, since: int) -> list[dict]:
    return [r for r in sim.ledger(since=since) if r.get("error_code") in ("AF20030", "AF20055", "AF20031")]


async def test_completeness_50k_records_with_faults_and_throttling(sim, tenants, azurite):
    """Every ground-truth record reaches Event Hubs; the only duplicates are Microsoft's own."""
    tenant = tenants(records=50_000, days=3.0, request_budget_per_minute=150, request_budget_window_seconds=5,
                     audit={"late_blob_fraction": 0.03, "duplicate_fraction": 0.01, "records_per_blob": [20, 200]})
    env = tenants.env(tenant, **blob_env(azurite), O365_REQUESTS_PER_MINUTE=2400, O365_FETCH_CONCURRENCY=8)
    since = sim.last_seq()
    sim.set_faults({"rates": {"http_500": 0.015, "af50000": 0.01, "http_503": 0.01, "drop": 0.005,
                              "truncate": 0.005, "html": 0.0025, "empty": 0.0025}, "apply_to": ["blob", "list"]})
    recorder = EventHubRecorder()
    try:
        history = await run_until_caught_up(env, recorder, sim=sim)
    finally:
        sim.clear_faults()
    expected = set().union(*truth_ids(sim, tenant).values())
    counts = id_counts(recorder)
    assert len(expected) >= 50_000
    assert expected - set(counts) == set(), "records missing from the sink"
    assert set(counts) - expected == set()
    repeated = {i for i, n in counts.items() if n > 1}
    assert repeated <= expected_duplicates(sim, tenant), "the collector itself duplicated records"
    ledger = [r for r in sim.ledger(since=since) if r.get("tenant") == tenant]
    throttled = [r for r in ledger if r.get("error_code") == "AF429"]
    faulted = [r for r in ledger if r.get("fault")]
    assert throttled and faulted, "the scenario must include throttling and faults"
    assert not window_refusals(sim, since)
    api = [r for r in ledger if r["service"] in ("list", "blob", "subscriptions")]
    assert all(r["publisher_identifier"] == tenant for r in api)
    last = history[-1]
    assert all(r.status == "ok" for r in last), [r.summary() for r in last]


async def test_request_rate_stays_within_the_configured_budget(sim, tenants):
    tenant = tenants(records=6000, days=2.0, audit={"records_per_blob": [5, 20]})
    env = tenants.env(tenant, O365_REQUESTS_PER_MINUTE=300, O365_FETCH_CONCURRENCY=16)
    since = sim.last_seq()
    await run_once(env, EventHubRecorder(), budget_seconds=25)
    stamps = [r["ts"] for r in sim.ledger(since=since) if r.get("tenant") == tenant
              and r["service"] in ("list", "blob", "subscriptions")]
    assert len(stamps) > 100
    assert most_in_any_span(stamps, 60.0) <= 300
    # and it really used the budget: about 300/61 per second once the first second's burst is spent
    assert most_in_any_span(stamps, 10.0) >= 35


async def test_late_blob_is_found_by_the_overlap_and_nothing_is_published_twice(sim, tenants):
    tenant = tenants(records=400, days=1.0, audit={"late_blob_fraction": 0.0})
    env = tenants.env(tenant, O365_OVERLAP_MINUTES=24 * 60)
    recorder = EventHubRecorder()
    await run_once(env, recorder)
    first = len(recorder.events)
    now = datetime.now(UTC)
    late_id = str(uuid.uuid4())
    sim.add_blob(tenant, "Audit.Exchange", [{"Id": late_id, "RecordType": 2, "CreationTime": "2026-11-25T00:00:00",
                                             "Operation": "MailItemsAccessed"}],
                 content_created=iso(now - timedelta(minutes=20)), visible_at=iso(now + timedelta(seconds=2)))
    await asyncio.sleep(2.5)
    results = await run_once(env, recorder)
    assert recorder.record_ids()[first:] == [late_id]
    assert sum(r.stats.skipped_seen for r in results) > 0  # the overlap re-listed delivered blobs, skipped


async def test_token_never_goes_to_another_host(sim, tenants, tmp_path):
    with Simulator({"seed": 3, "tenants": []}, state_dir=tmp_path / "trap") as trap:
        tenant = tenants(records=100, days=1.0)
        content_id = sim.add_blob(tenant, "Audit.General", [{"Id": str(uuid.uuid4()), "RecordType": 1}],
                                  content_created=iso(datetime.now(UTC) - timedelta(hours=2)),
                                  content_uri_base=trap.url)
        recorder = EventHubRecorder()
        results = await run_once(tenants.env(tenant), recorder)
        assert trap.ledger() == [], "a request reached the other host"
        general = next(r for r in results if r.stream.endswith("Audit.General"))
        assert general.stats.abandoned.get("rejected") == 1
        rejected = list((tenants.tmp / "state" / "deadletter").rglob("*.json"))
        assert any(content_id.replace("$", "_") in p.name or content_id in p.read_text() for p in rejected)


async def test_bad_bodies_are_retried_or_dead_lettered_and_nothing_else_is_lost(sim, tenants, caplog):
    tenant = tenants(records=1200, days=1.0, audit={"large_records": 1, "large_record_bytes": 1_500_000,
                                                    "records_per_blob": [5, 30]})
    env = tenants.env(tenant, O365_MAX_ATTEMPTS=3)
    large = set(sim.truth(tenant)["audit"]["large_record_ids"])
    # the faulted blobs must not hold the large record: it has to reach its own dead letter
    blobs = [b for ct in sim.truth(tenant)["audit"]["content_types"].values() for b in ct["blobs"]
             if not large & set(b["recordIds"])]
    transient = {"html": blobs[0], "truncate": blobs[1], "empty": blobs[2], "non_array": blobs[3]}
    for kind, blob in transient.items():
        # an HTML page can come with 200 (a captive proxy) as well as with a 5xx
        sim.script_fault(kind, count=2, service="blob", content_id=blob["contentId"],
                         **({"status": 200} if kind == "html" else {}))
    poisoned = blobs[4]
    sim.script_fault("html", count=1000, service="blob", content_id=poisoned["contentId"])
    recorder = EventHubRecorder()
    caplog.set_level(logging.WARNING)
    await run_until_caught_up(env, recorder, max_runs=4, sim=sim)
    sim.script_fault("html", count=1, service="blob", content_id="never-matches")  # leave the queue harmless
    truth = set().union(*truth_ids(sim, tenant).values())
    delivered = set(recorder.record_ids())
    lost = truth - delivered
    assert lost == large | set(poisoned["recordIds"]) - _in_other_blobs(sim, tenant, poisoned), lost
    dead = tenants.tmp / "state" / "deadletter"
    assert any(p.name.startswith(next(iter(large))) for p in (dead / "records").rglob("*.json"))
    assert any(poisoned["contentId"] in p.read_text() for p in (dead / "blobs").rglob("*.json"))
    text = caplog.text
    assert "an HTML page instead of a JSON array" in text and "dead-lettered" in text
    assert "exceeds the event size limit" in text


def _in_other_blobs(sim, tenant, blob):
    others = set()
    for ct in sim.truth(tenant)["audit"]["content_types"].values():
        for other in ct["blobs"]:
            if other["contentId"] != blob["contentId"]:
                others |= set(other["recordIds"])
    return set(blob["recordIds"]) & others


async def test_failed_sends_are_retried_and_the_checkpoint_does_not_pass_them(sim, tenants, azurite):
    tenant = tenants(records=800, days=1.0, audit={"late_blob_fraction": 0.0})
    env = tenants.env(tenant, **blob_env(azurite), O365_CONTENT_TYPES="Audit.AzureActiveDirectory",
                      O365_MAX_ATTEMPTS=2)
    truth = truth_ids(sim, tenant)["Audit.AzureActiveDirectory"]
    down = EventHubRecorder(fail=lambda attempt: (_ for _ in ()).throw(RuntimeError("service unavailable")))
    [result] = await run_once(env, down)
    assert result.status == "failed" and down.events == []
    settings = load_settings(env)
    async with Runtime.create(settings) as runtime:
        data, _ = await runtime.checkpoints.load(f"audit/{tenant}/Audit.AzureActiveDirectory")
    cursor = AuditCursor.from_json(data) if data else AuditCursor()
    assert cursor.seen == {} and cursor.delivered_records == 0
    flaky = EventHubRecorder(fail=failing_sends(1, 3))
    [result] = await run_once(env, flaky)
    assert result.status == "ok"
    assert set(flaky.record_ids()) == truth


async def test_two_runs_never_work_the_same_stream_at_once(sim, tenants, azurite):
    tenant = tenants(records=3000, days=2.0, audit={"late_blob_fraction": 0.0})
    env = tenants.env(tenant, **blob_env(azurite))
    sim.set_faults({"latency_ms": 15, "jitter_ms": 5, "apply_to": ["blob"]})
    recorder = EventHubRecorder()
    try:
        first, second = await asyncio.gather(run_once(env, recorder), run_once(env, recorder))
    finally:
        sim.clear_faults()
    truth = set().union(*truth_ids(sim, tenant).values())
    counts = id_counts(recorder)
    assert set(counts) == truth
    assert {i for i, n in counts.items() if n > 1} <= expected_duplicates(sim, tenant)
    for a, b in zip(first, second, strict=True):
        # the second run either skipped the stream or ran after the first and found it all seen
        assert b.status == "skipped" or a.status == "skipped" or min(a.stats.delivered, b.stats.delivered) == 0


async def test_checkpoint_writes_detect_conflicts_and_locks_exclude(azurite, tenants, sim):
    env = tenants.env(tenants(records=10), **blob_env(azurite))
    store = BlobCheckpointStore(load_settings(env))
    try:
        etag = await store.save("audit/t/x", b'{"version": 1}', None)
        with pytest.raises(CheckpointConflict):
            await store.save("audit/t/x", b'{"version": 1, "other": true}', None)  # create-only, already exists
        newer = await store.save("audit/t/x", b'{"version": 1, "n": 1}', etag)
        with pytest.raises(CheckpointConflict):
            await store.save("audit/t/x", b'{"version": 1, "n": 2}', etag)  # stale ETag
        # A retried upload whose first attempt had landed meets its own write: not a conflict.
        assert await store.save("audit/t/x", b'{"version": 1, "n": 1}', etag) == newer
        data, current = await store.load("audit/t/x")
        assert current == newer and orjson.loads(data)["n"] == 1
        async with store.lock("audit/t/x"):
            with pytest.raises(StreamBusy):
                async with store.lock("audit/t/x", wait=1.0):
                    pass
        async with store.lock("audit/t/x", wait=1.0):
            pass  # released
    finally:
        await store.close()


async def test_backfill_does_not_move_the_live_checkpoint_and_skips_delivered_blobs(sim, tenants):
    tenant = tenants(records=1500, days=3.0, audit={"late_blob_fraction": 0.0})
    env = tenants.env(tenant, O365_LOOKBACK_HOURS="24", O365_CONTENT_TYPES="Audit.SharePoint")
    recorder = EventHubRecorder()
    await run_once(env, recorder)
    settings = load_settings(env)
    async with Runtime.create(settings, producer_factory=recorder.factory) as runtime:
        before, _ = await runtime.checkpoints.load(f"audit/{tenant}/Audit.SharePoint")
        now = datetime.now(UTC)
        window_start = now - timedelta(hours=70)
        from o365ingest.planning import Window
        from o365ingest.runner import run_audit

        [result] = await run_audit(runtime, backfill=Window(window_start, now))
        after, _ = await runtime.checkpoints.load(f"audit/{tenant}/Audit.SharePoint")
    assert before == after
    assert result.stats.skipped_seen > 0  # what the live run delivered was skipped
    truth = truth_ids(sim, tenant)["Audit.SharePoint"]
    blobs = sim.truth(tenant)["audit"]["content_types"]["Audit.SharePoint"]["blobs"]
    in_window = {i for b in blobs if b["contentCreated"] >= iso(window_start) for i in b["recordIds"]}
    assert in_window <= set(recorder.record_ids()) <= truth
    counts = id_counts(recorder)
    assert {i for i, n in counts.items() if n > 1} <= expected_duplicates(sim, tenant)


def test_stream_checkpoint_keys_are_per_tenant_and_content_type():
    settings = load_settings({"O365_TENANTS": "5f0c1c2e-8b1a-4c4e-9a57-1d2b3c4d5e6f",
                              "O365_CLIENT_ID": "0b7c6f52-3d0e-4a8e-b5c1-2f6a9d8e7c41",
                              "O365_CREDENTIAL": "client-secret", "O365_CLIENT_SECRET": "x", "O365_SINK": "file",
                              "O365_CHECKPOINT_STORE": "local"})
    runtime = Runtime.create(settings)
    keys = {AuditStream(runtime, settings.tenants[0], ct).checkpoint_key for ct in settings.content_types}
    assert len(keys) == 5
