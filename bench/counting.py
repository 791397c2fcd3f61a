"""A counting Event Hubs fake for benchmarks.

Like ``tests.fakes.FakeProducer`` it hands out the SDK's real ``EventDataBatch`` (so the
collector pays the real per-event encoding and size accounting), but a send only counts what
it was given -- events, batches, bytes, records, billable 64 KB units -- and keeps nothing, so
the collector's memory is measured without the fake's.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from azure.eventhub import EventDataBatch

MAX_MESSAGE_SIZE = 1024 * 1024  # Event Hubs Standard tier
BILLING_UNIT = 64 * 1024  # Standard tier bills ingress in 64 KB events


@dataclass
class SendCounts:
    events: int = 0
    batches: int = 0
    bytes: int = 0  # encoded batch sizes, as the SDK accounts them
    records: int = 0  # audit records inside the events (envelopes hold many)
    billable_events: int = 0  # ingress events in 64 KB units
    first_send: float | None = None
    last_send: float | None = None
    # (monotonic time, cumulative records) per send, thinned to at most ~2,000 points
    timeline: list[tuple[float, int]] = field(default_factory=list)
    _stride: int = 1

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("_stride", None)
        out.pop("timeline", None)
        return out


def _records_in(event: Any) -> int:
    props = event.properties or {}
    value = props.get(b"recordCount", props.get("recordCount"))
    return int(value) if value is not None else 1


class CountingProducer:
    """``create_batch`` / ``send_batch`` / ``close``, as ``EventHubSink`` expects of a producer."""

    def __init__(self, hub: str, counts: SendCounts, *, send_latency: float = 0.0, envelope: bool = False) -> None:
        self.hub = hub
        self.counts = counts
        self.send_latency = send_latency
        self.envelope = envelope

    async def create_batch(self, *, partition_key: str | None = None, partition_id: str | None = None,
                           max_size_in_bytes: int | None = None) -> EventDataBatch:
        return EventDataBatch(max_size_in_bytes=max_size_in_bytes or MAX_MESSAGE_SIZE, partition_key=partition_key)

    async def send_batch(self, batch: EventDataBatch, **kwargs: Any) -> None:
        if self.send_latency:
            await asyncio.sleep(self.send_latency)
        else:
            await asyncio.sleep(0)
        c = self.counts
        n = len(batch)
        c.events += n
        c.batches += 1
        c.bytes += batch.size_in_bytes
        encoded = getattr(batch, "_message", None)
        sizes = encoded[5] if encoded is not None and len(encoded) > 5 else None
        if sizes is not None and len(sizes) == n:
            c.billable_events += sum(max(1, -(-len(m) // BILLING_UNIT)) for m in sizes)
        else:
            c.billable_events += n
        c.records += sum(_records_in(e) for e in batch._internal_events) if self.envelope else n
        now = time.monotonic()
        if c.first_send is None:
            c.first_send = now
        c.last_send = now
        c.timeline.append((now, c.records))
        if len(c.timeline) > 4000:  # keep every other point: bounded memory, whole run covered
            c.timeline[:] = c.timeline[::2]

    async def close(self) -> None:
        return None


class CountingHub:
    """The producer factory handed to ``Runtime.create``; one ``SendCounts`` across every hub."""

    def __init__(self, *, send_latency: float = 0.0, envelope: bool = False) -> None:
        self.counts = SendCounts()
        self.send_latency = send_latency
        self.envelope = envelope

    def factory(self, hub: str) -> CountingProducer:
        return CountingProducer(hub, self.counts, send_latency=self.send_latency, envelope=self.envelope)
