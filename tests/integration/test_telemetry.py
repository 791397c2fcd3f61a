"""Metrics of a run against the simulator, read with an in-memory OpenTelemetry reader.

One tenant is set up to hit every outcome an operator alerts on: throttling, a transient bad body
(retried), an expired blob (abandoned), a contentUri on another host (rejected: dead-lettered and
abandoned), a record over the 1 MB event limit (dead-lettered) and a failed Event Hubs send (retried).
Further tests: a second run counts the blobs it re-lists as skipped, and the doctor's API calls are
counted without a stream, so the per-stream queries in infra/app/kql never see a made-up one.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from o365ingest.doctor import run_doctor
from o365ingest.planning import Window
from o365ingest.runner import run_audit
from o365ingest.runtime import Runtime
from o365ingest.settings import load_settings
from o365ingest.telemetry import Instruments
from tests.fakes import EventHubRecorder, failing_sends
from tests.integration.conftest import CLIENT_SECRET
from tests.integration.metrics_support import Points, collect, total

STREAMS = ("Audit.Exchange", "Audit.General")
KQL = Path(__file__).resolve().parents[2] / "infra" / "app" / "kql"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def attribute_sets(points: Points, name: str) -> list[dict[str, Any]]:
    return [attributes for attributes, _ in points.get(name, [])]


@pytest.fixture
def metered() -> tuple[InMemoryMetricReader, Instruments]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    return reader, Instruments.create(provider.get_meter("o365ingest-test"))


async def test_run_metrics_and_dimensions_cover_throttling_abandoned_and_dead_lettered(sim, tenants, metered, caplog):
    reader, instruments = metered
    tenant = tenants(records=240, days=1.0, request_budget_per_minute=6, request_budget_window_seconds=1,
                     audit={"late_blob_fraction": 0.0, "duplicate_fraction": 0.0, "records_per_blob": [20, 40]})
    now = datetime.now(UTC)
    created = iso(now - timedelta(hours=3))
    large = str(uuid.uuid4())
    sim.add_blob(tenant, "Audit.Exchange", [{"Id": large, "RecordType": 2, "Padding": "x" * 1_100_000},
                                            {"Id": str(uuid.uuid4()), "RecordType": 2}], content_created=created)
    expired = sim.add_blob(tenant, "Audit.Exchange", [{"Id": str(uuid.uuid4()), "RecordType": 2}],
                           content_created=created)
    sim.expire(tenant, expired)
    sim.add_blob(tenant, "Audit.General", [{"Id": str(uuid.uuid4()), "RecordType": 1}], content_created=created,
                 content_uri_base="https://127.0.0.2:9")
    retried = sim.add_blob(tenant, "Audit.General", [{"Id": str(uuid.uuid4()), "RecordType": 1}],
                           content_created=created)
    sim.script_fault("html", count=1, status=200, service="blob", content_id=retried)
    env = tenants.env(tenant, O365_CONTENT_TYPES=",".join(STREAMS), O365_LOOKBACK_HOURS=26,
                      O365_FETCH_CONCURRENCY=4)
    recorder = EventHubRecorder(fail=failing_sends(1))
    caplog.set_level(logging.DEBUG)
    async with Runtime.create(load_settings(env), producer_factory=recorder.factory,
                              instruments=instruments) as runtime:
        results = await run_audit(runtime)
    assert [r.status for r in results] == ["ok", "ok"], [r.summary() for r in results]
    points = collect(reader)

    # every point carries the tenant and one of the configured streams
    for name, entries in points.items():
        for attributes, _ in entries:
            assert attributes["tenant"] == tenant, name
            assert attributes["stream"] in STREAMS, (name, attributes)

    # published: exactly what the (fake) service acknowledged
    assert total(points, "o365ingest.records.published") == len(recorder.records()) > 50
    assert total(points, "o365ingest.sink.events") == len(recorder.events)
    assert total(points, "o365ingest.sink.batches") == recorder.batches
    assert total(points, "o365ingest.bytes.published") >= sum(len(e.body) for e in recorder.events)
    assert total(points, "o365ingest.sink.failures") == 1
    assert total(points, "o365ingest.api.retries", operation="EventHubSend") == 1

    # blobs: listed, fetched, abandoned and dead-lettered with their reasons
    delivered = sum(r.stats.delivered for r in results)
    assert total(points, "o365ingest.blobs.listed") == sum(r.stats.listed for r in results)
    assert total(points, "o365ingest.blobs.fetched") == delivered
    assert total(points, "o365ingest.blobs.abandoned", stream="Audit.Exchange", reason="expired") == 1
    assert total(points, "o365ingest.blobs.abandoned", stream="Audit.General", reason="rejected") == 1
    assert total(points, "o365ingest.blobs.dead_lettered", stream="Audit.General", reason="rejected") == 1
    assert total(points, "o365ingest.records.dead_lettered", stream="Audit.Exchange", reason="oversize") == 1
    assert {frozenset(a) for a in attribute_sets(points, "o365ingest.blobs.abandoned")} == {
        frozenset({"tenant", "stream", "reason"})}

    # API calls by operation, status and code; throttling and the retries it caused
    assert total(points, "o365ingest.api.throttled") > 0
    throttled = [a for a in attribute_sets(points, "o365ingest.api.requests") if a["code"] == "AF429"]
    assert throttled and {a["status"] for a in throttled} <= {"403", "429"}
    assert {frozenset(a) for a in attribute_sets(points, "o365ingest.api.requests")} == {
        frozenset({"tenant", "stream", "operation", "status", "code"})}
    assert total(points, "o365ingest.api.requests", operation="GetBlob", status="200") >= delivered
    assert total(points, "o365ingest.api.requests", operation="GetBlob", code="BadContent") == 1
    assert total(points, "o365ingest.api.retries", operation="GetBlob") >= 1
    retried_ops = {a["operation"] for a in attribute_sets(points, "o365ingest.api.retries")}
    assert retried_ops >= {"GetBlob", "EventHubSend"}

    # per-stream histograms and the run outcome
    for stream in STREAMS:
        assert total(points, "o365ingest.watermark.lag", stream=stream) == 1
        assert total(points, "o365ingest.run.duration", stream=stream) == 1
        assert total(points, "o365ingest.runs", stream=stream, status="ok", kind="run") == 1
    lag = next(p for a, p in points["o365ingest.watermark.lag"] if a["stream"] == "Audit.General")
    assert 0 <= lag.max < 3600
    assert total(points, "o365ingest.availability.delay") == delivered

    # structured logs: each stream's records carry its tenant, stream and the run id
    stream_logs = [r for r in caplog.records if r.name.startswith("o365ingest") and hasattr(r, "stream")]
    assert {r.stream for r in stream_logs} == set(STREAMS)
    assert all(r.tenant == tenant and len(r.run_id) == 12 for r in stream_logs)
    assert len({r.run_id for r in caplog.records if hasattr(r, "run_id")}) == 1

    # nothing logged (at DEBUG, every library included) carries a token, the secret or a record body
    token = await runtime.tokens.token(runtime.settings.tenants[0], "https://manage.office.com")
    sample = recorder.records()[0]
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert token.access_token not in text and token.access_token.split(".")[1] not in text
    assert CLIENT_SECRET not in text
    assert sample["Id"] not in text and '"CreationTime"' not in text
    assert not sample.get("ObjectId") or str(sample["ObjectId"]) not in text
    assert large in text  # the dead-lettered record is named by its Id, never shown

    # a backfill is counted as such and does not report a watermark lag
    reader2 = InMemoryMetricReader()
    instruments2 = Instruments.create(MeterProvider(metric_readers=[reader2]).get_meter("backfill"))
    async with Runtime.create(load_settings(env), producer_factory=EventHubRecorder().factory,
                              instruments=instruments2) as runtime:
        await run_audit(runtime, backfill=Window(now - timedelta(hours=4), now - timedelta(hours=2)))
    points = collect(reader2)
    assert total(points, "o365ingest.runs", kind="backfill", status="ok") == 2
    assert "o365ingest.watermark.lag" not in points and "o365ingest.availability.delay" not in points


async def test_a_second_run_counts_the_blobs_it_already_delivered_as_skipped(sim, tenants, metered):
    reader, instruments = metered
    tenant = tenants(records=40, days=0.5, audit={"late_blob_fraction": 0.0, "duplicate_fraction": 0.0})
    now = datetime.now(UTC)
    for stream in STREAMS:  # inside the overlap the next run lists again
        for minutes in (40, 20):
            sim.add_blob(tenant, stream, [{"Id": str(uuid.uuid4()), "RecordType": 1}],
                         content_created=iso(now - timedelta(minutes=minutes)))
    env = tenants.env(tenant, O365_CONTENT_TYPES=",".join(STREAMS), O365_LOOKBACK_HOURS=26)
    async with Runtime.create(load_settings(env), producer_factory=EventHubRecorder().factory,
                              instruments=instruments) as runtime:
        first = await run_audit(runtime)
    assert [r.status for r in first] == ["ok", "ok"], [r.summary() for r in first]
    points = collect(reader)
    assert total(points, "o365ingest.blobs.fetched") == sum(r.stats.delivered for r in first) >= 4
    assert total(points, "o365ingest.blobs.skipped_seen") == 0, "nothing was delivered before the first run"

    reader2 = InMemoryMetricReader()
    instruments2 = Instruments.create(MeterProvider(metric_readers=[reader2]).get_meter("second-run"))
    recorder = EventHubRecorder()
    async with Runtime.create(load_settings(env), producer_factory=recorder.factory,
                              instruments=instruments2) as runtime:
        second = await run_audit(runtime)
    assert [r.status for r in second] == ["ok", "ok"], [r.summary() for r in second]
    points = collect(reader2)
    for result, stream in zip(second, STREAMS, strict=True):
        listed = total(points, "o365ingest.blobs.listed", stream=stream)
        assert listed >= 2, "the overlap re-lists at least the two recent blobs"
        assert total(points, "o365ingest.blobs.skipped_seen", tenant=tenant, stream=stream) == listed
        assert result.stats.skipped_seen == listed
    assert {frozenset(a.items()) for a in attribute_sets(points, "o365ingest.blobs.skipped_seen")} == {
        frozenset({("tenant", tenant), ("stream", stream)}) for stream in STREAMS}
    assert total(points, "o365ingest.blobs.fetched") == 0 and recorder.events == []


def alert_metric_names() -> set[str]:
    """The metrics the alert rules and the lag view split by stream (their KQL names each one)."""
    text = "".join(path.read_text() for path in KQL.glob("*.kql") if path.name != "errors.kql")
    return set(re.findall(r'"(o365ingest\.[a-z_.]+)"', text))


async def test_doctor_api_calls_are_counted_without_a_stream(tenants, metered, tmp_path):
    reader, instruments = metered
    tenant = tenants(records=10, days=1.0, audit_enabled=False)
    env = tenants.env(tenant, O365_SINK="file", O365_FILE_SINK_DIR=str(tmp_path / "out"))
    async with Runtime.create(load_settings(env), instruments=instruments) as runtime:
        checks = await run_doctor(runtime)
    assert [c.status for c in checks if c.name == "unified audit logging"] == ["fail"]
    points = collect(reader)

    # the failed call is what the errors view counts (status >= 400) ...
    [request] = attribute_sets(points, "o365ingest.api.requests")
    assert request["operation"] == "ListSubscriptions" and request["code"] == "AuditDisabled"
    assert int(request["status"]) >= 400
    # ... under the tenant, with an empty stream: no stream of its own in any per-stream view
    for name, entries in points.items():
        for attributes, _ in entries:
            assert attributes["tenant"] == tenant and attributes["stream"] == "", (name, attributes)
    # and the doctor writes none of the metrics the alert rules split by stream
    watched = alert_metric_names()
    assert {"o365ingest.runs", "o365ingest.watermark.lag", "o365ingest.blobs.abandoned"} <= watched
    assert not watched & set(points)
