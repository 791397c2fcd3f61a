"""The pipeline's per-record work as plain loops (the raw limit), one per sink mode.

Each loop calls the same functions the pipeline calls for a fetched blob -- the blob parser,
the record -> event conversion, the Event Hubs batch wrapper around the SDK's ``EventDataBatch``,
the envelope framing, the JSON Lines batch and the file sink's durable write -- in the same order,
and rolls batches at the same limits. Only the plumbing around them (HTTP, asyncio tasks and
queues, listing, checkpoints) is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from azure.eventhub import EventDataBatch

from o365ingest import audit, publisher, sinks
from o365ingest.management import parse_blob

try:  # the compact within-run Id set (absent in older trees, which used a set of hash(Id))
    from o365ingest.recordids import RecordIds
except ImportError:  # pragma: no cover - only when benchmarking an older tree
    RecordIds = None

MAX_MESSAGE_SIZE = 1024 * 1024


def _new_batch() -> sinks.EventHubBatch:
    return sinks.EventHubBatch(EventDataBatch(max_size_in_bytes=MAX_MESSAGE_SIZE))


def _id_set() -> Any:
    """``is_new(record_id) -> bool`` over the pipeline's within-run Id set."""
    if RecordIds is not None:
        return RecordIds().add
    seen: set[int] = set()

    def is_new(record_id: str) -> bool:
        digest = hash(record_id)
        if digest in seen:
            return False
        seen.add(digest)
        return True

    return is_new


def run(mode: str, blobs: list[tuple[Any, bytes]], tenant_id: str, directory: Path) -> dict[str, int]:
    if mode == "record":
        return _record_events(blobs, tenant_id)
    if mode == "records":
        return _envelopes(blobs, tenant_id)
    if mode == "file":
        return _lines(blobs, tenant_id, directory)
    raise ValueError(f"unknown mode {mode!r}")


def _one_per_event(blobs: list[tuple[Any, bytes]], tenant_id: str, new_batch: Callable[[], Any],
                   close: Callable[[Any], None]) -> dict[str, int]:
    """One event (or line) per record, as the publisher's one-record-per-event path: ``close`` takes a
    full batch (counts or writes it)."""
    is_new = _id_set()
    records = duplicates = size = events = batches = 0
    batch = new_batch()
    record_event = audit.record_event
    for item, body in blobs:
        for record in parse_blob(body):
            record_id = record.get("Id")
            if isinstance(record_id, str) and not is_new(record_id):
                duplicates += 1
                continue
            data, properties = record_event(record, item, tenant_id)
            if not batch.try_add(data, properties):
                close(batch)
                events += len(batch)
                batches += 1
                batch = new_batch()
                batch.try_add(data, properties)
            records += 1
            size += len(data)
    if len(batch):
        close(batch)
        events += len(batch)
        batches += 1
    return {"records": records, "duplicates": duplicates, "record_bytes": size, "events": events,
            "batches": batches}


def _record_events(blobs: list[tuple[Any, bytes]], tenant_id: str) -> dict[str, int]:
    return _one_per_event(blobs, tenant_id, _new_batch, lambda batch: None)


def _envelopes(blobs: list[tuple[Any, bytes]], tenant_id: str) -> dict[str, int]:
    is_new = _id_set()
    head, tail = publisher.ENVELOPE_HEAD, publisher.ENVELOPE_TAIL
    limit = MAX_MESSAGE_SIZE - publisher.ENVELOPE_MARGIN
    overhead = len(head) + len(tail)
    records = duplicates = size = events = 0
    pending: list[bytes] = []
    pending_size = 0

    def close() -> None:
        nonlocal pending, pending_size, events
        event = head + b",".join(pending) + tail
        batch = _new_batch()
        if not batch.try_add(event, {"tenantId": tenant_id, "stream": "bench", "recordCount": len(pending)}):
            raise RuntimeError("envelope does not fit an empty batch")
        events += 1
        pending, pending_size = [], 0

    dumps = orjson.dumps
    # Older trees built every record's properties in envelope mode too (one ``add`` per record).
    bulk = hasattr(publisher.StreamPublisher, "add_bodies")
    for item, body in blobs:
        bodies = []
        for record in parse_blob(body):
            record_id = record.get("Id")
            if isinstance(record_id, str) and not is_new(record_id):
                duplicates += 1
                continue
            bodies.append(dumps(record) if bulk else audit.record_event(record, item, tenant_id)[0])
        for data in bodies:
            n = len(data)
            if pending and pending_size + 1 + n + overhead > limit:
                close()
            if pending:
                pending_size += 1
            pending.append(data)
            pending_size += n
            records += 1
            size += n
    if pending:
        close()
    return {"records": records, "duplicates": duplicates, "record_bytes": size, "events": events,
            "batches": events}


def _lines(blobs: list[tuple[Any, bytes]], tenant_id: str, directory: Path) -> dict[str, int]:
    sink = sinks.FileSink(directory, 1 << 40)
    path = directory / "raw.jsonl"

    def write(lines: sinks.LinesBatch) -> None:
        sink._write(path, b"\n".join(lines.lines) + b"\n")

    return _one_per_event(blobs, tenant_id, lambda: sinks.LinesBatch(sink.BATCH_BYTES), write)
