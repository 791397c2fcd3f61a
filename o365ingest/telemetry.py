"""Metrics, through the OpenTelemetry API.

Instruments are created against whatever meter provider is installed: Azure Monitor in the
Function App (``azure-monitor-opentelemetry``; the retired OpenCensus exporter is not used), an
in-memory reader in tests, or the no-op default. Dimensions are tenant and stream (plus a bounded
reason, status, operation or error code where named below), never record data.

- ``runs``: one per stream per run, ``status`` ok / partial / skipped / failed, ``kind`` run / backfill.
- ``blobs_abandoned`` / ``blobs_dead_lettered`` / ``records_dead_lettered``: ``reason``.
- ``api_requests``: ``operation``, ``status`` (HTTP status, 0 when no response) and ``code``.
- ``retries``: ``operation`` (a Management API call; ``ListMessageTraces``, ``GetMessageTraceDetails`` or
  ``RwsMessageTrace``; or ``EventHubSend``).
- ``watermark_lag`` and ``availability_delay`` are recorded for live runs only: a backfill's
  watermark is deliberately old and would trip the lag alert.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import Counter, Histogram, Meter


@dataclass(frozen=True)
class Instruments:
    records_published: Counter
    bytes_published: Counter
    blobs_listed: Counter
    blobs_fetched: Counter
    blobs_skipped_seen: Counter
    blobs_abandoned: Counter
    blobs_dead_lettered: Counter
    records_dead_lettered: Counter
    duplicates_dropped: Counter
    api_requests: Counter
    throttled: Counter
    retries: Counter
    lost_ranges: Counter
    eventhub_batches: Counter
    eventhub_events: Counter
    eventhub_send_failures: Counter
    runs: Counter
    watermark_lag: Histogram
    availability_delay: Histogram
    run_duration: Histogram

    @classmethod
    def create(cls, meter: Meter | None = None) -> Instruments:
        m = meter or metrics.get_meter("o365ingest")
        return cls(
            records_published=m.create_counter("o365ingest.records.published", unit="{record}"),
            bytes_published=m.create_counter("o365ingest.bytes.published", unit="By"),
            blobs_listed=m.create_counter("o365ingest.blobs.listed", unit="{blob}"),
            blobs_fetched=m.create_counter("o365ingest.blobs.fetched", unit="{blob}"),
            blobs_skipped_seen=m.create_counter("o365ingest.blobs.skipped_seen", unit="{blob}"),
            blobs_abandoned=m.create_counter("o365ingest.blobs.abandoned", unit="{blob}"),
            blobs_dead_lettered=m.create_counter("o365ingest.blobs.dead_lettered", unit="{blob}"),
            records_dead_lettered=m.create_counter("o365ingest.records.dead_lettered", unit="{record}"),
            duplicates_dropped=m.create_counter("o365ingest.records.duplicates", unit="{record}"),
            api_requests=m.create_counter("o365ingest.api.requests", unit="{request}"),
            throttled=m.create_counter("o365ingest.api.throttled", unit="{request}"),
            retries=m.create_counter("o365ingest.api.retries", unit="{request}"),
            lost_ranges=m.create_counter("o365ingest.ranges.lost", unit="{range}"),
            eventhub_batches=m.create_counter("o365ingest.sink.batches", unit="{batch}"),
            eventhub_events=m.create_counter("o365ingest.sink.events", unit="{event}"),
            eventhub_send_failures=m.create_counter("o365ingest.sink.failures", unit="{batch}"),
            runs=m.create_counter("o365ingest.runs", unit="{run}"),
            watermark_lag=m.create_histogram("o365ingest.watermark.lag", unit="s"),
            availability_delay=m.create_histogram("o365ingest.availability.delay", unit="s"),
            run_duration=m.create_histogram("o365ingest.run.duration", unit="s"),
        )
