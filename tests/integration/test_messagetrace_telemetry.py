"""Message-trace metrics against the simulator, read with an in-memory OpenTelemetry reader.

One tenant is set up so a run meets what an operator alerts on: Microsoft's quota throttles it
(HTTP 429, retried after Retry-After), a gateway answers 503 once (retried), and Event Hubs refuses
one send (retried). A backfill afterwards is counted as such and reports no watermark lag.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from o365ingest.planning import Window
from o365ingest.runner import run_messagetrace
from o365ingest.runtime import Runtime
from o365ingest.settings import load_settings
from o365ingest.telemetry import Instruments
from tests.fakes import EventHubRecorder, failing_sends
from tests.integration.metrics_support import collect, total

STREAM = "MessageTrace"


def metered() -> tuple[InMemoryMetricReader, Instruments]:
    reader = InMemoryMetricReader()
    return reader, Instruments.create(MeterProvider(metric_readers=[reader]).get_meter("o365ingest-test"))


async def run(env: dict[str, str], instruments: Instruments, recorder: EventHubRecorder,
              backfill: Window | None = None) -> Any:
    async with Runtime.create(load_settings(env), producer_factory=recorder.factory,
                              instruments=instruments) as runtime:
        [result] = await run_messagetrace(runtime, backfill=backfill)
    return result


@pytest.fixture
def throttled_tenant(sim, tenants) -> tuple[str, dict[str, str]]:
    """Three requests per 1.5 s allowed by the simulator; details on, so one run makes about ten."""
    tenant = tenants(graph_quota_per_5min=3, graph_quota_window_seconds=1.5,
                     messagetrace={"messages": 4, "days": 2.0, "changing_fraction": 0.0})
    env = tenants.env(tenant, O365_MESSAGETRACE_ENABLED="true", O365_MESSAGETRACE_LOOKBACK_HOURS=72,
                      O365_MESSAGETRACE_MIN_AGE_MINUTES=0, O365_MESSAGETRACE_QUOTA_SHARE="1.0",
                      O365_MESSAGETRACE_DETAILS="true")
    return tenant, env


async def test_trace_metrics_carry_tenant_and_stream_through_throttling_retries_and_a_failed_send(
        sim, throttled_tenant):
    tenant, env = throttled_tenant
    reader, instruments = metered()
    since = sim.last_seq()
    sim.script_fault("http_503", count=1, service="graph", tenant=tenant)
    recorder = EventHubRecorder(fail=failing_sends(1))
    result = await run(env, instruments, recorder)
    assert result.status == "ok", result.summary()
    ledger = [e for e in sim.ledger(since=since, service="graph") if e.get("tenant") == tenant]
    points = collect(reader)

    for name, entries in points.items():  # every point carries the tenant and the trace stream
        for attributes, _ in entries:
            assert (attributes["tenant"], attributes["stream"]) == (tenant, STREAM), name
    assert {frozenset(a) for a, _ in points["o365ingest.api.requests"]} == {
        frozenset({"tenant", "stream", "operation", "status", "code"})}

    # Microsoft's quota: each 429 counted as a request with its code and as throttled
    throttles = sum(e["status"] == 429 for e in ledger)
    assert throttles >= 1
    assert total(points, "o365ingest.api.requests", status="429", code="TooManyRequests") == throttles
    assert total(points, "o365ingest.api.throttled") == throttles == result.stats.throttled
    assert total(points, "o365ingest.api.requests", operation="ListMessageTraces", status="503", code="HTTP503") == 1
    assert total(points, "o365ingest.api.requests") == len(ledger) == result.stats.requests
    assert total(points, "o365ingest.api.requests", operation="GetMessageTraceDetails", status="200") == len(
        recorder.events)

    # every answer that was retried is a retry, by operation, like the audit streams'
    assert total(points, "o365ingest.api.retries", operation="ListMessageTraces") >= 1  # the 503
    retried_api = sum(total(points, "o365ingest.api.retries", operation=op)
                      for op in ("ListMessageTraces", "GetMessageTraceDetails"))
    assert retried_api == sum(e["status"] != 200 for e in ledger) == throttles + 1

    # Event Hubs: one send refused and retried, then everything acknowledged
    assert total(points, "o365ingest.sink.failures") == 1
    assert total(points, "o365ingest.api.retries", operation="EventHubSend") == 1
    assert total(points, "o365ingest.records.published") == len(recorder.events) == result.stats.records > 0
    assert total(points, "o365ingest.sink.events") == len(recorder.events)

    assert total(points, "o365ingest.watermark.lag") == 1  # a live run reports its lag
    assert total(points, "o365ingest.runs", status="ok", kind="run") == 1
    assert total(points, "o365ingest.run.duration") == 1


async def test_a_trace_backfill_is_counted_as_such_and_reports_no_watermark_lag(sim, throttled_tenant):
    tenant, env = throttled_tenant
    reader, instruments = metered()
    now = datetime.now(UTC).replace(microsecond=0)
    result = await run(env, instruments, EventHubRecorder(), backfill=Window(now - timedelta(days=3), now))
    assert result.status == "ok" and result.stats.records > 0, result.summary()
    points = collect(reader)
    assert total(points, "o365ingest.runs", kind="backfill", status="ok", tenant=tenant, stream=STREAM) == 1
    assert total(points, "o365ingest.records.published", tenant=tenant, stream=STREAM) == result.stats.records
    assert "o365ingest.watermark.lag" not in points
